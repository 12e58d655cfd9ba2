"""ltx.ltx2.audio (resampling, mel spectrogram, log-mel features) against independent implementations.

No torchaudio loads beside torch 2.13, so the mel path is checked against `transformers.audio_utils` (numpy,
float64: its own filterbank and STFT), and the resampler against closed-form signals and a brute-force
numpy evaluation of torchaudio's documented kernel formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from ltx.ltx2.audio import (
    LOWPASS_FILTER_WIDTH,
    ROLLOFF,
    as_stereo,
    mel_filterbank,
    mel_spectrogram,
    resample,
    sinc_resample_kernel,
    waveform_to_mel,
)


def _rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _hf_filterbank() -> np.ndarray:
    return mel_filter_bank(num_frequency_bins=513, num_mel_filters=64, min_frequency=0.0, max_frequency=8000.0,
                           sampling_rate=16000, norm="slaney", mel_scale="slaney")  # fmt: skip


def _hf_mel(x: np.ndarray) -> np.ndarray:
    """(N,) -> (64, T) magnitudes, transformers' numpy STFT + slaney filterbank."""
    return spectrogram(x.astype(np.float64), window_function(1024, "hann", periodic=True), frame_length=1024,
                       hop_length=160, fft_length=1024, power=1.0, center=True, pad_mode="reflect",
                       mel_filters=_hf_filterbank(), mel_floor=1e-30, dtype=np.float64)  # fmt: skip


def test_filterbank_matches_transformers():
    ours = mel_filterbank(n_freqs=513, n_mels=64, sample_rate=16000, f_min=0.0, f_max=8000.0)
    ref = _hf_filterbank()
    assert ours.shape == ref.shape == (513, 64) and ours.dtype == torch.float32
    assert _rel(ours, ref) <= 1e-5
    assert (ours >= 0).all() and (ours.sum(0) > 0).all()  # every filter covers some bin


@pytest.mark.parametrize("signal", ["noise", "sine"])
def test_mel_spectrogram_matches_transformers(signal):
    n = 8000
    if signal == "noise":
        x = torch.randn(2, 2, n) * 0.3
    else:
        t = torch.arange(n, dtype=torch.float64) / 16000
        x = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t), 0.3 * torch.sin(2 * math.pi * 3150.5 * t + 1)])
        x = x.float()[None]  # (1, 2, N)
    ours = mel_spectrogram(x)  # (B, C, 64, T)
    assert ours.shape == (*x.shape[:2], 64, n // 160 + 1)
    for idx in np.ndindex(*x.shape[:2]):
        ref = _hf_mel(x[idx].numpy())
        assert _rel(ours[idx], ref) <= 1e-5, idx


def test_waveform_to_mel_log_and_layout():
    x = torch.randn(1, 2, 4000) * 0.2
    x[..., 500:3500] = 0.0  # silence longer than a window: the 1e-5 floor must apply
    mel = waveform_to_mel(x, 16000)
    assert mel.shape == (1, 2, 4000 // 160 + 1, 64) and mel.dtype == torch.float32
    for c in range(2):
        ref = np.log(np.maximum(_hf_mel(x[0, c].numpy()), 1e-5)).T  # (T, 64)
        assert np.abs(mel[0, c].numpy() - ref).max() <= 1e-4  # log of a 1e-5-relative match
    assert float(mel.min()) == pytest.approx(math.log(1e-5), rel=1e-6)
    # other rates are resampled first: 48 kHz, 1 s -> 16000 samples -> 101 frames
    x48 = torch.randn(1, 2, 48000) * 0.1
    mel48 = waveform_to_mel(x48, 48000)
    assert mel48.shape == (1, 2, 101, 64)
    torch.testing.assert_close(mel48, waveform_to_mel(resample(x48, 48000, 16000), 16000), rtol=0, atol=0)
    # channels pass through (as the reference); as_stereo duplicates mono
    assert waveform_to_mel(x[:, :1], 16000).shape == (1, 1, 26, 64)
    torch.testing.assert_close(waveform_to_mel(as_stereo(x[:, :1]), 16000)[:, 1], mel[:, 0])
    with pytest.raises(ValueError, match="B, 1 or 2, N"):
        as_stereo(torch.zeros(1, 3, 100))
    with pytest.raises(ValueError, match=r"\(B, C, N\)"):
        waveform_to_mel(torch.zeros(2, 4000), 16000)


# --- resampling -----------------------------------------------------------------------------------------------


# tolerance: the 6-crossing Hann sinc is flat to ~1e-3 up to ~0.4 of the lower Nyquist, then rolls off (5 kHz
# of 8 kHz: 0.5 %), as torchaudio's default does.
@pytest.mark.parametrize("orig,new,freq,tol", [(48000, 16000, 440.0, 2e-3), (48000, 16000, 5000.0, 1e-2),
                                               (22050, 16000, 1234.5, 2e-3), (44100, 16000, 3000.0, 2e-3),
                                               (16000, 48000, 2000.0, 2e-3)])  # fmt: skip
def test_resample_band_limited_sine(orig, new, freq, tol):
    n = orig // 5  # 0.2 s
    t_in = torch.arange(n, dtype=torch.float64) / orig
    x = torch.sin(2 * math.pi * freq * t_in + 0.3).float()[None, None]  # (1, 1, N)
    y = resample(x, orig, new)
    assert y.shape == (1, 1, math.ceil(n * new / orig)) and y.dtype == torch.float32
    t_out = torch.arange(y.shape[-1], dtype=torch.float64) / new
    expect = torch.sin(2 * math.pi * freq * t_out + 0.3)
    edge = new // 100  # 10 ms: the zero-padded ends are not band-limited
    err = (y[0, 0, edge:-edge].double() - expect[edge:-edge]).abs().max()
    assert err < tol, float(err)


def test_resample_lengths_identity_and_batch_dims():
    for orig, new in [(22050, 16000), (44100, 16000), (48000, 16000), (16000, 24000), (8000, 16000)]:
        for n in (1, 7, 441, 1000, 4097):
            assert resample(torch.zeros(n), orig, new).shape == (math.ceil(n * new / orig),), (orig, new, n)
    x = torch.randn(2, 3, 1000)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 44100, 16000)
    torch.testing.assert_close(y[1, 2], resample(x[1, 2], 44100, 16000), rtol=0, atol=1e-6)  # conv batching
    with pytest.raises(ValueError, match="positive integer"):
        resample(x, 0, 16000)
    with pytest.raises(ValueError, match="positive integer"):
        resample(x, 44100.5, 16000)
    with pytest.raises(TypeError, match="floating-point"):
        resample(torch.zeros(10, dtype=torch.int16), 48000, 16000)


def _numpy_kernel_value(i: np.ndarray, j: int, orig: int, new: int) -> np.ndarray:
    """torchaudio's documented FIR: weight of input i (reduced-rate units) for output j, float64."""
    base = min(orig, new) * ROLLOFF
    w = LOWPASS_FILTER_WIDTH
    u = np.clip(base * (i / orig - j / new), -w, w)
    return np.cos(np.pi * u / (2 * w)) ** 2 * np.sinc(u) * base / orig  # np.sinc(u) = sin(pi u) / (pi u)


@pytest.mark.parametrize("orig,new", [(48000, 16000), (22050, 16000), (16000, 24000)])
def test_resample_kernel_and_brute_force(orig, new):
    g = math.gcd(orig, new)
    o, n_ = orig // g, new // g
    kernel, width = sinc_resample_kernel(orig, new, dtype=torch.float64)
    assert width == math.ceil(LOWPASS_FILTER_WIDTH * o / (min(o, n_) * ROLLOFF))
    assert kernel.shape == (n_, 1, 2 * width + o)
    taps = np.arange(-width, width + o)
    # row p, tap m: output k * n + p reads input k * o - width + m, offset (m - width) / o - p / n
    ref = np.stack([_numpy_kernel_value(taps, p, o, n_) for p in range(n_)])
    assert np.abs(kernel[:, 0].numpy() - ref).max() <= 1e-12
    k32, _ = sinc_resample_kernel(orig, new)
    # fp32 (the waveform's dtype, as torchaudio): the tap offsets reach ~base * 1.5 before the clamp, so fp32
    # rounding of the argument leaves ~2e-5 relative error in the kernel itself
    assert k32.dtype == torch.float32 and _rel(k32[:, 0], ref) <= 5e-5
    # brute force y[j] = sum_i x[i] h(i, j) over the whole (zero-extended) signal, in float64
    length = 3 * o + 5
    x = np.random.default_rng(0).standard_normal(length)
    y = resample(torch.from_numpy(x), orig, new).numpy()
    assert y.shape == (math.ceil(length * n_ / o),)
    i = np.arange(length)
    ref_y = np.array([(x * _numpy_kernel_value(i, j, o, n_)).sum() for j in range(y.shape[0])])
    assert np.abs(y - ref_y).max() <= 1e-12
