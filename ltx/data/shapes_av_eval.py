"""Prompt following and audio-video sync for ShapesWorld-AV clips, scored from the pixels and the waveform alone.

The sound design is ltx.data.shapes_av's: one voice per shape, pitch from colour (NOTES), timbre from kind
(TIMBRES), pan p = x / W with constant-power gains, loudness from size (the dominant shape is the loudest voice).
The evaluator never sees scene parameters; thresholds live in `AVConfig`.

Video (ltx.data.shapes_eval, reused as is): `detect` gives the dominant shape's colour and motion; the shape's
horizontal track is the per-frame median x of `color_mask(video, detected colour)` (the prompt's colour if nothing
was detected), as a fraction of W at pixel centres.

Audio (`analyze_audio`), on the whole clip, channels' powers summed (constant-power pan keeps a voice's total):
1. Spectrum: Hann window over the clip, power per bin scaled so that a spectral line of a sinusoid sums to its
   mean square. Noise floor: the median bin from 80 Hz to min(7 kHz, 0.45 rate), divided by ln 2 (the median of
   an exponential to its mean).
2. Notes: for each colour, the peak within +-`note_tolerance` semitones of its f0 (neighbouring notes are >= 2.9
   apart, and another note's partial is >= 1.3 semitones away: 1200 / 1400 Hz beside 1300), refined by a
   parabola on the log power. Its line power (bins within +-`line_hz` + 0.1%) is the fundamental's. A voice is
   present when its fundamental is `snr_db` above the floor's line power and within `relative_db` of the loudest
   fundamental. The fundamental of one note never lies within 7.6% of another note's partial.
3. Each present voice: partials k f (k f < min(7 kHz, 0.45 rate)), each line less the floor's, clamped at 0.
   Partials within two line widths of another present voice's partial are left out (red and yellow share 1200
   Hz: 4 x 300 = 3 x 400). Level = the sum of the kept lines (the voice's mean square,
   in dB); the dominant voice is the loudest. The nearest note is the voice's colour (pitch).
4. Timbre: energy of the odd partials 3, 5 and of the even partials 2, 4, 6 relative to the fundamental, in dB
   (floored at -40 dB), matched to the nearest of the templates sine (none, none), square (odd 1/k^2, none),
   sawtooth (odd 1/k^2, even 1/k^2) computed over the same kept partials.
5. Pan per video frame i: the samples of [i / fps, (i + 1) / fps), Hann window, the chosen voice's fundamental
   line in each channel: p = (2 / pi) atan2(sqrt(E_R), sqrt(E_L)), the inverse of the constant-power law, so a
   static voice at x gives p = x / W. The audio's horizontal motion: the least-squares slope of the dominant
   voice's p over the frames times (F - 1), "left" / "right" beyond `pan_threshold`, else "none" (static, up and
   down do not pan). Sync uses the voice of the shape on screen: the video's detected colour's voice if present,
   else the dominant voice (so a video showing the wrong shape in sync with that shape's own voice is in sync,
   and fails colour).

Sync (`sync`): the video's x track and the audio's p track over the same frames (those where both exist).
- r(0): their Pearson correlation (does the sound move with the shape?).
- The lag: the shift l in [-max_lag, max_lag] (frames; l > 0: the sound is late) minimising the RMS distance
  between x[i] and p[i + l] over the overlap; both are fractions of the width and p = x / W by design, so the
  distance is calibrated. Not the correlation's argmax: ShapesWorld's paths are straight at constant speed, so a
  shifted ramp correlates as well as the true one (Pearson is shift-invariant on a ramp, and a tail-penalising
  cross-correlation returned lag 0 for ground-truth soundtracks shifted by 1-3 frames, where this finds them).
  For a ramp a lag and a constant pan offset are the same thing: one frame is 1/16 of the travel (0.016-0.025 W).
- The RMS distance at lag 0 and at the best lag (fractions of W).
Only for prompts whose dominant shape moves left or right.

Measures per item (None when it does not apply): colour, motion (video vs prompt, as eval_shapes); pitch (the
dominant voice's colour vs the prompt's dominant colour); timbre (its timbre vs TIMBRES[prompt's kind]); voices
(2-shape prompts: both prompt colours' voices present); pan (left/right prompts: the audio's horizontal motion);
av_colour (the video's detected colour == the dominant voice's: no prompt needed); sync (left/right prompts:
r(0) >= 0.8 and |best lag| <= 1; the mean r(0) and the lags are reported too). No voice found = wrong.

Modes: `evaluate_av` takes (name, video, audio, sample_rate, prompt, fps) items; either stream may be None (its
measures are then not scored). Text-to-audio+video: both generated. Audio-to-video: the given soundtrack with the
generated video and the soundtrack's caption (colour, motion and sync judge the video against the sound's scene);
video-to-audio: the given video with the generated audio and the video's caption (pitch, timbre, voices, pan,
sync). Any sample rate >= 4 kHz is analysed at its own rate (no resampling needed: every step is in Hz).

Files (`evaluate_folder`, tools/eval_av.py): the contract of ltx.data.shapes_eval.folder_prompts (a folder of
*.mp4 with prompts.json or <stem>.json sidecars); the sound is each mp4's own audio track (`audio="mp4"`), the
<stem>.wav beside it (`audio="wav"`), or the track and else the WAV (`audio="auto"`, the default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ltx.data.shapes import HELDOUT, MOTIONS, PALETTE, SceneSpec, parse_caption
from ltx.data.shapes_av import HARMONIC_LIMIT, NOTES, TIMBRES
from ltx.data.shapes_eval import Detection, DetectorConfig, color_mask, detect, folder_prompts, read_mp4

AUDIO_SOURCES = ("auto", "mp4", "wav")


@dataclass(frozen=True, kw_only=True)
class AVConfig:
    """Thresholds of the audio analysis and of the sync measure (see the module docstring)."""

    note_tolerance: float = 0.75  # semitones around each note's f0 searched for its fundamental
    line_hz: float = 4.0  # half width of a spectral line over the whole clip (per-frame windows: >= 2.5 bins)
    snr_db: float = 20.0  # a voice's fundamental above the noise floor (same bandwidth)
    relative_db: float = 20.0  # and at most this far below the loudest fundamental
    floor_db: float = -40.0  # timbre features (partial energy / fundamental) are floored here
    pan_threshold: float = 0.1  # pan change over the clip for "left" / "right" (ShapesWorld moves 0.25-0.40)
    max_lag: int = 3  # frames searched either way for the best sync lag
    sync_threshold: float = 0.8  # r(0) for a synced item
    sync_max_lag: int = 1  # and |best lag| at most this
    detector: DetectorConfig = DetectorConfig()


@dataclass(frozen=True)
class Voice:
    color: str  # the note's colour
    f0: float  # measured fundamental (Hz)
    level_db: float  # the voice's mean square (kept partials), dB re 1
    snr_db: float  # its fundamental line over the noise floor's
    odd_db: float  # partials 3, 5 relative to the fundamental
    even_db: float  # partials 2, 4, 6 relative to the fundamental
    timbre: str  # nearest template: "sine" | "square" | "sawtooth"


@dataclass(frozen=True)
class AudioAnalysis:
    voices: tuple[Voice, ...]  # present voices, loudest first
    noise_floor_db: float  # mean noise power per bin, dB re 1 (same scale as the lines)
    channels: int

    @property
    def dominant(self) -> Voice | None:
        return self.voices[0] if self.voices else None

    def voice(self, color: str) -> Voice | None:
        return next((v for v in self.voices if v.color == color), None)


@dataclass(frozen=True)
class Sync:
    r0: float | None  # Pearson correlation of the video's x and the audio's pan at lag 0
    lag: int | None  # the lag (frames) minimising the RMS distance of the tracks; > 0: the sound is late
    error0: float | None  # RMS distance |x - p| at lag 0 (fractions of W)
    error_best: float | None  # and at the best lag
    frames: int  # frames with both tracks valid
    video_x: tuple[float, ...]  # per frame, NaN where missing
    audio_pan: tuple[float, ...]


# ---------------------------------------------------------------------------------------------- audio analysis

def _as_audio(audio: Tensor, sample_rate: int) -> np.ndarray:
    audio = torch.as_tensor(audio)
    if audio.ndim != 2 or audio.shape[0] < 1 or audio.shape[1] < 16:
        raise ValueError(f"expected audio of shape (C, N) with C >= 1 channels and N >= 16 samples, "
                         f"got {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise ValueError(f"expected a float waveform in [-1, 1], got dtype {audio.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 4000:
        raise ValueError(f"sample_rate must be an int >= 4000 (Hz), got {sample_rate!r}")
    x = audio.detach().double().cpu().numpy()
    if not np.isfinite(x).all():
        raise ValueError(f"the audio holds {int((~np.isfinite(x)).sum())} NaN / inf values")
    return x


class _Spectrum:
    """Per-channel power spectra of one Hann-windowed segment, scaled so a line sums to its mean square."""

    def __init__(self, x: np.ndarray, sample_rate: int, min_half: float):
        n = x.shape[1]
        self.nfft = 1 << max(4, math.ceil(math.log2(2 * n)))  # zero padding: a finer grid for the peak search
        w = np.hanning(n + 2)[1:-1]  # no zero end points (the window of short segments keeps every sample)
        spec = np.fft.rfft(x * w, n=self.nfft, axis=1)
        self.power = (spec.real**2 + spec.imag**2) * (2.0 / (self.nfft * (w * w).sum()))  # (C, nfft // 2 + 1)
        self.df = sample_rate / self.nfft
        self.half_min = max(min_half, 2.5 * sample_rate / n)  # >= the Hann main lobe (2 bins of rate / n)

    def half(self, f: float) -> float:
        return self.half_min + 0.001 * f

    def line(self, f: float, channels: bool = False) -> np.ndarray | float:
        """Power of the line at f Hz (bins within +-half(f)); per channel with `channels`, else summed."""
        h = self.half(f)
        lo, hi = max(0, math.ceil((f - h) / self.df)), min(self.power.shape[1] - 1, math.floor((f + h) / self.df))
        per = self.power[:, lo : hi + 1].sum(1) if hi >= lo else np.zeros(self.power.shape[0])
        return per if channels else float(per.sum())

    def bins(self, f: float) -> int:
        return max(1, math.floor((f + self.half(f)) / self.df) - math.ceil((f - self.half(f)) / self.df) + 1)


def _partial_limit(sample_rate: int) -> float:
    return min(HARMONIC_LIMIT, 0.45 * sample_rate)


def _timbre(kept: list[int], lines: dict[int, float], floor_db: float) -> tuple[float, float, str]:
    """(odd dB, even dB, nearest template) from the kept partials 2..6 of a voice (lines: k -> power)."""
    def db(v):
        return max(floor_db, 10 * math.log10(v)) if v > 0 else floor_db

    odd = [k for k in kept if k in (3, 5)]
    even = [k for k in kept if k in (2, 4, 6)]
    ref = lines[1]
    feats = (db(sum(lines[k] for k in odd) / ref), db(sum(lines[k] for k in even) / ref))
    square = db(sum(1 / k**2 for k in odd))
    templates = {"sine": (floor_db, floor_db), "square": (square, floor_db),
                 "sawtooth": (square, db(sum(1 / k**2 for k in even)))}
    best = min(templates, key=lambda t: (feats[0] - templates[t][0]) ** 2 + (feats[1] - templates[t][1]) ** 2)
    return feats[0], feats[1], best


def analyze_audio(audio: Tensor, sample_rate: int, cfg: AVConfig = AVConfig()) -> AudioAnalysis:
    """The voices of a (C, N) float waveform at `sample_rate` Hz (see the module docstring, steps 1-4)."""
    x = _as_audio(audio, sample_rate)
    spec = _Spectrum(x, sample_rate, cfg.line_hz)
    total = spec.power.sum(0)  # (bins,) channels summed
    limit = _partial_limit(sample_rate)
    freqs = np.arange(total.shape[0]) * spec.df
    band = total[(freqs >= 80.0) & (freqs <= limit)]
    floor = max(float(np.median(band)) / math.log(2), 1e-30)  # mean noise power per bin

    candidates = {}
    for color, f0 in NOTES.items():
        lo, hi = f0 * 2 ** (-cfg.note_tolerance / 12), f0 * 2 ** (cfg.note_tolerance / 12)
        i0, i1 = math.ceil(lo / spec.df), math.floor(hi / spec.df)
        i = i0 + int(np.argmax(total[i0 : i1 + 1]))
        f = i * spec.df
        if i0 < i < i1:  # parabola through the log powers of the peak and its neighbours
            a, b, c = np.log(np.maximum(total[i - 1 : i + 2], 1e-300))
            denom = a - 2 * b + c
            f += 0.5 * (a - c) / denom * spec.df if denom < 0 else 0.0
        fundamental = spec.line(f)
        candidates[color] = (f, fundamental, fundamental / (floor * spec.bins(f)))
    loudest = max(c[1] for c in candidates.values())
    present = {color: c for color, c in candidates.items()
               if c[2] >= 10 ** (cfg.snr_db / 10) and c[1] >= loudest * 10 ** (-cfg.relative_db / 10)}

    voices = []
    for color, (f, _, snr) in present.items():
        others = [g for other, (g, _, _) in present.items() if other != color]
        lines, kept = {}, []
        for k in range(1, max(1, math.ceil(limit / f) - 1) + 1):
            fk = k * f
            if k > 1 and any(abs(fk - j * g) < 2 * spec.half(fk) for g in others for j in range(1, int(fk / g) + 2)):
                continue  # shared with another voice's partial
            lines[k] = max(0.0, spec.line(fk) - floor * spec.bins(fk))
            kept.append(k)
        if lines[1] <= 0:
            continue
        odd_db, even_db, timbre = _timbre([k for k in kept if 2 <= k <= 6], lines, cfg.floor_db)
        level = sum(lines.values())
        voices.append(Voice(color, float(f), 10 * math.log10(level), 10 * math.log10(snr), odd_db, even_db, timbre))
    voices.sort(key=lambda v: -v.level_db)
    return AudioAnalysis(tuple(voices), 10 * math.log10(floor), x.shape[0])


def audio_pan(audio: Tensor, sample_rate: int, f0: float, frames: int, fps: float,
              cfg: AVConfig = AVConfig()) -> np.ndarray:
    """Per video frame, the pan of the voice at f0 Hz: (2 / pi) atan2(sqrt(E_R), sqrt(E_L)) of its fundamental
    line over the frame's samples [i / fps, (i + 1) / fps) -> (frames,) float64, NaN where the audio ends, is
    mono, or the line is empty."""
    x = _as_audio(audio, sample_rate)
    out = np.full(frames, np.nan)
    if x.shape[0] != 2:
        return out
    for i in range(frames):
        a, b = round(i * sample_rate / fps), min(x.shape[1], round((i + 1) * sample_rate / fps))
        if b - a < 0.5 * sample_rate / fps:
            continue
        energy = _Spectrum(x[:, a:b], sample_rate, cfg.line_hz).line(f0, channels=True)
        if energy.sum() > 0:
            out[i] = (2 / math.pi) * math.atan2(math.sqrt(energy[1]), math.sqrt(energy[0]))
    return out


def pan_motion(pan: np.ndarray, cfg: AVConfig = AVConfig()) -> str | None:
    """"left" / "right" / "none" from a per-frame pan track (least-squares slope times F - 1); None for fewer
    than 2 valid frames."""
    t = np.flatnonzero(np.isfinite(pan)).astype(np.float64)
    if len(t) < 2:
        return None
    p = pan[t.astype(int)]
    tc = t - t.mean()
    change = float((tc * (p - p.mean())).sum() / (tc * tc).sum()) * (len(pan) - 1)
    return "none" if abs(change) < cfg.pan_threshold else ("right" if change > 0 else "left")


# ---------------------------------------------------------------------------------------------- video track, sync

@torch.no_grad()
def video_x(video: Tensor, color: str, cfg: AVConfig = AVConfig()) -> np.ndarray:
    """Per frame, the median x (fraction of W, pixel centres) of `color`'s pixels (shapes_eval.color_mask) ->
    (F,) float64, NaN where fewer than half the detector's min_area are found."""
    mask = color_mask(video, color)  # (F, H, W)
    _, H, W = mask.shape
    out = np.full(mask.shape[0], np.nan)
    for f in range(mask.shape[0]):
        xs = torch.nonzero(mask[f], as_tuple=True)[1]
        if len(xs) >= max(1.0, 0.5 * cfg.detector.min_area * H * W):
            out[f] = (xs.float() + 0.5).median().item() / W
    return out


def sync(x: np.ndarray, pan: np.ndarray, max_lag: int = 3) -> Sync:
    """Pearson r(0) and the calibrated lag of a video x track and an audio pan track (module docstring)."""
    frames = min(len(x), len(pan))
    x, pan = np.asarray(x[:frames], np.float64), np.asarray(pan[:frames], np.float64)
    valid = np.isfinite(x) & np.isfinite(pan)
    n = int(valid.sum())
    none = Sync(None, None, None, None, n, tuple(x.tolist()), tuple(pan.tolist()))
    if n < max(3, frames // 2):
        return none
    xv, pv = x[valid], pan[valid]
    r0 = None
    if xv.std() > 1e-9 and pv.std() > 1e-9:
        r0 = float(((xv - xv.mean()) * (pv - pv.mean())).mean() / (xv.std() * pv.std()))
    error = {}
    for lag in range(-max_lag, max_lag + 1):
        a, b = (x[: frames - lag], pan[lag:]) if lag >= 0 else (x[-lag:], pan[: frames + lag])
        d = (a - b)[np.isfinite(a - b)]
        if len(d) >= max(3, frames // 2):
            error[lag] = float(np.sqrt(np.mean(d * d)))
    best = min(error, key=lambda k: (error[k], abs(k)))  # ties go to the smaller |lag|
    return Sync(r0, best, error.get(0), error[best], n, tuple(x.tolist()), tuple(pan.tolist()))


# ---------------------------------------------------------------------------------------------- scoring

def chance_levels() -> dict[str, float]:
    """Expected scores of a prompt-blind generator of ShapesWorld-AV scenes (uniform colours, kinds and motions):
    'voices' a random 2-shape scene's pair of colours (1 / 15); 'pan' and 'sync' a random scene's motion being
    the prompt's left / right (1 / 5: ShapesWorld's paths are straight at constant speed, so any two clips moving
    the same way correlate ~1; the lag is what tells their timing apart); 'sync_r0' the mean correlation."""
    return {"color": 1 / len(PALETTE), "motion": 1 / len(MOTIONS), "pitch": 1 / len(NOTES), "timbre": 1 / 3,
            "voices": 1 / math.comb(len(NOTES), 2), "pan": 1 / len(MOTIONS), "av_color": 1 / len(NOTES),
            "sync": 1 / len(MOTIONS), "sync_r0": 0.0}


MEASURES = ("color", "motion", "pitch", "timbre", "voices", "pan", "av_color", "sync")


@dataclass(frozen=True)
class AVItemResult:
    name: str
    prompt: str
    scene: SceneSpec
    detection: Detection | None  # None: no video
    audio: AudioAnalysis | None  # None: no audio
    audio_motion: str | None  # "left" / "right" / "none" from the dominant voice's pan; None: no pan
    sync: Sync | None  # None: not a left/right prompt, or a stream missing
    synced: bool | None = None  # r(0) >= sync_threshold and |lag| <= sync_max_lag (None: no sync measured)

    @property
    def heldout(self) -> bool:
        s = self.scene.shapes[0]
        return (s.color, s.kind, s.motion) in HELDOUT

    @property
    def horizontal(self) -> bool:
        return self.scene.shapes[0].motion in ("left", "right")

    def scores(self) -> dict[str, bool | None]:
        """Each measure of MEASURES: True / False, or None where it does not apply."""
        exp = self.scene.shapes[0]
        out: dict[str, bool | None] = dict.fromkeys(MEASURES)
        if self.detection is not None:
            out["color"] = self.detection.color == exp.color
            out["motion"] = self.detection.motion == exp.motion
        if self.audio is not None:
            dom = self.audio.dominant
            out["pitch"] = dom is not None and dom.color == exp.color
            out["timbre"] = dom is not None and dom.timbre == TIMBRES[exp.kind]
            if len(self.scene.shapes) == 2:
                out["voices"] = all(self.audio.voice(s.color) is not None for s in self.scene.shapes)
            if self.horizontal:
                out["pan"] = self.audio_motion == exp.motion
        if self.detection is not None and self.audio is not None:
            out["av_color"] = self.detection.color is not None and self.audio.dominant is not None and (
                self.detection.color == self.audio.dominant.color)
            if self.horizontal:
                out["sync"] = self.synced
        return out


@dataclass
class AVReport:
    config: AVConfig
    items: list[AVItemResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why

    def groups(self) -> dict[str, list[AVItemResult]]:
        return {"all": self.items, "1-shape": [r for r in self.items if len(r.scene.shapes) == 1],
                "2-shape": [r for r in self.items if len(r.scene.shapes) == 2],
                "seen": [r for r in self.items if not r.heldout], "heldout": [r for r in self.items if r.heldout]}

    def summary(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """group -> measure -> {"acc", "n"} (n: items where it applies; acc None when n = 0), plus "sync_r0"
        {"mean", "median", "n"} (an unmeasurable track counts as 0), "sync_error" {"mean", "n"} (the RMS |x - p| at
        lag 0, fractions of W) and "sync_lag" {"lag0", "within1", "n"} over the left/right items with a sync."""
        out = {}
        for name, rs in self.groups().items():
            g = {"items": {"n": len(rs)}}
            scores = [r.scores() for r in rs]
            for m in MEASURES:
                vals = [s[m] for s in scores if s[m] is not None]
                g[m] = {"acc": sum(vals) / len(vals) if vals else None, "n": len(vals)}
            syncs = [r.sync for r in rs if r.sync is not None and r.horizontal]
            r0 = [s.r0 if s.r0 is not None else 0.0 for s in syncs]  # an unmeasurable track counts as 0
            lags = [s.lag for s in syncs if s.lag is not None]
            g["sync_r0"] = {"mean": float(np.mean(r0)) if r0 else None,
                            "median": float(np.median(r0)) if r0 else None, "n": len(r0)}
            errors = [s.error0 for s in syncs if s.error0 is not None]
            g["sync_error"] = {"mean": float(np.mean(errors)) if errors else None, "n": len(errors)}
            g["sync_lag"] = {"lag0": sum(lag == 0 for lag in lags) / len(syncs) if syncs else None,
                             "within1": sum(abs(lag) <= 1 for lag in lags) / len(syncs) if syncs else None,
                             "n": len(syncs)}
            out[name] = g
        return out

    def table(self) -> str:
        """The summary as a fixed-width text table: measures down, groups across, 'acc (n)' per cell."""
        summary = self.summary()
        names = [g for g in summary if summary[g]["items"]["n"]]
        chance = chance_levels()
        labels = {"color": "colour", "motion": "motion", "pitch": "pitch->colour", "timbre": "timbre->kind",
                  "voices": "both voices", "pan": "pan->motion", "av_color": "video=audio col", "sync": "sync ok"}

        def cell(value, n, pct=True):
            return f"{'-' if value is None else (format(value, '.1%') if pct else format(value, '.3f'))} ({n})"

        lines = [f"{'measure':<16}" + "".join(f"{g:>16}" for g in names) + f"{'chance':>9}"]
        for m in MEASURES:
            lines.append(f"{labels[m]:<16}" + "".join(f"{cell(summary[g][m]['acc'], summary[g][m]['n']):>16}"
                                                      for g in names) + f"{chance[m]:>9.1%}")
        lines.append(f"{'sync r(0) mean':<16}" + "".join(
            f"{cell(summary[g]['sync_r0']['mean'], summary[g]['sync_r0']['n'], False):>16}" for g in names)
            + f"{0.0:>9.3f}")
        lines.append(f"{'sync |x-p| rms':<16}" + "".join(
            f"{cell(summary[g]['sync_error']['mean'], summary[g]['sync_error']['n'], False):>16}" for g in names))
        lines.append(f"{'sync lag = 0':<16}" + "".join(
            f"{cell(summary[g]['sync_lag']['lag0'], summary[g]['sync_lag']['n']):>16}" for g in names))
        lines.append(f"{'sync |lag| <= 1':<16}" + "".join(
            f"{cell(summary[g]['sync_lag']['within1'], summary[g]['sync_lag']['n']):>16}" for g in names))
        lines.append(f"sync ok = r(0) >= {self.config.sync_threshold} and |lag| <= {self.config.sync_max_lag}; "
                     f"no voice / no shape = wrong")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} item(s): prompts outside the ShapesWorld grammar")
        return "\n".join(lines)

    def item_table(self) -> str:
        """One line per item: what the video and the audio show, and the sync figures."""
        lines = [f"{'name':<24} {'video':<14} {'voices (dominant first)':<34} {'pan':<6} {'r0':>6} {'lag':>4}  "
                 f"prompt"]
        for r in self.items:
            video = "-" if r.detection is None else f"{r.detection.color} {r.detection.motion}"
            voices = "-" if r.audio is None else ", ".join(f"{v.color} {v.timbre}" for v in r.audio.voices) or "none"
            r0 = "-" if r.sync is None or r.sync.r0 is None else f"{r.sync.r0:.3f}"
            lag = "-" if r.sync is None or r.sync.lag is None else str(r.sync.lag)
            lines.append(f"{r.name[:24]:<24} {video[:14]:<14} {voices[:34]:<34} {str(r.audio_motion):<6} {r0:>6} "
                         f"{lag:>4}  {r.prompt}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        items = []
        for r in self.items:
            items.append({"name": r.name, "prompt": r.prompt, "heldout": r.heldout, "shapes": len(r.scene.shapes),
                          "scores": r.scores(),
                          "detection": None if r.detection is None else asdict(r.detection),
                          "audio": None if r.audio is None else asdict(r.audio), "audio_motion": r.audio_motion,
                          "sync": None if r.sync is None else asdict(r.sync)})
        return {"summary": self.summary(), "chance": chance_levels(), "config": asdict(self.config),
                "skipped": self.skipped, "items": items}


def _nan_to_none(values: tuple[float, ...]) -> tuple[float | None, ...]:
    return tuple(None if not math.isfinite(v) else v for v in values)


def evaluate_item(name: str, video: Tensor | None, audio: Tensor | None, sample_rate: int | None, prompt: str,
                  fps: float, cfg: AVConfig = AVConfig()) -> AVItemResult:
    """Score one item (see `evaluate_av`); ValueError for a prompt outside the grammar or bad inputs."""
    scene = parse_caption(prompt)
    if video is None and audio is None:
        raise ValueError(f"{name}: neither a video nor an audio to score")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"{name}: fps must be a positive number, got {fps!r}")
    detection = detect(video, cfg.detector) if video is not None else None
    analysis = analyze_audio(audio, sample_rate, cfg) if audio is not None else None
    exp = scene.shapes[0]
    seen_color = detection.color if detection is not None and detection.color is not None else exp.color
    frames = video.shape[1] if video is not None else round(audio.shape[1] / sample_rate * fps)
    dominant = analysis.dominant if analysis is not None else None
    pan = audio_pan(audio, sample_rate, dominant.f0, frames, fps, cfg) if dominant is not None else None
    motion = pan_motion(pan, cfg) if pan is not None else None  # the dominant voice's, for the pan measure
    if analysis is not None and (seen := analysis.voice(seen_color)) is not None and seen is not dominant:
        pan = audio_pan(audio, sample_rate, seen.f0, frames, fps, cfg)  # sync: the voice of the shape on screen
    result = None
    ok = None
    if exp.motion in ("left", "right") and video is not None and audio is not None:
        x = video_x(video, seen_color, cfg)
        result = sync(x, pan if pan is not None else np.full(frames, np.nan), cfg.max_lag)
        ok = result.r0 is not None and result.r0 >= cfg.sync_threshold and abs(result.lag) <= cfg.sync_max_lag
        result = Sync(result.r0, result.lag, result.error0, result.error_best, result.frames,
                      _nan_to_none(result.video_x), _nan_to_none(result.audio_pan))
    return AVItemResult(name, prompt, scene, detection, analysis, motion, result, ok)


def evaluate_av(items: Iterable[tuple[str, Tensor | None, Tensor | None, int | None, str, float]],
                cfg: AVConfig = AVConfig()) -> AVReport:
    """Score (name, video (3, F, H, W) in [-1, 1] or None, audio (C, N) float or None, sample_rate, prompt, fps)
    items. Prompts that do not parse are skipped (listed in the report)."""
    report = AVReport(cfg)
    for name, video, audio, sample_rate, prompt, fps in items:
        try:
            parse_caption(prompt)
        except ValueError as e:
            report.skipped[name] = str(e)
            continue
        report.items.append(evaluate_item(name, video, audio, sample_rate, prompt, fps, cfg))
    return report


# ---------------------------------------------------------------------------------------------- files

def read_clip(path: str | Path, audio: str = "auto") -> tuple[Tensor, Tensor, int, float]:
    """An mp4 and its sound -> (video (3, F, H, W) in [-1, 1], audio (C, N), sample rate, fps). `audio`: "mp4"
    (the file's own track), "wav" (<stem>.wav beside it) or "auto" (the track, else the WAV)."""
    from ltx.core import media
    from ltx.core.audio_io import read_audio

    if audio not in AUDIO_SOURCES:
        raise ValueError(f"unknown audio source {audio!r}; expected one of {AUDIO_SOURCES}")
    path = Path(path)
    _, fps = media.read_frames(path, max_frames=1)
    video = read_mp4(path)
    wav = path.with_suffix(".wav")
    if audio == "wav" or (audio == "auto" and not _has_audio(path)):
        if not wav.exists():
            raise FileNotFoundError(f"no sound for {path.name}: " + (f"{wav.name} does not exist" if audio == "wav"
                                    else f"the mp4 has no audio track and there is no {wav.name} beside it"))
        sound, rate = read_audio(wav)
    else:
        sound, rate = read_audio(path)
    if fps is None:
        raise ValueError(f"{path.name}: the file states no frame rate")
    return video, sound, rate, float(fps)


def _has_audio(path: Path) -> bool:
    import av

    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def _file_items(prompts: dict[Path, str], audio: str):
    for path, prompt in prompts.items():
        video, sound, rate, fps = read_clip(path, audio)
        yield path.name, video, sound, rate, prompt, fps


def evaluate_folder(folder: str | Path, cfg: AVConfig = AVConfig(), audio: str = "auto") -> AVReport:
    """Score every mp4 of a folder against its prompt (ltx.data.shapes_eval.folder_prompts' contract)."""
    return evaluate_av(_file_items(folder_prompts(folder), audio), cfg)


def evaluate_file(path: str | Path, prompt: str, cfg: AVConfig = AVConfig(), audio: str = "auto") -> AVReport:
    """Score one mp4 (and its sound) against `prompt`."""
    return evaluate_av(_file_items({Path(path): prompt}, audio), cfg)
