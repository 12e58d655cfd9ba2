"""LTX-2.5's duration head (ltx.ltx2.duration) against diffusers 0.42.1's LTX2DurationHead on the same random
weights, its keys against the official file's layout, and the frame snapping against diffusers'
`predict_num_frames`."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ltx.ltx2.duration import DurationHead, DurationHeadConfig, duration_frames

CFG = DurationHeadConfig(video_dim=48, audio_dim=24, hidden=32, queries=2, heads=4, mlp_hidden=16)


def _ours(seed: int = 0) -> DurationHead:
    torch.manual_seed(seed)
    head = DurationHead(CFG).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape) / max(1, p.shape[-1]) ** 0.5)
    return head


class OfficialLayout(nn.Module):
    """The attribute layout of ltx-core's DurationHead (Lightricks/LTX-2 at 400fd31,
    packages/ltx-core/src/ltx_core/duration_head/duration_head.py): its pooler is a torch nn.MultiheadAttention
    named `cross_attn`. Used for the key names and as a second, independent attention reference."""

    def __init__(self, c: DurationHeadConfig):
        super().__init__()
        self.video_input_proj = nn.Linear(c.video_dim, c.hidden)
        self.video_modality_emb = nn.Parameter(torch.zeros(c.hidden))
        self.audio_input_proj = nn.Linear(c.audio_dim, c.hidden)
        self.audio_modality_emb = nn.Parameter(torch.zeros(c.hidden))
        self.attention_pooler = nn.Module()
        self.attention_pooler.query_tokens = nn.Parameter(torch.zeros(c.queries, c.hidden))
        self.attention_pooler.cross_attn = nn.MultiheadAttention(c.hidden, c.heads, batch_first=True)
        self.mlp_hidden = nn.Linear(c.hidden * c.queries, c.mlp_hidden)
        self.mlp_out = nn.Linear(c.mlp_hidden, 1)


def _diffusers(ours: DurationHead):
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    ref = LTX2DurationHead(video_cross_attention_dim=CFG.video_dim, audio_cross_attention_dim=CFG.audio_dim,
                           pooler_hidden_dim=CFG.hidden, num_queries=CFG.queries, num_pooler_heads=CFG.heads,
                           mlp_hidden_dim=CFG.mlp_hidden).eval()
    sd = dict(ours.state_dict())
    w, b = sd.pop("attention_pooler.cross_attn.in_proj_weight"), sd.pop("attention_pooler.cross_attn.in_proj_bias")
    for name, wi, bi in zip(("to_q", "to_k", "to_v"), w.chunk(3), b.chunk(3)):
        sd[f"attention_pooler.{name}.weight"], sd[f"attention_pooler.{name}.bias"] = wi, bi
    for kind in ("weight", "bias"):
        sd[f"attention_pooler.to_out.{kind}"] = sd.pop(f"attention_pooler.cross_attn.out_proj.{kind}")
    ref.load_state_dict(sd, strict=True)
    return ref


def _tokens(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 7, CFG.video_dim, generator=g), torch.randn(3, 5, CFG.audio_dim, generator=g)


def test_keys_and_shapes_are_the_official_layout():
    ours, official = DurationHead(CFG), OfficialLayout(CFG)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in official.state_dict().items()}


@pytest.mark.parametrize("streams", ["both", "video", "audio"])
def test_matches_diffusers(streams):
    ours = _ours()
    ref = _diffusers(ours)
    video, audio = _tokens()
    kw = {"both": dict(video=video, audio=audio), "video": dict(video=video), "audio": dict(audio=audio)}[streams]
    with torch.no_grad():
        a = ours(**kw)
        b = ref(video_tokens=kw.get("video"), audio_tokens=kw.get("audio"))
    assert a.shape == (3,) and (a > 0).all()
    assert (a - b).abs().max() <= 1e-6  # the same linear and SDPA calls: measured 0 on this CPU


def test_the_pooler_is_torch_multihead_attention():
    """The official pooler runs torch's nn.MultiheadAttention on these very tensors: ours gives the same output."""
    ours = _ours()
    official = OfficialLayout(CFG).eval()
    official.load_state_dict(ours.state_dict(), strict=True)
    tokens = torch.randn(2, 9, CFG.hidden)
    pool = official.attention_pooler
    with torch.no_grad():
        ref, _ = pool.cross_attn(pool.query_tokens.expand(2, -1, -1), tokens, tokens, need_weights=False)
        out = ours.attention_pooler(tokens)
    assert (out - ref).abs().max() <= 1e-6


def test_config_from_the_checkpoint_metadata():
    meta = {"transformer": {"cross_attention_dim": 4096, "audio_cross_attention_dim": 2048}}
    assert DurationHeadConfig.from_metadata(meta) == DurationHeadConfig()
    meta["duration_head"] = {"num_queries": 2, "mlp_hidden": 64}
    assert DurationHeadConfig.from_metadata(meta) == DurationHeadConfig(queries=2, mlp_hidden=64)
    with pytest.raises(ValueError, match="needs the video or the audio"):
        DurationHead(CFG)()


def test_frame_snapping_matches_diffusers_predict_num_frames():
    """`duration_frames` against diffusers' `predict_num_frames` (its head stubbed to return the duration) over
    durations inside, below and above the window, several frame rates and windows, one narrower than a grid step."""
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    ref = LTX2DurationHead(video_cross_attention_dim=8, audio_cross_attention_dim=8, pooler_hidden_dim=8,
                           num_pooler_heads=2, mlp_hidden_dim=8)
    cases = 0
    for seconds, fps, (lo, hi) in itertools.product(
            [0.01, 0.5, 0.99, 1.0, 1.02, 2.37, 4.99, 5.0, 7.77, 19.9, 25.0],
            [24.0, 25.0, 30.0, 23.976],
            [(1.0, 20.0), (0.5, 8.0), (1.0, 1.02), (2.0, 2.1)]):
        ref.forward = lambda *a, s=seconds, **k: torch.tensor([s])
        want = ref.predict_num_frames(torch.zeros(1, 1, 8), frame_rate=fps, temporal_compression_ratio=8,
                                      min_seconds=lo, max_seconds=hi)
        assert duration_frames(seconds, fps, 8, lo, hi) == want, (seconds, fps, lo, hi)
        cases += 1
    assert cases == 176
    with pytest.raises(ValueError, match="finite duration"):
        duration_frames(float("nan"), 24.0)
