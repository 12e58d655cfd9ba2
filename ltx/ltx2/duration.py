"""LTX-2.5's duration head: the natural length of the shot a caption describes, from the text connectors' outputs.

Ships with the 2.5 checkpoints, under the key prefix `duration_head.` (ltx-core `duration_head/`, diffusers
`LTX2DurationHead`). Either or both connector streams go in:

    tokens  = cat(video_proj(video) + video_emb, audio_proj(audio) + audio_emb)    (B, Tv + Ta, D)
    pooled  = attention(query tokens -> tokens)                                   (B, Q, D), Q learned queries
    seconds = exp(mlp_out(gelu_tanh(mlp_hidden(pooled.flatten(1)))))              (B,)

The head was trained in log-seconds, hence the exp. The pooler is one multi-head cross-attention stored in PyTorch's
`nn.MultiheadAttention` layout, as the official file holds it: `cross_attn.in_proj_weight` (3D, D) packs q, k, v,
and `cross_attn.out_proj` projects back. diffusers splits the pack into to_q / to_k / to_v / to_out. No mask is
needed: the connectors put learned registers in the padded positions, so every token is valid.

`duration_frames` turns seconds into a frame count on the VAE's causal grid (8k + 1), clamped to a window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.attention import attention

KEY_PREFIX = "duration_head."


@dataclass(frozen=True)
class DurationHeadConfig:
    video_dim: int = 4096  # the video connector's width (transformer.cross_attention_dim)
    audio_dim: int = 2048  # the audio connector's width (transformer.audio_cross_attention_dim)
    hidden: int = 256  # the pooler's width
    queries: int = 1
    heads: int = 4
    mlp_hidden: int = 256

    @classmethod
    def from_metadata(cls, config: dict) -> DurationHeadConfig:
        """From a checkpoint's `config` metadata: the widths from `transformer`, the rest from `duration_head` (the
        release has no fixed schema for it yet; the defaults are the trained head's, as the official loader's)."""
        t, d = config.get("transformer", {}), config.get("duration_head", {})
        return cls(video_dim=t.get("cross_attention_dim", 4096), audio_dim=t.get("audio_cross_attention_dim", 2048),
                   hidden=d.get("pooler_hidden_dim", 256), queries=d.get("num_queries", 1),
                   heads=d.get("num_pooler_heads", 4), mlp_hidden=d.get("mlp_hidden", 256))


    def to_metadata(self) -> dict:
        """The `config` entries `from_metadata` reads: the head's own sub-dict and the two connector widths."""
        return {"transformer": {"cross_attention_dim": self.video_dim, "audio_cross_attention_dim": self.audio_dim},
                "duration_head": {"pooler_hidden_dim": self.hidden, "num_queries": self.queries,
                                  "num_pooler_heads": self.heads, "mlp_hidden": self.mlp_hidden}}


class PackedCrossAttention(nn.Module):
    """Multi-head attention of queries over tokens with q, k, v packed in one (3D, D) matrix (torch's MHA layout)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the duration head's width {dim} is not divisible by its {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.attention_backend = "sdpa"
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, queries: Tensor, tokens: Tensor) -> Tensor:
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        split = lambda x: x.unflatten(-1, (self.heads, -1))  # noqa: E731  (B, T, D) -> (B, T, H, Dh)
        q, k, v = split(F.linear(queries, wq, bq)), split(F.linear(tokens, wk, bk)), split(F.linear(tokens, wv, bv))
        return self.out_proj(attention(q, k, v, backend=self.attention_backend).flatten(-2))


class AttentionPooler(nn.Module):
    """`queries` learned tokens cross-attending over any number of tokens: (B, T, D) -> (B, queries, D)."""

    def __init__(self, dim: int, queries: int, heads: int):
        super().__init__()
        self.query_tokens = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.cross_attn = PackedCrossAttention(dim, heads)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.cross_attn(self.query_tokens.expand(tokens.shape[0], -1, -1), tokens)


class DurationHead(nn.Module):
    """Connector outputs -> the predicted shot duration in seconds, (B,). Keys as the official file's, less the
    `duration_head.` prefix."""

    def __init__(self, cfg: DurationHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.video_input_proj = nn.Linear(cfg.video_dim, cfg.hidden)
        self.video_modality_emb = nn.Parameter(torch.randn(cfg.hidden) * 0.02)
        self.audio_input_proj = nn.Linear(cfg.audio_dim, cfg.hidden)
        self.audio_modality_emb = nn.Parameter(torch.randn(cfg.hidden) * 0.02)
        self.attention_pooler = AttentionPooler(cfg.hidden, cfg.queries, cfg.heads)
        self.mlp_hidden = nn.Linear(cfg.hidden * cfg.queries, cfg.mlp_hidden)
        self.mlp_out = nn.Linear(cfg.mlp_hidden, 1)

    def forward(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        """video: (B, Tv, video_dim) and / or audio: (B, Ta, audio_dim) connector outputs -> seconds (B,)."""
        if video is None and audio is None:
            raise ValueError("the duration head needs the video or the audio connector's output (or both)")
        dtype = self.mlp_out.weight.dtype
        streams = []
        if video is not None:
            streams.append(self.video_input_proj(video.to(dtype)) + self.video_modality_emb)
        if audio is not None:
            streams.append(self.audio_input_proj(audio.to(dtype)) + self.audio_modality_emb)
        pooled = self.attention_pooler(torch.cat(streams, dim=1)).flatten(1)
        # the tanh GELU: the head was trained in JAX with it (the exact GELU gives other numbers)
        return self.mlp_out(F.gelu(self.mlp_hidden(pooled), approximate="tanh")).squeeze(-1).exp()


def duration_frames(seconds: float, fps: float, temporal: int = 8, min_seconds: float = 1.0,
                    max_seconds: float = 20.0) -> int:
    """A predicted duration -> a frame count temporal k + 1, the prediction clamped to [min_seconds, max_seconds]
    first (in frames, rounded), then floored onto the grid; a floor below the window takes the grid point above
    when it fits, else the grid point nearest the clamped length (a window too narrow to hold one)."""
    if not (math.isfinite(seconds) and fps > 0 and 0 < min_seconds <= max_seconds):
        raise ValueError(f"duration_frames: seconds={seconds}, fps={fps}, window [{min_seconds}, {max_seconds}] s "
                         "(need a finite duration, fps > 0 and 0 < min_seconds <= max_seconds)")
    lo, hi = max(1, round(min_seconds * fps)), round(max_seconds * fps)
    frames = min(max(round(seconds * fps), lo), hi)
    below = (frames - 1) // temporal * temporal + 1
    if below >= lo:
        return below
    above = below + temporal
    if above <= hi or abs(above - frames) < abs(below - frames):
        return above
    return below
