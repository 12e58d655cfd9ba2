"""LTX-2 vocoders: mel spectrogram -> stereo waveform. HiFi-GAN (LTX-2, 19B, 24 kHz) and BigVGAN-v2 with a
bandwidth-extension stage (LTX-2.3, 22B, 48 kHz).

References: Kong et al., "HiFi-GAN" (arXiv 2010.05646), generator V1 with ResBlock1; Lee et al., "BigVGAN"
(arXiv 2206.04658) and NVIDIA BigVGAN-v2 (AMP blocks, SnakeBeta, anti-aliased activations, kaiser-sinc
filters); the official `ltx_core/model/audio_vae/{vocoder,model_configurator,resnet}.py` (ltx-core 1.0.0),
which this matches number for number (tests/ltx2/test_ltx2_vocoder.py).

Shapes: B batch · T mel frames (100 / s, the audio VAE's hop of 160 samples at 16 kHz) · 64 mel bins ·
2 stereo channels.
mel: (B, 2, T, 64) log-mel, as the audio VAE decodes it. waveform: (B, 2, N) in [-1, 1].
19B: N = 240 T at 24 kHz. 2.3: N = 480 T at 48 kHz (160 T at 16 kHz, then x3).

Generator (`Vocoder`, both families): the two channels' mels are stacked into 128 input channels
(channel = stereo * 64 + bin), `conv_pre` (k7) -> per stage: [leaky_relu(0.1), HiFi-GAN only] ->
ConvTranspose1d x rate (channels halve) -> *mean* of the stage's resblocks (one per kernel size, all fed the
same input) -> `act_post` -> `conv_post` (k7, -> 2 channels) -> tanh, clamp(-1, 1) or nothing.
- HiFi-GAN ("1"): ResBlock1 = 3 x (leaky 0.1, dilated conv, leaky 0.1, conv, + residual); act_post is
  leaky_relu with slope 0.01 (the torch default, *not* 0.1).
- BigVGAN-v2 ("AMP1"): the same with each leaky_relu replaced by an anti-aliased SnakeBeta: x2 kaiser-sinc
  upsampling, x + sin^2(x e^alpha) / e^beta, x2 kaiser-sinc low-pass decimation. The 12-tap filters are
  checkpoint buffers (`upsample.filter`, `downsample.lowpass.filter`); they are also computed at init.

Bandwidth extension (`VocoderWithBWE`, 2.3): `vocoder` makes 16 kHz audio; it is zero-padded to a multiple of
80 samples, a causal log-mel (n_fft 512, hop 80, 64 mels; STFT as a strided conv with the checkpoint's
DFT x window basis `mel_stft.stft_fn.forward_basis` and filterbank `mel_stft.mel_basis`, left pad 432) feeds
`bwe_generator` (BigVGAN-v2, x240, no final activation), whose output is a residual added to the 16 kHz audio
resampled x3 by a Hann-windowed sinc (torchaudio-style; filter built at init, not in the checkpoint); then
clamp(-1, 1) and trim to 3 x the 16 kHz length.

Module names are the official checkpoint keys after removing the file's `vocoder.` prefix *once*: 19B files
give conv_pre.weight, ups.0.weight, resblocks.0.convs1.0.weight ...; 2.3 files give vocoder.conv_pre.weight,
bwe_generator.resblocks.0.acts1.0.act.alpha, mel_stft.stft_fn.forward_basis ... (194 / 1227 tensors).
Configs come from the checkpoint metadata's `vocoder` sub-dict (`VocoderConfig.from_metadata`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MEL_BINS = 64  # every released vocoder: conv_pre takes 2 x 64 channels
STEREO = 2
LEAKY_SLOPE = 0.1  # inside the HiFi-GAN stages and resblocks
LEAKY_SLOPE_POST = 0.01  # act_post = nn.LeakyReLU() in the official code
SNAKE_EPS = 1e-9
LOG_MEL_FLOOR = 1e-5

HIFIGAN, BIGVGAN = "1", "AMP1"  # metadata `resblock` values


# ------------------------------------------------------------------------------------------------ configs


@dataclass(kw_only=True)
class GeneratorConfig:
    """One mel -> waveform generator. Defaults are the LTX-2 (19B) HiFi-GAN; field names are the metadata's."""

    resblock: str = HIFIGAN  # "1": HiFi-GAN ResBlock1; "AMP1": BigVGAN-v2 AMP block with SnakeBeta
    upsample_initial_channel: int = 1024
    upsample_rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    use_tanh_at_final: bool = True  # final tanh, else clamp(-1, 1)
    apply_final_activation: bool = True  # False for the BWE generator (it predicts a residual)
    use_bias_at_final: bool = True
    output_sampling_rate: int = 24000  # a label: the rate the output is meant to be played at

    def __post_init__(self):
        self.upsample_rates = tuple(self.upsample_rates)
        self.upsample_kernel_sizes = tuple(self.upsample_kernel_sizes)
        self.resblock_kernel_sizes = tuple(self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(d) for d in self.resblock_dilation_sizes)
        if self.resblock not in (HIFIGAN, BIGVGAN):
            raise ValueError(f"resblock={self.resblock!r} is not supported (supported: {HIFIGAN!r}, {BIGVGAN!r})")
        if not self.upsample_rates or len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                f"upsample_rates {list(self.upsample_rates)} and upsample_kernel_sizes "
                f"{list(self.upsample_kernel_sizes)} must be non-empty and of equal length"
            )
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            # padding (k - u) / 2 then gives exactly u x the length (every release: k - u in {0, 2, 6, 10})
            if u < 1 or k < u or (k - u) % 2:
                raise ValueError(
                    f"upsample rate {u} with kernel {k} is not supported: needs kernel >= rate and kernel - rate "
                    "even (so each stage multiplies the length by exactly its rate)"
                )
        if not self.resblock_kernel_sizes or len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError(
                f"resblock_kernel_sizes {list(self.resblock_kernel_sizes)} and resblock_dilation_sizes "
                f"{[list(d) for d in self.resblock_dilation_sizes]} must be non-empty and of equal length"
            )
        if any(k < 1 or k % 2 == 0 for k in self.resblock_kernel_sizes):
            raise ValueError(f"resblock_kernel_sizes {list(self.resblock_kernel_sizes)} must be odd ('same' padding)")
        if any(len(d) != 3 or min(d) < 1 for d in self.resblock_dilation_sizes):
            raise ValueError(
                f"resblock_dilation_sizes {[list(d) for d in self.resblock_dilation_sizes]}: each entry must be "
                "three dilations >= 1 (the official resblocks have three conv pairs)"
            )
        c, n = self.upsample_initial_channel, len(self.upsample_rates)
        if c < 2**n or c % 2**n:
            raise ValueError(f"upsample_initial_channel={c} must be a positive multiple of 2^{n} (halved per stage)")

    @property
    def is_bigvgan(self) -> bool:
        return self.resblock == BIGVGAN

    @property
    def final_channels(self) -> int:
        return self.upsample_initial_channel // 2 ** len(self.upsample_rates)

    @property
    def hop(self) -> int:
        """Output samples per mel frame."""
        return math.prod(self.upsample_rates)


@dataclass(kw_only=True)
class BWEConfig:
    """The 2.3 bandwidth extension: log-mel of the 16 kHz audio -> `generator` residual on a x3 resampling."""

    generator: GeneratorConfig
    input_sampling_rate: int = 16000
    output_sampling_rate: int = 48000
    hop_length: int = 80  # STFT hop of the BWE log-mel (at the input rate)
    n_fft: int = 512  # also the window length
    num_mels: int = MEL_BINS

    def __post_init__(self):
        r_in, r_out = self.input_sampling_rate, self.output_sampling_rate
        if r_in < 1 or r_out % r_in:
            raise ValueError(f"bwe output_sampling_rate {r_out} must be a whole multiple of input_sampling_rate {r_in}")
        if self.num_mels != MEL_BINS:
            raise ValueError(f"bwe.num_mels={self.num_mels} is not supported (supported: {MEL_BINS})")
        if not 1 <= self.hop_length <= self.n_fft:
            raise ValueError(f"bwe hop_length={self.hop_length} must be in [1, n_fft={self.n_fft}]")
        want = self.hop_length * self.ratio
        if self.generator.hop != want:
            raise ValueError(
                f"bwe upsample_rates {list(self.generator.upsample_rates)} multiply to {self.generator.hop}; they must "
                f"multiply to hop_length x output/input rate = {self.hop_length} x {self.ratio} = {want}"
            )
        if self.generator.apply_final_activation:
            raise ValueError("bwe.apply_final_activation=True is not supported (supported: False)")
        if self.generator.output_sampling_rate != r_out:
            raise ValueError(f"bwe generator output_sampling_rate must equal the BWE's ({r_out})")

    @property
    def ratio(self) -> int:
        return self.output_sampling_rate // self.input_sampling_rate


# Metadata keys read per generator (anything else is refused), with the official defaults for absent keys.
_GENERATOR_KEYS = (
    "resblock", "stereo", "activation", "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes",
    "resblock_kernel_sizes", "resblock_dilation_sizes", "use_tanh_at_final", "use_bias_at_final",
    "apply_final_activation", "output_sampling_rate",
)  # fmt: skip
_BWE_KEYS = ("input_sampling_rate", "output_sampling_rate", "hop_length", "n_fft", "win_size", "num_mels")


def _refuse_unknown(d: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} are not supported (known: {sorted(known)})")


def _expect(d: dict, key: str, value: object, where: str) -> None:
    """The official configurator's check: the key must be present with exactly this value."""
    if d.get(key, "<absent>") != value:
        raise ValueError(f"{where}.{key}={d.get(key, '<absent>')!r} is not supported (supported: {value!r})")


def _generator_from_metadata(
    d: dict, where: str, resblock: str, extra_keys: tuple[str, ...] = (), **fixed
) -> GeneratorConfig:
    """Parse one generator sub-dict (`extra_keys` are read by the caller); `fixed` are fields the official
    configurator sets itself (a metadata value, if present, must agree)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a dict, got {type(d).__name__}")
    _refuse_unknown(d, _GENERATOR_KEYS + extra_keys, where)
    _expect(d, "resblock", resblock, where)
    _expect(d, "stereo", True, where)
    if resblock == BIGVGAN:
        _expect(d, "activation", "snakebeta", where)
    elif "activation" in d:
        raise ValueError(f"{where}.activation={d['activation']!r} is not supported: only read for resblock 'AMP1'")
    for key, value in fixed.items():
        if key in d and d[key] != value:
            raise ValueError(f"{where}.{key}={d[key]!r} is not supported here (supported: {value!r})")
    defaults = GeneratorConfig()
    kw = {k: d.get(k, getattr(defaults, k)) for k in (
        "upsample_initial_channel", "upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes",
        "resblock_dilation_sizes", "use_tanh_at_final", "use_bias_at_final", "output_sampling_rate")}  # fmt: skip
    kw.update(fixed)
    try:
        return GeneratorConfig(resblock=resblock, **kw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _generator_to_metadata(g: GeneratorConfig) -> dict:
    d = {
        "resblock": g.resblock,
        "stereo": True,
        "upsample_initial_channel": g.upsample_initial_channel,
        "upsample_rates": list(g.upsample_rates),
        "upsample_kernel_sizes": list(g.upsample_kernel_sizes),
        "resblock_kernel_sizes": list(g.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(x) for x in g.resblock_dilation_sizes],
        "use_tanh_at_final": g.use_tanh_at_final,
        "use_bias_at_final": g.use_bias_at_final,
    }
    if g.is_bigvgan:
        d["activation"] = "snakebeta"
    return d


@dataclass(kw_only=True)
class VocoderConfig:
    """`vocoder` alone (19B, HiFi-GAN) or `vocoder` + `bwe` (2.3, BigVGAN-v2 + bandwidth extension)."""

    vocoder: GeneratorConfig = field(default_factory=GeneratorConfig)
    bwe: BWEConfig | None = None

    def __post_init__(self):
        # the official configurator's pairing: HiFi-GAN alone, or BigVGAN-v2 generators with the BWE
        want = HIFIGAN if self.bwe is None else BIGVGAN
        gens = [self.vocoder] if self.bwe is None else [self.vocoder, self.bwe.generator]
        if any(g.resblock != want for g in gens):
            what = "without" if self.bwe is None else "with"
            raise ValueError(f"a vocoder {what} BWE must use resblock {want!r} (the released layouts)")
        if self.bwe is not None:
            if not self.vocoder.apply_final_activation:
                raise ValueError("vocoder.apply_final_activation=False is not supported (supported: True)")
            if self.vocoder.output_sampling_rate != self.bwe.input_sampling_rate:
                raise ValueError(
                    f"the main vocoder's output rate {self.vocoder.output_sampling_rate} must be the BWE input rate "
                    f"{self.bwe.input_sampling_rate}"
                )

    @property
    def sample_rate(self) -> int:
        return self.vocoder.output_sampling_rate if self.bwe is None else self.bwe.output_sampling_rate

    @property
    def hop(self) -> int:
        """Output samples per mel frame (240 for 19B, 480 for 2.3)."""
        return self.vocoder.hop * (1 if self.bwe is None else self.bwe.ratio)

    @classmethod
    def from_metadata(cls, d: dict) -> VocoderConfig:
        """From the checkpoint metadata's `config["vocoder"]`; nested {"vocoder", "bwe"} selects the BWE."""
        if not isinstance(d, dict):
            raise ValueError(f"vocoder metadata must be a dict, got {type(d).__name__}")
        if "bwe" not in d:
            return cls(vocoder=_generator_from_metadata(d, "vocoder", HIFIGAN, apply_final_activation=True))
        _refuse_unknown(d, ("vocoder", "bwe"), "vocoder (with bwe)")
        b = d["bwe"]
        if not isinstance(b, dict):
            raise ValueError(f"vocoder.bwe must be a dict, got {type(b).__name__}")
        missing = [k for k in ("input_sampling_rate", "output_sampling_rate", "hop_length", "n_fft", "num_mels")
                   if k not in b]  # fmt: skip
        if missing:
            raise ValueError(f"vocoder.bwe is missing {missing} (the official configurator requires them)")
        if b.get("win_size", b["n_fft"]) != b["n_fft"]:
            raise ValueError(f"vocoder.bwe.win_size={b['win_size']!r} is not supported (supported: n_fft={b['n_fft']})")
        main = _generator_from_metadata(
            d.get("vocoder", {}), "vocoder.vocoder", BIGVGAN,
            output_sampling_rate=b["input_sampling_rate"], apply_final_activation=True,
        )  # fmt: skip
        gen = _generator_from_metadata(
            b, "vocoder.bwe", BIGVGAN, _BWE_KEYS,
            output_sampling_rate=b["output_sampling_rate"], apply_final_activation=False,
        )  # fmt: skip
        try:
            bwe = BWEConfig(generator=gen, **{k: b[k] for k in _BWE_KEYS if k != "win_size"})
            return cls(vocoder=main, bwe=bwe)
        except (TypeError, ValueError) as e:
            raise ValueError(f"vocoder: {e}") from None

    def to_metadata(self) -> dict:
        if self.bwe is None:
            return {**_generator_to_metadata(self.vocoder), "output_sampling_rate": self.vocoder.output_sampling_rate}
        b = self.bwe
        return {
            "vocoder": _generator_to_metadata(self.vocoder),
            "bwe": {
                **_generator_to_metadata(b.generator),
                "apply_final_activation": False,
                "input_sampling_rate": b.input_sampling_rate,
                "output_sampling_rate": b.output_sampling_rate,
                "hop_length": b.hop_length,
                "n_fft": b.n_fft,
                "win_size": b.n_fft,
                "num_mels": b.num_mels,
            },
        }


# Verbatim `config["vocoder"]` of the released files: ltx-2-19b-*.safetensors (it has no output_sampling_rate;
# the official default, 24000, applies) and ltx-2.3-22b-*.safetensors.
VOCODER_METADATA: dict[str, dict] = {
    "19B": {
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True,
        "upsample_rates": [6, 5, 2, 2, 2], "resblock_kernel_sizes": [3, 7, 11],
        "upsample_kernel_sizes": [16, 15, 8, 4, 4], "resblock": "1", "upsample_initial_channel": 1024,
    },
    "2.3": {
        "vocoder": {
            "upsample_initial_channel": 1536, "resblock": "AMP1", "upsample_rates": [5, 2, 2, 2, 2, 2],
            "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True,
            "use_tanh_at_final": False, "activation": "snakebeta", "use_bias_at_final": False,
        },
        "bwe": {
            "upsample_initial_channel": 512, "resblock": "AMP1", "upsample_rates": [6, 5, 2, 2, 2],
            "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "stereo": True,
            "use_tanh_at_final": False, "activation": "snakebeta", "use_bias_at_final": False,
            "apply_final_activation": False, "input_sampling_rate": 16000, "output_sampling_rate": 48000,
            "hop_length": 80, "n_fft": 512, "win_size": 512, "num_mels": 64,
        },
    },
}  # fmt: skip

VOCODER_PRESETS: dict[str, VocoderConfig] = {k: VocoderConfig.from_metadata(v) for k, v in VOCODER_METADATA.items()}


# ------------------------------------------------------------------------------------------------ filters


def kaiser_sinc_taps(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """Kaiser-windowed sinc low-pass (BigVGAN / alias-free GAN): cutoff and transition half-width in cycles
    per sample, window beta from Kaiser's attenuation formula; normalised to unit DC gain. -> (1, 1, K), a
    fresh tensor on the default device (computed once per argument set, on the CPU)."""
    return _kaiser_sinc_taps_cpu(cutoff, half_width, kernel_size).to(torch.get_default_device(), copy=True)


@functools.lru_cache(maxsize=16)
def _kaiser_sinc_taps_cpu(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95  # dB
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21.0) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    with torch.device("cpu"):
        window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
        # tap positions, centred between the two middle taps for even K
        t = torch.arange(-half, half) + 0.5 if kernel_size % 2 == 0 else torch.arange(kernel_size) - half
        x = 2 * cutoff * t
        # sin(pi x) / pi / x, in this order (the official rounding; torch.sinc differs by ~1 ulp)
        sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(math.pi * x) / math.pi / x)
        taps = 2 * cutoff * window * sinc
        return (taps / taps.sum()).view(1, 1, kernel_size)


class FIRUpsample(nn.Module):
    """x`ratio` upsampling by a depthwise strided transposed conv with `filter` (zero-stuffing + FIR, gain
    `ratio`), edges replicate-padded by `pad` input samples and the result trimmed to exactly ratio x L."""

    def __init__(self, taps: Tensor, ratio: int, pad: int, trim: tuple[int, int], persistent: bool = True):
        super().__init__()
        self.ratio, self.pad, self.trim = ratio, pad, trim
        self.register_buffer("filter", taps, persistent=persistent)  # (1, 1, K)

    def forward(self, x: Tensor) -> Tensor:
        C = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")  # (B, C, L + 2 pad)
        taps = self.filter.to(x).expand(C, -1, -1)
        y = self.ratio * F.conv_transpose1d(x, taps, stride=self.ratio, groups=C)
        return y[..., self.trim[0] : y.shape[-1] - self.trim[1]]  # (B, C, ratio L)


def kaiser_upsample(ratio: int = 2, kernel_size: int = 12) -> FIRUpsample:
    """BigVGAN's UpSample1d (its `filter` is a checkpoint buffer)."""
    pad = kernel_size // ratio - 1
    trim = (pad * ratio + (kernel_size - ratio) // 2, pad * ratio + (kernel_size - ratio + 1) // 2)
    return FIRUpsample(kaiser_sinc_taps(0.5 / ratio, 0.6 / ratio, kernel_size), ratio, pad, trim)


def hann_sinc_upsample(ratio: int, zero_crossings: int = 6, rolloff: float = 0.99) -> FIRUpsample:
    """The BWE skip: the Hann-windowed sinc of torchaudio's `resample` (its defaults: 6 zero crossings, rolloff
    0.99) as an x`ratio` FIR upsampler. Not in the checkpoint: always built here, on the CPU."""
    width = math.ceil(zero_crossings / rolloff)  # input samples each side
    with torch.device("cpu"):  # real values even when the model is built on `meta`
        t = (torch.arange(2 * width * ratio + 1) / ratio - width) * rolloff  # (K,) in units of input samples
        window = torch.cos(t.clamp(-zero_crossings, zero_crossings) * math.pi / (2 * zero_crossings)) ** 2
        taps = (torch.sinc(t) * window * rolloff / ratio).view(1, 1, -1)
    K = taps.shape[-1]
    return FIRUpsample(taps, ratio, width, (2 * width * ratio, K - ratio), persistent=False)


class KaiserLowPass(nn.Module):
    """Depthwise kaiser-sinc low-pass with `stride`, replicate padding keeping L / stride samples."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.stride = ratio
        self.pads = (kernel_size // 2 - (kernel_size % 2 == 0), kernel_size // 2)
        self.register_buffer("filter", kaiser_sinc_taps(0.5 / ratio, 0.6 / ratio, kernel_size))  # (1, 1, K)

    def forward(self, x: Tensor) -> Tensor:
        C = x.shape[1]
        x = F.pad(x, self.pads, mode="replicate")
        return F.conv1d(x, self.filter.expand(C, -1, -1), stride=self.stride, groups=C)


class KaiserDownsample(nn.Module):
    """BigVGAN's DownSample1d: only a holder for `lowpass` (the checkpoint's downsample.lowpass.filter)."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12):
        super().__init__()
        self.lowpass = KaiserLowPass(ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


# ------------------------------------------------------------------------------------------------ blocks


class SnakeBeta(nn.Module):
    """x + sin^2(a x) / b per channel, a = exp(alpha), b = exp(beta) (log-scale parameters, 0 at init)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha.exp()[:, None]  # (C, 1)
        b = self.beta.exp()[:, None]
        return x + torch.sin(x * a).pow(2) * (1.0 / (b + SNAKE_EPS))


class AntiAliasedSnake(nn.Module):
    """BigVGAN's Activation1d around SnakeBeta: x2 up, activation, x2 down; (B, C, L) -> (B, C, L)."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = kaiser_upsample(2, 12)
        self.downsample = KaiserDownsample(2, 12)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _conv(channels: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2)


class HiFiGANResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation d, x += conv(leaky(conv_d(leaky(x)))); length-preserving."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, kernel_size, 1) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain in zip(self.convs1, self.convs2):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LEAKY_SLOPE)), LEAKY_SLOPE))
        return x


class AMPBlock(nn.Module):
    """BigVGAN-v2 AMPBlock1: ResBlock1 with anti-aliased SnakeBeta (`acts1`, `acts2`) for the leaky ReLUs."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, kernel_size, 1) for _ in dilations)
        self.acts1 = nn.ModuleList(AntiAliasedSnake(channels) for _ in dilations)
        self.acts2 = nn.ModuleList(AntiAliasedSnake(channels) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain, act1, act2 in zip(self.convs1, self.convs2, self.acts1, self.acts2):
            x = x + plain(act2(dilated(act1(x))))
        return x


def check_mel(mel: Tensor, channels: int = STEREO) -> None:
    """Raise a ValueError unless `mel` is (B, channels, T, 64) with T >= 1 (channels: 2, left and right)."""
    shape = tuple(mel.shape)
    if mel.ndim == 4 and shape[1] == channels and shape[3] == MEL_BINS and shape[2] >= 1:
        return
    hint = ""
    if mel.ndim == 3:
        hint = " (mono (B, T, 64) input is not supported: every released vocoder is stereo)"
    elif mel.ndim == 4 and shape[2] == MEL_BINS and shape[3] != MEL_BINS:
        hint = f" (looks like (B, {channels}, 64, T): transpose the last two dims)"
    elif mel.ndim == 4 and shape[1] != channels:
        hint = f" ({shape[1]} channels: this vocoder takes {channels}" + (", left and right)" if channels == 2 else ")")
    elif mel.ndim == 4 and shape[3] != MEL_BINS:
        hint = f" ({shape[3]} mel bins: the vocoder takes {MEL_BINS}, as the audio VAE decodes them)"
    raise ValueError(f"mel must be (B, {channels}, T, {MEL_BINS}) with T >= 1, got shape {shape}{hint}")


# ------------------------------------------------------------------------------------------------ models


class Vocoder(nn.Module):
    """Mel -> waveform generator (HiFi-GAN or BigVGAN-v2, per `cfg.resblock`). (B, 2, T, 64) -> (B, 2, hop T).
    `channels`: audio channels in and out (2, as every released file; 1 builds a mono generator, e.g. for training
    one that `train.train_vocoder.stereo_from_mono` writes into the stereo layout)."""

    def __init__(self, cfg: GeneratorConfig, channels: int = STEREO):
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        self.sample_rate = cfg.output_sampling_rate
        C = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(channels * MEL_BINS, C, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(C >> i, C >> (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        block = AMPBlock if cfg.is_bigvgan else HiFiGANResBlock
        self.resblocks = nn.ModuleList(  # stage-major: resblocks[i * n + j] is stage i, kernel j
            block(C >> (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        c_out = cfg.final_channels
        self.act_post = AntiAliasedSnake(c_out) if cfg.is_bigvgan else nn.LeakyReLU(LEAKY_SLOPE_POST)
        self.conv_post = nn.Conv1d(c_out, channels, 7, padding=3, bias=cfg.use_bias_at_final)

    @property
    def hop(self) -> int:
        return self.cfg.hop

    def forward(self, mel: Tensor) -> Tensor:
        check_mel(mel, self.channels)
        x = mel.transpose(2, 3).flatten(1, 2)  # (B, 2, T, 64) -> (B, 2 * 64, T), channel = side * 64 + bin
        x = self.conv_pre(x)  # (B, C, T)
        n = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            if not self.cfg.is_bigvgan:
                x = F.leaky_relu(x, LEAKY_SLOPE)
            x = up(x)  # (B, C / 2^(i+1), T * rates[:i+1])
            x = torch.stack([blk(x) for blk in self.resblocks[i * n : (i + 1) * n]]).mean(0)
        x = self.conv_post(self.act_post(x))  # (B, 2, hop T)
        if self.cfg.apply_final_activation:
            x = torch.tanh(x) if self.cfg.use_tanh_at_final else x.clamp(-1.0, 1.0)
        return x


class CausalSTFT(nn.Module):
    """|STFT| as a strided conv with a stored (window x DFT) basis: rows [real (F); imaginary (F)],
    F = n_fft / 2 + 1. Causal: left-padded by n_fft - hop, so frame j ends at sample (j + 1) hop."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        n_freqs = n_fft // 2 + 1
        # loaded from the checkpoint (the official code never computes them); inverse_basis is unused
        self.register_buffer("forward_basis", torch.zeros(2 * n_freqs, 1, n_fft))
        self.register_buffer("inverse_basis", torch.zeros(2 * n_freqs, 1, n_fft))

    def forward(self, y: Tensor) -> Tensor:
        y = F.pad(y[:, None], (self.n_fft - self.hop_length, 0))  # (N, L) -> (N, 1, n_fft - hop + L)
        spec = F.conv1d(y, self.forward_basis, stride=self.hop_length)  # (N, 2F, L / hop)
        re, im = spec.chunk(2, dim=1)
        return torch.sqrt(re.square() + im.square())  # (N, F, L / hop)


class CausalLogMel(nn.Module):
    """log(max(mel_basis @ |STFT|, 1e-5)) with the stored filterbank `mel_basis` (64, F)."""

    def __init__(self, n_fft: int, hop_length: int, num_mels: int):
        super().__init__()
        self.stft_fn = CausalSTFT(n_fft, hop_length)
        self.register_buffer("mel_basis", torch.zeros(num_mels, n_fft // 2 + 1))

    def forward(self, y: Tensor) -> Tensor:
        mag = self.stft_fn(y)  # (N, F, frames)
        return torch.matmul(self.mel_basis.to(mag.dtype), mag).clamp(min=LOG_MEL_FLOOR).log()  # (N, 64, frames)


class VocoderWithBWE(nn.Module):
    """2.3: BigVGAN-v2 at 16 kHz + bandwidth extension to 48 kHz. (B, 2, T, 64) -> (B, 2, 480 T)."""

    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        if cfg.bwe is None:
            raise ValueError("VocoderWithBWE needs a config with `bwe` (use Vocoder(cfg.vocoder) otherwise)")
        self.cfg = cfg
        b = cfg.bwe
        self.sample_rate = b.output_sampling_rate
        self.vocoder = Vocoder(cfg.vocoder)
        self.bwe_generator = Vocoder(b.generator)
        self.mel_stft = CausalLogMel(b.n_fft, b.hop_length, b.num_mels)
        self.resampler = hann_sinc_upsample(b.ratio)  # `resampler.filter` is not a state-dict entry

    @property
    def hop(self) -> int:
        return self.cfg.hop

    def forward(self, mel: Tensor) -> Tensor:
        b = self.cfg.bwe
        x = self.vocoder(mel)  # (B, 2, L) at the input rate, L = 160 T
        B, S, L = x.shape
        x = F.pad(x, (0, -L % b.hop_length))  # (B, 2, L') with L' a multiple of hop
        low_mel = self.mel_stft(x.flatten(0, 1))  # (B 2, 64, L' / hop)
        low_mel = low_mel.unflatten(0, (B, S)).transpose(2, 3)  # (B, 2, L' / hop, 64)
        residual = self.bwe_generator(low_mel)  # (B, 2, ratio L')
        y = residual + self.resampler(x)
        return y.clamp(-1.0, 1.0)[..., : L * b.ratio]  # (B, 2, ratio L)


def build_vocoder(cfg: VocoderConfig) -> Vocoder | VocoderWithBWE:
    """The model for a `VocoderConfig`: `Vocoder` (19B layout) or `VocoderWithBWE` (2.3 layout)."""
    return Vocoder(cfg.vocoder) if cfg.bwe is None else VocoderWithBWE(cfg)
