"""Prompt-following evaluation for ShapesWorld videos: the dominant shape's colour and motion, from pixels alone.

The detector sees only the video (no generator parameters). Steps, with thresholds in `DetectorConfig`:
1. Map to [0, 1] RGB and box-filter each frame (3x3: pixel noise / 3, edges soften by a pixel). The
   background estimate is the per-channel median over all pixels of all frames (ShapesWorld shapes cover
   at most 17% of a frame, so the median is the background, tinted or not).
2. Foreground: pixels farther than `foreground_threshold` (RGB distance) from the background and at least
   `min_brightness` bright. Each gets the PALETTE colour nearest in chroma (rgb / max channel, so a
   too-dark or too-bright rendering keeps its colour) and is kept if within `palette_threshold` of it; this
   drops anti-aliased edges, noise, and colours outside the palette.
3. Dominant colour: the palette colour with the most kept pixels over the clip (ShapesWorld's dominant
   shape is the largest and drawn on top; see ltx.data.shapes).
4. Per frame, that colour's mask gives a robust centre (coordinate-wise median) and a compactness (share of
   its pixels within `compact_radius` of the centre). No shape is detected (colour and motion None, scored
   wrong) when the mask is too small on average or not compact, as for pixel noise.
5. Motion: least-squares slope of the centre over the frames times (F - 1) = displacement over the clip
   in fractions of (W, H), y down. "static" below `static_threshold` (ShapesWorld moves 0.25-0.40),
   otherwise the sign along the axis of larger displacement.

Only colour and motion are scored, not the shape kind. An item counts as held-out when the dominant
(colour, shape, motion) triple of its prompt is in ltx.data.shapes.HELDOUT.

File contract for generated videos (`evaluate_folder`, tools/eval_shapes.py): a folder of `*.mp4` with
either `prompts.json` = {"<file name>.mp4": "<prompt>", ...} covering exactly the mp4s of the folder, or,
when there is no prompts.json, a sidecar `<stem>.json` = {"prompt": "<prompt>"} next to each mp4.
Prompts must parse with ltx.data.shapes.parse_caption; those that do not are reported as skipped.

Shapes: video (3, F, H, W) float in [-1, 1] (as ShapesWorld and the VAE decoder produce), RGB.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.data.shapes import MOTIONS, PALETTE, ShapeSpec, parse_caption

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = torch.tensor([PALETTE[c] for c in _PALETTE_NAMES])  # (6, 3) in [0, 1]
_PALETTE_CHROMA = _PALETTE_RGB / _PALETTE_RGB.amax(dim=1, keepdim=True)  # (6, 3), max channel 1
_MEDIAN_SAMPLES = 1 << 20  # per channel; larger videos are strided for the background median


@dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    """Thresholds of `detect`; distances are Euclidean in [0, 1] RGB, lengths are fractions of the frame."""

    foreground_threshold: float = 0.2  # every palette colour is >= 0.56 from every background
    palette_threshold: float = 0.3  # on chroma = rgb / max(rgb); the closest palette pair is 0.73 apart there
    min_brightness: float = 0.4  # max channel; palette colours are >= 0.9, so a 2x darker shape still counts
    min_area: float = 0.01  # mean share of the frame; ShapesWorld's dominant shape covers >= 0.05
    compact_radius: float = 0.3  # fraction of min(H, W); ShapesWorld shapes lie within 0.26 of their centre
    min_compactness: float = 0.6  # shapes score ~1.0; uniform noise ~pi * 0.3^2 = 0.28
    smooth: bool = True  # 3x3 box filter before classifying pixels
    static_threshold: float = 0.1  # displacement over the clip; ShapesWorld moves 0.25-0.40 or exactly 0


@dataclass(frozen=True)
class Detection:
    color: str | None  # None: no compact shape found
    motion: str | None
    displacement: tuple[float, float]  # (dx, dy) of the dominant centre over the clip, fractions of (W, H)
    area: float  # mean share of the frame covered by the dominant colour
    compactness: float  # mean share of that colour's pixels within compact_radius of its centre


def _check_video(video: Tensor) -> None:
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video of shape (3, F, H, W), got {tuple(video.shape)}")
    if not video.is_floating_point():
        raise ValueError(f"expected a float video in [-1, 1], got dtype {video.dtype}")
    lo, hi = video.min().item(), video.max().item()
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"expected values in [-1, 1], got [{lo:.3g}, {hi:.3g}] (uint8 frames? use read_mp4)")


def estimate_background(rgb: Tensor) -> Tensor:
    """Per-channel median colour of a (3, F, H, W) video -> (3,), in the video's own range."""
    flat = rgb.reshape(3, -1)
    stride = max(1, flat.shape[1] // _MEDIAN_SAMPLES)
    return flat[:, ::stride].median(dim=1).values


@torch.no_grad()
def detect(video: Tensor, cfg: DetectorConfig = DetectorConfig()) -> Detection:
    """Detect the dominant shape's colour and motion in a (3, F, H, W) video in [-1, 1]."""
    _check_video(video)
    _, num_frames, H, W = video.shape
    rgb = ((video.float() + 1) / 2).clamp(0, 1)  # (3, F, H, W)
    if cfg.smooth:  # 3x3 box filter per frame: pixel noise / 3, edges blur by a pixel
        rgb = F.avg_pool2d(rgb.transpose(0, 1), 3, stride=1, padding=1, count_include_pad=False).transpose(0, 1)
    background = estimate_background(rgb)
    foreground = (rgb - background.view(3, 1, 1, 1)).square().sum(0) > cfg.foreground_threshold**2  # (F, H, W)
    value = rgb.amax(dim=0)  # (F, H, W) brightness
    chroma = rgb / value.clamp_min(1e-6)  # (3, F, H, W) brightness-free colour, max channel 1
    dist = (chroma.unsqueeze(0) - _PALETTE_CHROMA.view(-1, 3, 1, 1, 1)).square().sum(1)  # (6, F, H, W) squared
    nearest_dist, nearest = dist.min(dim=0)  # (F, H, W)
    keep = foreground & (value >= cfg.min_brightness) & (nearest_dist < cfg.palette_threshold**2)
    label = torch.where(keep, nearest, -1)
    counts = torch.bincount(label[label >= 0], minlength=len(_PALETTE_NAMES))  # (6,)
    none = Detection(None, None, (0.0, 0.0), 0.0, 0.0)
    if counts.sum() == 0:
        return none
    best = int(counts.argmax())
    mask = label == best  # (F, H, W)
    area = mask.float().mean().item()

    frames, centres, compact = [], [], []
    radius = cfg.compact_radius * min(H, W)
    for f in range(num_frames):
        ys, xs = torch.nonzero(mask[f], as_tuple=True)
        if len(ys) < max(1.0, 0.5 * cfg.min_area * H * W):  # too few pixels for a stable centre
            continue
        ys, xs = ys.float() + 0.5, xs.float() + 0.5  # pixel centres
        cy, cx = ys.median(), xs.median()
        compact.append(((ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2).float().mean().item())
        frames.append(f)
        centres.append((cx.item() / W, cy.item() / H))
    compactness = sum(compact) / len(compact) if compact else 0.0
    if area < cfg.min_area or len(frames) < 2 or compactness < cfg.min_compactness:
        return Detection(None, None, (0.0, 0.0), area, compactness)

    t = torch.tensor(frames, dtype=torch.float64)
    c = torch.tensor(centres, dtype=torch.float64)  # (n, 2) as (x, y)
    t = t - t.mean()
    slope = (t[:, None] * (c - c.mean(0))).sum(0) / (t * t).sum()  # (2,) frame^-1
    dx, dy = (slope * (num_frames - 1)).tolist()
    if max(abs(dx), abs(dy)) < cfg.static_threshold:
        motion = "static"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return Detection(_PALETTE_NAMES[best], motion, (dx, dy), area, compactness)


# ---------------------------------------------------------------------------------------------- scoring

def chance_levels() -> dict[str, float]:
    """Expected accuracy of any prompt-blind detector when prompts are uniform over colours and motions."""
    return {"color": 1 / len(PALETTE), "motion": 1 / len(MOTIONS), "both": 1 / (len(PALETTE) * len(MOTIONS))}


@dataclass(frozen=True)
class ItemResult:
    name: str
    prompt: str
    expected: ShapeSpec  # the prompt's dominant shape
    heldout: bool
    detection: Detection
    shapes: int = 1  # how many shapes the prompt names

    @property
    def color_ok(self) -> bool:
        return self.detection.color == self.expected.color

    @property
    def motion_ok(self) -> bool:
        return self.detection.motion == self.expected.motion


@dataclass
class Report:
    config: DetectorConfig
    items: list[ItemResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why (unparsable prompt)

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Accuracy per group -> {n, color, motion, both}; None for an empty group. Groups: seen / heldout / all
        (by the dominant triple), then 1-shape / 2-shape (by the prompt's scene)."""
        groups = {"seen": [r for r in self.items if not r.heldout], "heldout": [r for r in self.items if r.heldout],
                  "all": self.items, "1-shape": [r for r in self.items if r.shapes == 1],
                  "2-shape": [r for r in self.items if r.shapes == 2]}
        out = {}
        for name, rs in groups.items():
            n = len(rs)
            hits = {"color": [r.color_ok for r in rs], "motion": [r.motion_ok for r in rs],
                    "both": [r.color_ok and r.motion_ok for r in rs]}
            out[name] = {"n": n, **{k: sum(v) / n if n else None for k, v in hits.items()}}
        return out

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        lines = [f"{'split':<8} {'n':>5} {'colour':>7} {'motion':>7} {'both':>7}"]
        for name, s in self.summary().items():
            cells = " ".join(f"{'-' if s[k] is None else format(s[k], '.1%'):>7}" for k in ("color", "motion", "both"))
            lines.append(f"{name:<8} {s['n']:>5} {cells}")
        chance = chance_levels()
        lines.append(f"chance (uniform prompts): colour {chance['color']:.1%}, motion {chance['motion']:.1%}, "
                     f"both {chance['both']:.1%}; undetected = wrong")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} item(s) with prompts outside the ShapesWorld grammar")
        return "\n".join(lines)

    def to_json(self) -> dict:
        items = [{"name": r.name, "prompt": r.prompt, "heldout": r.heldout, "shapes": r.shapes,
                  "expected": asdict(r.expected),
                  "detected": asdict(r.detection), "color_ok": r.color_ok, "motion_ok": r.motion_ok}
                 for r in self.items]
        return {"summary": self.summary(), "chance": chance_levels(), "detector": asdict(self.config),
                "skipped": self.skipped, "items": items}


def evaluate(samples: Iterable[tuple[str, Tensor, str]], cfg: DetectorConfig = DetectorConfig()) -> Report:
    """Score (name, video (3, F, H, W) in [-1, 1], prompt) triples; prompts that do not parse are skipped."""
    report = Report(cfg)
    for name, video, prompt in samples:
        try:
            scene = parse_caption(prompt)
        except ValueError as e:
            report.skipped[name] = str(e)
            continue
        expected = scene.shapes[0]
        report.items.append(ItemResult(name, prompt, expected, expected.heldout, detect(video, cfg), len(scene.shapes)))
    return report


def noise_video(frames: int, height: int, width: int, *, smooth: bool, generator: torch.Generator) -> Tensor:
    """A chance baseline (3, F, H, W) in [-1, 1]: i.i.d. Gaussian pixels, or (smooth) colour blobs that drift.

    Smooth noise is trilinearly upsampled from a (3, 3, 4, 4) Gaussian grid, so it has compact coloured regions
    that move: the detector finds "shapes" in it, with colours and motions unrelated to any prompt.
    """
    if not smooth:
        return torch.randn(3, frames, height, width, generator=generator).clamp(-1, 1)
    coarse = torch.randn(1, 3, 3, 4, 4, generator=generator)  # (1, 3, F', H', W')
    return (1.5 * F.interpolate(coarse, size=(frames, height, width), mode="trilinear")[0]).clamp(-1, 1)


# ---------------------------------------------------------------------------------------------- files

def read_mp4(path: str | Path) -> Tensor:
    """Decode all frames of a video file to (3, F, H, W) float32 in [-1, 1]."""
    import av  # optional dependency (extras train/test); imported here to keep `import ltx` light

    with av.open(str(path)) as container:
        frames = [torch.from_numpy(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    video = torch.stack(frames).permute(3, 0, 1, 2)  # (F, H, W, 3) -> (3, F, H, W) uint8
    return video.float() / 127.5 - 1.0


def write_mp4(path: str | Path, video: Tensor, fps: int = 8, crf: int = 18) -> None:
    """Encode a (3, F, H, W) video in [-1, 1] as H.264 yuv420p (H and W must be even)."""
    import av

    _check_video(video)
    _, _, H, W = video.shape
    if H % 2 or W % 2:
        raise ValueError(f"yuv420p needs even sizes, got {H}x{W}")
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)  # (F, H, W, 3)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def folder_prompts(folder: str | Path) -> dict[Path, str]:
    """The prompt of every mp4 in `folder` per the file contract (prompts.json, else <stem>.json sidecars)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    videos = sorted(folder.glob("*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no *.mp4 files in {folder}")
    mapping_file = folder / "prompts.json"
    if mapping_file.exists():
        mapping = json.loads(mapping_file.read_text())
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{mapping_file} must be a JSON object {{\"<file>.mp4\": \"<prompt>\"}}")
        names = {v.name for v in videos}
        missing, extra = sorted(names - mapping.keys()), sorted(mapping.keys() - names)
        if missing or extra:
            raise ValueError(f"{mapping_file} does not match the mp4 files: no prompt for {missing}, "
                             f"no file for {extra}")
        return {v: mapping[v.name] for v in videos}
    return {v: sidecar_prompt(v) for v in videos}


def sidecar_prompt(video_path: str | Path) -> str:
    """The prompt stored next to a video as <stem>.json = {"prompt": "..."}."""
    sidecar = Path(video_path).with_suffix(".json")
    if not sidecar.exists():
        raise FileNotFoundError(f"no prompt for {Path(video_path).name}: write {sidecar} = {{\"prompt\": ...}} "
                                f"(or, for a folder, prompts.json = {{\"<file>.mp4\": \"<prompt>\", ...}})")
    record = json.loads(sidecar.read_text())
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise ValueError(f"{sidecar} must be a JSON object with a string \"prompt\"")
    return record["prompt"]


def _iter_files(prompts: dict[Path, str]) -> Iterator[tuple[str, Tensor, str]]:
    for path, prompt in prompts.items():
        yield path.name, read_mp4(path), prompt


def evaluate_folder(folder: str | Path, cfg: DetectorConfig = DetectorConfig()) -> Report:
    """Score every mp4 of a folder against its prompt (file contract in the module docstring)."""
    return evaluate(_iter_files(folder_prompts(folder)), cfg)


def evaluate_file(path: str | Path, prompt: str, cfg: DetectorConfig = DetectorConfig()) -> Report:
    """Score one video file against `prompt`."""
    return evaluate([(Path(path).name, read_mp4(path), prompt)], cfg)
