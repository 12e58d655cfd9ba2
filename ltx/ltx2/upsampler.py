"""LTX-2 latent upsamplers: spatial x2 (pixel-shuffle or rational), spatial x1.5 (rational) and temporal x2.

References: the official `ltx_core/model/upsampler/` (`model.py::LatentUpsampler, upsample_video`,
`spatial_rational_resampler.py`, `blur_downsample.py`, `res_block.py`; ltx-core 1.0.0), which this matches
number for number (tests/ltx2/test_ltx2_upsampler.py). Digest: /work/shared/reference/ltx-2.md §4.5.
Released files: `ltx-2-spatial-upscaler-x2-1.0`, `ltx-2-temporal-upscaler-x2-1.0`, `ltx-2.3-spatial-upscaler-x2-1.x`,
`ltx-2.3-spatial-upscaler-x1.5-1.0`, `ltx-2.3-temporal-upscaler-x2-1.0`.

Shapes: B batch · C latent channels (128) · F', H', W' latent grid · D = mid_channels (1024 spatial, 512
temporal). The network maps *raw* (un-normalized) latents to raw latents; `upsample_latent` wraps it in the
VAE's per-channel statistics as the pipelines do.
- spatial x2:   (B, C, F', H', W') -> (B, C, F', 2H', 2W')
- spatial x1.5: (B, C, F', H', W') -> (B, C, F', ceil(3H'/2), ceil(3W'/2))
- temporal x2:  (B, C, F', H', W') -> (B, C, 2F' - 1, H', W') (the first of the doubled frames is dropped,
  keeping the causal 1 + 8k frame structure)

Network: conv 3x3x3 C -> D, GroupNorm(32), SiLU, `num_blocks_per_stage` ResBlocks, the upsampler,
`num_blocks_per_stage` ResBlocks, conv D -> C. ResBlock: conv -> GN -> SiLU -> conv -> GN, SiLU(x + input).
Upsamplers (spatial ones run per frame, in 2D):
- pixel-shuffle x2: conv D -> 4D, depth-to-space 2 (key `upsampler.0.*`);
- rational num/den: conv D -> num^2 D, depth-to-space num, then a 5x5 binomial blur with stride den (keys
  `upsampler.conv.*`, `upsampler.blur_down.kernel`; den = 1 for x2 makes the blur a no-op);
- temporal x2: conv3d D -> 2D, depth-to-space in time, drop frame 0 (key `upsampler.0.*`).
Module names are the file's keys (the upsampler files have no prefix); the metadata `config` is flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.nn import UpsamplerTrunk

RATIONAL_SCALES = {2.0: (2, 1), 1.5: (3, 2)}  # spatial_scale -> (up num, down den), the released ones
BLUR_KERNEL_SIZE = 5


@dataclass(kw_only=True)
class LatentUpsamplerConfig:
    """Defaults are the spatial x2 pixel-shuffle upsampler at the released width."""

    in_channels: int = 128  # latent channels
    mid_channels: int = 1024
    num_blocks_per_stage: int = 4
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False

    def __post_init__(self) -> None:
        self.spatial_scale = float(self.spatial_scale)
        if self.spatial_upsample == self.temporal_upsample:
            raise ValueError(
                f"upsampler spatial_upsample={self.spatial_upsample}, temporal_upsample="
                f"{self.temporal_upsample} is not supported (supported: exactly one of them True)"
            )
        if self.spatial_upsample and self.rational_resampler and self.spatial_scale not in RATIONAL_SCALES:
            raise ValueError(
                f"upsampler spatial_scale={self.spatial_scale} is not supported with the rational "
                f"resampler (supported: {sorted(RATIONAL_SCALES)})"
            )
        if self.spatial_upsample and not self.rational_resampler and self.spatial_scale != 2.0:
            raise ValueError(
                f"upsampler spatial_scale={self.spatial_scale} needs rational_resampler=True (the "
                "pixel-shuffle upsampler is x2 only)"
            )
        if self.mid_channels < 32 or self.mid_channels % 32:
            raise ValueError(f"upsampler mid_channels={self.mid_channels} must be a multiple of 32 (GroupNorm(32))")
        if self.in_channels < 1 or self.num_blocks_per_stage < 0:
            raise ValueError(f"upsampler sizes must be positive: {self}")

    @property
    def kind(self) -> str:
        """ "pixel_shuffle", "rational" or "temporal"."""
        if self.temporal_upsample:
            return "temporal"
        return "rational" if self.rational_resampler else "pixel_shuffle"

    @classmethod
    def from_metadata(cls, d: dict) -> LatentUpsamplerConfig:
        """The upsampler file's flat metadata `config` -> config (ltx-core's defaults for absent keys; keys
        ltx-core does not read are ignored)."""
        if d.get("dims", 3) != 3:
            raise ValueError(f"upsampler dims={d['dims']!r} is not supported (supported: 3)")
        return cls(
            in_channels=d.get("in_channels", 128),
            mid_channels=d.get("mid_channels", 512),
            num_blocks_per_stage=d.get("num_blocks_per_stage", 4),
            spatial_upsample=d.get("spatial_upsample", True),
            temporal_upsample=d.get("temporal_upsample", False),
            spatial_scale=d.get("spatial_scale", 2.0),
            rational_resampler=d.get("rational_resampler", False),
        )

    def to_metadata(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "mid_channels": self.mid_channels,
            "num_blocks_per_stage": self.num_blocks_per_stage,
            "dims": 3,
            "spatial_upsample": self.spatial_upsample,
            "temporal_upsample": self.temporal_upsample,
            "spatial_scale": self.spatial_scale,
            "rational_resampler": self.rational_resampler,
        }


UPSAMPLER_PRESETS: dict[str, LatentUpsamplerConfig] = {
    "spatial-x2": LatentUpsamplerConfig(),
    "spatial-x2-rational": LatentUpsamplerConfig(rational_resampler=True),
    "spatial-x1.5": LatentUpsamplerConfig(rational_resampler=True, spatial_scale=1.5),
    "temporal-x2": LatentUpsamplerConfig(mid_channels=512, spatial_upsample=False, temporal_upsample=True),
}


# ------------------------------------------------------------------------------------------------ layers


def per_frame(x: Tensor, fn) -> Tensor:
    """Apply a 2D op to every frame: (B, D, F, H, W) -> (B, D', F, H', W')."""
    B, D, Fr, H, W = x.shape
    y = fn(x.transpose(1, 2).reshape(B * Fr, D, H, W))  # (B F, D', H', W')
    return y.reshape(B, Fr, *y.shape[1:]).transpose(1, 2)


def shuffle_2d(x: Tensor, r: int) -> Tensor:
    """b (c p1 p2) h w -> b c (h p1) (w p2) (torch's pixel_shuffle)."""
    return F.pixel_shuffle(x, r)


class BlurDown(nn.Module):
    """Depthwise 5x5 binomial blur ([1, 4, 6, 4, 1] outer product, sum 1) with stride `stride`, zero padding 2;
    the identity for stride 1. The kernel is a persistent buffer (key `kernel`, in the file)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        k = torch.tensor([math.comb(BLUR_KERNEL_SIZE - 1, i) for i in range(BLUR_KERNEL_SIZE)], dtype=torch.float32)
        self.register_buffer("kernel", (torch.outer(k, k) / k.sum() ** 2)[None, None])  # (1, 1, 5, 5)

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, D, H, W) -> (N, D, ceil(H / stride), ceil(W / stride))
        if self.stride == 1:
            return x
        D = x.shape[1]
        weight = self.kernel.to(x).expand(D, 1, BLUR_KERNEL_SIZE, BLUR_KERNEL_SIZE)
        return F.conv2d(x, weight, stride=self.stride, padding=BLUR_KERNEL_SIZE // 2, groups=D)


class RationalResampler(nn.Module):
    """Spatial x num/den per frame: conv D -> num^2 D, depth-to-space num, blur-downsample by den."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.num, den = RATIONAL_SCALES[scale]
        self.conv = nn.Conv2d(channels, self.num**2 * channels, 3, padding=1)
        self.blur_down = BlurDown(den)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, D, F, H, W) -> (B, D, F, H num / den, W num / den)
        return per_frame(x, lambda f: self.blur_down(shuffle_2d(self.conv(f), self.num)))


class LatentUpsampler2(UpsamplerTrunk):
    """LTX-2 latent upsampler (official `LatentUpsampler`, dims 3): the shared trunk (`ltx.core.nn.UpsamplerTrunk`)
    around a pixel-shuffle, rational or temporal step; raw latents -> raw upsampled latents."""

    def __init__(self, cfg: LatentUpsamplerConfig):
        D = cfg.mid_channels
        if cfg.kind == "rational":
            upsampler = RationalResampler(D, cfg.spatial_scale)
        elif cfg.kind == "pixel_shuffle":  # a list so the key is upsampler.0.* (official upsampler.1 = shuffle)
            upsampler = nn.ModuleList([nn.Conv2d(D, 4 * D, 3, padding=1)])
        else:
            upsampler = nn.ModuleList([nn.Conv3d(D, 2 * D, 3, padding=1)])
        super().__init__(cfg.in_channels, D, cfg.num_blocks_per_stage, upsampler)
        self.cfg = cfg

    def _upsample(self, x: Tensor) -> Tensor:
        # x: (B, D, F', H', W')
        kind = self.cfg.kind
        if kind == "rational":
            return self.upsampler(x)
        conv = self.upsampler[0]
        if kind == "pixel_shuffle":
            return per_frame(x, lambda f: shuffle_2d(conv(f), 2))  # (B, D, F', 2H', 2W')
        B, D, Fr, H, W = x.shape
        h = conv(x).reshape(B, D, 2, Fr, H, W).transpose(2, 3)  # (B, D, F', 2, H', W'): b (c p) f -> b c (f p)
        return h.reshape(B, D, 2 * Fr, H, W)[:, :, 1:]  # (B, D, 2F' - 1, H', W')


def upsample_latent(upsampler: LatentUpsampler2, latent: Tensor, stats_mean: Tensor, stats_std: Tensor) -> Tensor:
    """Normalized latents -> normalized upsampled latents: un-normalize with the video VAE's per-channel
    statistics (`VideoVAE.per_channel_statistics.mean / .std`), upsample, re-normalize (ltx-core upsample_video)."""
    mean = stats_mean.view(1, -1, 1, 1, 1).to(latent)
    std = stats_std.view(1, -1, 1, 1, 1).to(latent)
    return (upsampler(latent * std + mean) - mean) / std
