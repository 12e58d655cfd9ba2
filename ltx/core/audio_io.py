"""Audio files for generation with sound: WAV out, any audio track in, mp4 with H.264 + AAC, audio contact sheets.

LTX-2 decodes sound as a float waveform (C, N) in [-1, 1] (stereo, C = 2) with its own sampling rate: 24 kHz
from the 19B HiFi-GAN vocoder, 48 kHz from the 2.3 vocoder with bandwidth extension (reference digest §3.3).

Conventions (those of ltx.core.media, which this module builds on)
- A waveform is a (C, N) float tensor, channel first; C = 1 (mono) or 2 (stereo) for AAC, any C for WAV.
  Values outside [-1, 1] are clipped on writing (as the official writer does); NaN / inf are an error.
- Video frames are (F, H, W, 3) uint8 RGB (the layout of `ltx.core.media.read_frames` and of the official
  `decode_video`); the functions below also take ltx.core.media's (3, F, H, W) float in [0, 1], told apart by dtype.
- Every file is written atomically (`ltx.core.checkpoint.atomic_file`): a failed write leaves the old file, or none,
  and no temporary.
- Files that cannot be read raise `ltx.core.media.MediaError` (a ValueError) naming the path and the reason;
  bad arguments raise ValueError saying what was wrong and what would be valid.

The official writer (`ltx_pipelines/utils/media_io.py::encode_video`) muxes libx264 yuv420p video at
`int(fps)` and then, after the video, the whole waveform as one AAC stereo stream at the waveform's own rate
(clipped, scaled to int16, resampled to the encoder's fltp). It neither trims nor pads the audio to the video's
duration, and neither does `write_video_with_audio` unless asked (`match_video_duration=True`): the LTX-2
vocoders give a little less sound than picture (121 frames at 24 fps = 5.042 s of video, 126 audio latents ->
501 mel frames = 5.01 s of audio), and players simply end the sound early. Differences, all deliberate:
- the frame rate is kept as a fraction (23.976 stays 24000/1001, where `int(fps)` would give 23);
- the float waveform goes to the encoder as fltp directly (no int16 step), in frames of 1024 samples that are
  interleaved with the video frames by time (the official writer leaves the muxer to buffer all of it);
- mono is allowed as well as stereo; the AAC encoder's sampling rates are checked up front.

PyAV, numpy and Pillow are imported inside the functions, so `import ltx` stays light.
"""

from __future__ import annotations

import math
import numbers
import os
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor

from ltx.core.checkpoint import atomic_file
from ltx.core.media import MediaError, _check_file, x264_options

AUDIO_EXTENSIONS = (".wav", ".mp3", ".aac", ".m4a", ".flac", ".ogg", ".opus")
AAC_FRAME = 1024  # samples per AAC frame (the encoder's frame_size)
_LAYOUTS = {1: "mono", 2: "stereo"}


# ------------------------------------------------------------------------------------------------ checks


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    return int(sample_rate)


def _check_waveform(waveform: Tensor, path, *, max_channels: int | None = None) -> Tensor:
    """(C, N) float, finite, N >= 1 -> (C, N) float32 clipped to [-1, 1], on the CPU."""
    waveform = torch.as_tensor(waveform)
    if waveform.ndim != 2:
        hint = " (a mono signal of shape (N,) is waveform[None])" if waveform.ndim == 1 else ""
        raise ValueError(f"expected a waveform of shape (C, N), got {tuple(waveform.shape)}{hint}")
    C, N = waveform.shape
    if not waveform.is_floating_point():
        raise ValueError(f"expected a float waveform in [-1, 1], got dtype {waveform.dtype}")
    if C < 1 or N < 1:
        raise ValueError(f"the waveform is empty: shape {tuple(waveform.shape)} (need C >= 1 channels, N >= 1 samples)")
    if max_channels is not None and C > max_channels:
        raise ValueError(f"expected 1 (mono) or 2 (stereo) channels in a (C, N) waveform, got C={C} "
                         f"(shape {tuple(waveform.shape)}; a (N, C) waveform is waveform.T)")
    bad = ~torch.isfinite(waveform)
    if bool(bad.any()):
        raise MediaError(path, f"not written: the waveform holds {int(bad.sum())} NaN / inf values")
    return waveform.detach().float().clamp(-1.0, 1.0).cpu().contiguous()


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return fps


def _as_frames(frames: Tensor) -> Tensor:
    """(F, H, W, 3) uint8, or (3, F, H, W) float in [0, 1] -> (F, H, W, 3) uint8 on the CPU; F >= 1."""
    frames = torch.as_tensor(frames)
    if frames.dtype == torch.uint8:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames of shape (F, H, W, 3), got {tuple(frames.shape)}")
    elif frames.is_floating_point():
        if frames.ndim != 4 or frames.shape[0] != 3:
            raise ValueError(f"expected float frames of shape (3, F, H, W) in [0, 1], got {tuple(frames.shape)}")
        if not bool(torch.isfinite(frames).all()):
            raise ValueError(f"the frames hold {int((~torch.isfinite(frames)).sum())} NaN / inf values")
        frames = (frames.float().clamp(0, 1).permute(1, 2, 3, 0) * 255).round().to(torch.uint8)  # (F, H, W, 3)
    else:
        raise ValueError(f"expected (F, H, W, 3) uint8 or (3, F, H, W) float frames, got dtype {frames.dtype}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"no frames to write: (F, H, W, 3) = {tuple(frames.shape)}")
    return frames.cpu().contiguous()


# ------------------------------------------------------------------------------------------------ WAV


def write_wav(path: str | os.PathLike, waveform: Tensor, sample_rate: int) -> None:
    """(C, N) float in [-1, 1] -> 16-bit PCM WAV (standard library `wave`), atomically. Samples are scaled by
    32768, rounded and clipped to [-32768, 32767], so `read_audio` (which divides by 32768) returns them within
    half a step (1 / 65536), full scale +1.0 within one step."""
    import wave

    import numpy as np

    sample_rate = _check_rate(sample_rate)
    x = _check_waveform(waveform, path)
    pcm = np.clip(np.round(x.numpy().T * 32768.0), -32768, 32767).astype("<i2")  # (N, C): interleaved frames
    with atomic_file(path, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


# ------------------------------------------------------------------------------------------------ reading


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """The first audio stream of a file (wav, mp3, aac, m4a, flac, an mp4's track, ...) -> ((C, N) float32 in
    [-1, 1], sampling rate). With `sample_rate` it is resampled (libswresample) to that rate. The trailing
    padding of the last codec frame is cut to the stream's stated duration where the container gives one.
    Raises MediaError for missing, unreadable or corrupt files and for files without an audio stream."""
    import av
    import numpy as np

    path = Path(path)
    _check_file(path)
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate)
    chunks: list = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            rate = sample_rate or stream.codec_context.sample_rate or stream.rate
            resampler = None  # built on the first frame, from its layout: everything becomes planar float32
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            if resampler is not None:
                chunks += [f.to_ndarray() for f in resampler.resample(None)]  # flush the resampler's delay
            seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            pad = (stream.codec_context.frame_size or 4096) * rate / (stream.codec_context.sample_rate or rate)
    except av.FFmpegError as e:
        raise MediaError(path, f"unreadable or corrupt audio ({type(e).__name__}: {e.strerror or e})") from None
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise MediaError(path, "no samples in the audio stream")
    audio = np.concatenate(chunks, axis=1).astype(np.float32)  # (C, N)
    if seconds is not None and 0 < audio.shape[1] - seconds * rate <= pad + 64:  # only the last frame's padding:
        audio = audio[:, : max(1, round(seconds * rate))]  # an estimated duration (mp3 without a header) is not cut
    return torch.from_numpy(np.ascontiguousarray(audio)), int(rate)


# ------------------------------------------------------------------------------------------------ mp4 with sound


def aac_sample_rates() -> tuple[int, ...]:
    """The sampling rates the AAC encoder accepts (PyAV's build of FFmpeg's native `aac`)."""
    import av

    return tuple(av.codec.Codec("aac", "w").audio_rates or ())


def _audio_frames(samples, start: int, stop: int, rate: int):
    """AAC input frames of at most AAC_FRAME samples covering samples[:, start:stop], pts in samples."""
    import av
    import numpy as np

    layout = _LAYOUTS[samples.shape[0]]
    for pos in range(start, stop, AAC_FRAME):
        chunk = np.ascontiguousarray(samples[:, pos : min(pos + AAC_FRAME, stop)])  # (C, n)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, pos, Fraction(1, rate)
        yield frame


def write_video_with_audio(
    path: str | os.PathLike,
    frames: Tensor,
    fps: float,
    waveform: Tensor,
    sample_rate: int,
    *,
    crf: int = 18,
    audio_bitrate: int = 192_000,
    match_video_duration: bool = False,
    aac_coder: str | None = None,
) -> None:
    """One mp4: H.264 video (yuv420p, CRF `crf`; H and W even) + AAC audio (`audio_bitrate` bit/s), atomically.

    frames: (F, H, W, 3) uint8 (or (3, F, H, W) float in [0, 1]); waveform: (C, N) float in [-1, 1], C = 1 or 2,
    at `sample_rate` Hz, which must be an AAC rate (`aac_sample_rates()`: 16000, 24000, 48000, ...).
    The whole waveform is written, as the official pipeline does; with `match_video_duration` it is cut or
    zero-padded to round(F / fps * sample_rate) samples first, so both streams end together. `aac_coder`: FFmpeg's
    AAC coder ("fast": about 7x less encoding time than the default "twoloop", for datasets of many clips)."""
    import av

    frames = _as_frames(frames)
    F, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"yuv420p needs even sizes, got {H}x{W}")
    fps = _check_fps(fps)
    sample_rate = _check_rate(sample_rate)
    if sample_rate not in aac_sample_rates():
        raise ValueError(f"sample_rate={sample_rate} is not an AAC rate (supported: {list(aac_sample_rates())}); "
                         f"resample the waveform first")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int in [0, 51], got {crf!r}")
    if isinstance(audio_bitrate, bool) or not isinstance(audio_bitrate, int) or audio_bitrate <= 0:
        raise ValueError(f"audio_bitrate must be a positive int (bit/s), got {audio_bitrate!r}")
    samples = _check_waveform(waveform, path, max_channels=2)
    if match_video_duration:
        n = round(F / fps * sample_rate)
        samples = torch.nn.functional.pad(samples, (0, max(0, n - samples.shape[1])))[:, :n]
    samples = samples.numpy()  # (C, N) float32
    N = samples.shape[1]
    rate = Fraction(fps).limit_denominator(1001)
    video = frames.numpy()  # (F, H, W, 3)

    with atomic_file(path, "wb") as f, av.open(
        f, mode="w", format="mp4", options={"movie_timescale": str(sample_rate)}  # edit lists exact to the sample
    ) as container:
        vstream = container.add_stream("libx264", rate=rate)
        vstream.width, vstream.height = W, H
        vstream.pix_fmt = "yuv420p"
        vstream.options = x264_options(crf)  # reproducible bytes (ltx.core.media.x264_options)
        astream = container.add_stream("aac", rate=sample_rate)
        astream.layout = _LAYOUTS[samples.shape[0]]
        astream.bit_rate = audio_bitrate
        if aac_coder is not None:
            astream.options = {"aac_coder": aac_coder}
        done = 0  # audio samples sent to the encoder
        for i, frame in enumerate(video):
            # converted here: the encoder's own rgb -> yuv path gives different bytes run to run (ltx.core.media)
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            container.mux(vstream.encode(yuv))
            until = min(N, math.ceil((i + 1) / rate * sample_rate) // AAC_FRAME * AAC_FRAME)  # audio up to frame end
            for aframe in _audio_frames(samples, done, max(done, until), sample_rate):
                container.mux(astream.encode(aframe))
            done = max(done, until)
        container.mux(vstream.encode())
        for aframe in _audio_frames(samples, done, N, sample_rate):  # audio past the last video frame
            container.mux(astream.encode(aframe))
        container.mux(astream.encode())


# ------------------------------------------------------------------------------------------------ contact sheet

# anchor colours of the spectrogram's colour ramp (dark blue -> purple -> orange -> pale yellow), low to high
_RAMP = ((0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39),
         (252, 255, 164))


def _envelope(x, width: int):
    """(N,) samples -> (lo, hi) of (width,): the min and max of the samples under each pixel column."""
    import numpy as np

    N = x.shape[0]
    edges = np.minimum((np.arange(width) * N) // width, N - 1)  # first sample of each column
    return np.minimum.reduceat(x, edges), np.maximum.reduceat(x, edges)


def _waveform_strip(wave, width: int, height: int):
    """(C, N) in [-1, 1] -> (C * height, width, 3) uint8: per channel, the min/max envelope in dark blue on white
    with a grey zero line."""
    import numpy as np

    rows = []
    y = np.arange(height)[:, None]  # (height, 1): pixel row, 0 at the top
    for ch in wave:
        lo, hi = _envelope(ch, width)
        top = np.floor((1 - hi) / 2 * (height - 1))  # amplitude +1 -> row 0
        bottom = np.ceil((1 - lo) / 2 * (height - 1))
        strip = np.full((height, width, 3), 255, np.uint8)
        strip[height // 2] = 200
        strip[(y >= top) & (y <= bottom)] = (30, 60, 150)  # (height, width) mask
        rows.append(strip)
    return np.concatenate(rows, axis=0)


def _mel_filters(n_fft: int, n_mels: int, sample_rate: int):
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the HTK mel scale from 0 to Nyquist."""
    import numpy as np

    mel = np.linspace(0, 2595 * np.log10(1 + sample_rate / 2 / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)  # (n_mels + 2) band edges
    bins = np.fft.rfftfreq(n_fft, 1 / sample_rate)  # (n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return np.maximum(0, np.minimum(rising, falling))


def _spectrogram_strip(mono, sample_rate: int, seconds: float, width: int, height: int):
    """(N,) -> (height, width, 3) uint8 log-mel spectrogram, low frequencies at the bottom; column x is the
    Hann-windowed frame centred on time (x + 0.5) / width * seconds, so it lines up with the waveform above."""
    import numpy as np

    n_fft = 2 ** max(6, round(math.log2(sample_rate / 25)))  # ~40 ms windows: 512 at 16 kHz, 1024 at 24 kHz
    centres = np.round((np.arange(width) + 0.5) / width * seconds * sample_rate).astype(np.int64)  # (width,)
    padded = np.pad(mono, (n_fft // 2, n_fft // 2 + max(0, centres.max() + 1 - mono.shape[0])))  # silence outside
    windows = padded[centres[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft)  # (width, n_fft)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2  # (width, n_fft // 2 + 1)
    mels = power @ _mel_filters(n_fft, height, sample_rate).T  # (width, height)
    db = 10 * np.log10(np.maximum(mels, 1e-10))
    level = np.clip((db - (db.max() - 80.0)) / 80.0, 0, 1)  # an 80 dB range below the loudest bin
    ramp = np.asarray(_RAMP, np.float64)
    pos = level * (len(ramp) - 1)
    k = np.minimum(pos.astype(np.int64), len(ramp) - 2)
    rgb = ramp[k] + (ramp[k + 1] - ramp[k]) * (pos - k)[..., None]  # (width, height, 3)
    return np.round(rgb).astype(np.uint8).transpose(1, 0, 2)[::-1].copy()  # (height, width, 3), high mels on top


def audio_contact_sheet(
    frames: Tensor,
    fps: float,
    waveform: Tensor,
    sample_rate: int,
    *,
    count: int = 8,
    tile_width: int = 160,
    caption: str = "",
):
    """A PIL image: `count` video frames in a row, and under them, on the same time axis, the waveform (one
    strip per channel, min/max per pixel column) and a log-mel spectrogram of the channel mean.

    The axis spans the video, F / fps seconds, cut into `count` equal segments: tile k sits above segment k and
    shows the frame at its middle (the label gives frame number and time), so the sound under a tile is the sound
    heard while that part of the video plays. Sound past the video's end is not drawn; missing sound is silence.
    frames: (F, H, W, 3) uint8 (or (3, F, H, W) float in [0, 1]); waveform (C, N) float in [-1, 1]."""
    import numpy as np
    from PIL import Image, ImageDraw

    frames = _as_frames(frames)
    fps = _check_fps(fps)
    sample_rate = _check_rate(sample_rate)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    if isinstance(tile_width, bool) or not isinstance(tile_width, int) or tile_width < 8:
        raise ValueError(f"tile_width must be an int >= 8 (pixels), got {tile_width!r}")
    wave = _check_waveform(waveform, "audio contact sheet").numpy()  # (C, N)
    F, H, W, _ = frames.shape
    seconds = F / fps
    count = min(count, F)
    tw, th = tile_width, max(1, round(H * tile_width / W))
    width = count * tw

    n = max(1, round(seconds * sample_rate))  # samples under the video
    wave = np.pad(wave[:, :n], ((0, 0), (0, max(0, n - wave.shape[1]))))  # (C, n)
    strips = [_waveform_strip(wave, width, 48), _spectrogram_strip(wave.mean(0), sample_rate, seconds, width, 64)]
    lines = [caption] if caption else []
    lines.append(f"{F} frames @ {fps:g} fps = {seconds:.2f} s | audio {waveform.shape[1] / sample_rate:.2f} s, "
                 f"{wave.shape[0]} ch @ {sample_rate} Hz | waveform, log-mel 0-{sample_rate // 2000} kHz")
    top, label = 14 * len(lines) + 4, 14
    sheet = Image.new("RGB", (width, top + th + label + sum(s.shape[0] for s in strips) + 2 * len(strips)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(lines):
        draw.text((4, 2 + 14 * k), line, fill="black")
    for k in range(count):
        i = min(F - 1, int((k + 0.5) * F / count))  # the frame at the middle of segment k
        sheet.paste(Image.fromarray(frames[i].numpy()).resize((tw, th), Image.BILINEAR), (k * tw, top))
        draw.text((k * tw + 3, top + th + 1), f"frame {i}  {i / fps:.2f}s", fill="black")
    y = top + th + label
    for strip in strips:
        sheet.paste(Image.fromarray(strip), (0, y + 2))
        y += strip.shape[0] + 2
    for k in range(1, count):  # segment boundaries through the strips
        draw.line([(k * tw, top + th + label), (k * tw, sheet.height)], fill=(160, 160, 160))
    return sheet


def write_audio_contact_sheet(
    path: str | os.PathLike,
    frames: Tensor,
    fps: float,
    waveform: Tensor,
    sample_rate: int,
    *,
    count: int = 8,
    caption: str = "",
) -> None:
    """`audio_contact_sheet` as a PNG, atomically."""
    sheet = audio_contact_sheet(frames, fps, waveform, sample_rate, count=count, caption=caption)
    with atomic_file(path, "wb") as f:
        sheet.save(f, format="PNG")
