"""ltx.core.audio_io: WAV and mp4 (H.264 + AAC) round trips decoded with PyAV, atomic writes, the audio contact sheet,
and clear errors for bad inputs."""

from __future__ import annotations

import math
import wave

import av
import numpy as np
import pytest
import torch

from ltx.core import audio_io
from ltx.core.audio_io import (
    aac_sample_rates,
    audio_contact_sheet,
    read_audio,
    write_audio_contact_sheet,
    write_video_with_audio,
    write_wav,
)
from ltx.core.media import MediaError, read_frames, write_mp4


def _sine(seconds: float, rate: int, freqs=(440.0, 660.0), amp=0.5) -> torch.Tensor:
    """(C, N): channel c a sine sweeping from freqs[c] to 2 * freqs[c] (the sweep makes the alignment unique)."""
    t = torch.arange(round(seconds * rate), dtype=torch.float64) / rate
    return torch.stack([amp * torch.sin(2 * math.pi * f * (t + t**2 / (2 * seconds))) for f in freqs]).float()


def _frames(F=12, H=32, W=48) -> torch.Tensor:
    x = torch.linspace(0, 255, W).round().to(torch.uint8)
    frames = x[None, None, :, None].expand(F, H, W, 3).clone()
    frames[..., 1] = (torch.arange(F) * 20).to(torch.uint8)[:, None, None]
    return frames  # (F, H, W, 3)


def _best_corr(y: np.ndarray, x: np.ndarray, max_lag: int = 2048) -> tuple[float, int]:
    """The highest Pearson correlation of y[lag + i] against x[i], and its lag, over lags -max_lag..max_lag."""
    n = min(len(x), len(y)) - max_lag
    corr = {lag: float(np.corrcoef(y[max_lag + lag : max_lag + lag + n - max_lag], x[max_lag : n])[0, 1])
            for lag in range(-max_lag, max_lag + 1)}
    best = max(corr, key=corr.get)
    return corr[best], best


def _no_temps(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------ WAV


def test_wav_round_trip(tmp_path):
    x = torch.rand(2, 4000) * 2 - 1
    x[:, :4] = torch.tensor([1.0, -1.0, 0.0, 0.99999])
    write_wav(tmp_path / "a.wav", x, 16000)
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 16000, 4000)
    y, sr = read_audio(tmp_path / "a.wav")
    assert sr == 16000 and y.dtype == torch.float32 and y.shape == x.shape
    assert float((y - x).abs().max()) <= 1 / 32767
    mono, sr = read_audio(tmp_path / "a.wav", sample_rate=8000)  # resampled on reading
    assert sr == 8000 and mono.shape[0] == 2 and abs(mono.shape[1] - 2000) <= 2


def test_wav_clips_out_of_range(tmp_path):
    write_wav(tmp_path / "c.wav", torch.tensor([[2.0, -3.0, 0.5]]), 8000)
    y, _ = read_audio(tmp_path / "c.wav")
    assert torch.allclose(y, torch.tensor([[32767 / 32768, -1.0, 0.5]]))


# ------------------------------------------------------------------------------------------------ mp4 with sound


def test_aac_encoder_available():
    assert av.codec.Codec("aac", "w").name == "aac"
    assert {16000, 24000, 48000} <= set(aac_sample_rates())


@pytest.mark.parametrize("rate,channels,fps", [(24000, 2, 24.0), (16000, 1, 8.0), (48000, 2, 24000 / 1001)])
def test_mp4_round_trip(tmp_path, rate, channels, fps):
    F = 12
    frames = _frames(F)
    x = _sine(F / fps, rate, freqs=(440.0, 660.0)[:channels])  # as long as the video
    path = tmp_path / "v.mp4"
    write_video_with_audio(path, frames, fps, x, rate)
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.width, v.height) == (48, 32) and a.codec_context.sample_rate == rate and a.channels == channels
        assert abs(float(v.average_rate) - fps) < 1e-6
        assert abs(float(a.duration * a.time_base) - F / fps) < 1e-3  # the stream's stated length
    decoded, got_fps = read_frames(path)
    assert decoded.shape == (F, 32, 48, 3) and got_fps == pytest.approx(fps)
    assert (decoded.float() - frames.float()).abs().mean() < 3  # H.264 at CRF 18
    y, sr = read_audio(path)
    assert sr == rate and y.shape[0] == channels and y.shape[1] == x.shape[1]  # duration matches
    for ch in range(channels):
        corr, lag = _best_corr(y[ch].numpy(), x[ch].numpy(), max_lag=1024)
        assert corr > 0.99 and lag == 0, (ch, corr, lag)  # the AAC priming samples are dropped on decoding


def test_mp4_matches_official_writer(tmp_path):
    """ltx_pipelines' encode_video and ours, same inputs: same frame count, same audio length and content."""
    from ltx_core.types import Audio
    from ltx_pipelines.utils.media_io import encode_video

    frames, fps, rate = _frames(10), 8, 24000
    x = _sine(1.1, rate)  # shorter than the 1.25 s video: neither writer trims or pads it
    encode_video(frames, fps, Audio(waveform=x, sampling_rate=rate), str(tmp_path / "official.mp4"), 1)
    write_video_with_audio(tmp_path / "ours.mp4", frames, fps, x, rate)
    (official, _), (ours, _) = read_audio(tmp_path / "official.mp4"), read_audio(tmp_path / "ours.mp4")
    assert official.shape == ours.shape == x.shape
    assert read_frames(tmp_path / "official.mp4")[0].shape == read_frames(tmp_path / "ours.mp4")[0].shape
    for ch in range(2):
        assert np.corrcoef(official[ch].numpy(), ours[ch].numpy())[0, 1] > 0.999


def test_mp4_audio_length_official_and_matched(tmp_path):
    frames, fps, rate = _frames(8), 8.0, 16000  # 1 s of video
    short = _sine(0.6, rate)
    write_video_with_audio(tmp_path / "a.mp4", frames, fps, short, rate)  # as the official writer: untouched
    assert read_audio(tmp_path / "a.mp4")[0].shape[1] == short.shape[1]
    write_video_with_audio(tmp_path / "b.mp4", frames, fps, short, rate, match_video_duration=True)
    y = read_audio(tmp_path / "b.mp4")[0]
    assert y.shape[1] == rate and float(y[:, 11000:].abs().max()) < 0.02  # zero-padded to the video's 1 s
    write_video_with_audio(tmp_path / "c.mp4", frames, fps, _sine(1.7, rate), rate, match_video_duration=True)
    assert read_audio(tmp_path / "c.mp4")[0].shape[1] == rate  # cut


def test_read_audio_errors(tmp_path):
    with pytest.raises(MediaError, match="file not found"):
        read_audio(tmp_path / "missing.wav")
    write_mp4(tmp_path / "silent.mp4", torch.rand(3, 2, 16, 16), 8)
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(tmp_path / "silent.mp4")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(MediaError, match="junk.wav: unreadable or corrupt audio"):
        read_audio(tmp_path / "junk.wav")
    write_wav(tmp_path / "ok.wav", torch.zeros(1, 10), 8000)
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        read_audio(tmp_path / "ok.wav", sample_rate=0)


# ------------------------------------------------------------------------------------------------ atomic writes


def test_failed_writes_leave_nothing(tmp_path, monkeypatch):
    frames, x = _frames(4), _sine(0.5, 16000)

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")
        yield

    monkeypatch.setattr(audio_io, "_audio_frames", boom)  # fails after the first video frame went out
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video_with_audio(tmp_path / "v.mp4", frames, 8, x, 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    (tmp_path / "old.mp4").write_bytes(b"previous")  # an existing file is kept as it was
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video_with_audio(tmp_path / "old.mp4", frames, 8, x, 16000)
    assert (tmp_path / "old.mp4").read_bytes() == b"previous" and _no_temps(tmp_path) == []
    monkeypatch.undo()

    monkeypatch.setattr(wave.Wave_write, "writeframes", lambda self, data: boom().__next__())
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_wav(tmp_path / "a.wav", x, 16000)
    assert not (tmp_path / "a.wav").exists() and _no_temps(tmp_path) == []


# ------------------------------------------------------------------------------------------------ contact sheet


def test_audio_contact_sheet(tmp_path):
    F, fps, rate = 16, 8.0, 16000
    x = _sine(F / fps, rate, amp=0.8)
    x[:, : rate // 2] = 0  # silent first half second: the first tiles' strips are flat
    sheet = audio_contact_sheet(_frames(F), fps, x, rate, count=4, tile_width=96, caption="a test")
    img = np.asarray(sheet)  # (height, width, 3)
    th = 96 * 32 // 48
    top = 14 * 2 + 4
    assert sheet.size == (4 * 96, top + th + 14 + (2 * 48 + 2) + (64 + 2))
    wave_rows = img[top + th + 14 + 2 : top + th + 14 + 2 + 2 * 48]  # both channels' waveform strips
    ink = (wave_rows.astype(int).sum(-1) < 300).mean(0)  # per column: share of dark (drawn) pixels
    assert ink[: 96 // 2 - 2].max() < 0.05  # the silence is a flat line
    sine = np.delete(ink, [96, 192, 288])[96:]  # the second second, off the grey segment lines:
    assert sine.min() > 0.5  # the 0.8 amplitude sine fills most of its strip
    spec = img[-64:].astype(int)
    assert spec[:, 96:].std() > 10 and spec[:, 96:].mean() > spec[:, :40].mean()  # sound brighter than silence
    write_audio_contact_sheet(tmp_path / "s.png", _frames(F), fps, x, rate, count=4)
    assert (tmp_path / "s.png").stat().st_size > 0 and _no_temps(tmp_path) == []
    float_frames = _frames(F).permute(3, 0, 1, 2).float() / 255  # (3, F, H, W) in [0, 1] as ltx.core.media
    assert audio_contact_sheet(float_frames, fps, x, rate, count=4, tile_width=96).size[0] == 4 * 96


# ------------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(waveform=torch.full((2, 100), float("nan"))), "200 NaN / inf"),
        (dict(waveform=torch.zeros(100)), r"shape \(C, N\), got \(100,\).*waveform\[None\]"),
        (dict(waveform=torch.zeros(2, 0)), "the waveform is empty"),
        (dict(waveform=torch.zeros(100, 2, dtype=torch.int16)), "expected a float waveform"),
        (dict(waveform=torch.zeros(6, 100)), r"1 \(mono\) or 2 \(stereo\) channels.*C=6"),
        (dict(sample_rate=0), "sample_rate must be a positive int"),
        (dict(sample_rate=-16000), "sample_rate must be a positive int"),
        (dict(sample_rate=22000), r"sample_rate=22000 is not an AAC rate \(supported: .*24000"),
        (dict(frames=torch.zeros(0, 16, 16, 3, dtype=torch.uint8)), "no frames to write"),
        (dict(frames=torch.zeros(4, 16, 16, dtype=torch.uint8)), r"\(F, H, W, 3\)"),
        (dict(frames=torch.zeros(4, 15, 16, 3, dtype=torch.uint8)), "even sizes"),
        (dict(frames=torch.zeros(4, 16, 16, 3, dtype=torch.int32)), "got dtype torch.int32"),
        (dict(fps=0), "fps must be a positive number"),
        (dict(fps=float("inf")), "fps must be a positive number"),
    ],
)
def test_bad_inputs(tmp_path, change, match):
    args = dict(frames=_frames(4, 16, 16), fps=8.0, waveform=torch.zeros(2, 100), sample_rate=16000) | change
    with pytest.raises(ValueError, match=match):
        write_video_with_audio(tmp_path / "v.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_wav_and_sheet(tmp_path):
    with pytest.raises(ValueError, match="NaN / inf"):
        write_wav(tmp_path / "a.wav", torch.tensor([[0.0, float("inf")]]), 16000)
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        write_wav(tmp_path / "a.wav", torch.zeros(1, 10), 0)
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        write_wav(tmp_path / "a.wav", torch.zeros(1, 10), 16000.0)
    assert list(tmp_path.iterdir()) == []
    frames, x = _frames(4), torch.zeros(2, 1000)
    with pytest.raises(ValueError, match="no frames"):
        audio_contact_sheet(frames[:0], 8.0, x, 16000)
    with pytest.raises(ValueError, match="NaN"):
        audio_contact_sheet(frames, 8.0, torch.full((2, 10), float("nan")), 16000)
    with pytest.raises(ValueError, match="count must be a positive int"):
        audio_contact_sheet(frames, 8.0, x, 16000, count=0)
    with pytest.raises(ValueError, match="fps must be a positive number"):
        audio_contact_sheet(frames, -1.0, x, 16000)
