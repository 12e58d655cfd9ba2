"""LTX-2 (19B) / LTX-2.3 and 2.5 (22B) audio-video diffusion transformer, all of it here (RoPE in `rope.py`).

References: Lightricks, "LTX-2: Efficient Joint Audio-Visual Foundation Model" (arXiv 2601.03233); ltx-core
1.0.0 `model/transformer/{model,transformer,transformer_args,attention,adaln,...}.py`, which this matches
number for number (tests/ltx2/test_ltx2_transformer.py); digest §2 and §8.

Two streams run side by side through the same 48 blocks: video (D = 4096, 32 heads x 128) and audio
(Da = 2048, 32 heads x 64). Each block, per stream: AdaLN self-attention -> text cross-attention -> (both
streams) audio->video and video->audio cross-attention -> AdaLN MLP.

Shapes: B batch · T tokens of a stream · S text tokens · C latent channels (128) · D stream width.
StreamInput.x: (B, T, C) patchified latent tokens (video order frame, row, column).
timesteps: (B, T) per-token sigma in [0, 1] (= denoise_mask * sigma: conditioning tokens carry 0).
sigma: (B,) the step sigma. It drives the *other* stream's A<->V AdaLN and, in 2.3, this stream's text AdaLN.
positions: (B, 3, T, 2) video [start, end) in (seconds, pixel y, pixel x); (B, 1, T, 2) audio, seconds.
context: (B, S, caption_channels) for 19B (projected here by caption_projection), (B, S, D) for 2.3.
Output: (B, T, C) velocity v = noise - x0 per stream (x_sigma = (1 - sigma) x0 + sigma noise).

Differences between the two releases (config flags, read from the checkpoint metadata):
- 19B: text cross-attention is unmodulated and ungated; the caption projection lives here.
- 2.3: `cross_attention_adaln` (9 AdaLN rows per block, the text context modulated by `prompt_adaln_single`
  from the step sigma), `apply_gated_attention` (per-head `2 sigmoid(to_gate_logits(x))` on all six
  attentions), and `caption_proj_before_connector` (no caption projection here).
- 2.5 (Lightricks/LTX-2 ltx-core 1.2.0's configurator; diffusers 0.42.1 `LTX2VideoTransformer3DModel`):
  `use_prompt_adaln_single=false` drops `prompt_adaln_single`: the text context's shift/scale is the per-block
  `prompt_scale_shift_table` alone, independent of the step, so a prompt's cross-attention K/V can be computed once;
  `ff_bias=false` / `audio_ff_bias` drop the MLP biases; `use_keyframes_abs_pos_embedding` adds one learned (1, D)
  vector to the video tokens that `StreamInput.keyframes_mask` marks (generated keyframes in DFR), right after
  `patchify_proj`. Each defaults to the 2.3 behaviour when the metadata lacks it, as the official configurator.

Dtype islands as in the reference: the sinusoidal timestep features and the RoPE angles are fp32, everything
else runs in the dtype of the parameters and latents. `timesteps * 1000` is computed in the caller's dtype.

Spatio-temporal guidance and modality isolation: `Perturbations` holds, per block and batch row, 1 (run
normally) or 0 (perturbed). A perturbed self-attention returns its value projection `to_v(x)` (then gate and
`to_out` as usual); a perturbed A<->V attention adds nothing. Rows mix freely in one batch.

Module names are the official checkpoint keys minus `model.diffusion_model.` (the two text connectors under
that prefix belong to the text encoder, not here).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.nn import AdaLNSingle, CaptionProjection, FeedForward, QKNormAttention
from ltx.ltx2.rope import ROPE_LAYOUTS, RopeTable, apply_rope, rope_table

# Metadata values ltx-core's LTXModelConfigurator hard-checks (it raises on anything else); None = must be absent.
_FIXED_METADATA: dict[str, Any] = {
    "dropout": 0.0,
    "attention_bias": True,
    "num_vector_embeds": None,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}
# ltx-core's defaults for these are wrong for every released model ("interleaved", fp32 grid, 1): never default.
_REQUIRED_METADATA = ("rope_type", "frequencies_precision", "av_ca_timestep_scale_multiplier")
_ATTENTION_TYPES = ("default", "pytorch", "xformers", "flash_attention_3")  # a backend choice: same math
_PRECISIONS = ("float64", "float32")
_V25_FLAGS = ("use_prompt_adaln_single", "ff_bias", "audio_ff_bias", "use_keyframes_abs_pos_embedding")


@dataclass(kw_only=True)
class AVTransformerConfig:
    """Field names are the checkpoint metadata keys (`config["transformer"]`). Defaults are LTX-2 19B."""

    num_layers: int = 48
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    in_channels: int = 128
    out_channels: int = 128
    audio_in_channels: int = 128
    audio_out_channels: int = 128
    cross_attention_dim: int = 4096  # text context width seen by attn2 (= video width)
    audio_cross_attention_dim: int = 2048  # = audio width; also the width of the A<->V attentions and their RoPE
    caption_channels: int = 3840  # Gemma-3 width; used only when caption_proj_before_connector is False
    norm_eps: float = 1e-6
    positional_embedding_theta: float = 10_000.0
    positional_embedding_max_pos: tuple[int, int, int] = (20, 2048, 2048)  # (seconds, px, px)
    audio_positional_embedding_max_pos: tuple[int] = (20,)  # seconds
    timestep_scale_multiplier: float = 1000.0
    av_ca_timestep_scale_multiplier: float = 1000.0  # A<->V gate AdaLN sees sigma * this (ltx-core default 1)
    rope_type: str = "split"  # ltx-core default "interleaved"
    frequencies_precision: str = "float64"  # RoPE frequency grid; ltx-core default fp32
    apply_gated_attention: bool = False  # 2.3
    cross_attention_adaln: bool = False  # 2.3
    caption_proj_before_connector: bool = False  # 2.3: the caption projection moved to the text encoder
    use_prompt_adaln_single: bool = True  # 2.5: False = the text K/V modulation is the per-block table alone
    ff_bias: bool = True  # 2.5: False
    audio_ff_bias: bool = True
    use_keyframes_abs_pos_embedding: bool = False  # 2.5: a learned marker for generated-keyframe tokens

    def __post_init__(self):
        self.positional_embedding_max_pos = tuple(self.positional_embedding_max_pos)
        self.audio_positional_embedding_max_pos = tuple(self.audio_positional_embedding_max_pos)
        for f in ("num_layers", "num_attention_heads", "attention_head_dim", "audio_num_attention_heads",
                  "audio_attention_head_dim", "in_channels", "out_channels", "audio_in_channels",
                  "audio_out_channels", "cross_attention_dim", "audio_cross_attention_dim", "caption_channels"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if f == "num_layers" else 1):
                raise ValueError(f"transformer.{f}={v!r} is not supported (supported: a positive integer)")
        for f in ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector",
                  "use_prompt_adaln_single", "ff_bias", "audio_ff_bias", "use_keyframes_abs_pos_embedding"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"transformer.{f}={getattr(self, f)!r} is not supported (supported: true, false)")
        if self.rope_type not in ROPE_LAYOUTS:
            raise ValueError(f"transformer.rope_type={self.rope_type!r} is not supported (supported: {ROPE_LAYOUTS})")
        if self.frequencies_precision not in _PRECISIONS:
            raise ValueError(f"transformer.frequencies_precision={self.frequencies_precision!r} is not supported "
                             f"(supported: {_PRECISIONS})")
        for f, n in (("positional_embedding_max_pos", 3), ("audio_positional_embedding_max_pos", 1)):
            v = getattr(self, f)
            if len(v) != n or not all(isinstance(m, (int, float)) and m > 0 for m in v):
                raise ValueError(f"transformer.{f}={list(v)!r} is not supported (supported: {n} positive numbers)")
        for f in ("norm_eps", "positional_embedding_theta", "timestep_scale_multiplier",
                  "av_ca_timestep_scale_multiplier"):
            if not isinstance(getattr(self, f), (int, float)) or getattr(self, f) <= 0:
                raise ValueError(f"transformer.{f}={getattr(self, f)!r} is not supported (supported: a number > 0)")
        # ltx-core runs (or crashes late) with other values but then computes something meaningless
        if self.attention_head_dim % 2 or self.audio_attention_head_dim % 2:
            raise ValueError(f"transformer.attention_head_dim={self.attention_head_dim} and audio_attention_head_dim="
                             f"{self.audio_attention_head_dim} must be even (RoPE rotates channel pairs)")
        if self.inner_dim < 6:
            raise ValueError(f"video width {self.inner_dim} is too small for 3-axis RoPE (supported: >= 6)")
        if self.cross_attention_dim != self.inner_dim:
            raise ValueError(f"transformer.cross_attention_dim={self.cross_attention_dim} is not supported "
                             f"(supported: num_attention_heads * attention_head_dim = {self.inner_dim})")
        if self.audio_cross_attention_dim != self.audio_inner_dim:
            raise ValueError(f"transformer.audio_cross_attention_dim={self.audio_cross_attention_dim} is not supported"
                             f" (supported: audio_num_attention_heads * audio_attention_head_dim = "
                             f"{self.audio_inner_dim})")
        if self.num_attention_heads != self.audio_num_attention_heads:
            raise ValueError(f"transformer.audio_num_attention_heads={self.audio_num_attention_heads} is not supported"
                             f" (supported: num_attention_heads = {self.num_attention_heads}; ltx-core splits the "
                             "A<->V RoPE by the query stream's head count)")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def adaln_rows(self) -> int:
        """AdaLN rows per block: shift/scale/gate for self-attention and MLP (+ text cross-attention in 2.3)."""
        return 9 if self.cross_attention_adaln else 6

    @property
    def cross_max_pos(self) -> int:
        return max(self.positional_embedding_max_pos[0], self.audio_positional_embedding_max_pos[0])

    @classmethod
    def ltx2_19b(cls) -> AVTransformerConfig:
        return cls()

    @classmethod
    def ltx2_3_22b(cls) -> AVTransformerConfig:
        return cls(apply_gated_attention=True, cross_attention_adaln=True, caption_proj_before_connector=True)

    @classmethod
    def ltx2_5_22b(cls) -> AVTransformerConfig:
        """2.3's architecture with 2.5's flags, as diffusers 0.42.1 and ltx-core 1.2.0 document them for 2.5
        (no 2.5 file's metadata can be read here: check a real file's with `from_metadata`)."""
        return replace(cls.ltx2_3_22b(), use_prompt_adaln_single=False, ff_bias=False,
                       use_keyframes_abs_pos_embedding=True)

    @property
    def version(self) -> str:
        """"2.0", "2.3" or "2.5", from the architecture flags (a 2.5 file sets at least one 2.5 flag)."""
        if not (self.use_prompt_adaln_single and self.ff_bias and self.audio_ff_bias) or \
                self.use_keyframes_abs_pos_embedding:
            return "2.5"
        return "2.3" if self.cross_attention_adaln else "2.0"

    @classmethod
    def from_metadata(cls, d: dict) -> AVTransformerConfig:
        """Read the checkpoint's `config["transformer"]` sub-dict; refuse what LTXModelConfigurator refuses."""
        for key, expected in _FIXED_METADATA.items():
            if key not in d and expected is not None:
                raise ValueError(f"transformer.{key} is missing (supported: {expected!r})")
            if d.get(key) != expected:
                raise ValueError(f"transformer.{key}={d.get(key)!r} is not supported (supported: {expected!r})")
        for key in _REQUIRED_METADATA:
            if key not in d:
                raise ValueError(f"transformer.{key} is missing; ltx-core would silently use a default that is "
                                 "wrong for the released models, so it must be given")
        if d.get("attention_type", "default") not in _ATTENTION_TYPES:
            raise ValueError(f"transformer.attention_type={d['attention_type']!r} is not supported "
                             f"(supported: {_ATTENTION_TYPES})")
        if not d.get("caption_proj_before_connector", False) and "caption_channels" not in d:
            raise ValueError("transformer.caption_channels is missing (needed by the in-transformer caption "
                             "projection when caption_proj_before_connector is false)")
        # absent keys take ltx-core's configurator defaults, which equal our (19B) defaults
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_metadata(self) -> dict:
        """A `config["transformer"]` dict that from_metadata and ltx-core's LTXModelConfigurator both read back."""
        out: dict[str, Any] = dict(_FIXED_METADATA)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _V25_FLAGS and v == f.default:
                continue  # files before 2.5 lack these keys: write them only when they change something
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass
class StreamInput:
    """One modality's inputs to `AVTransformer.forward` (the reference's `Modality`)."""

    x: Tensor  # (B, T, C_in) patchified latent tokens
    timesteps: Tensor  # (B, T) per-token sigma (denoise_mask * sigma), or (B, 1)
    sigma: Tensor  # (B,) step sigma (a 0-d / 1-element tensor is broadcast over the batch)
    positions: Tensor  # (B, A, T, 2) [start, end) bounds: A = 3 video, 1 audio; any float dtype
    context: Tensor  # (B, S, C_text) text states for this stream
    context_mask: Tensor | None = None  # (B, S) bool or integer, nonzero = attend; None = all tokens
    attention_mask: Tensor | None = None  # (B, T, T) self-attention weights in [0, 1]; 0 = blocked
    # (B, T) nonzero on generated-keyframe tokens (2.5 DFR): they get the learned keyframe embedding; video only
    keyframes_mask: Tensor | None = None
    # False: the blocks leave this stream untouched (its output is then meaningless), but it is still the
    # context of the other stream's A<->V attention (ltx-core `Modality.enabled`, used for guider skip steps)
    enabled: bool = True


@dataclass(frozen=True)
class Perturbations:
    """Per block and batch row: 1 = run normally, 0 = perturbed. Each mask is (num_layers, B) float.

    video/audio_self_attn: the self-attention returns `to_v(x)` (STG); a2v/v2a_cross_attn: the audio->video /
    video->audio attention adds nothing (modality isolation). Values between 0 and 1 blend.
    The forward pass reads per block on the host whether no, some or all rows are perturbed (all: the
    attention itself is not computed), so keep these small masks on the CPU (the helpers do).
    """

    video_self_attn: Tensor
    audio_self_attn: Tensor
    a2v_cross_attn: Tensor
    v2a_cross_attn: Tensor

    def __post_init__(self):
        shapes = {tuple(m.shape) for m in self.masks()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"Perturbations masks must all be (num_layers, B); got shapes {sorted(shapes)}")

    def masks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.video_self_attn, self.audio_self_attn, self.a2v_cross_attn, self.v2a_cross_attn

    @property
    def num_layers(self) -> int:
        return self.video_self_attn.shape[0]

    @property
    def batch_size(self) -> int:
        return self.video_self_attn.shape[1]

    @classmethod
    def none(cls, num_layers: int, batch_size: int) -> Perturbations:
        ones = torch.ones(num_layers, batch_size)
        return cls(video_self_attn=ones, audio_self_attn=ones, a2v_cross_attn=ones, v2a_cross_attn=ones)

    @classmethod
    def stg(
        cls, num_layers: int, batch_size: int, blocks: list[int], rows: list[int] | None = None, *,
        video: bool = True, audio: bool = True,
    ) -> Perturbations:
        """Skip the video and/or audio self-attention of `blocks` for batch `rows` (None = all rows)."""
        hit = _grid(num_layers, batch_size, blocks, rows)
        ones = torch.ones(num_layers, batch_size)
        return cls(video_self_attn=1 - hit if video else ones, audio_self_attn=1 - hit if audio else ones,
                   a2v_cross_attn=ones, v2a_cross_attn=ones)

    @classmethod
    def isolate_modalities(cls, num_layers: int, batch_size: int, rows: list[int] | None = None) -> Perturbations:
        """Skip both A<->V attentions in every block for batch `rows` (None = all rows)."""
        keep = 1 - _grid(num_layers, batch_size, None, rows)
        ones = torch.ones(num_layers, batch_size)
        return cls(video_self_attn=ones, audio_self_attn=ones, a2v_cross_attn=keep, v2a_cross_attn=keep)

    def __and__(self, other: Perturbations) -> Perturbations:
        """Both sets of perturbations at once."""
        return Perturbations(*(a * b for a, b in zip(self.masks(), other.masks())))

    @staticmethod
    def cat(parts: list[Perturbations]) -> Perturbations:
        """Stack along the batch, e.g. [cond, uncond, stg, isolated] rows of one guidance batch."""
        return Perturbations(*(torch.cat(ms, dim=1) for ms in zip(*(p.masks() for p in parts))))


def _grid(num_layers: int, batch_size: int, blocks: list[int] | None, rows: list[int] | None) -> Tensor:
    # (num_layers, B): 1 where block i and row r are both selected (None = all)
    blocks = range(num_layers) if blocks is None else list(blocks)
    rows = range(batch_size) if rows is None else list(rows)
    bad = [i for i in blocks if not 0 <= i < num_layers] + [r for r in rows if not 0 <= r < batch_size]
    if bad:
        raise ValueError(f"blocks {list(blocks)} / rows {list(rows)} out of range for {num_layers} blocks and "
                         f"{batch_size} rows")
    hit = torch.zeros(num_layers, batch_size)
    for i in blocks:
        hit[i, list(rows)] = 1.0
    return hit


# Per block: for each of (video self, audio self, a2v, v2a): True = no row perturbed, False = every row,
# or a (B, 1, 1) keep mask for a mixed batch (the reference's all_in_batch / any_in_batch / mask_like).
Keep = bool | Tensor


class _BlockKeep(NamedTuple):
    video_self: Keep
    audio_self: Keep
    a2v: Keep
    v2a: Keep


def _block_keeps(p: Perturbations | None, num_layers: int, batch: int, like: Tensor) -> list[_BlockKeep]:
    if p is None:
        return [_BlockKeep(True, True, True, True)] * num_layers
    if (p.num_layers, p.batch_size) != (num_layers, batch):
        raise ValueError(f"Perturbations are for {p.num_layers} blocks x {p.batch_size} rows, but the model has "
                         f"{num_layers} blocks and the batch {batch} rows")
    host = torch.stack(p.masks()).detach().to("cpu", torch.float32)  # (4, L, B): one copy, decisions on host
    device_masks = torch.stack(p.masks()).to(device=like.device, dtype=like.dtype)

    def keep(k: int, i: int) -> Keep:
        row = host[k, i]
        if bool((row == 1).all()):
            return True
        if bool((row == 0).all()):
            return False
        return device_masks[k, i].view(batch, 1, 1)

    return [_BlockKeep(*(keep(k, i) for k in range(4))) for i in range(num_layers)]


# ---------------------------------------------------------------------------------------------------- modules


class Attention(QKNormAttention):
    """Multi-head attention, q/k RMSNorm over all heads jointly, optional RoPE and 2.3 per-head output gates."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int, eps: float, gated: bool):
        super().__init__(query_dim, context_dim, heads, head_dim, eps)
        self.to_gate_logits = nn.Linear(query_dim, heads) if gated else None

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        bias: Tensor | None = None,
        rope: RopeTable | None = None,
        k_rope: RopeTable | None = None,
        keep: Keep = True,
    ) -> Tensor:
        # x: (B, T, query_dim); context: (B, S, context_dim) or None (self-attention); bias: (B, 1, T or 1, S)
        # keep: False -> value passthrough (no attention at all); (B, 1, 1) -> per-row blend of the two
        src = x if context is None else context
        B, T, _ = x.shape
        v = self.to_v(src)  # (B, S, inner)
        if keep is False:
            out = v
        else:
            q = self.q_norm(self.to_q(x))
            k = self.k_norm(self.to_k(src))
            if rope is not None:
                q = apply_rope(q, rope)
                k = apply_rope(k, rope if k_rope is None else k_rope)
            out = self.attend(q, k, v, bias)  # (B, T, inner)
            if isinstance(keep, Tensor):
                out = out * keep + v * (1 - keep)
        if self.to_gate_logits is not None:
            gates = 2.0 * torch.sigmoid(self.to_gate_logits(x))  # (B, T, H); zero logits -> identity
            out = (out.view(B, T, self.heads, -1) * gates.unsqueeze(-1)).view(B, T, -1)
        return self.to_out[0](out)


@dataclass
class _Stream:
    """One modality prepared for the blocks (internal; built once per forward)."""

    x: Tensor  # (B, T, D) hidden state
    mods: Tensor  # (B, T, rows * D) per-token AdaLN values
    embedded: Tensor  # (B, T, D) timestep embedding, for the output head
    context: Tensor  # (B, S, D)
    context_bias: Tensor | None  # (B, 1, 1, S) additive
    self_bias: Tensor | None  # (B, 1, T, T) additive
    rope: RopeTable
    enabled: bool
    prompt_mods: Tensor | None = None  # (B, 1, 2D) 2.3 text-context shift/scale
    cross_rope: RopeTable | None = None  # time-only table of width Da for the A<->V attentions
    cross_mods: Tensor | None = None  # (B, 1, 4D) A<->V scale/shift (from the other stream's sigma)
    cross_gate: Tensor | None = None  # (B, 1, D) A<->V output gate


def _ada(table: Tensor, t: Tensor, start: int, stop: int) -> tuple[Tensor, ...]:
    # table: (N, D) learned offsets; t: (B, T', N*D) -> rows start..stop-1, each (B, T', D)
    B, T = t.shape[:2]
    return (table[start:stop] + t.view(B, T, table.shape[0], -1)[:, :, start:stop]).unbind(2)


def _rms(x: Tensor, eps: float) -> Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=eps)


class AVBlock(nn.Module):
    """One audio-video block (official BasicAVTransformerBlock)."""

    def __init__(self, cfg: AVTransformerConfig):
        super().__init__()
        D, Da, H, Ha = cfg.inner_dim, cfg.audio_inner_dim, cfg.num_attention_heads, cfg.audio_num_attention_heads
        dh, dha = cfg.attention_head_dim, cfg.audio_attention_head_dim
        eps, gated = cfg.norm_eps, cfg.apply_gated_attention
        self.eps = eps
        self.attn1 = Attention(D, D, H, dh, eps, gated)
        self.attn2 = Attention(D, cfg.cross_attention_dim, H, dh, eps, gated)
        self.ff = FeedForward(D, 4 * D, bias=cfg.ff_bias)
        self.scale_shift_table = nn.Parameter(torch.zeros(cfg.adaln_rows, D))  # rows: shift, scale, gate x 2-3
        self.audio_attn1 = Attention(Da, Da, Ha, dha, eps, gated)
        self.audio_attn2 = Attention(Da, cfg.audio_cross_attention_dim, Ha, dha, eps, gated)
        self.audio_ff = FeedForward(Da, 4 * Da, bias=cfg.audio_ff_bias)
        self.audio_scale_shift_table = nn.Parameter(torch.zeros(cfg.adaln_rows, Da))
        # A<->V attentions run at the audio width with the audio head layout
        self.audio_to_video_attn = Attention(D, Da, Ha, dha, eps, gated)  # q video, k/v audio
        self.video_to_audio_attn = Attention(Da, D, Ha, dha, eps, gated)  # q audio, k/v video
        # rows: a2v scale, a2v shift, v2a scale, v2a shift, gate (a2v gate in the video table, v2a in the audio)
        self.scale_shift_table_a2v_ca_audio = nn.Parameter(torch.zeros(5, Da))
        self.scale_shift_table_a2v_ca_video = nn.Parameter(torch.zeros(5, D))
        if cfg.cross_attention_adaln:  # text-context shift, scale
            self.prompt_scale_shift_table = nn.Parameter(torch.zeros(2, D))
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.zeros(2, Da))
        self.text_adaln = cfg.cross_attention_adaln

    def _self_and_text(
        self, x: Tensor, s: _Stream, attn1: Attention, attn2: Attention, table: Tensor, prompt_table: Tensor | None,
        keep: Keep,
    ) -> Tensor:
        shift, scale, gate = _ada(table, s.mods, 0, 3)
        x = x + attn1(_rms(x, self.eps) * (1 + scale) + shift, bias=s.self_bias, rope=s.rope, keep=keep) * gate
        if not self.text_adaln:  # 19B: no modulation, no gate
            return x + attn2(_rms(x, self.eps), context=s.context, bias=s.context_bias)
        shift_q, scale_q, gate_q = _ada(table, s.mods, 6, 9)
        if s.prompt_mods is None:  # 2.5: the table alone, the same at every step
            shift_kv, scale_kv = prompt_table.to(x.dtype)[:, None, None].unbind(0)  # (1, 1, D) each
        else:
            shift_kv, scale_kv = _ada(prompt_table, s.prompt_mods, 0, 2)  # (B, 1, D) each
        context = s.context * (1 + scale_kv) + shift_kv  # the context itself is not normalised
        return x + attn2(_rms(x, self.eps) * (1 + scale_q) + shift_q, context=context, bias=s.context_bias) * gate_q

    def _mlp(self, x: Tensor, mods: Tensor, ff: FeedForward, table: Tensor) -> Tensor:
        shift, scale, gate = _ada(table, mods, 3, 6)
        return x + ff(_rms(x, self.eps) * (1 + scale) + shift) * gate

    def forward(self, v: _Stream | None, a: _Stream | None, keep: _BlockKeep) -> tuple[Tensor | None, Tensor | None]:
        vx = v.x if v is not None else None  # (B, T, D)
        ax = a.x if a is not None else None  # (B, Ta, Da)
        run_v = v is not None and v.enabled and vx.numel() > 0
        run_a = a is not None and a.enabled and ax.numel() > 0
        run_a2v = run_v and a is not None and ax.numel() > 0  # a disabled stream still serves as context
        run_v2a = run_a and v is not None and vx.numel() > 0

        if run_v:
            vx = self._self_and_text(vx, v, self.attn1, self.attn2, self.scale_shift_table,
                                           getattr(self, "prompt_scale_shift_table", None), keep.video_self)
        if run_a:
            ax = self._self_and_text(ax, a, self.audio_attn1, self.audio_attn2, self.audio_scale_shift_table,
                                           getattr(self, "audio_prompt_scale_shift_table", None), keep.audio_self)

        if run_a2v or run_v2a:
            vn, an = _rms(vx, self.eps), _rms(ax, self.eps)  # both from before the a2v update
            tv, ta = self.scale_shift_table_a2v_ca_video, self.scale_shift_table_a2v_ca_audio
            if run_a2v and keep.a2v is not False:
                scale_v, shift_v = _ada(tv[:4], v.cross_mods, 0, 2)
                scale_a, shift_a = _ada(ta[:4], a.cross_mods, 0, 2)
                (gate,) = _ada(tv[4:], v.cross_gate, 0, 1)
                out = self.audio_to_video_attn(vn * (1 + scale_v) + shift_v, context=an * (1 + scale_a) + shift_a,
                                               rope=v.cross_rope, k_rope=a.cross_rope) * gate  # (B, T, D)
                vx = vx + (out * keep.a2v if isinstance(keep.a2v, Tensor) else out)
            if run_v2a and keep.v2a is not False:
                scale_a, shift_a = _ada(ta[:4], a.cross_mods, 2, 4)
                scale_v, shift_v = _ada(tv[:4], v.cross_mods, 2, 4)
                (gate,) = _ada(ta[4:], a.cross_gate, 0, 1)
                out = self.video_to_audio_attn(an * (1 + scale_a) + shift_a, context=vn * (1 + scale_v) + shift_v,
                                               rope=a.cross_rope, k_rope=v.cross_rope) * gate  # (B, Ta, Da)
                ax = ax + (out * keep.v2a if isinstance(keep.v2a, Tensor) else out)

        if run_v:
            vx = self._mlp(vx, v.mods, self.ff, self.scale_shift_table)
        if run_a:
            ax = self._mlp(ax, a.mods, self.audio_ff, self.audio_scale_shift_table)
        return vx, ax


class _StreamModules(NamedTuple):
    patchify_proj: nn.Linear
    adaln: AdaLNSingle
    prompt_adaln: AdaLNSingle | None
    caption_projection: CaptionProjection | None
    cross_adaln: AdaLNSingle
    cross_gate_adaln: AdaLNSingle
    scale_shift_table: nn.Parameter
    proj_out: nn.Linear
    heads: int
    max_pos: tuple[int, ...]


class AVTransformer(nn.Module):
    """The LTX-2 audio-video transformer: (video, audio) latents -> (video, audio) velocities."""

    def __init__(self, cfg: AVTransformerConfig):
        super().__init__()
        self.cfg = cfg
        D, Da, rows = cfg.inner_dim, cfg.audio_inner_dim, cfg.adaln_rows
        self.patchify_proj = nn.Linear(cfg.in_channels, D)
        self.audio_patchify_proj = nn.Linear(cfg.audio_in_channels, Da)
        if not cfg.caption_proj_before_connector:  # 19B
            self.caption_projection = CaptionProjection(cfg.caption_channels, D)
            self.audio_caption_projection = CaptionProjection(cfg.caption_channels, Da)
        self.adaln_single = AdaLNSingle(D, rows)
        self.audio_adaln_single = AdaLNSingle(Da, rows)
        if cfg.cross_attention_adaln and cfg.use_prompt_adaln_single:  # 2.3: text modulation from the step sigma
            self.prompt_adaln_single = AdaLNSingle(D, 2)
            self.audio_prompt_adaln_single = AdaLNSingle(Da, 2)
        if cfg.use_keyframes_abs_pos_embedding:  # 2.5: zero until trained, so a no-op for untrained files
            self.keyframes_abs_pos_embedding = nn.Parameter(torch.zeros(1, D))
        self.av_ca_video_scale_shift_adaln_single = AdaLNSingle(D, 4)
        self.av_ca_audio_scale_shift_adaln_single = AdaLNSingle(Da, 4)
        self.av_ca_a2v_gate_adaln_single = AdaLNSingle(D, 1)
        self.av_ca_v2a_gate_adaln_single = AdaLNSingle(Da, 1)
        self.transformer_blocks = nn.ModuleList(AVBlock(cfg) for _ in range(cfg.num_layers))
        self.scale_shift_table = nn.Parameter(torch.zeros(2, D))  # output head: shift, scale
        self.proj_out = nn.Linear(D, cfg.out_channels)
        self.audio_scale_shift_table = nn.Parameter(torch.zeros(2, Da))
        self.audio_proj_out = nn.Linear(Da, cfg.audio_out_channels)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> AVTransformer:
        """Training init from scratch (adaLN-Zero, as ltx.ltxv.transformer.DiT.init_weights): Xavier linears with
        zero biases, small random modulation tables, every adaLN linear and the text cross-attention outputs at
        zero (modulation from the tables only, the text path silent), zero output heads. The official models
        publish no init; loading a checkpoint overwrites all of it."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if "scale_shift_table" in name:
                p.normal_(0, p.shape[-1] ** -0.5, generator=generator)
        for m in self.modules():
            if isinstance(m, AdaLNSingle):
                nn.init.zeros_(m.linear.weight)
                nn.init.normal_(m.emb.timestep_embedder.linear_1.weight, std=0.02, generator=generator)
                nn.init.normal_(m.emb.timestep_embedder.linear_2.weight, std=0.02, generator=generator)
        for blk in self.transformer_blocks:
            nn.init.zeros_(blk.attn2.to_out[0].weight)
            nn.init.zeros_(blk.audio_attn2.to_out[0].weight)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.audio_proj_out.weight)
        return self

    def _stream_modules(self, video: bool) -> _StreamModules:
        p = "" if video else "audio_"
        cfg = self.cfg
        return _StreamModules(
            patchify_proj=getattr(self, p + "patchify_proj"),
            adaln=getattr(self, p + "adaln_single"),
            prompt_adaln=getattr(self, p + "prompt_adaln_single", None),
            caption_projection=getattr(self, p + "caption_projection", None),
            cross_adaln=getattr(self, f"av_ca_{'video' if video else 'audio'}_scale_shift_adaln_single"),
            cross_gate_adaln=self.av_ca_a2v_gate_adaln_single if video else self.av_ca_v2a_gate_adaln_single,
            scale_shift_table=getattr(self, p + "scale_shift_table"),
            proj_out=getattr(self, p + "proj_out"),
            heads=cfg.num_attention_heads if video else cfg.audio_num_attention_heads,
            max_pos=cfg.positional_embedding_max_pos if video else cfg.audio_positional_embedding_max_pos,
        )

    def _prepare(self, s: StreamInput, other: StreamInput | None, m: _StreamModules) -> _Stream:
        cfg = self.cfg
        x = m.patchify_proj(s.x)  # (B, T, D)
        B, _, D = x.shape
        if s.keyframes_mask is not None:
            video = m.patchify_proj is self.patchify_proj
            marker = getattr(self, "keyframes_abs_pos_embedding", None) if video else None
            if marker is None:
                raise ValueError("keyframes_mask was given for a stream without a keyframe embedding (supported: the "
                                 "video stream of a model with use_keyframes_abs_pos_embedding, i.e. LTX-2.5)")
            x = x + (s.keyframes_mask.view(B, -1, 1) > 0).to(x.dtype) * marker.to(x.dtype)
        dtype = x.dtype
        mods, embedded = m.adaln((s.timesteps * cfg.timestep_scale_multiplier).flatten(), dtype)
        mods, embedded = mods.view(B, -1, mods.shape[-1]), embedded.view(B, -1, D)  # (B, T, rows*D), (B, T, D)
        sigma = _batch_sigma(s.sigma, B)
        prompt_mods = None
        if m.prompt_adaln is not None:
            prompt_mods = m.prompt_adaln((sigma * cfg.timestep_scale_multiplier).flatten(), dtype)[0].view(B, -1, 2 * D)
        context = s.context if m.caption_projection is None else m.caption_projection(s.context)
        rope_kw = dict(theta=cfg.positional_embedding_theta, layout=cfg.rope_type,
                       float64_grid=cfg.frequencies_precision == "float64", dtype=dtype)
        stream = _Stream(
            x=x, mods=mods, embedded=embedded, context=context.view(B, -1, D),
            context_bias=_context_bias(s.context_mask, dtype), self_bias=_self_attention_bias(s.attention_mask, dtype),
            rope=rope_table(s.positions, dim=D, num_heads=m.heads, max_pos=m.max_pos, **rope_kw),
            enabled=s.enabled, prompt_mods=prompt_mods,
        )
        if other is not None:
            # time axis only, at the A<->V width, split over this stream's heads; mid-points always
            stream.cross_rope = rope_table(s.positions[:, 0:1], dim=cfg.audio_cross_attention_dim, num_heads=m.heads,
                                           max_pos=(cfg.cross_max_pos,), **rope_kw)
            t = (_batch_sigma(other.sigma, B).view(B, 1) * cfg.timestep_scale_multiplier).flatten()  # (B,)
            stream.cross_mods = m.cross_adaln(t, dtype)[0].view(B, -1, 4 * D)
            gate_t = t * (cfg.av_ca_timestep_scale_multiplier / cfg.timestep_scale_multiplier)
            stream.cross_gate = m.cross_gate_adaln(gate_t, dtype)[0].view(B, -1, D)
        return stream

    def _head(self, s: _Stream, m: _StreamModules) -> Tensor:
        shift, scale = (m.scale_shift_table + s.embedded[:, :, None]).unbind(2)  # each (B, T, D)
        x = F.layer_norm(s.x, (s.x.shape[-1],), eps=self.cfg.norm_eps) * (1 + scale) + shift  # LayerNorm here
        return m.proj_out(x)  # (B, T, C_out)

    def forward(
        self, video: StreamInput | None, audio: StreamInput | None, perturb: Perturbations | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Velocities (video (B, T, C) | None, audio (B, Ta, Ca) | None); either stream may be absent."""
        if video is None and audio is None:
            raise ValueError("AVTransformer needs at least one of video and audio")
        mv, ma = self._stream_modules(True), self._stream_modules(False)
        v = self._prepare(video, audio, mv) if video is not None else None
        a = self._prepare(audio, video, ma) if audio is not None else None
        first = v if v is not None else a
        keeps = _block_keeps(perturb, self.cfg.num_layers, first.x.shape[0], first.x)
        for block, keep in zip(self.transformer_blocks, keeps):
            vx, ax = block(v, a, keep)
            # new stream records, never `v.x = vx`: a checkpointed block keeps a reference to the record it was
            # given and recomputes from it in backward, so mutating it would recompute from a later block's output
            v = replace(v, x=vx) if v is not None else None
            a = replace(a, x=ax) if a is not None else None
        return (self._head(v, mv) if v is not None else None, self._head(a, ma) if a is not None else None)


def _batch_sigma(sigma: Tensor, batch: int) -> Tensor:
    sigma = sigma.reshape(-1)
    if sigma.numel() == 1:
        return sigma.expand(batch)
    if sigma.numel() != batch:
        raise ValueError(f"sigma has {sigma.numel()} values for a batch of {batch} (give (B,) or one value)")
    return sigma


def _context_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    # (B, S) keep mask -> additive (B, 1, 1, S): 0 or -finfo.max, in the activation dtype (as the reference)
    if mask is None:
        return None
    if mask.is_floating_point():
        raise TypeError(f"context_mask must be bool or integer (nonzero = attend), got {mask.dtype}")
    return (mask.long() - 1).to(dtype).view(mask.shape[0], 1, 1, -1) * torch.finfo(dtype).max


def _self_attention_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    # (B, T, T) weights in [0, 1] -> additive log-space bias (B, 1, T, T); weight <= 0 -> finfo.min
    if mask is None:
        return None
    finfo = torch.finfo(dtype)
    return torch.where(mask > 0, torch.log(mask.clamp(min=finfo.tiny)).to(dtype), finfo.min).unsqueeze(1)
