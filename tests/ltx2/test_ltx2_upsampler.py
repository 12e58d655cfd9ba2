"""LTX-2 latent upsamplers (ltx/ltx2/upsampler.py) against ltx-core 1.0.0's LatentUpsampler + upsample_video.

Every released variant: tiny random-weight parity (fp32, CPU), full-size key/shape equality on meta, and
metadata round trips / errors.
"""

from __future__ import annotations

import pytest
import torch
from ltx_core.model.upsampler import LatentUpsamplerConfigurator, upsample_video

from ltx.ltx2.upsampler import UPSAMPLER_PRESETS, LatentUpsampler2, LatentUpsamplerConfig, upsample_latent

# Flat metadata of the released upsampler files (digest §4.5).
_BASE = {"in_channels": 128, "num_blocks_per_stage": 4, "dims": 3}
METAS = {
    "spatial-x2": {**_BASE, "mid_channels": 1024, "spatial_upsample": True, "temporal_upsample": False,
                   "spatial_scale": 2.0, "rational_resampler": False},
    "spatial-x2-rational": {**_BASE, "mid_channels": 1024, "spatial_upsample": True, "temporal_upsample": False,
                            "spatial_scale": 2.0, "rational_resampler": True},
    "spatial-x1.5": {**_BASE, "mid_channels": 1024, "spatial_upsample": True, "temporal_upsample": False,
                     "spatial_scale": 1.5, "rational_resampler": True},
    "temporal-x2": {**_BASE, "mid_channels": 512, "spatial_upsample": False, "temporal_upsample": True,
                    "spatial_scale": 2.0, "rational_resampler": False},
}  # fmt: skip
OUT_SHAPES = {"spatial-x2": (2, 8, 3, 8, 10), "spatial-x2-rational": (2, 8, 3, 8, 10),
              "spatial-x1.5": (2, 8, 3, 6, 8), "temporal-x2": (2, 8, 5, 4, 5)}  # fmt: skip


class _Stats(torch.nn.Module):
    """Stand-in for the reference VideoEncoder: upsample_video only reads its per_channel_statistics."""

    def __init__(self, stats):
        super().__init__()
        self.per_channel_statistics = stats


@pytest.mark.parametrize("variant", list(METAS))
def test_tiny_parity(variant):
    meta = {**METAS[variant], "in_channels": 8, "mid_channels": 32, "num_blocks_per_stage": 1}
    gen = torch.Generator().manual_seed(1)
    ref = LatentUpsamplerConfigurator.from_config(meta)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # random weights, GroupNorm affine included
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if "norm" in name and "weight" in name else 0))
    ours = LatentUpsampler2(LatentUpsamplerConfig.from_metadata(meta))
    ours.load_state_dict(ref.state_dict(), strict=True)

    from ltx_core.model.video_vae.ops import PerChannelStatistics

    stats = PerChannelStatistics(8)
    mean, std = torch.randn(8, generator=gen) * 0.5, torch.rand(8, generator=gen) + 0.5
    stats.get_buffer("mean-of-means").copy_(mean)
    stats.get_buffer("std-of-means").copy_(std)
    z = torch.randn(2, 8, 3, 4, 5, generator=gen)
    with torch.no_grad():
        want = upsample_video(z, _Stats(stats), ref)
        got = upsample_latent(ours, z, mean, std)
    assert got.shape == want.shape == OUT_SHAPES[variant]
    diff = ((got - want).abs().max() / want.abs().max().clamp(min=1.0)).item()
    assert diff <= 1e-5, diff


@pytest.mark.parametrize("variant", list(METAS))
def test_full_size_keys_and_shapes(variant):
    meta = METAS[variant]
    with torch.device("meta"):
        ref = LatentUpsamplerConfigurator.from_config(meta)
        ours = LatentUpsampler2(LatentUpsamplerConfig.from_metadata(meta))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    cfg = LatentUpsamplerConfig.from_metadata(meta)
    assert cfg == UPSAMPLER_PRESETS[variant]
    assert LatentUpsamplerConfig.from_metadata(cfg.to_metadata()) == cfg
    with torch.device("meta"):
        again = LatentUpsamplerConfigurator.from_config(cfg.to_metadata())
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_blur_kernel_matches_reference():
    ref = LatentUpsamplerConfigurator.from_config({**METAS["spatial-x1.5"], "mid_channels": 32})
    ours = LatentUpsampler2(LatentUpsamplerConfig.from_metadata({**METAS["spatial-x1.5"], "mid_channels": 32}))
    assert torch.equal(ours.upsampler.blur_down.kernel, ref.upsampler.blur_down.kernel)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"spatial_upsample": True, "temporal_upsample": True}, "exactly one of them True"),
        ({"spatial_upsample": False, "temporal_upsample": False}, "exactly one of them True"),
        ({"rational_resampler": True, "spatial_scale": 4.0}, "spatial_scale=4.0 is not supported"),
        ({"rational_resampler": False, "spatial_scale": 1.5}, "needs rational_resampler=True"),
        ({"dims": 2}, "dims=2 is not supported"),
        ({"mid_channels": 100}, "multiple of 32"),
    ],
)
def test_bad_metadata(change, message):
    with pytest.raises(ValueError) as err:
        LatentUpsamplerConfig.from_metadata({**METAS["spatial-x2"], **change})
    assert message in str(err.value)


def test_bad_input():
    ours = LatentUpsampler2(LatentUpsamplerConfig(in_channels=8, mid_channels=32, num_blocks_per_stage=1))
    with pytest.raises(ValueError, match="takes"):
        ours(torch.zeros(1, 16, 2, 4, 4))
