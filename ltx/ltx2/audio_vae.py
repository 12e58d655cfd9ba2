"""LTX-2 / LTX-2.3 audio VAE: a causal 2-D conv autoencoder on stereo log-mel spectrograms.

References: ltx-core 1.0.0 `ltx_core/model/audio_vae/{audio_vae,resnet,causal_conv_2d,downsample,upsample,
ops,model_configurator}.py`, `ltx_core/components/patchifiers.py::AudioPatchifier` and
`ltx_core/types.py::AudioLatentShape`, which this matches number for number (tests/ltx2/test_ltx2_audio_vae.py).
The same `ddconfig` ships in the 19B and the 2.3 file. The waveform -> log-mel step is `ltx.ltx2.audio`.

Shapes: B batch · T_mel mel frames (100/s) · M = 64 mel bins · z = 8 latent channels · T_lat = (T_mel - 1)
// 4 + 1 latent frames (25/s) · F = M / 4 = 16 latent frequency bins · D = z * F = 128 token channels.
mel: (B, 2, T_mel, M) natural-log magnitudes, stereo in channels. latent: (B, z, T_lat, F).
decoded mel: (B, 2, 4 * T_lat - 3, M). Transformer tokens: (B, T_lat, D).

Architecture (ddconfig ch 128, ch_mult (1, 2, 4), 2 res blocks, no attention, PixelNorm):
- Images are (time, frequency) = (height, width). Every 3x3 conv is causal in time: it pads 2 frames in
  front and none behind, and 1 bin on each side of frequency (`causality_axis: "height"`).
- Encoder: conv_in -> per level: `num_res_blocks` ResnetBlocks at ch * ch_mult[level], then (all but the
  last level) a stride-2 conv padded (time 2 front, frequency 1 right) that halves both axes -> mid (two
  ResnetBlocks) -> PixelNorm, SiLU, conv_out to 2z channels ([mean, logvar]); only the means are kept.
- Decoder: conv_in -> mid -> levels in reverse, `num_res_blocks + 1` blocks each, then (all but level 0)
  nearest x2 on both axes, a causal conv, and the first time row dropped (T -> 2T - 1 frames) -> PixelNorm,
  SiLU, conv_out -> crop / zero-pad to (out_ch, 4 T_lat - 3, M).
- ResnetBlock: x + conv2(drop(silu(norm2(conv1(silu(norm1(x))))))), with a causal 1x1 `nin_shortcut`
  when the width changes. PixelNorm: x / sqrt(mean_c(x^2) + 1e-6) (the video VAE uses 1e-8).

Latent normalisation happens on the patchified tokens: z_n = (tokens - mean-of-means) / std-of-means with
128-vectors, tokens = `patchify(latent)` = `b c t f -> b t (c f)` (token channel = c * F + f). `encode`
returns normalised latents, `decode` takes them.

Positions for the transformer (`audio_positions`, as AudioPatchifier with its pipeline defaults): latent i
covers mel frames [max(4i - 3, 0), max(4i + 1, 0)) -> seconds at 100 frames/s, as a (B, 1, T_lat, 2) fp32
[start, end) tensor. Latent frames for a clip: round(duration * 25) (AudioLatentShape.from_duration).

Module names are the official checkpoint keys after stripping `audio_vae.`: encoder.conv_in.conv.weight,
encoder.down.1.block.0.nin_shortcut.conv.weight, encoder.down.0.downsample.conv.weight (a plain conv),
decoder.up.2.upsample.conv.conv.weight, per_channel_statistics.mean-of-means, ... The reference builds the
encoder and the decoder each with its own copy of the (single) statistics in the file; here they are one
top-level module shared by both, so the file loads strictly with no renames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LATENT_TIME_FACTOR = 4  # mel frames per latent frame (ltx-core: LATENT_DOWNSAMPLE_FACTOR, hardcoded)
PIXEL_NORM_EPS = 1e-6  # ltx_core/model/common/normalization.py::build_normalization_layer, "pixel"
STATISTICS = ("std-of-means", "mean-of-means")  # the two buffers the file holds, in ltx-core's order

# Metadata keys we read; any other key in these sub-dicts is refused rather than silently ignored.
_DDCONFIG_KEYS = {
    "ch", "ch_mult", "num_res_blocks", "z_channels", "double_z", "in_channels", "out_ch", "mel_bins", "resolution",
    "dropout", "attn_resolutions", "mid_block_add_attention", "norm_type", "causality_axis", "downsample_time",
    "attn_type", "resamp_with_conv",
}  # fmt: skip
_PARAMS_KEYS = {"ddconfig", "sampling_rate", "embed_dim"}


def _check(what: str, value: object, supported: object) -> None:
    if value != supported:
        raise ValueError(f"{what}={value!r} is not supported (supported: {supported!r})")


@dataclass(kw_only=True)
class AudioVAEConfig:
    """The released ddconfig and preprocessing values (identical in the 19B and 2.3 metadata)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 8
    double_z: bool = True  # conv_out emits [mean, logvar]; the logvar half is discarded (only True is built)
    in_channels: int = 2  # stereo mel
    out_ch: int = 2
    mel_bins: int = 64
    resolution: int = 256  # only decides where attention would go (none is used); kept for the round trip
    dropout: float = 0.0
    # preprocessing (ltx.ltx2.audio): the encoder's expected input and the latent time grid
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        if len(self.ch_mult) != 3:
            raise ValueError(
                f"audio_vae.ch_mult={list(self.ch_mult)!r} is not supported: the latent grid is {LATENT_TIME_FACTOR}"
                " mel frames per latent (hardcoded in ltx-core), i.e. exactly 3 levels (e.g. [1, 2, 4])"
            )
        if min(self.ch, self.num_res_blocks, self.z_channels, self.in_channels, self.out_ch, *self.ch_mult) < 1:
            raise ValueError(f"audio_vae sizes must be positive: {self}")
        if self.mel_bins % LATENT_TIME_FACTOR:
            raise ValueError(f"audio_vae.mel_bins={self.mel_bins} must be a multiple of {LATENT_TIME_FACTOR}")
        if not self.double_z:  # ltx-core would then keep only half of the z channels (chunk(2)[0])
            raise ValueError("audio_vae.double_z=False is not supported (supported: True)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"audio_vae.dropout={self.dropout} must be in [0, 1)")

    @property
    def latent_mel_bins(self) -> int:
        return self.mel_bins // LATENT_TIME_FACTOR  # two stride-2 levels halve frequency as well as time

    @property
    def token_channels(self) -> int:
        return self.z_channels * self.latent_mel_bins  # 8 * 16 = 128, the statistics' length

    @property
    def latents_per_second(self) -> float:
        return float(self.sample_rate) / float(self.hop_length) / float(LATENT_TIME_FACTOR)  # 25.0

    @classmethod
    def from_metadata(cls, d: dict) -> AudioVAEConfig:
        """From the official metadata `config["audio_vae"]` sub-dict; refuses anything not implemented."""
        params = d.get("model", {}).get("params", {})
        dd = params.get("ddconfig", {})
        pre = d.get("preprocessing", {})
        stft, mel, audio = pre.get("stft", {}), pre.get("mel", {}), pre.get("audio", {})
        for where, sub, known in (("audio_vae.model.params", params, _PARAMS_KEYS),
                                  ("audio_vae.model.params.ddconfig", dd, _DDCONFIG_KEYS)):  # fmt: skip
            unknown = sorted(set(sub) - known)
            if unknown:
                raise ValueError(f"{where} has keys we do not implement: {unknown} (known: {sorted(known)})")
        _check("audio_vae.ddconfig.attn_resolutions", list(dd.get("attn_resolutions", [])), [])
        _check("audio_vae.ddconfig.mid_block_add_attention", dd.get("mid_block_add_attention", False), False)
        _check("audio_vae.ddconfig.norm_type", dd.get("norm_type", "pixel"), "pixel")
        _check("audio_vae.ddconfig.causality_axis", dd.get("causality_axis", "height"), "height")
        _check("audio_vae.ddconfig.downsample_time", dd.get("downsample_time", False), False)
        _check("audio_vae.ddconfig.attn_type", dd.get("attn_type", "vanilla"), "vanilla")
        _check("audio_vae.ddconfig.resamp_with_conv", dd.get("resamp_with_conv", True), True)
        z = dd.get("z_channels", 8)
        if "embed_dim" in params:
            _check("audio_vae.model.params.embed_dim", params["embed_dim"], z)
        sample_rate = params.get("sampling_rate", 16000)
        n_fft = stft.get("filter_length", 1024)
        mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or 64
        _check("audio_vae.preprocessing.stft.win_length", stft.get("win_length", n_fft), n_fft)
        _check("audio_vae.preprocessing.stft.causal", stft.get("causal", True), True)
        _check("audio_vae.preprocessing.mel.n_mel_channels", mel.get("n_mel_channels", mel_bins), mel_bins)
        _check("audio_vae.preprocessing.mel.mel_fmin", mel.get("mel_fmin", 0), 0)
        # ltx-core's AudioProcessor always uses f_max = sample_rate / 2, whatever the metadata says
        _check("audio_vae.preprocessing.mel.mel_fmax", mel.get("mel_fmax", sample_rate / 2), sample_rate / 2)
        _check("audio_vae.preprocessing.audio.sampling_rate", audio.get("sampling_rate", sample_rate), sample_rate)
        _check("audio_vae.preprocessing.audio.stereo", audio.get("stereo", True), True)
        return cls(
            ch=dd.get("ch", 128),
            ch_mult=tuple(dd.get("ch_mult", (1, 2, 4))),
            num_res_blocks=dd.get("num_res_blocks", 2),
            z_channels=z,
            double_z=dd.get("double_z", True),
            in_channels=dd.get("in_channels", 2),
            out_ch=dd.get("out_ch", 2),
            mel_bins=mel_bins,
            resolution=dd.get("resolution", 256),
            dropout=dd.get("dropout", 0.0),
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=stft.get("hop_length", 160),
        )

    def to_metadata(self) -> dict:
        """The `config["audio_vae"]` sub-dict (the official layout) that `from_metadata` reads back."""
        return {
            "model": {
                "params": {
                    "ddconfig": {
                        "double_z": self.double_z, "mel_bins": self.mel_bins, "z_channels": self.z_channels,
                        "resolution": self.resolution, "downsample_time": False, "in_channels": self.in_channels,
                        "out_ch": self.out_ch, "ch": self.ch, "ch_mult": list(self.ch_mult),
                        "num_res_blocks": self.num_res_blocks, "attn_resolutions": [], "dropout": self.dropout,
                        "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
                    },  # fmt: skip
                    "sampling_rate": self.sample_rate,
                }
            },
            "preprocessing": {
                "audio": {"sampling_rate": self.sample_rate, "stereo": True},
                "stft": {"filter_length": self.n_fft, "hop_length": self.hop_length, "win_length": self.n_fft,
                         "causal": True},  # fmt: skip
                "mel": {"n_mel_channels": self.mel_bins, "mel_fmin": 0, "mel_fmax": self.sample_rate // 2},
            },
        }


# --- latent geometry ---------------------------------------------------------------------------------------


def latent_frames(duration: float, *, latents_per_second: float = 25.0) -> int:
    """Latent frames for a clip of `duration` seconds: round(duration * 25) (Python rounding, as ltx-core)."""
    return round(duration * latents_per_second)


def latent_frames_for_video(num_frames: int, fps: float) -> int:
    """Latent frames matching a video of `num_frames` at `fps` (121 @ 24 fps -> 5.04 s -> 126)."""
    return latent_frames(float(num_frames) / float(fps))


def latent_frames_for_mel(mel_frames: int) -> int:
    """T_mel -> T_lat = (T_mel - 1) // 4 + 1 (two causal stride-2 convs)."""
    return (mel_frames - 1) // LATENT_TIME_FACTOR + 1


def mel_frames_for_latents(frames: int) -> int:
    """T_lat -> decoded T_mel = max(4 T_lat - 3, 1)."""
    return max(frames * LATENT_TIME_FACTOR - (LATENT_TIME_FACTOR - 1), 1)


def patchify(latent: Tensor) -> Tensor:
    """(B, C, T, F) -> (B, T, C * F) tokens, token channel = c * F + f (AudioPatchifier)."""
    b, c, t, f = latent.shape
    return latent.permute(0, 2, 1, 3).reshape(b, t, c * f)


def unpatchify(tokens: Tensor, *, channels: int = 8, mel_bins: int = 16) -> Tensor:
    """(B, T, C * F) -> (B, C, T, F), the inverse of `patchify`."""
    b, t, d = tokens.shape
    if d != channels * mel_bins:
        raise ValueError(f"tokens have {d} channels, expected channels * mel_bins = {channels} * {mel_bins}")
    return tokens.reshape(b, t, channels, mel_bins).permute(0, 2, 1, 3)


def audio_positions(
    batch: int,
    frames: int,
    *,
    shift: int = 0,
    sample_rate: int = 16000,
    hop_length: int = 160,
    device: torch.device | None = None,
) -> Tensor:
    """[start, end) seconds of each latent frame: (B, 1, T_lat, 2) float32, as AudioPatchifier (causal).

    Latent i starts at mel frame max(4 (i + shift) - 3, 0) and ends where latent i + 1 starts; mel frame k is
    at k * hop / sample_rate seconds. The arithmetic follows ltx-core's order in fp32.
    """

    def seconds(first: int) -> Tensor:
        idx = torch.arange(first, first + frames, dtype=torch.float32, device=device)  # (T,)
        mel_frame = (idx * LATENT_TIME_FACTOR + 1 - LATENT_TIME_FACTOR).clip(min=0)
        return mel_frame * hop_length / sample_rate

    bounds = torch.stack([seconds(shift), seconds(shift + 1)], dim=-1)  # (T, 2)
    return bounds[None, None].expand(batch, 1, frames, 2)


# --- building blocks ---------------------------------------------------------------------------------------


def pixel_norm(x: Tensor) -> Tensor:
    """RMS over channels (dim 1) at every (time, frequency) position, no affine."""
    return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + PIXEL_NORM_EPS)


class CausalConv2d(nn.Module):
    """Stride-1 conv, causal in time (dim 2: k - 1 frames in front) and centred in frequency (dim 3)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        k = kernel_size - 1
        self.pad = (k // 2, k - k // 2, k, 0)  # (freq left, freq right, time front, time back)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.conv1 = CausalConv2d(in_channels, out_channels, 3)
        self.conv2 = CausalConv2d(out_channels, out_channels, 3)
        self.dropout = dropout
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(pixel_norm(x)))
        h = F.dropout(F.silu(pixel_norm(h)), self.dropout, self.training)
        h = self.conv2(h)
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """x1/2 in time and frequency: pad (time 2 front, frequency 1 right), 3x3 conv, stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 2, 0)))  # (B, C, T, M) -> (B, C, (T - 1) // 2 + 1, M // 2)


class Upsample(nn.Module):
    """x2 nearest in time and frequency, causal conv, then drop the first frame: (T, M) -> (2T - 1, 2M)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv2d(channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, 2T, 2M)
        return self.conv(x)[:, :, 1:]  # frames 0 and 1 both saw only input frame 0; keep one


class Level(nn.Module):
    """One resolution: `block` (ResnetBlocks), then `downsample` / `upsample` where the level has one."""

    def __init__(self, widths: list[tuple[int, int]], dropout: float, resample: nn.Module | None, name: str):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o, dropout) for i, o in widths)
        if resample is not None:
            self.add_module(name, resample)


class Mid(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.block_1(x))


class PerChannelStatistics(nn.Module):
    """The dataset statistics of the latent tokens (D,), under the file's hyphenated names."""

    def __init__(self, channels: int):
        super().__init__()
        for name in STATISTICS:
            self.register_buffer(name, torch.ones(channels) if name == "std-of-means" else torch.zeros(channels))

    def normalize(self, tokens: Tensor) -> Tensor:
        mean, std = self.get_buffer("mean-of-means").to(tokens), self.get_buffer("std-of-means").to(tokens)
        return (tokens - mean) / std

    def un_normalize(self, tokens: Tensor) -> Tensor:
        mean, std = self.get_buffer("mean-of-means").to(tokens), self.get_buffer("std-of-means").to(tokens)
        return tokens * std + mean


# --- encoder / decoder -------------------------------------------------------------------------------------


class AudioEncoder(nn.Module):
    """(B, in_channels, T_mel, M) -> raw latent means (B, z, T_lat, M / 4)."""

    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        self.z_channels = cfg.z_channels
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = CausalConv2d(cfg.in_channels, cfg.ch, 3)
        self.down = nn.ModuleList()
        prev = cfg.ch
        for level, w in enumerate(widths):
            pairs = [(prev if j == 0 else w, w) for j in range(cfg.num_res_blocks)]
            last = level == len(widths) - 1
            self.down.append(Level(pairs, cfg.dropout, None if last else Downsample(w), "downsample"))
            prev = w
        self.mid = Mid(widths[-1], cfg.dropout)
        self.conv_out = CausalConv2d(widths[-1], 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3)

    def forward(self, mel: Tensor) -> Tensor:
        h = self.conv_in(mel)  # (B, ch, T_mel, M)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)  # (B, w, (T - 1) // 2 + 1, M / 2)
        h = self.mid(h)  # (B, 4 ch, T_lat, M / 4)
        h = self.conv_out(F.silu(pixel_norm(h)))  # (B, 2z, T_lat, M / 4)
        return h[:, : self.z_channels]  # the means (ltx-core: chunk(2)[0])


class AudioDecoder(nn.Module):
    """Raw latents (B, z, T_lat, F) -> mel (B, out_ch, 4 T_lat - 3, M) before the final crop / pad."""

    def __init__(self, cfg: AudioVAEConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = CausalConv2d(cfg.z_channels, widths[-1], 3)
        self.mid = Mid(widths[-1], cfg.dropout)
        levels: list[Level] = []
        prev = widths[-1]
        for level in reversed(range(len(widths))):  # built deepest first, stored by level index
            w = widths[level]
            pairs = [(prev if j == 0 else w, w) for j in range(cfg.num_res_blocks + 1)]
            levels.insert(0, Level(pairs, cfg.dropout, Upsample(w) if level else None, "upsample"))
            prev = w
        self.up = nn.ModuleList(levels)
        self.conv_out = CausalConv2d(widths[0], cfg.out_ch, 3)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))  # (B, 4 ch, T_lat, F)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)  # (B, w, 2T - 1, 2F)
        return self.conv_out(F.silu(pixel_norm(h)))  # (B, out_ch, 4 T_lat - 3, 4F)


class AudioVAE(nn.Module):
    """encode: log-mel (B, 2, T_mel, 64) -> normalised latent (B, 8, T_lat, 16); decode: the inverse."""

    def __init__(self, cfg: AudioVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or AudioVAEConfig()
        self.encoder = AudioEncoder(cfg)
        self.decoder = AudioDecoder(cfg)
        self.per_channel_statistics = PerChannelStatistics(cfg.token_channels)

    def encode(self, mel: Tensor) -> Tensor:
        cfg = self.cfg
        if mel.ndim != 4 or mel.shape[1] != cfg.in_channels or mel.shape[3] != cfg.mel_bins:
            raise ValueError(
                f"encode expects a log-mel (B, {cfg.in_channels}, T_mel, {cfg.mel_bins}), got {tuple(mel.shape)}"
                + (" (mono audio: duplicate it with ltx.ltx2.audio.as_stereo)" if mel.ndim == 4 and mel.shape[1] == 1
                   else "")  # fmt: skip
            )
        z = self.encoder(mel)  # (B, z, T_lat, F)
        tokens = self.per_channel_statistics.normalize(patchify(z))  # (B, T_lat, D)
        return unpatchify(tokens, channels=z.shape[1], mel_bins=z.shape[3])

    def decode(self, latent: Tensor) -> Tensor:
        cfg = self.cfg
        if latent.ndim != 4 or latent.shape[1] != cfg.z_channels or latent.shape[3] != cfg.latent_mel_bins:
            raise ValueError(
                f"decode expects a latent (B, {cfg.z_channels}, T_lat, {cfg.latent_mel_bins}),"
                f" got {tuple(latent.shape)}"
            )
        b, c, t, f = latent.shape
        z = unpatchify(self.per_channel_statistics.un_normalize(patchify(latent)), channels=c, mel_bins=f)
        mel = self.decoder(z)  # (B, out_ch, ~4 T_lat - 3, ~M)
        frames = mel_frames_for_latents(t)
        mel = mel[:, :, :frames, : cfg.mel_bins]
        short_t, short_m = frames - mel.shape[2], cfg.mel_bins - mel.shape[3]
        if short_t > 0 or short_m > 0:  # never with the released config; kept as ltx-core's safety net
            mel = F.pad(mel, (0, max(short_m, 0), 0, max(short_t, 0)))
        return mel  # (B, out_ch, 4 T_lat - 3, M)

    def forward(self, mel: Tensor) -> Tensor:
        return self.decode(self.encode(mel))
