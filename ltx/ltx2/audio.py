"""LTX-2 audio preprocessing in plain torch: sinc resampling, the slaney mel spectrogram, log-mel features.

References: ltx-core 1.0.0 `ltx_core/model/audio_vae/ops.py::AudioProcessor`, the only torchaudio user in the
reference; it calls `torchaudio.functional.resample` (default algorithm: Hann-windowed sinc, 6 zero crossings,
rolloff 0.99) and `torchaudio.transforms.MelSpectrogram` with the settings below. No torchaudio wheel loads
beside torch 2.13, so both are re-derived here from torchaudio's documented algorithm (torchaudio
`functional/functional.py::_get_sinc_resample_kernel`, `melscale_fbanks`, `spectrogram`), following its order
of operations in the input dtype. tests/ltx2/test_ltx2_audio.py checks them against `transformers.audio_utils`
(an independent numpy implementation) and against closed-form signals.

Shapes: B batch · C audio channels (2 = stereo for LTX-2) · N samples · T_mel = N // hop + 1 mel frames
(center padding) · M mel bins (64).
waveform: (B, C, N) float in [-1, 1]. `mel_spectrogram` -> (B, C, M, T_mel) magnitudes (torchaudio layout);
`waveform_to_mel` -> (B, C, T_mel, M) natural-log magnitudes, the audio VAE's input.

LTX-2 settings (`audio_vae.preprocessing` metadata): 16 kHz, n_fft = win = 1024 (periodic Hann), hop 160
(100 mel frames/s), center with reflect padding, magnitude (power 1), 64 mels on 0-8000 Hz, slaney mel
scale and slaney (area) normalisation, log floor 1e-5.

Channels: the reference keeps the input's channel count (a mono file gives a 1-channel mel, which the audio
VAE encoder then rejects); `as_stereo` duplicates mono explicitly for callers that want to accept it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 16000  # audio_vae.model.params.sampling_rate
N_FFT = 1024  # preprocessing.stft.filter_length (= win_length)
HOP_LENGTH = 160  # preprocessing.stft.hop_length
N_MELS = 64  # preprocessing.mel.n_mel_channels
LOG_FLOOR = 1e-5  # AudioProcessor: log(clamp(mel, 1e-5))

LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample defaults
ROLLOFF = 0.99

# Slaney mel scale (librosa / torchaudio mel_scale="slaney"): linear below 1 kHz, logarithmic above.
_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel on the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15 mels
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


# --- resampling --------------------------------------------------------------------------------------------


def _reduced_rates(orig_sr: int, new_sr: int) -> tuple[int, int]:
    for name, sr in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if sr <= 0 or int(sr) != sr:
            raise ValueError(f"{name}={sr!r} must be a positive integer sample rate")
    gcd = math.gcd(int(orig_sr), int(new_sr))
    return int(orig_sr) // gcd, int(new_sr) // gcd


def sinc_resample_kernel(
    orig_sr: int, new_sr: int, *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> tuple[Tensor, int]:
    """The polyphase filter bank of torchaudio's default resampler: (new, 1, 2 * width + orig) and `width`.

    With the rates reduced by their gcd (orig, new), output sample j = k * new + p reads the input through phase
    p of the bank at stride orig: y[j] = sum_i x[i] h(i / orig - j / new), where h is a sinc low-pass at
    base = rolloff * min(orig, new), cut after `LOWPASS_FILTER_WIDTH` zero crossings and tapered by a Hann
    window: with u = clamp(base * (i / orig - p / new), -w, w), h = cos^2(pi u / 2w) * sinc(pi u) * base / orig.
    """
    orig, new = _reduced_rates(orig_sr, new_sr)
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)  # taps on each side, in input samples
    taps = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig  # (1, 1, K)
    phases = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new  # (new, 1, 1)
    u = ((phases + taps) * base).clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)  # (new, 1, K)
    window = torch.cos(u * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    arg = u * math.pi
    sinc = torch.where(arg == 0, torch.ones((), dtype=dtype, device=device), arg.sin() / arg)
    return sinc * (window * (base / orig)), width


def resample(waveform: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Band-limited resampling of (..., N) to (..., ceil(N * new_sr / orig_sr)), as torchaudio's default.

    Equal rates return the input unchanged (the same tensor, as torchaudio). The kernel is built in the
    waveform's dtype, as `torchaudio.functional.resample` does.
    """
    if not waveform.is_floating_point():
        raise TypeError(f"resample expects a floating-point waveform, got {waveform.dtype}")
    orig, new = _reduced_rates(orig_sr, new_sr)
    if orig_sr == new_sr:
        return waveform
    kernel, width = sinc_resample_kernel(orig_sr, new_sr, dtype=waveform.dtype, device=waveform.device)
    lead, n = waveform.shape[:-1], waveform.shape[-1]
    x = waveform.reshape(-1, 1, n)  # (W, 1, N)
    x = F.pad(x, (width, width + orig))  # (W, 1, N + 2 width + orig)
    y = F.conv1d(x, kernel, stride=orig)  # (W, new, N // orig + 1): phase p of block k = sample k * new + p
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # (W, new * (N // orig + 1))
    out_len = -(-new * n // orig)  # ceil(N * new / orig), exact in integers
    return y[:, :out_len].reshape(*lead, out_len)


# --- mel spectrogram ---------------------------------------------------------------------------------------


def hz_to_mel(freq: float) -> float:
    """Slaney mel of a frequency in Hz."""
    if freq < _SLANEY_MIN_LOG_HZ:
        return freq / _SLANEY_F_SP
    return _SLANEY_MIN_LOG_MEL + math.log(freq / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP


def mel_to_hz(mels: Tensor) -> Tensor:
    """Inverse of `hz_to_mel`, elementwise on a tensor."""
    linear = mels * _SLANEY_F_SP
    logarithmic = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mels - _SLANEY_MIN_LOG_MEL))
    return torch.where(mels >= _SLANEY_MIN_LOG_MEL, logarithmic, linear)


def mel_filterbank(
    *, n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular slaney-scale, slaney-normalised mel filters (n_freqs, n_mels), float32 (torchaudio layout).

    Filter m rises linearly from edge m to edge m + 1 and falls to edge m + 2 (edges equally spaced in mel,
    FFT bins at linspace(0, sample_rate // 2, n_freqs)); slaney normalisation scales it by 2 / (edge m + 2 -
    edge m) so that every filter has unit area in Hz.
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    bins_hz = torch.linspace(0, sample_rate // 2, n_freqs)  # (n_freqs,)
    edges_mel = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    edges = mel_to_hz(edges_mel)  # (n_mels + 2,)
    gaps = edges[1:] - edges[:-1]  # (n_mels + 1,)
    offsets = edges[None, :] - bins_hz[:, None]  # (n_freqs, n_mels + 2): edge - bin
    rising = -offsets[:, :-2] / gaps[:-1]  # (bin - lower edge) / lower gap
    falling = offsets[:, 2:] / gaps[1:]  # (upper edge - bin) / upper gap
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (n_freqs, n_mels)
    return fb * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def mel_spectrogram(
    waveform: Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """Magnitude mel spectrogram (..., N) -> (..., n_mels, N // hop + 1), as torchaudio's MelSpectrogram.

    STFT with a periodic Hann window of n_fft samples, centred frames with reflect padding, |X| (power 1),
    then the slaney filterbank. Computed in the waveform's dtype (float32 in the reference).
    """
    lead, n = waveform.shape[:-1], waveform.shape[-1]
    if n <= n_fft // 2:
        raise ValueError(f"waveform has {n} samples; reflect padding needs more than n_fft // 2 = {n_fft // 2}")
    window = torch.hann_window(n_fft, dtype=waveform.dtype, device=waveform.device)
    spec = torch.stft(
        waveform.reshape(-1, n),
        n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    ).abs()  # (W, n_fft // 2 + 1, T_mel)
    fb = mel_filterbank(n_freqs=n_fft // 2 + 1, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max)
    mel = torch.matmul(spec.transpose(-1, -2), fb.to(spec)).transpose(-1, -2)  # (W, n_mels, T_mel)
    return mel.reshape(*lead, n_mels, mel.shape[-1])


def as_stereo(waveform: Tensor) -> Tensor:
    """(B, 1 or 2, N) -> (B, 2, N): duplicate a mono channel (the reference has no mono path)."""
    if waveform.ndim != 3 or waveform.shape[1] not in (1, 2):
        raise ValueError(f"expected a (B, 1 or 2, N) waveform, got shape {tuple(waveform.shape)}")
    return waveform.expand(-1, 2, -1) if waveform.shape[1] == 1 else waveform


def waveform_to_mel(
    waveform: Tensor,
    sample_rate: int,
    *,
    target_sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
) -> Tensor:
    """The audio VAE's input features: (B, C, N) at `sample_rate` -> log-mel (B, C, T_mel, n_mels).

    As `AudioProcessor.waveform_to_mel`: resample to 16 kHz (when the rate differs), mel magnitudes on
    0 - target_sample_rate / 2, natural log with a 1e-5 floor, mel bins last. Channels pass through unchanged
    (see `as_stereo`). The result has the waveform's dtype and device.
    """
    if waveform.ndim != 3:
        raise ValueError(f"expected a (B, C, N) waveform, got shape {tuple(waveform.shape)}")
    x = resample(waveform, sample_rate, target_sample_rate)  # (B, C, N')
    mel = mel_spectrogram(
        x, sample_rate=target_sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
    )  # (B, C, M, T_mel)
    mel = torch.log(torch.clamp(mel, min=LOG_FLOOR)).to(waveform.dtype)
    return mel.permute(0, 1, 3, 2).contiguous()  # (B, C, T_mel, M)
