"""LTX-2 video VAE: the 19B layout (LTX-Video 0.9.5 topology, no timestep conditioning) and the LTX-2.3 layout.

References: HaCohen et al., "LTX-2" (arXiv 2601.03233); the official `ltx_core/model/video_vae/`
(`video_vae.py::VideoEncoder/VideoDecoder`, `sampling.py`, `resnet.py`, `ops.py`; ltx-core 1.0.0), which this
matches number for number (tests/ltx2/test_ltx2_video_vae.py). Digest: /work/shared/reference/ltx-2.md §3.1.

Shapes: B batch · F pixel frames (8k + 1) · H, W pixels (multiples of 32) · C latent channels (128) ·
F', H', W' latent grid = (F - 1) / 8 + 1, H / 32, W / 32.
pixels: (B, 3, F, H, W) in [-1, 1]. latents: (B, C, F', H', W'), per-channel normalized.

Layouts (`VIDEO_VAE_PRESETS`) are block lists in the official vocabulary (`VAEBlock`), both written from the
pixels' side; the decoder runs its list reversed.
- 19B: encoder 128 -> 2048 channels through four space-to-depth downsamplers; decoder 1024 -> 128 through
  three residual depth-to-space x2 (t, h, w) upsamplers. Decoder spatial padding "reflect".
- 2.3: encoder capped at 1024 channels (the last downsampler keeps the width); decoder with separate space /
  time upsamplers, none residual. Spatial padding "zeros" in both halves.

Conventions (as ltx-core):
- Patchify 4x4: `b c f (h q) (w r) -> b (c r q) f h w` (channel = c*16 + w_offset*4 + h_offset).
- Every conv is 3x3x3 with time padded by repeating edge frames: the encoder is causal (frame 0 twice in
  front), the decoder is not (first frame once in front, last once behind). Space is padded by the conv.
- The encoder emits C means + 1 shared ("uniform") log-variance; `encode` returns the posterior mean,
  normalized z_n = (z - mean-of-means) / std-of-means; `decode` takes z_n. No sampling, no decode noise.
- Decoder width at the latent side is 8 * decoder_base_channels whatever the block list (ltx-core's rule).

Module names are the official checkpoint keys after stripping `vae.` (e.g.
`encoder.down_blocks.1.conv.conv.weight`, `decoder.up_blocks.1.conv.conv.weight`), so the file's `vae.*`
tensors load strictly. ltx-core keeps the statistics inside its encoder and decoder and reads only
`mean-of-means` / `std-of-means`; here one `per_channel_statistics` module holds them as buffers under the
file's names, together with the two the file also carries and nobody reads (`channel`, `mean-of-stds`), so a
strict load of every `vae.*` tensor works (`extra_statistics=False` drops those two).

`tiled_decode` decodes overlapping tiles and blends them with linear ramps, as ltx-core's `tiled_decode`
(the CLI pipelines decode tiled; the result differs from `decode` near tile seams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core import shapes
from ltx.core.nn import LatentStatistics

PIXEL_NORM_EPS = 1e-8
USED_STATISTICS = ("mean-of-means", "std-of-means")
EXTRA_STATISTICS = ("channel", "mean-of-stds")  # in the file, never read
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# Block kinds of the released layouts -> stride (time, height, width). res_x keeps the grid.
ENCODER_STRIDES = {"res_x": (1, 1, 1), "compress_space_res": (1, 2, 2), "compress_time_res": (2, 1, 1),
                   "compress_all_res": (2, 2, 2)}  # fmt: skip
DECODER_STRIDES = {"res_x": (1, 1, 1), "compress_space": (1, 2, 2), "compress_time": (2, 1, 1),
                   "compress_all": (2, 2, 2)}  # fmt: skip

# The metadata keys ltx-core reads that have one supported value here (value when the key is absent, as the
# ltx-core configurators default it; timestep_conditioning defaults to True there, which we refuse).
_FIXED_KEYS = {"dims": (3, 3), "norm_layer": ("pixel_norm", "pixel_norm"), "latent_log_var": ("uniform", "uniform"),
               "causal_decoder": (False, False), "timestep_conditioning": (False, True)}  # fmt: skip


@dataclass(kw_only=True)
class VAEBlock:
    """One block-list entry with the official per-kind defaults filled in.

    res_x: `num_layers` residual blocks at constant width.
    compress_{space,time,all}_res (encoder): space-to-depth with an averaged skip; width x `multiplier`.
    compress_{space,time,all} (decoder): conv + depth-to-space; width / `multiplier`; `residual` (compress_all
        only) adds the shuffled input.
    """

    name: str
    num_layers: int = 1
    multiplier: int = 1
    residual: bool = False


def _enc(*spec: tuple[str, int]) -> list[VAEBlock]:
    return [VAEBlock(name=n, num_layers=v) if n == "res_x" else VAEBlock(name=n, multiplier=v) for n, v in spec]


def _dec(*spec: tuple[str, int, bool]) -> list[VAEBlock]:
    return [VAEBlock(name=n, num_layers=v) if n == "res_x" else VAEBlock(name=n, multiplier=v, residual=r)
            for n, v, r in spec]  # fmt: skip


_ENC_19B = _enc(("res_x", 4), ("compress_space_res", 2), ("res_x", 6), ("compress_time_res", 2), ("res_x", 6),
                ("compress_all_res", 2), ("res_x", 2), ("compress_all_res", 2), ("res_x", 2))  # fmt: skip
_DEC_19B = _dec(("res_x", 5, False), ("compress_all", 2, True), ("res_x", 5, False), ("compress_all", 2, True),
                ("res_x", 5, False), ("compress_all", 2, True), ("res_x", 5, False))  # fmt: skip
_ENC_23 = _enc(("res_x", 4), ("compress_space_res", 2), ("res_x", 6), ("compress_time_res", 2), ("res_x", 4),
               ("compress_all_res", 2), ("res_x", 2), ("compress_all_res", 1), ("res_x", 2))  # fmt: skip
_DEC_23 = _dec(("res_x", 4, False), ("compress_space", 2, False), ("res_x", 6, False), ("compress_time", 2, False),
               ("res_x", 4, False), ("compress_all", 1, False), ("res_x", 2, False), ("compress_all", 2, False),
               ("res_x", 2, False))  # fmt: skip


@dataclass(kw_only=True)
class VideoVAEConfig:
    """Defaults are the 19B VAE. `from_metadata` reads the checkpoint's `config["vae"]`."""

    encoder_blocks: list[VAEBlock] = field(default_factory=lambda: list(_ENC_19B))
    decoder_blocks: list[VAEBlock] = field(default_factory=lambda: list(_DEC_19B))  # official order (reversed)
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128  # also the encoder's conv_in width (ltx-core's rule)
    patch_size: int = 4
    decoder_base_channels: int = 128  # decoder conv_in width = 8x this
    encoder_spatial_padding_mode: str = "zeros"
    decoder_spatial_padding_mode: str = "reflect"
    extra_statistics: bool = True  # hold `channel` and `mean-of-stds` too (the official file has them)

    def __post_init__(self) -> None:
        self.encoder_blocks = [b if isinstance(b, VAEBlock) else VAEBlock(**b) for b in self.encoder_blocks]
        self.decoder_blocks = [b if isinstance(b, VAEBlock) else VAEBlock(**b) for b in self.decoder_blocks]
        for half, mode in (("encoder", self.encoder_spatial_padding_mode),
                           ("decoder", self.decoder_spatial_padding_mode)):  # fmt: skip
            if mode not in PADDING_MODES:
                raise ValueError(f"vae {half} spatial padding {mode!r} is not supported (supported: {PADDING_MODES})")
        pads = (self.encoder_spatial_padding_mode, self.decoder_spatial_padding_mode)
        if pads[0] != pads[1] and pads != ("zeros", "reflect"):
            raise ValueError(
                f"vae padding (encoder, decoder) = {pads} cannot be written as metadata: the official "
                "config has one spatial_padding_mode for both, or none for ('zeros', 'reflect')"
            )
        if min(self.in_channels, self.out_channels, self.latent_channels, self.patch_size,
               self.decoder_base_channels) < 1:  # fmt: skip
            raise ValueError(f"vae sizes must be positive: {self}")
        width = self.latent_channels
        for b in self.encoder_blocks:
            if b.name not in ENCODER_STRIDES:
                raise ValueError(f"vae encoder block {b.name!r} is not supported (supported: {tuple(ENCODER_STRIDES)})")
            if b.residual or b.num_layers < 1 or b.multiplier < 1:
                raise ValueError(f"vae encoder block {b} needs num_layers >= 1, multiplier >= 1, no residual")
            if b.name != "res_x":
                s, out = math.prod(ENCODER_STRIDES[b.name]), width * b.multiplier
                if out % s or (width * s) % out:
                    raise ValueError(
                        f"vae encoder {b.name} x{b.multiplier} at {width} channels: {out} output channels "
                        f"must be a multiple of the stride volume {s} and divide {width * s}"
                    )
                width = out
        width = 8 * self.decoder_base_channels
        for b in reversed(self.decoder_blocks):
            if b.name not in DECODER_STRIDES:
                raise ValueError(f"vae decoder block {b.name!r} is not supported (supported: {tuple(DECODER_STRIDES)})")
            if b.num_layers < 1 or b.multiplier < 1 or (b.residual and b.name != "compress_all"):
                raise ValueError(
                    f"vae decoder block {b} needs num_layers >= 1, multiplier >= 1 and residual only on compress_all"
                )
            if b.name != "res_x":
                s = math.prod(DECODER_STRIDES[b.name])
                if (width * s) % b.multiplier or (b.residual and (width % s or s % b.multiplier)):
                    raise ValueError(f"vae decoder {b.name} x{b.multiplier} does not divide {width} channels evenly")
                width //= b.multiplier

    # ------------------------------------------------------------------------------------------ metadata

    @classmethod
    def from_metadata(cls, d: dict) -> VideoVAEConfig:
        """The checkpoint's `config["vae"]` sub-dict -> config. Keys ltx-core does not read are ignored (as there);
        values we do not implement raise ValueError."""
        for key, (supported, absent) in _FIXED_KEYS.items():
            value = d.get(key, absent)
            if value != supported:
                why = " (absent, and ltx-core defaults it to True)" if key not in d else ""
                raise ValueError(f"vae.{key}={value!r}{why} is not supported (supported: {supported!r})")
        pad = d.get("spatial_padding_mode")
        return cls(
            encoder_blocks=[_block_from_metadata(e, "encoder") for e in d.get("encoder_blocks", [])],
            decoder_blocks=[_block_from_metadata(e, "decoder") for e in d.get("decoder_blocks", [])],
            in_channels=d.get("in_channels", 3),
            out_channels=d.get("out_channels", 3),
            latent_channels=d.get("latent_channels", 128),
            patch_size=d.get("patch_size", 4),
            decoder_base_channels=d.get("decoder_base_channels", 128),
            encoder_spatial_padding_mode=pad or "zeros",  # ltx-core's per-half defaults when the key is absent
            decoder_spatial_padding_mode=pad or "reflect",
        )

    def to_metadata(self) -> dict:
        """Config -> an official-style `config["vae"]` dict (read back by `from_metadata` and ltx-core)."""
        d = {
            "dims": 3,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "latent_channels": self.latent_channels,
            "encoder_blocks": [_block_to_metadata(b, "encoder") for b in self.encoder_blocks],
            "decoder_blocks": [_block_to_metadata(b, "decoder") for b in self.decoder_blocks],
            "patch_size": self.patch_size,
            "norm_layer": "pixel_norm",
            "latent_log_var": "uniform",
            "causal_decoder": False,
            "timestep_conditioning": False,
            "decoder_base_channels": self.decoder_base_channels,
        }
        if self.encoder_spatial_padding_mode == self.decoder_spatial_padding_mode:
            d["spatial_padding_mode"] = self.encoder_spatial_padding_mode
        return d

    # ------------------------------------------------------------------------------------------ geometry

    @property
    def temporal_factor(self) -> int:
        return math.prod(ENCODER_STRIDES[b.name][0] for b in self.encoder_blocks)

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * math.prod(ENCODER_STRIDES[b.name][1] for b in self.encoder_blocks)

    @property
    def scale(self) -> tuple[int, int, int]:
        """Pixel (frames, rows, columns) per latent voxel: (8, 32, 32) for every released VAE."""
        return self.temporal_factor, self.spatial_factor, self.spatial_factor


def _block_from_metadata(entry: list | tuple, half: str) -> VAEBlock:
    """["res_x", {"num_layers": 4}] / ["compress_all", {"residual": true, "multiplier": 2}] / ["res_x", 4]."""
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ValueError(f"vae.{half}_blocks entry {entry!r} is not a [name, params] pair")
    name, params = entry
    params = {"num_layers": params} if isinstance(params, int) else dict(params)
    strides = ENCODER_STRIDES if half == "encoder" else DECODER_STRIDES
    if name not in strides:
        raise ValueError(f"vae.{half}_blocks: block {name!r} is not supported (supported: {tuple(strides)})")
    if params.pop("inject_noise", False):
        raise ValueError(f"vae.{half}_blocks: {name} inject_noise=True is not supported (supported: False)")
    if name == "res_x":
        allowed = {"num_layers"}
        block = VAEBlock(name=name, num_layers=params.get("num_layers", 1))
    elif half == "encoder":  # ltx-core: encoder downsamplers default to x2 channels, decoder upsamplers to x1
        allowed = {"num_layers", "multiplier"}
        block = VAEBlock(name=name, multiplier=params.get("multiplier", 2))
    else:
        allowed = {"multiplier", "residual"} if name == "compress_all" else {"multiplier"}
        block = VAEBlock(name=name, multiplier=params.get("multiplier", 1), residual=params.get("residual", False))
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"vae.{half}_blocks: {name} parameters {sorted(unknown)} are not supported (supported: {sorted(allowed)})"
        )
    return block


def _block_to_metadata(b: VAEBlock, half: str) -> list:
    if b.name == "res_x":
        return [b.name, {"num_layers": b.num_layers}]
    if half == "decoder" and b.name == "compress_all":
        return [b.name, {"residual": b.residual, "multiplier": b.multiplier}]
    return [b.name, {"multiplier": b.multiplier}]


VIDEO_VAE_PRESETS: dict[str, VideoVAEConfig] = {
    "ltx-2-19b": VideoVAEConfig(),
    "ltx-2.3-22b": VideoVAEConfig(
        encoder_blocks=list(_ENC_23), decoder_blocks=list(_DEC_23), decoder_spatial_padding_mode="zeros"
    ),  # fmt: skip
}


# ------------------------------------------------------------------------------------------------ validation


def check_pixel_shape(shape: tuple[int, ...], cfg: VideoVAEConfig) -> None:
    """Raise a ValueError naming the nearest valid sizes unless `shape` is (B, 3, 8k + 1, 32m, 32n)."""
    shapes.check_pixel_shape(shape, channels=cfg.in_channels, temporal_factor=cfg.temporal_factor,
                             spatial_factor=cfg.spatial_factor)


def check_latent_shape(shape: tuple[int, ...], cfg: VideoVAEConfig) -> None:
    shapes.check_latent_shape(shape, channels=cfg.latent_channels)


# ------------------------------------------------------------------------------------------------ layers


def pixel_norm(x: Tensor) -> Tensor:
    """x / sqrt(mean over channels of x^2 + 1e-8); no parameters (official PixelNorm, video eps)."""
    return x / torch.sqrt(torch.mean(x * x, dim=1, keepdim=True) + PIXEL_NORM_EPS)


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """b c (f p1) (h p2) (w p3) -> b (c p1 p2 p3) f h w."""
    B, C, Fr, H, W = x.shape
    p1, p2, p3 = stride
    x = x.reshape(B, C, Fr // p1, p1, H // p2, p2, W // p3, p3)  # (B, C, f, p1, h, p2, w, p3)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(B, C * p1 * p2 * p3, Fr // p1, H // p2, W // p3)


def depth_to_space(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """b (c p1 p2 p3) f h w -> b c (f p1) (h p2) (w p3)."""
    B, C, Fr, H, W = x.shape
    p1, p2, p3 = stride
    c = C // (p1 * p2 * p3)
    x = x.reshape(B, c, p1, p2, p3, Fr, H, W).permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, c, F, p1, H, p2, W, p3)
    return x.reshape(B, c, Fr * p1, H * p2, W * p3)


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, F, H, W) -> (B, C p^2, F, H / p, W / p); channel = c p^2 + w_offset p + h_offset."""
    B, C, Fr, H, W = x.shape
    x = x.reshape(B, C, Fr, H // p, p, W // p, p)  # (B, C, F, h, q, w, r)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(B, C * p * p, Fr, H // p, W // p)


def unpatchify(x: Tensor, p: int) -> Tensor:
    """Inverse of `patchify`: (B, C p^2, F, H, W) -> (B, C, F, H p, W p)."""
    B, C, Fr, H, W = x.shape
    x = x.reshape(B, C // (p * p), p, p, Fr, H, W)  # (B, c, r = w_offset, q = h_offset, F, H, W)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(B, C // (p * p), Fr, H * p, W * p)


class CausalConv3d(nn.Module):
    """3x3x3 conv; time is padded by repeating edge frames (causal: frame 0 twice in front; otherwise the
    first frame in front and the last behind), space by the conv itself (`padding_mode`). Key: conv.*"""

    def __init__(self, c_in: int, c_out: int, padding_mode: str):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, padding=(0, 1, 1), padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        # x: (B, C_in, F, H, W) -> (B, C_out, F, H, W)
        front, back = (2, 0) if causal else (1, 1)
        x = torch.cat([x[:, :, :1]] * front + [x] + [x[:, :, -1:]] * back, dim=2)  # (B, C_in, F + 2, H, W)
        return self.conv(x)


class ResBlock(nn.Module):
    """PixelNorm -> SiLU -> conv1 -> PixelNorm -> SiLU -> conv2, plus the input (official ResnetBlock3D at
    constant width, no timestep conditioning or noise injection)."""

    def __init__(self, channels: int, padding_mode: str):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, padding_mode)
        self.conv2 = CausalConv3d(channels, channels, padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        h = self.conv1(F.silu(pixel_norm(x)), causal)
        h = self.conv2(F.silu(pixel_norm(h)), causal)
        return x + h


class ResStack(nn.Module):
    """`res_x`: residual blocks at constant width (official UNetMidBlock3D; key res_blocks.{i}.*)."""

    def __init__(self, channels: int, num_layers: int, padding_mode: str):
        super().__init__()
        self.res_blocks = nn.ModuleList(ResBlock(channels, padding_mode) for _ in range(num_layers))

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        for block in self.res_blocks:
            x = block(x, causal)
        return x


class SpaceToDepthDown(nn.Module):
    """Encoder `compress_*_res`: conv to C_out / s channels then space-to-depth (s = stride volume), plus the
    space-to-depth input averaged over groups of C_in s / C_out channels. A temporal stride first repeats
    frame 0, so 8k+1 frames become 4k+1."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int], padding_mode: str):
        super().__init__()
        self.stride = stride
        self.group = c_in * math.prod(stride) // c_out
        self.conv = CausalConv3d(c_in, c_out // math.prod(stride), padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        # x: (B, C_in, F, H, W) -> (B, C_out, F / st, H / sh, W / sw)
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)  # (B, C_in, F + 1, H, W)
        skip = space_to_depth(x, self.stride).unflatten(1, (-1, self.group)).mean(2)  # (B, C_out, ...)
        return space_to_depth(self.conv(x, causal), self.stride) + skip


class DepthToSpaceUp(nn.Module):
    """Decoder `compress_*`: conv to s C / multiplier channels then depth-to-space (s = stride volume); a
    temporal stride drops the first frame (F -> 2F - 1). `residual` adds the depth-to-spaced input tiled
    (`repeat`) up to the new width."""

    def __init__(self, channels: int, stride: tuple[int, int, int], multiplier: int, residual: bool,
                 padding_mode: str):  # fmt: skip
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = math.prod(stride) // multiplier
        self.conv = CausalConv3d(channels, math.prod(stride) * channels // multiplier, padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        # x: (B, C, F, H, W) -> (B, C / multiplier, st F (- 1), sh H, sw W)
        h = depth_to_space(self.conv(x, causal), self.stride)
        if self.residual:
            h = h + depth_to_space(x, self.stride).repeat(1, self.repeats, 1, 1, 1)
        return h[:, :, 1:] if self.stride[0] == 2 else h


# ------------------------------------------------------------------------------------------------ encoder / decoder


class Encoder(nn.Module):
    """pixels (B, 3, F, H, W) -> (B, C + 1, F', H', W'): C posterior means + 1 shared log-variance. Causal."""

    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        pad = cfg.encoder_spatial_padding_mode
        self.patch_size = cfg.patch_size
        width = cfg.latent_channels
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, width, pad)
        self.down_blocks = nn.ModuleList()
        for b in cfg.encoder_blocks:
            if b.name == "res_x":
                self.down_blocks.append(ResStack(width, b.num_layers, pad))
            else:
                self.down_blocks.append(SpaceToDepthDown(width, width * b.multiplier, ENCODER_STRIDES[b.name], pad))
                width *= b.multiplier
        self.conv_out = CausalConv3d(width, cfg.latent_channels + 1, pad)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(patchify(x, self.patch_size), causal=True)  # (B, C, F, H/4, W/4)
        for block in self.down_blocks:
            h = block(h, causal=True)  # (B, C_i, F_i, H_i, W_i)
        return self.conv_out(F.silu(pixel_norm(h)), causal=True)  # (B, C + 1, F', H', W')


class Decoder(nn.Module):
    """un-normalized latents (B, C, F', H', W') -> pixels (B, 3, 8(F'-1)+1, 32H', 32W'). Non-causal."""

    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        pad = cfg.decoder_spatial_padding_mode
        self.patch_size = cfg.patch_size
        width = 8 * cfg.decoder_base_channels
        self.conv_in = CausalConv3d(cfg.latent_channels, width, pad)
        self.up_blocks = nn.ModuleList()
        for b in reversed(cfg.decoder_blocks):
            if b.name == "res_x":
                self.up_blocks.append(ResStack(width, b.num_layers, pad))
            else:
                self.up_blocks.append(DepthToSpaceUp(width, DECODER_STRIDES[b.name], b.multiplier, b.residual, pad))
                width //= b.multiplier
        self.conv_out = CausalConv3d(width, cfg.out_channels * cfg.patch_size**2, pad)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z, causal=False)  # (B, 8 base, F', H', W')
        for block in self.up_blocks:
            h = block(h, causal=False)
        h = self.conv_out(F.silu(pixel_norm(h)), causal=False)  # (B, 3 p^2, F, H/4, W/4)
        return unpatchify(h, self.patch_size)



# ------------------------------------------------------------------------------------------------ tiling


@dataclass(kw_only=True)
class DecodeTiling:
    """Tile sizes for `VideoVAE.tiled_decode`, in pixels / pixel frames (None: no tiling on those axes).
    Defaults are ltx-core's `TilingConfig.default()`."""

    spatial_tile_px: int | None = 512
    spatial_overlap_px: int = 64
    temporal_tile_frames: int | None = 64
    temporal_overlap_frames: int = 24

    def __post_init__(self) -> None:
        for what, tile, overlap, lowest, step in (
            ("spatial", self.spatial_tile_px, self.spatial_overlap_px, 64, 32),
            ("temporal", self.temporal_tile_frames, self.temporal_overlap_frames, 16, 8),
        ):
            if tile is not None and (tile < lowest or tile % step or overlap % step or not 0 <= overlap < tile):
                raise ValueError(
                    f"{what} tiling {tile} with overlap {overlap}: the tile must be >= {lowest} and a "
                    f"multiple of {step}, the overlap a multiple of {step} in [0, tile)"
                )


def _split_overlapping(n: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split [0, n) into tiles of `size` overlapping by `overlap` (the last one runs to n): (start, end, left
    ramp, right ramp) each; one tile when n <= size."""
    if n <= size:
        return [(0, n, 0, 0)]
    count = (n + size - 2 * overlap - 1) // (size - overlap)
    starts = [i * (size - overlap) for i in range(count)]
    ends = [s + size for s in starts[:-1]] + [n]
    return [(s, e, overlap * (i > 0), overlap * (i < count - 1)) for i, (s, e) in enumerate(zip(starts, ends))]


def _ramp(length: int, left: int, right: int, from_zero: bool) -> Tensor:
    """1D blend weights: linear fade-in over `left` samples (starting at 0 if `from_zero`, else just above),
    fade-out over `right` samples (ending just above 0), 1 in between."""
    mask = torch.ones(length)
    left, right = min(left, length), min(right, length)
    if left > 0:
        fade = torch.linspace(0.0, 1.0, left + 1 if from_zero else left + 2)[:-1]
        mask[:left] *= fade if from_zero else fade[1:]
    if right > 0:
        mask[-right:] *= torch.linspace(1.0, 0.0, right + 2)[1:-1]
    return mask


# ------------------------------------------------------------------------------------------------ the VAE


class VideoVAE(nn.Module):
    """`encode` pixels -> normalized latents (posterior mean), `decode` normalized latents -> pixels."""

    def __init__(self, cfg: VideoVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        names = USED_STATISTICS + (EXTRA_STATISTICS if cfg.extra_statistics else ())
        self.per_channel_statistics = LatentStatistics(cfg.latent_channels, tuple(sorted(names)))

    def init_weights(self, generator: torch.Generator | None = None) -> VideoVAE:
        """Seeded initialisation for training from scratch (convs: PyTorch's default fan-in rule drawn from
        `generator`; statistics: mean 0, std 1 until measured)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv3d):
                    bound = 1 / math.sqrt(m.weight[0].numel())
                    m.weight.uniform_(-bound, bound, generator=generator)
                    m.bias.uniform_(-bound, bound, generator=generator)
            for name, buf in self.per_channel_statistics.named_buffers():
                buf.fill_(1.0 if name in ("std-of-means", "mean-of-stds") else 0.0)
        return self

    def normalize(self, z: Tensor) -> Tensor:
        return self.per_channel_statistics.normalize(z)

    def denormalize(self, z: Tensor) -> Tensor:
        return self.per_channel_statistics.denormalize(z)

    def encode_moments(self, pixels: Tensor) -> Tensor:
        """Raw posterior moments (B, 2C, F', H', W'): C means, then the shared log-variance repeated C times (the
        training apps' convention, as ltx.ltxv.vae.VideoVAE.encode_moments)."""
        check_pixel_shape(tuple(pixels.shape), self.cfg)
        h = self.encoder(pixels)
        means, logvar = h[:, :-1], h[:, -1:]
        return torch.cat([means, logvar.expand_as(means)], dim=1)

    def forward(self, pixels: Tensor) -> Tensor:
        """Reconstruction through the posterior mean: decode(encode(pixels))."""
        return self.decode(self.encode(pixels))

    def encode(self, pixels: Tensor) -> Tensor:
        # pixels: (B, 3, F, H, W) in [-1, 1] -> (B, C, (F - 1) / 8 + 1, H / 32, W / 32) normalized
        check_pixel_shape(tuple(pixels.shape), self.cfg)
        means = self.encoder(pixels)[:, :-1]  # drop the shared log-variance channel
        return self.per_channel_statistics.normalize(means)

    def decode(self, latents: Tensor) -> Tensor:
        # latents: (B, C, F', H', W') normalized -> (B, 3, 8(F' - 1) + 1, 32 H', 32 W') in ~[-1, 1]
        check_latent_shape(tuple(latents.shape), self.cfg)
        return self.decoder(self.per_channel_statistics.denormalize(latents))

    def tiled_decode(self, latents: Tensor, tiling: DecodeTiling) -> Tensor:
        """`decode` tile by tile, blended (ltx-core `VideoDecoder.tiled_decode`, concatenated over its chunks).

        Each tile is decoded on its own; its pixels are weighted by a separable mask (linear ramps over the
        overlaps) and the sum is divided by the summed weights. Temporal tiles after the first start one
        latent frame earlier (that frame decodes as a causal first frame, its ramp starts at weight 0).
        """
        check_latent_shape(tuple(latents.shape), self.cfg)
        B, _, Fl, Hl, Wl = latents.shape
        st, ss = self.cfg.temporal_factor, self.cfg.spatial_factor
        axes = [[(0, Fl, 0, 0)], [(0, Hl, 0, 0)], [(0, Wl, 0, 0)]]  # per axis: (start, end, left, right) ramps
        if tiling.spatial_tile_px is not None:
            size, overlap = tiling.spatial_tile_px // ss, tiling.spatial_overlap_px // ss
            for axis, n in ((1, Hl), (2, Wl)):  # tile size follows the aspect ratio, as ltx-core's
                tile = max(2, overlap + 1, round(size * n / max(Hl, Wl)))
                axes[axis] = _split_overlapping(n, tile, overlap)
        if tiling.temporal_tile_frames is not None:
            size, overlap = tiling.temporal_tile_frames // st, tiling.temporal_overlap_frames // st
            axes[0] = _split_overlapping(Fl, size, overlap)
            axes[0] = [(s - (i > 0), e, lr + (i > 0), rr) for i, (s, e, lr, rr) in enumerate(axes[0])]
        out = latents.new_zeros(B, self.cfg.out_channels, st * (Fl - 1) + 1, ss * Hl, ss * Wl)
        weight = latents.new_zeros(out.shape[2:])  # (F, H, W)
        for t0, t1, tl, tr in axes[0]:
            ft0, ft1 = t0 * st, (t1 - 1) * st + 1  # pixel frames of the tile
            mt = _ramp(ft1 - ft0, 0 if tl == 0 else 1 + (tl - 1) * st, tr * st, from_zero=True)
            for h0, h1, hl, hr in axes[1]:
                mh = _ramp((h1 - h0) * ss, hl * ss, hr * ss, from_zero=False)
                for w0, w1, wl, wr in axes[2]:
                    mw = _ramp((w1 - w0) * ss, wl * ss, wr * ss, from_zero=False)
                    mask = (mt[:, None, None] * mh[None, :, None] * mw[None, None, :]).to(out)  # (f, h, w)
                    pixels = self.decode(latents[:, :, t0:t1, h0:h1, w0:w1])  # (B, 3, f, h, w)
                    region = (slice(ft0, ft1), slice(h0 * ss, h1 * ss), slice(w0 * ss, w1 * ss))
                    out[(..., *region)] += pixels * mask
                    weight[region] += mask
        return out / weight.clamp(min=1e-8)
