"""ShapesWorld-AV: the ShapesWorld scenes (ltx.data.shapes) with a soundtrack fully determined by the scene.

The data of the bundled LTX-2 demo: sound is a function of what is on screen, so that it can be scored from the
waveform like colour and motion from the pixels (ltx.data.shapes_av_eval). The video, caption, parameters and
held-out triples are exactly ShapesWorld's; only the soundtrack is added.

Sound design (every number is fixed: the demo model, its evaluator and the tests rely on them)
- One voice per shape, sounding for the whole clip (ShapesWorld keeps every shape inside the frame, so every
  shape is always visible). Two shapes give two voices, mixed by addition. The background is silent.
- Pitch from colour: the fundamental f0 is NOTES[colour], six notes on the 100 Hz grid, 100 Hz times pairwise
  coprime numbers: red 300, yellow 400, green 500, blue 700, purple 1100, white 1300 Hz.
  - On the grid because the LTX-2 vocoder (a HiFi-GAN at 160 samples per mel frame, 16 kHz) is equivariant to
    shifts of one mel frame: a held note, whose mel is the same in every frame, comes out periodic in 160
    samples, so only multiples of 100 Hz can be played (measured with the first demo's fourths from A3: 523.25 Hz
    came out at 500 Hz whatever the training).
  - Coprime multiples so that two voices share few partials: 100 p k = 100 q j only when q divides k, so a voice
    beside another keeps its partial 2 and an odd partial (3, or 5 beside red; every note up to 1300 Hz has its
    5th below HARMONIC_LIMIT), which the timbre needs. Measured: the evaluator names both voices' timbres in all
    270 two-voice combinations; with red 200 and yellow 500 every even partial of yellow was one of red's, and
    with white at 1700 Hz a white square beside red kept no odd partial (both read as the wrong timbre).
  - Neighbours are >= 2.9 semitones and >= 2 bins of the LTX-2 audio VAE's 64-bin mel apart, no note is
    another's octave, and no fundamental lies within 7.6% (1.3 semitones) of another note's partial.
- Timbre from kind (TIMBRES), band-limited additive synthesis with harmonics k f0 < HARMONIC_LIMIT (7 kHz) only:
  circle = sine (k = 1); square = square wave (odd k, amplitude 1/k); triangle = sawtooth (every k, amplitude
  1/k). All partials start at phase 0. Each voice is divided by sqrt(sum of its squared amplitudes), so every
  voice has the RMS of a unit sine (1/sqrt 2) whatever its timbre: loudness does not depend on timbre.
- Loudness from size: gain = 0.25 size / 0.20 (size = ShapeParams.size, the half-extent fraction; the dominant
  shape's 0.16-0.20 gives 0.20-0.25, the second shape's 0.09-0.12 gives 0.11-0.15: the dominant voice is the
  loudest, by >= 2.5 dB).
- Pan from the horizontal position, frame by frame: p = x / W in [0, 1] (the shape centre's x fraction), with
  constant-power gains L = cos(p pi / 2), R = sin(p pi / 2) (so L^2 + R^2 = 1 and R^2 / L^2 = tan^2(p pi / 2)).
  Frame i is shown during [i / fps, (i + 1) / fps); its position is the pan at the middle of that window,
  (i + 1/2) / fps, and between two such instants x moves linearly, as the renderer moves the shape between
  frames (ltx.data.shapes.render puts frame i at fraction i / (F - 1) of the straight path start -> end). Before
  the first frame's middle and after the last frame's, the pan holds; static shapes hold their pan throughout.
- 10 ms linear fade in and out at the clip's ends (no clicks).
- Length: round(F / fps * sample_rate) samples, the video's duration (17 frames at 8 fps and 16 kHz: 34000).
  Stereo float32; the mix peaks below 0.6, so nothing clips.

Determinism: the soundtrack is a function of (params, frames, fps, sample_rate) only, computed in float64 with
numpy and rounded once to float32: bitwise the same on every rerun (and, as far as numpy's sin is, machine).

Files (`write_clip`): <stem>.mp4 (H.264 + AAC at the soundtrack's rate, ltx.core.audio_io.write_video_with_audio)
and <stem>.wav (16-bit PCM, ltx.core.audio_io.write_wav).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ltx.data.shapes import KINDS, PALETTE, SceneParams, ShapeParams, ShapesWorld, caption, render

SAMPLE_RATE = 16_000  # Hz, the LTX-2 audio VAE's mel rate
FPS = 8
FRAMES = 17  # the demo's clips: 17 frames at 8 fps = 2.125 s
NOTES: dict[str, float] = {  # colour -> f0 (Hz), on the vocoder's 100 Hz grid (file docstring)
    "red": 300.0,
    "yellow": 400.0,
    "green": 500.0,
    "blue": 700.0,
    "purple": 1100.0,
    "white": 1300.0,
}
TIMBRES: dict[str, str] = {"circle": "sine", "square": "square", "triangle": "sawtooth"}  # kind -> waveform
HARMONIC_LIMIT = 7000.0  # Hz: partials k f0 at or above it are left out (band-limited synthesis)
GAIN_PER_SIZE = 0.25 / 0.20  # gain = GAIN_PER_SIZE * ShapeParams.size
FADE_SECONDS = 0.010

assert set(NOTES) == set(PALETTE) and set(TIMBRES) == set(KINDS)


@dataclass(frozen=True)
class ShapesAVSample:
    video: Tensor  # (3, F, H, W) float32 in [-1, 1]
    audio: Tensor  # (2, N) float32, N = round(F / fps * sample_rate)
    caption: str
    params: SceneParams
    fps: float = FPS
    sample_rate: int = SAMPLE_RATE


# ---------------------------------------------------------------------------------------------- synthesis

def note_bands() -> dict[str, tuple[float, float]]:
    """Each colour's band (lo, hi) in Hz: the frequencies nearer (in log frequency) to its note than to any other,
    edges at the geometric means of neighbouring notes; the outermost edges mirror the nearest inner one."""
    notes = sorted(NOTES.values())
    edges = [math.sqrt(a * b) for a, b in zip(notes, notes[1:])]
    edges = [notes[0] ** 2 / edges[0], *edges, notes[-1] ** 2 / edges[-1]]
    band = {f0: (edges[i], edges[i + 1]) for i, f0 in enumerate(notes)}
    return {color: band[f0] for color, f0 in NOTES.items()}


def audio_length(frames: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples of a clip's soundtrack: round(frames / fps * sample_rate) (17 frames, 8 fps, 16 kHz: 34000)."""
    return round(frames / fps * sample_rate)


def harmonics(timbre: str, f0: float, limit: float = HARMONIC_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """The partials of a voice: (k, amplitude), k = harmonic numbers with k f0 < limit (amplitude 1/k; sine: k = 1
    only, square: odd k, sawtooth: every k), before the RMS normalisation."""
    if timbre not in ("sine", "square", "sawtooth"):
        raise ValueError(f"unknown timbre {timbre!r}; expected one of ['sine', 'square', 'sawtooth']")
    if not f0 > 0:
        raise ValueError(f"f0 must be a positive frequency in Hz, got {f0}")
    top = max(1, math.ceil(limit / f0) - 1)  # the largest k with k f0 < limit (at least the fundamental)
    k = np.arange(1, top + 1)
    if timbre == "sine":
        k = k[:1]
    elif timbre == "square":
        k = k[k % 2 == 1]
    return k, 1.0 / k


def voice(timbre: str, f0: float, n: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One voice at unit-sine RMS: sum_k a_k sin(2 pi k f0 t) / sqrt(sum_k a_k^2), t = i / sample_rate -> (n,)
    float64 (partials below min(HARMONIC_LIMIT, 0.45 sample_rate), so nothing aliases at low rates)."""
    k, amp = harmonics(timbre, f0, min(HARMONIC_LIMIT, 0.45 * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = (amp[:, None] * np.sin(2 * np.pi * f0 * k[:, None] * t[None, :])).sum(0)  # (n,)
    return wave / math.sqrt(float((amp * amp).sum()))


def pan_track(shape: ShapeParams, frames: int, n: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The pan p = x / W of a shape at every sample -> (n,) float64 in [0, 1] (see the file docstring: frame i
    sits at time (i + 1/2) / fps, linear in between, held outside)."""
    u = (np.arange(n, dtype=np.float64) + 0.5) / sample_rate * fps - 0.5  # position in frames: frame i at u = i
    s = np.clip(u / (frames - 1), 0.0, 1.0) if frames > 1 else np.zeros(n)  # fraction of the path start -> end
    return shape.start[0] + s * (shape.end[0] - shape.start[0])


def fade(n: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip envelope -> (n,): linear ramps of FADE_SECONDS at both ends (0 on the first and last sample)."""
    ramp = max(1, round(FADE_SECONDS * sample_rate))
    i = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(i, n - 1 - i) / ramp, 0.0, 1.0)


def soundtrack(params: SceneParams, frames: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """The scene's soundtrack -> (2, round(frames / fps * sample_rate)) float32 stereo (L, R), deterministic."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive int, got {frames!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1000:
        raise ValueError(f"sample_rate must be an int >= 1000 (Hz), got {sample_rate!r}")
    n = audio_length(frames, fps, sample_rate)
    mix = np.zeros((2, n))
    for shape in params.shapes:
        if shape.color not in NOTES:
            raise ValueError(f"colour {shape.color!r} has no note; ShapesWorld-AV covers {list(NOTES)}")
        wave = GAIN_PER_SIZE * shape.size * voice(TIMBRES[shape.kind], NOTES[shape.color], n, sample_rate)
        angle = pan_track(shape, frames, n, fps, sample_rate) * (np.pi / 2)
        mix[0] += np.cos(angle) * wave
        mix[1] += np.sin(angle) * wave
    return torch.from_numpy((mix * fade(n, sample_rate)).astype(np.float32))


# ---------------------------------------------------------------------------------------------- dataset

class ShapesWorldAV(ShapesWorld):
    """ShapesWorld (same arguments, same scenes, videos and captions) whose items also carry `.audio`, the
    scene's `soundtrack` at `fps` and `sample_rate` (see the file docstring)."""

    def __init__(self, *, split: str = "train", num_samples: int = 10_000, frames: int = FRAMES, height: int = 64,
                 width: int = 64, seed: int = 0, p_two_shapes: float = 0.5, p_tinted: float = 0.5,
                 fps: float = FPS, sample_rate: int = SAMPLE_RATE):
        super().__init__(split=split, num_samples=num_samples, frames=frames, height=height, width=width, seed=seed,
                         p_two_shapes=p_two_shapes, p_tinted=p_tinted)
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1000:
            raise ValueError(f"sample_rate must be an int >= 1000 (Hz), got {sample_rate!r}")
        self.fps, self.sample_rate = fps, sample_rate

    def __getitem__(self, index: int) -> ShapesAVSample:
        params = self.params(index)
        return ShapesAVSample(render(params, self.frames, self.height, self.width),
                              soundtrack(params, self.frames, self.fps, self.sample_rate), caption(params), params,
                              self.fps, self.sample_rate)


def collate_av(samples: list[ShapesAVSample]) -> tuple[Tensor, Tensor, list[str], list[SceneParams]]:
    """DataLoader collate_fn: videos (B, 3, F, H, W), audios (B, 2, N), captions and params as lists."""
    return (torch.stack([s.video for s in samples]), torch.stack([s.audio for s in samples]),
            [s.caption for s in samples], [s.params for s in samples])


# ---------------------------------------------------------------------------------------------- files

def write_clip(stem_path: str | os.PathLike, sample: ShapesAVSample, fps: float | None = None, *,
               crf: int = 18, wav: bool = True, aac_coder: str | None = None) -> tuple[Path, Path | None]:
    """Write `sample` as <stem>.mp4 (H.264 + AAC at sample.sample_rate) and <stem>.wav -> (mp4 path, wav path;
    None with wav=False).

    fps: the video's frame rate (default sample.fps, the rate its soundtrack was made for). Both files are
    written atomically; existing files are replaced. aac_coder: see ltx.core.audio_io.write_video_with_audio.
    """
    from ltx.core.audio_io import write_video_with_audio, write_wav

    stem = Path(stem_path)
    fps = sample.fps if fps is None else fps
    mp4 = stem.with_name(stem.name + ".mp4")
    frames = (sample.video.float().clamp(-1, 1) + 1) / 2  # (3, F, H, W) in [0, 1]
    write_video_with_audio(mp4, frames, fps, sample.audio, sample.sample_rate, crf=crf, aac_coder=aac_coder)
    if not wav:
        return mp4, None
    wav_path = stem.with_name(stem.name + ".wav")
    write_wav(wav_path, sample.audio, sample.sample_rate)
    return mp4, wav_path
