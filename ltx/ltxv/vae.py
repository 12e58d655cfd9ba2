"""LTX-Video 0.9.x causal video VAE (the official "CausalVideoAutoencoder"), every released layout.

References: HaCohen et al., "LTX-Video: Realtime Video Latent Diffusion" (arXiv 2501.00103); the official
`ltx_video/models/autoencoders/{causal_video_autoencoder,causal_conv3d,vae_encode}.py` and
`pipelines/pipeline_ltx_video.py` decode step (ltx-video 0.1.2), which this matches number for number
(tests/parity/test_vae_parity.py); diffusers `AutoencoderKLLTXVideo` is the second reference.

Layouts (`VAE_PRESETS`): "0.9.0" (shared block list, plain strided compress convs), "0.9.1" (decoder
conditioned on the decode timestep, with spatial noise injection), "0.9.5" (space-to-depth encoder; used by
0.9.5 - 0.9.8, 2B and 13B). A layout is a block list in the official vocabulary (`VAEBlock`); the encoder
runs `encoder_blocks` in order, the decoder runs `decoder_blocks` *reversed* (the official convention: both
lists are written from the pixels' side).

Shapes: B batch · F pixel frames (8k + 1) · H, W pixels (multiples of 32) · C latent channels (128) ·
F', H', W' latent grid = (F - 1) / 8 + 1, H / 32, W / 32.
video: (B, 3, F, H, W) in [-1, 1]. latents: (B, C, F', H', W').

Conventions:
- Patchify 4x4: `b c f (h q) (w r) -> b (c r q) f h w`, i.e. channel = c*16 + w_offset*4 + h_offset.
- Time is causal in the encoder: a conv pads by repeating the first frame twice, so latent frame i depends
  on pixel frames <= 8i only; latent frame 0 encodes frame 0 alone. The decoder is non-causal
  (`causal_decoder=False` in every release): it repeats the first frame once in front and the last once
  behind. Spatial padding is `spatial_padding_mode` ("zeros" in every release).
- Encoder output "moments" (B, 2C, ...) = [posterior mean (C), log-variance]: one shared log-variance
  channel ("uniform") repeated C times, as the official encoder returns them. The log-variance is clamped to
  [-30, 20] before use.
- Latent normalization: the transformer works on per-channel normalized latents
  z_n = (z - mean-of-means) / std-of-means; `encode` returns them and `decode` takes them. The statistics are
  buffers under `per_channel_statistics.*` with the official names (three of the five entries are never
  read, and are kept so that files round-trip).
- Decode timestep (0.9.1+): the official pipeline mixes noise into the normalized latents,
  z_n <- (1 - s) z_n + s * noise, s = decode noise scale, and conditions the decoder on t (both 0.05 /
  0.025 in every released yaml; `DECODE_TIMESTEP`, `DECODE_NOISE_SCALE`); the decoder multiplies t by its
  learned `timestep_scale_multiplier` (1000 at init). 0.9.0 takes no timestep.
- Random numbers (posterior sample, decode noise, 0.9.1 noise injection) come from `generator`, or from the
  global RNG when it is None, in the official order, so a seeded run reproduces the official one.

Module names are the official checkpoint keys after stripping `vae.`: e.g. encoder.down_blocks.0.res_blocks.0
.conv1.conv.weight. fp32 island: the sinusoidal timestep features.

fp32 CPU convs (`conv3d`): PyTorch's own dispatch by default, as in the official code, so our decode is as close
to fp64 as the official one on every CPU (tests/test_vae_fp64.py). `set_cpu_conv_path` opts into a faster path
("taps" or "direct"), whose error against fp64 exceeds the official code's on some CPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core import shapes
from ltx.core.nn import LatentStatistics, TimestepEmbedder
from ltx.ltxv.transformer import DiTConfig

DECODE_TIMESTEP = 0.05  # official yamls (0.9.1+): decode_timestep
DECODE_NOISE_SCALE = 0.025  # official yamls (0.9.1+): decode_noise_scale
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers DiagonalGaussianDistribution clamp, used by the official encode
PIXEL_NORM_EPS = 1e-8
STATISTICS = ("channel", "mean-of-means", "mean-of-stds", "mean-of-stds_over_std-of-means", "std-of-means")
USED_STATISTICS = ("mean-of-means", "std-of-means")

# Block kinds the released layouts use; strides are (time, height, width).
ENCODER_BLOCKS = ("res_x", "res_x_y", "compress_all", "compress_space_res", "compress_time_res", "compress_all_res")
DECODER_BLOCKS = ("res_x", "res_x_y", "compress_all")
_STRIDES = {
    "compress_all": (2, 2, 2),
    "compress_all_res": (2, 2, 2),
    "compress_space_res": (1, 2, 2),
    "compress_time_res": (2, 1, 1),
}


@dataclass(kw_only=True)
class VAEBlock:
    """One entry of an official block list, with the official per-kind defaults already filled in.

    res_x: `num_layers` residual blocks at constant width (+ `inject_noise` in the 0.9.1 decoder).
    res_x_y: one residual block that multiplies (encoder) / divides (decoder) the width by `multiplier`.
    compress_all (encoder): strided causal conv, x1/2 in t, h, w, same width (0.9.0 / 0.9.1).
    compress_all (decoder): depth-to-space x2 in t, h, w; width / `multiplier`; `residual` adds the shuffled
        input (0.9.1+).
    compress_{space,time,all}_res (encoder): space-to-depth with an averaged skip; width x `multiplier`.
    """

    name: str
    num_layers: int = 1
    multiplier: int = 1
    inject_noise: bool = False
    residual: bool = False


def _blocks(spec: list[tuple]) -> list[VAEBlock]:
    return [VAEBlock(name=name, **kw) for name, kw in spec]


_ENC_090 = [("res_x", dict(num_layers=4)), ("compress_all", {}), ("res_x_y", dict(multiplier=2)),
            ("res_x", dict(num_layers=3)), ("compress_all", {}), ("res_x_y", dict(multiplier=2)),
            ("res_x", dict(num_layers=3)), ("compress_all", {}), ("res_x", dict(num_layers=3)),
            ("res_x", dict(num_layers=4))]  # fmt: skip
_DEC_091 = [("res_x", dict(num_layers=5, inject_noise=True)), ("compress_all", dict(residual=True, multiplier=2)),
            ("res_x", dict(num_layers=6, inject_noise=True)), ("compress_all", dict(residual=True, multiplier=2)),
            ("res_x", dict(num_layers=7, inject_noise=True)), ("compress_all", dict(residual=True, multiplier=2)),
            ("res_x", dict(num_layers=8))]  # fmt: skip
_ENC_095 = [("res_x", dict(num_layers=4)), ("compress_space_res", dict(multiplier=2)), ("res_x", dict(num_layers=6)),
            ("compress_time_res", dict(multiplier=2)), ("res_x", dict(num_layers=6)),
            ("compress_all_res", dict(multiplier=2)), ("res_x", dict(num_layers=2)),
            ("compress_all_res", dict(multiplier=2)), ("res_x", dict(num_layers=2))]  # fmt: skip
_DEC_095 = [("res_x", dict(num_layers=5)), ("compress_all", dict(residual=True, multiplier=2)),
            ("res_x", dict(num_layers=5)), ("compress_all", dict(residual=True, multiplier=2)),
            ("res_x", dict(num_layers=5)), ("compress_all", dict(residual=True, multiplier=2)),
            ("res_x", dict(num_layers=5))]  # fmt: skip


@dataclass(kw_only=True)
class VAEConfig:
    """Defaults are the 0.9.5 layout (0.9.5 - 0.9.8). Official metadata is read into this in
    ltx/ltxv/keys_vae.py; `VAE_PRESETS` holds the three released layouts."""

    encoder_blocks: list[VAEBlock] = field(default_factory=lambda: _blocks(_ENC_095))
    decoder_blocks: list[VAEBlock] = field(default_factory=lambda: _blocks(_DEC_095))  # official order (reversed)
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4  # pixels per latent "pixel" before the first conv (space only)
    encoder_base_channels: int = 128
    decoder_base_channels: int = 128
    timestep_conditioning: bool = True  # decoder takes the decode timestep (0.9.1+)
    causal_decoder: bool = False
    spatial_padding_mode: str = "zeros"
    # The checkpoint carries the three statistics nobody reads (`channel`, `mean-of-stds`, ...): official
    # files do, diffusers folders do not. Decides only which buffers exist (so strict loads and round trips work).
    extra_statistics: bool = True

    def __post_init__(self):
        self.encoder_blocks = [b if isinstance(b, VAEBlock) else VAEBlock(**b) for b in self.encoder_blocks]
        self.decoder_blocks = [b if isinstance(b, VAEBlock) else VAEBlock(**b) for b in self.decoder_blocks]
        for where, blocks, allowed in (("encoder", self.encoder_blocks, ENCODER_BLOCKS),
                                       ("decoder", self.decoder_blocks, DECODER_BLOCKS)):  # fmt: skip
            for b in blocks:
                if b.name not in allowed:
                    raise ValueError(f"{where} block {b.name!r} is not used by any LTX-Video release ({allowed})")
                if b.num_layers < 1 or b.multiplier < 1:
                    raise ValueError(f"{where} block {b} needs num_layers >= 1 and multiplier >= 1")
        if self.spatial_padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"spatial_padding_mode {self.spatial_padding_mode!r} is not a torch Conv3d padding mode")
        if min(self.encoder_base_channels, self.decoder_base_channels, self.latent_channels - 1) < 1:
            raise ValueError(f"invalid VAEConfig sizes: {self}")
        width = self.encoder_base_channels
        for b in self.encoder_blocks:  # space-to-depth averages groups of in * stride / out channels
            if b.name.endswith("_res") and (width * math.prod(_STRIDES[b.name])) % (width * b.multiplier):
                raise ValueError(f"{b.name} with multiplier {b.multiplier} does not divide {width} channels evenly")
            width *= b.multiplier if b.name != "compress_all" else 1

    @property
    def decoder_width_factor(self) -> int:
        """Decoder width at the latent side / decoder_base_channels (product of the channel divisors)."""
        return math.prod(b.multiplier for b in self.decoder_blocks if b.name != "res_x")

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** sum(_STRIDES.get(b.name, (1, 1, 1))[1] == 2 for b in self.encoder_blocks)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(_STRIDES.get(b.name, (1, 1, 1))[0] == 2 for b in self.encoder_blocks)

    @property
    def version(self) -> str:
        """The released layout family this config belongs to ("0.9.0", "0.9.1" or "0.9.5")."""
        if any(b.name.endswith("_res") for b in self.encoder_blocks):
            return "0.9.5"
        return "0.9.1" if self.timestep_conditioning else "0.9.0"


VAE_PRESETS: dict[str, VAEConfig] = {
    "0.9.0": VAEConfig(encoder_blocks=_blocks(_ENC_090), decoder_blocks=_blocks(_ENC_090), timestep_conditioning=False),
    "0.9.1": VAEConfig(encoder_blocks=_blocks(_ENC_090), decoder_blocks=_blocks(_DEC_091)),
    "0.9.5": VAEConfig(),
}


def tiny(cfg: VAEConfig, width: int = 8) -> VAEConfig:
    """The same block list at reduced width (tests, benchmarks)."""
    return replace(cfg, encoder_base_channels=width, decoder_base_channels=width, latent_channels=2 * width)


# ------------------------------------------------------------------------------------------------ validation


def check_video_shape(shape: tuple[int, ...], cfg: VAEConfig) -> None:
    """Raise a ValueError naming the nearest valid sizes unless `shape` is (B, 3, 8k+1, 32m, 32n)."""
    shapes.check_pixel_shape(shape, channels=cfg.in_channels, temporal_factor=cfg.temporal_factor,
                             spatial_factor=cfg.spatial_factor, noun="video", frame_symbol="N")


def check_latent_shape(shape: tuple[int, ...], cfg: VAEConfig) -> None:
    shapes.check_latent_shape(shape, channels=cfg.latent_channels, vae_name=f" ({cfg.version} layout)")


def check_dit_compatible(vae: VAEConfig, dit: DiTConfig) -> None:
    """Raise if a transformer config (`DiTConfig`) cannot work in this VAE's latent space.

    Every 0.9.5+ transformer uses causal temporal positions and every earlier one does not, which pairs each
    with its VAE family; the latent channel counts must agree in any case.
    """
    c_in, causal = dit.in_channels, dit.causal_temporal_positioning
    if c_in != vae.latent_channels:
        raise ValueError(f"transformer takes {c_in} latent channels, the VAE makes {vae.latent_channels}")
    new_vae = vae.version == "0.9.5"
    if causal != new_vae:
        want = "0.9.5+" if causal else "0.9.0/0.9.1"
        raise ValueError(
            f"VAE/transformer version mismatch: the transformer ({'0.9.5+' if causal else '0.9.0/0.9.1'}, "
            f"causal_temporal_positioning={causal}) needs a {want} VAE, this VAE is the {vae.version} layout"
        )


# ------------------------------------------------------------------------------------------------ layers


def pixel_norm(x: Tensor) -> Tensor:
    """Official PixelNorm: x / sqrt(mean over channels of x^2 + 1e-8); no parameters. (`linalg.vector_norm`
    over dim 1 would save the square pass but is ~10x slower on CPU for this strided reduction.)"""
    return x * x.square().mean(1, keepdim=True).add_(PIXEL_NORM_EPS).rsqrt_()  # (B, 1, F, H, W) factor


def pad_time(x: Tensor, causal: bool, act: bool = False) -> Tensor:
    """(B, C, F, H, W) -> (B, C, F + 2, H, W) for a 3-frame kernel: causal repeats the first frame twice in
    front; non-causal repeats the first frame in front and the last behind. `act` applies SiLU on the way,
    written straight into the padded buffer (one pass over the activations instead of two)."""
    B, C, Fr, H, W = x.shape
    out = x.new_empty(B, C, Fr + 2, H, W)
    lo = 2 if causal else 1
    body = out[:, :, lo : lo + Fr]
    if act and torch.is_grad_enabled() and x.requires_grad:  # out= kernels have no autograd (training)
        body.copy_(F.silu(x))
    elif act:
        torch.ops.aten.silu.out(x, out=body)
    else:
        body.copy_(x)
    out[:, :, :lo] = body[:, :, :1]
    if not causal:
        out[:, :, -1:] = body[:, :, -1:]
    return out


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift


# How `conv3d` runs fp32 CPU convs: "pytorch" = PyTorch's dispatch (the default, what the official code runs);
# "taps" / "direct" = the opt-in faster paths (see `conv3d`).
CPU_CONV_PATHS = ("pytorch", "taps", "direct")
# PyTorch's conv dispatch (aten use_mkldnn) sends fp32 CPU 3D convs with batch 1 and C * F * H at most this
# to its im2col kernel; larger inputs (or batch > 1) go to oneDNN's direct convolution.
IM2COL_MAX = 20480
_cpu_conv_path = "pytorch"


def set_cpu_conv_path(path: str) -> None:
    """Choose how `conv3d` runs fp32 CPU convs, process-wide: one of `CPU_CONV_PATHS` ("pytorch" by default)."""
    global _cpu_conv_path
    if path not in CPU_CONV_PATHS:
        raise ValueError(f"cpu conv path {path!r}: expected one of {', '.join(CPU_CONV_PATHS)}")
    _cpu_conv_path = path


def conv3d(x: Tensor, conv: nn.Conv3d) -> Tensor:
    """`conv(x)`, or for fp32 CPU inputs one of the opt-in faster paths chosen by `set_cpu_conv_path`.

    "pytorch" (default): `conv(x)`, the kernel PyTorch's dispatch picks, so the official code's: im2col for small
    3D inputs (batch 1, C * F * H <= `IM2COL_MAX`: the low-resolution VAE stages), oneDNN direct otherwise.
    The opt-in paths avoid the slow im2col kernel; how close they stay to fp64 depends on the CPU's oneDNN
    kernels (errors below as multiples of the official fp32 decode's, max / rms, tests/test_vae_fp64.py):
    "taps": small inputs as one oneDNN (1, kh, kw) conv per temporal tap, summed (`_conv3d_taps`), others as
    `conv(x)`; 1.3-13x faster than im2col per conv; 0.55-1.18x / 0.87-0.99x on the CPU it was tuned on, but
    1.0-1.9x / 1.1-1.9x on an AVX2-only AMD EPYC.
    "direct": every conv through oneDNN's direct convolution (one fp32 chain of C_in * 27 products): fastest;
    1.1-1.9x / 1.3-1.5x there, 1.7-3.4x / 1.8-3.2x on the AMD EPYC.
    """
    path = _cpu_conv_path
    fp32_cpu = x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
    if path == "pytorch" or not fp32_cpu:
        return conv(x)
    small = x.shape[0] == 1 and x.shape[1] * x.shape[2] * x.shape[3] <= IM2COL_MAX
    taps = conv.kernel_size[0] > 1 and conv.padding[0] == 0 and conv.dilation[0] == 1
    if path == "taps" and not (small and taps):
        return conv(x)
    padding = conv.padding
    if conv.padding_mode != "zeros":  # what nn.Conv3d does for other modes: pad first, then a padding-free conv
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = (0, 0, 0)
    if path == "direct":
        return torch.mkldnn_convolution(x.contiguous(), conv.weight, conv.bias, padding, conv.stride, conv.dilation, 1)
    return _conv3d_taps(x, conv.weight, conv.bias, padding, conv.stride, conv.dilation)


def _conv3d_taps(x: Tensor, weight: Tensor, bias: Tensor | None, padding, stride, dilation) -> Tensor:
    """A conv with no temporal padding or dilation as a sum over its temporal taps k of (1, kh, kw) oneDNN
    convs of the frames tap k sees (frames k, k + s, ...; bias added in the first)."""
    st = stride[0]
    n = (x.shape[2] - weight.shape[2]) // st + 1  # output frames
    out = None
    for k in range(weight.shape[2]):
        frames = x[:, :, k : k + st * (n - 1) + 1 : st].contiguous()  # (B, C_in, F_out, H, W)
        w = weight[:, :, k : k + 1].contiguous()  # (C_out, C_in, 1, kh, kw)
        y = torch.mkldnn_convolution(frames, w, bias if k == 0 else None, (0, *padding[1:]), (1, *stride[1:]),
                                     (1, *dilation[1:]), 1)  # fmt: skip
        out = y if out is None else out.add_(y)
    return out


class CausalConv3d(nn.Module):
    """3x3x3 conv that pads time by repeating edge frames (`pad_time`); space is padded by the conv
    (spatial_padding_mode). `act=True` computes conv(SiLU(x)), fusing the SiLU into the padding copy."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, padding_mode: str = "zeros"):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=(0, 1, 1), padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool, act: bool = False) -> Tensor:
        # x: (B, C, F, H, W) -> (B, C_out, F_out, H_out, W_out)
        return conv3d(pad_time(x, causal, act), self.conv)  # padded: (B, C, F + 2, H, W)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, F, H, W) (official `norm3`; the key is norm3.norm.*)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class TimeEmbedder(nn.Module):
    """Decode timestep -> (B, dim); official `PixArtAlphaCombinedTimestepSizeEmbeddings(dim, 0)`."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)  # key: time_embedder.timestep_embedder.linear_{1,2}.*

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        return self.timestep_embedder(t.flatten(), dtype)  # (B, dim)


class ResBlock(nn.Module):
    """PixelNorm -> [AdaLN] -> SiLU -> conv1 -> [+noise] -> PixelNorm -> [AdaLN] -> SiLU -> conv2 -> [+noise],
    plus the input (LayerNorm + 1x1x1 conv when the width changes). AdaLN order: shift1, scale1, shift2, scale2."""

    def __init__(self, c_in: int, c_out: int, *, inject_noise: bool, timestep_conditioning: bool, padding_mode: str):
        super().__init__()
        self.conv1 = CausalConv3d(c_in, c_out, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(c_out, c_out, padding_mode=padding_mode)
        if inject_noise:  # official shape is (C_in, 1, 1); only used where C_in == C_out
            self.per_channel_scale1 = nn.Parameter(torch.empty(c_in, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.empty(c_in, 1, 1))
        if c_in != c_out:
            self.norm3 = ChannelLayerNorm(c_in)
            self.conv_shortcut = nn.Conv3d(c_in, c_out, 1)
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.empty(4, c_in))
        self.inject_noise = inject_noise
        self.timestep_conditioning = timestep_conditioning
        self.reshape = c_in != c_out

    @staticmethod
    def _add_noise(h: Tensor, scale: Tensor, generator: torch.Generator | None) -> Tensor:
        # one (H, W) noise map shared by all channels and frames, scaled per channel (StyleGAN-style)
        noise = torch.randn(h.shape[-2:], generator=generator, device=h.device, dtype=h.dtype)  # (H, W)
        return h.add_((noise[None] * scale)[None, :, None])  # (1, C, 1, H, W)

    def forward(self, x: Tensor, causal: bool, emb: Tensor | None = None, generator=None) -> Tensor:
        # x: (B, C_in, F, H, W); emb: (B, 4 * C_in) block timestep embedding
        h = pixel_norm(x)
        if self.timestep_conditioning:
            ada = self.scale_shift_table + emb.unflatten(1, (4, -1))  # (B, 4, C_in)
            shift1, scale1, shift2, scale2 = ada[..., None, None, None].unbind(1)  # each (B, C_in, 1, 1, 1)
            h = modulate(h, shift1, scale1)
        h = self.conv1(h, causal, act=True)
        if self.inject_noise:
            h = self._add_noise(h, self.per_channel_scale1, generator)
        h = pixel_norm(h)
        if self.timestep_conditioning:
            h = modulate(h, shift2, scale2)
        h = self.conv2(h, causal, act=True)  # (dropout 0 in every release)
        if self.inject_noise:
            h = self._add_noise(h, self.per_channel_scale2, generator)
        if self.reshape:
            x = conv3d(self.norm3(x), self.conv_shortcut)
        return h.add_(x)


class ResStack(nn.Module):
    """`res_x`: residual blocks at constant width sharing one timestep embedding (official UNetMidBlock3D)."""

    def __init__(self, channels: int, num_layers: int, *, inject_noise: bool, timestep_conditioning: bool,
                 padding_mode: str):  # fmt: skip
        super().__init__()
        if timestep_conditioning:
            self.time_embedder = TimeEmbedder(4 * channels)
        self.res_blocks = nn.ModuleList(
            ResBlock(channels, channels, inject_noise=inject_noise, timestep_conditioning=timestep_conditioning,
                     padding_mode=padding_mode)  # fmt: skip
            for _ in range(num_layers)
        )
        self.timestep_conditioning = timestep_conditioning

    def forward(self, x: Tensor, causal: bool, t: Tensor | None = None, generator=None) -> Tensor:
        # t: (B,) decode timestep already multiplied by timestep_scale_multiplier
        emb = self.time_embedder(t, x.dtype) if self.timestep_conditioning else None  # (B, 4C)
        for block in self.res_blocks:
            x = block(x, causal, emb, generator)
        return x


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """b c (f p1) (h p2) (w p3) -> b (c p1 p2 p3) f h w."""
    B, C, Fr, H, W = x.shape
    p1, p2, p3 = stride
    x = x.reshape(B, C, Fr // p1, p1, H // p2, p2, W // p3, p3)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(B, C * p1 * p2 * p3, Fr // p1, H // p2, W // p3)


def depth_to_space(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """b (c p1 p2 p3) f h w -> b c (f p1) (h p2) (w p3)."""
    B, C, Fr, H, W = x.shape
    p1, p2, p3 = stride
    x = x.reshape(B, C // (p1 * p2 * p3), p1, p2, p3, Fr, H, W)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, C // (p1 * p2 * p3), Fr * p1, H * p2, W * p3)


class SpaceToDepthDown(nn.Module):
    """Encoder `compress_*_res`: conv to C_out / prod(stride), space-to-depth, plus the space-to-depth input
    averaged over groups of C_in * prod(stride) / C_out channels. A temporal stride first repeats frame 0."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int], padding_mode: str):
        super().__init__()
        self.stride = stride
        self.group = c_in * math.prod(stride) // c_out
        self.conv = CausalConv3d(c_in, c_out // math.prod(stride), padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)  # (B, C, F + 1, H, W): 8k+1 frames -> 4k+1
        skip = space_to_depth(x, self.stride)  # (B, C_in * s, F', H', W')
        skip = skip.unflatten(1, (-1, self.group)).mean(2)  # (B, C_out, F', H', W')
        return space_to_depth(self.conv(x, causal), self.stride).add_(skip)


class DepthToSpaceUp(nn.Module):
    """Decoder `compress_all`: conv to 8 C / multiplier, depth-to-space x2 in t, h, w, drop the first frame
    (F -> 2F - 1); `residual` adds the shuffled input tiled (`repeat`, not interleaved) to the new width."""

    def __init__(self, channels: int, multiplier: int, residual: bool, padding_mode: str):
        super().__init__()
        self.stride = (2, 2, 2)
        self.repeats = 8 // multiplier
        self.residual = residual
        self.conv = CausalConv3d(channels, 8 * channels // multiplier, padding_mode=padding_mode)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        # x: (B, C, F, H, W) -> (B, C / multiplier, 2F - 1, 2H, 2W)
        h = depth_to_space(self.conv(x, causal), self.stride)[:, :, 1:]
        if self.residual:
            h += depth_to_space(x, self.stride)[:, :, 1:].repeat(1, self.repeats, 1, 1, 1)
        return h


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, F, H, W) -> (B, C * p * p, F, H / p, W / p); channel = c * p^2 + w_offset * p + h_offset."""
    B, C, Fr, H, W = x.shape
    x = x.reshape(B, C, Fr, H // p, p, W // p, p)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(B, C * p * p, Fr, H // p, W // p)


def unpatchify(x: Tensor, p: int) -> Tensor:
    B, C, Fr, H, W = x.shape
    x = x.reshape(B, C // (p * p), p, p, Fr, H, W)  # (B, c, w_offset, h_offset, F, H, W)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(B, C // (p * p), Fr, H * p, W * p)


# ------------------------------------------------------------------------------------------------ encoder / decoder


def encoder_blocks(blocks: list[VAEBlock], width: int, pad: str) -> tuple[nn.ModuleList, int]:
    """The encoder's blocks for a layout and the width they end at (encoder blocks take no noise, no timestep)."""
    out = nn.ModuleList()
    for b in blocks:
        if b.name == "res_x":
            out.append(ResStack(width, b.num_layers, inject_noise=False, timestep_conditioning=False, padding_mode=pad))
        elif b.name == "res_x_y":
            out.append(ResBlock(width, width * b.multiplier, inject_noise=False, timestep_conditioning=False,
                                padding_mode=pad))  # fmt: skip
            width *= b.multiplier
        elif b.name == "compress_all":  # 0.9.0 / 0.9.1: a plain strided conv (key down_blocks.i.conv.weight)
            out.append(CausalConv3d(width, width, stride=2, padding_mode=pad))
        else:
            out.append(SpaceToDepthDown(width, width * b.multiplier, _STRIDES[b.name], pad))
            width *= b.multiplier
    return out, width


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        pad = cfg.spatial_padding_mode
        self.patch_size = cfg.patch_size
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size**2, cfg.encoder_base_channels, padding_mode=pad)
        self.down_blocks, width = encoder_blocks(cfg.encoder_blocks, cfg.encoder_base_channels, pad)
        self.conv_out = CausalConv3d(width, cfg.latent_channels + 1, padding_mode=pad)  # means + 1 shared log-var

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 3, F, H, W) -> moments (B, 2C, F', H', W')
        h = self.conv_in(patchify(x, self.patch_size), True)  # (B, C0, F, H/4, W/4)
        for block in self.down_blocks:
            h = block(h, True)  # the encoder is always causal
        h = self.conv_out(pixel_norm(h), True, act=True)  # (B, C + 1, F', H', W')
        logvar = h[:, -1:]
        return torch.cat([h, logvar.expand(-1, h.shape[1] - 2, -1, -1, -1)], dim=1)


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        pad, tc = cfg.spatial_padding_mode, cfg.timestep_conditioning
        self.patch_size = cfg.patch_size
        self.causal = cfg.causal_decoder
        self.timestep_conditioning = tc
        width = cfg.decoder_base_channels * cfg.decoder_width_factor
        self.conv_in = CausalConv3d(cfg.latent_channels, width, padding_mode=pad)
        self.up_blocks = nn.ModuleList()
        for b in reversed(cfg.decoder_blocks):
            if b.name == "res_x":
                block = ResStack(width, b.num_layers, inject_noise=b.inject_noise, timestep_conditioning=tc,
                                 padding_mode=pad)  # fmt: skip
            elif b.name == "res_x_y":  # official: never timestep-conditioned
                block = ResBlock(width, width // b.multiplier, inject_noise=b.inject_noise,
                                 timestep_conditioning=False, padding_mode=pad)  # fmt: skip
                width //= b.multiplier
            else:
                block = DepthToSpaceUp(width, b.multiplier, b.residual, pad)
                width //= b.multiplier
            self.up_blocks.append(block)
        if tc:
            self.timestep_scale_multiplier = nn.Parameter(torch.empty(()))
            self.last_time_embedder = TimeEmbedder(2 * width)
            self.last_scale_shift_table = nn.Parameter(torch.empty(2, width))  # shift, scale
        self.conv_out = CausalConv3d(width, cfg.out_channels * cfg.patch_size**2, padding_mode=pad)

    def forward(self, z: Tensor, timestep: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        # z: (B, C, F', H', W') un-normalized latents; timestep: (B,) in [0, 1] -> (B, 3, 8(F'-1)+1, 32H', 32W')
        causal = self.causal
        h = self.conv_in(z, causal)
        t = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("this decoder is timestep-conditioned (0.9.1+): pass the decode timestep")
            t = timestep * self.timestep_scale_multiplier  # (B,)
        for block in self.up_blocks:
            if isinstance(block, ResStack):
                h = block(h, causal, t, generator)
            elif isinstance(block, ResBlock):
                h = block(h, causal, None, generator)
            else:
                h = block(h, causal)
        h = pixel_norm(h)
        if self.timestep_conditioning:
            emb = self.last_time_embedder(t, h.dtype).unflatten(1, (2, -1))  # (B, 2, C)
            shift, scale = (self.last_scale_shift_table + emb)[..., None, None, None].unbind(1)
            h = modulate(h, shift, scale)
        h = self.conv_out(h, causal, act=True)  # (B, 3 * 16, F, H/4, W/4)
        return unpatchify(h, self.patch_size)



# ------------------------------------------------------------------------------------------------ the VAE


class VideoVAE(nn.Module):
    """Causal video VAE: `encode` video -> normalized latents, `decode` normalized latents -> video."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        names = STATISTICS if cfg.extra_statistics else USED_STATISTICS
        self.per_channel_statistics = LatentStatistics(cfg.latent_channels, names)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> VideoVAE:
        """Training init (PyTorch defaults, official constants); loading a checkpoint overwrites all of it."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear, nn.LayerNorm)):
                m.reset_parameters()  # torch init draws from the global RNG
        for m in self.modules():
            if isinstance(m, ResBlock):
                if m.inject_noise:  # noise injection starts switched off
                    m.per_channel_scale1.zero_()
                    m.per_channel_scale2.zero_()
                if m.timestep_conditioning:
                    m.scale_shift_table.normal_(generator=generator).div_(m.scale_shift_table.shape[1] ** 0.5)
        d = self.decoder
        if d.timestep_conditioning:
            d.timestep_scale_multiplier.fill_(1000.0)
            d.last_scale_shift_table.normal_(generator=generator).div_(d.last_scale_shift_table.shape[1] ** 0.5)
        stats = self.per_channel_statistics
        for name, buf in stats.named_buffers():
            buf.copy_(torch.arange(buf.numel()) if name == "channel" else torch.ones_like(buf))
        stats.mean.zero_()
        return self

    # -------------------------------------------------------------------- latent normalization

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latents -> the transformer's latent space: (z - mean-of-means) / std-of-means per channel."""
        return self.per_channel_statistics.normalize(z)

    def denormalize(self, z: Tensor) -> Tensor:
        return self.per_channel_statistics.denormalize(z)

    # -------------------------------------------------------------------- encode

    def encode_moments(self, video: Tensor) -> Tensor:
        """video (B, 3, F, H, W) in [-1, 1] -> moments (B, 2C, F', H', W') = [mean, log-variance] (raw scale)."""
        check_video_shape(tuple(video.shape), self.cfg)
        return self.encoder(video)

    def posterior(
        self, moments: Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Moments -> normalized latents: the posterior mean, or (`sample`) mean + std * noise as the
        official `vae_encode` does (noise drawn like diffusers' DiagonalGaussianDistribution.sample)."""
        mean, logvar = moments.chunk(2, dim=1)
        if sample:
            std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + std * noise
        return self.normalize(mean)

    def encode(self, video: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """video (B, 3, F, H, W) -> normalized latents (B, C, F', H', W'); `sample=True` is the official
        pipeline's behaviour (posterior sample), the default is the posterior mean."""
        return self.posterior(self.encode_moments(video), sample=sample, generator=generator)

    # -------------------------------------------------------------------- decode

    def decoder_input(
        self,
        latents: Tensor,
        timestep: float | Tensor | None,
        noise_scale: float | Tensor = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Normalized latents -> (raw latents for the decoder, (B,) timestep), adding the decode noise.

        Mirrors the official pipeline: noise ~ N(0, 1) like the latents, z_n <- (1 - s) z_n + s * noise, then
        denormalize. A decoder without timestep conditioning (0.9.0) takes no timestep and no noise.
        """
        check_latent_shape(tuple(latents.shape), self.cfg)
        B = latents.shape[0]
        if not self.cfg.timestep_conditioning:
            if timestep is not None or bool(torch.as_tensor(noise_scale).ne(0).any()):
                raise ValueError("the 0.9.0 VAE decoder takes no decode timestep or noise; pass timestep=None")
            return self.denormalize(latents), None
        if timestep is None:
            raise ValueError(
                f"the {self.cfg.version} VAE decoder is timestep-conditioned: pass timestep (official: "
                f"{DECODE_TIMESTEP}, with noise_scale={DECODE_NOISE_SCALE})"
            )
        t = torch.as_tensor(timestep, dtype=torch.float32, device=latents.device).reshape(-1).expand(B)
        s = torch.as_tensor(noise_scale, dtype=torch.float32, device=latents.device).reshape(-1).expand(B)
        if isinstance(noise_scale, Tensor) or noise_scale != 0:
            noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
            s = s.view(B, 1, 1, 1, 1)
            latents = latents * (1 - s) + noise * s
        return self.denormalize(latents), t

    def decode(
        self,
        latents: Tensor,
        timestep: float | Tensor | None = None,
        *,
        noise_scale: float | Tensor = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Normalized latents (B, C, F', H', W') -> video (B, 3, 8(F'-1)+1, 32H', 32W'), about [-1, 1].

        timestep: the decode timestep, float or (B,) (0.9.1+ only; official 0.05); noise_scale: decode noise
        mixed into the latents first (official 0.025). For bounded memory use `ltx.ltxv.vae_tiling`.
        """
        z, t = self.decoder_input(latents, timestep, noise_scale, generator)
        return self.decoder(z, t, generator)

    def forward(self, video: Tensor, timestep: float | Tensor | None = None) -> Tensor:
        """Reconstruction through the posterior mean."""
        return self.decode(self.encode(video), timestep)

