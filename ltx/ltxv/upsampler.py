"""LTX-Video latent upsamplers: spatial x2 (`ltxv-spatial-upscaler-0.9.7/0.9.8`) and temporal x2
(`ltxv-temporal-upscaler-0.9.7`), the official "LatentUpsampler".

References: the official `ltx_video/models/autoencoders/latent_upsampler.py` (ltx-video 0.1.2) and
`pipelines/pipeline_ltx_video.py` (LTXMultiScalePipeline); diffusers `LTXLatentUpsamplerModel` has the same
key names and config.

Shapes: B batch · C latent channels (128) · F', H', W' latent grid · D = mid_channels (512).
Input and output are *raw* (un-normalized) latents: the multi-scale pipeline does
`normalize(upsampler(denormalize(z)))` with the VAE's statistics (`VideoVAE.normalize/denormalize`).
spatial: (B, C, F', H', W') -> (B, C, F', 2H', 2W'); the upsampling conv is 2D, applied per frame.
temporal: (B, C, F', H', W') -> (B, C, 2F' - 1, H', W') (the first of the doubled frames is dropped, which
keeps the causal 1 + 8k frame structure).

Network: conv 3x3x3 C -> D, GroupNorm(32), SiLU, `num_blocks_per_stage` ResBlocks, the x2 upsampler
(conv to 4D or 2D channels + depth-to-space), `num_blocks_per_stage` ResBlocks, conv D -> C.
ResBlock: conv -> GroupNorm -> SiLU -> conv -> GroupNorm, then SiLU(x + input).
Module names are the official checkpoint keys (the file has no prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.nn import UpsamplerTrunk


@dataclass(kw_only=True)
class UpsamplerConfig:
    """Defaults are the released spatial x2 upscaler (0.9.7 and 0.9.8 share this config)."""

    in_channels: int = 128  # latent channels
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    spatial: bool = True  # x2 in height and width
    temporal: bool = False  # x2 in time (F' -> 2F' - 1)

    def __post_init__(self):
        if self.spatial == self.temporal:
            raise ValueError(
                f"an upsampler is spatial or temporal (spatial={self.spatial}, temporal={self.temporal}); the "
                "released models are one or the other"
            )
        if self.mid_channels % 32:
            raise ValueError(f"mid_channels={self.mid_channels} must be a multiple of 32 (GroupNorm(32))")


UPSAMPLER_PRESETS: dict[str, UpsamplerConfig] = {
    "spatial-0.9.7": UpsamplerConfig(),
    "spatial-0.9.8": UpsamplerConfig(),
    "temporal-0.9.7": UpsamplerConfig(spatial=False, temporal=True),
}


class LatentUpsampler(UpsamplerTrunk):
    """The 0.9.x upsampler: the shared trunk (`ltx.core.nn.UpsamplerTrunk`) around a x2 spatial or temporal step."""

    def __init__(self, cfg: UpsamplerConfig):
        D = cfg.mid_channels
        # a list only so the key is upsampler.0.* (the official upsampler.1 is the parameter-free shuffle)
        conv = nn.Conv2d(D, 4 * D, 3, padding=1) if cfg.spatial else nn.Conv3d(D, 2 * D, 3, padding=1)
        super().__init__(cfg.in_channels, D, cfg.num_blocks_per_stage, nn.ModuleList([conv]))
        self.cfg = cfg

    def _upsample(self, x: Tensor) -> Tensor:
        B, D, Fr, H, W = x.shape
        conv = self.upsampler[0]
        if self.cfg.spatial:
            # the 2D conv per frame, as a (1, 3, 3) 3D conv: same numbers, no (B F) reshuffle of the input
            h = F.conv3d(x, conv.weight.unsqueeze(2), conv.bias, padding=(0, 1, 1))  # (B, 4D, F, H, W)
            h = h.reshape(B, D, 2, 2, Fr, H, W).permute(0, 1, 4, 5, 2, 6, 3)  # (B, D, F, H, 2, W, 2)
            return h.reshape(B, D, Fr, 2 * H, 2 * W)
        h = conv(x).reshape(B, D, 2, Fr, H, W).transpose(2, 3)  # (B, D, F, 2, H, W)
        return h.reshape(B, D, 2 * Fr, H, W)[:, :, 1:]  # (B, D, 2F - 1, H, W)
