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

New concepts (opt-in): DetectorConfig(extra_colors=("cyan",)) adds those EXTRA_COLORS to the palette of
step 2 (nearest chroma among palette + extras); DetectorConfig(extra_motions=("up-right",)) replaces step 5's
axis rule by the nearest direction (largest cosine) among the four axes and the extra motions (so "up-right"
wins between 22.5 and 67.5 degrees). Both let `evaluate` parse prompts that use them and add a "concept"
group to the summary: items whose dominant colour or motion is an extra one ("seen" then excludes them).
With the default (no extras) every result is bitwise the same as before extras existed.

Control adherence (IC-LoRA, tools/make_control_data.py): `control_iou(video, params)` scores how well a video
generated from a silhouette control video follows it: the per-frame IoU between the dominant shape's colour
mask (`color_mask`, which sees only the video) and its true silhouette (ltx.data.shapes.shape_masks(params)[0]
> 0.5), averaged over frames. It scores the geometry (position, size, outline, motion), not the prompt.

File contract for generated videos (`evaluate_folder`, tools/eval_shapes.py): a folder of `*.mp4` with
either `prompts.json` = {"<file name>.mp4": "<prompt>", ...} covering exactly the mp4s of the folder, or,
when there is no prompts.json, a sidecar `<stem>.json` = {"prompt": "<prompt>"} next to each mp4.
Prompts must parse with ltx.data.shapes.parse_caption; those that do not are reported as skipped.

Shapes: video (3, F, H, W) float in [-1, 1] (as ShapesWorld and the VAE decoder produce), RGB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.core import media
from ltx.data.shapes import (
    EXTRA_COLORS,
    EXTRA_MOTION_DIRECTIONS,
    MOTION_DIRECTIONS,
    MOTIONS,
    PALETTE,
    SceneParams,
    ShapeSpec,
    check_extras,
    concept_extras,
    parse_caption,
    shape_masks,
)

_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = torch.tensor([PALETTE[c] for c in _PALETTE_NAMES])  # (6, 3) in [0, 1]
_PALETTE_CHROMA = _PALETTE_RGB / _PALETTE_RGB.amax(dim=1, keepdim=True)  # (6, 3), max channel 1
_MEDIAN_SAMPLES = 1 << 20  # per channel; larger videos are strided for the background median


def _colors(extra_colors: tuple[str, ...]) -> tuple[tuple[str, ...], Tensor]:
    """Names and (n, 3) chroma of the detector's colours: the palette, then `extra_colors` (EXTRA_COLORS names)."""
    if not extra_colors:
        return _PALETTE_NAMES, _PALETTE_CHROMA
    check_extras(extra_colors)
    names = _PALETTE_NAMES + tuple(extra_colors)
    rgb = torch.tensor([PALETTE[c] if c in PALETTE else EXTRA_COLORS[c] for c in names])
    return names, rgb / rgb.amax(dim=1, keepdim=True)


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
    extra_colors: tuple[str, ...] = ()  # EXTRA_COLORS names detected and parsed too (see the module docstring)
    extra_motions: tuple[str, ...] = ()  # EXTRA_MOTIONS names detected and parsed too


@dataclass(frozen=True)
class Detection:
    color: str | None  # None: no compact shape found
    motion: str | None
    displacement: tuple[float, float]  # (dx, dy) of the dominant centre over the clip, fractions of (W, H)
    area: float  # mean share of the frame covered by the dominant colour
    compactness: float  # mean share of that colour's pixels within compact_radius of its centre


def concept_config(*concepts: str, base: DetectorConfig = DetectorConfig()) -> DetectorConfig:
    """`base` with the extra colours / motions of `concepts` (names from ltx.data.shapes.CONCEPTS) enabled."""
    colors, motions = list(base.extra_colors), list(base.extra_motions)
    for c in concepts:
        more_colors, more_motions = concept_extras(c)
        colors += [x for x in more_colors if x not in colors]
        motions += [x for x in more_motions if x not in motions]
    return replace(base, extra_colors=tuple(colors), extra_motions=tuple(motions))


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
    names, palette_chroma = _colors(tuple(cfg.extra_colors))
    dist = (chroma.unsqueeze(0) - palette_chroma.view(-1, 3, 1, 1, 1)).square().sum(1)  # (n, F, H, W) squared
    nearest_dist, nearest = dist.min(dim=0)  # (F, H, W)
    keep = foreground & (value >= cfg.min_brightness) & (nearest_dist < cfg.palette_threshold**2)
    label = torch.where(keep, nearest, -1)
    counts = torch.bincount(label[label >= 0], minlength=len(names))  # (n,)
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
    elif cfg.extra_motions:
        motion = _nearest_direction(dx, dy, tuple(cfg.extra_motions))
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return Detection(names[best], motion, (dx, dy), area, compactness)


def _nearest_direction(dx: float, dy: float, extra_motions: tuple[str, ...]) -> str:
    """The moving motion (four axes + extras) whose unit direction has the largest cosine with (dx, dy)."""
    check_extras((), extra_motions)
    best, best_cos = None, -math.inf
    for name in ("right", "left", "down", "up", *extra_motions):  # axis order = the axis rule's tie-breaking
        ux, uy = MOTION_DIRECTIONS.get(name) or EXTRA_MOTION_DIRECTIONS[name]
        cos = (dx * ux + dy * uy) / math.hypot(ux, uy)
        if cos > best_cos:
            best, best_cos = name, cos
    return best


# ---------------------------------------------------------------------------------------------- control adherence

def _blend_fit(rgb: Tensor, background: Tensor, colors: Tensor) -> tuple[Tensor, Tensor]:
    """Fit each pixel as background + a (colour - background), per colour.

    rgb (3, F, H, W), background (3,), colors (n, 3), all in [0, 1] RGB -> coverage a (n, F, H, W) in [0, 1]
    (least squares, clamped) and the squared RGB distance (n, F, H, W) from the pixel to that blend.
    """
    direction = colors - background  # (n, 3); every colour is >= 0.56 from every background
    offset = rgb - background.view(3, 1, 1, 1)  # (3, F, H, W)
    coverage = torch.einsum("nc,cfhw->nfhw", direction, offset) / direction.square().sum(1).view(-1, 1, 1, 1)
    coverage = coverage.clamp(0, 1)
    residual = (offset.unsqueeze(0) - coverage.unsqueeze(1) * direction.view(-1, 3, 1, 1, 1)).square().sum(1)
    return coverage, residual


@torch.no_grad()
def color_mask(video: Tensor, color: str, *, threshold: float = 0.3, coverage: float = 0.5) -> Tensor:
    """Pixels of a (3, F, H, W) video in [-1, 1] (as `detect` takes) showing colour `color` -> (F, H, W) bool.

    `color` is a PALETTE or EXTRA_COLORS name. The candidates are the PALETTE colours (plus `color` if it is an
    extra one); the background is `estimate_background` (the per-channel median), as in `detect`. Every pixel is
    modelled as a blend background + a * (candidate - background), a in [0, 1], so that the mask edge is the
    half-coverage line of ltx.data.shapes.shape_masks(...) > 0.5:
    - which colour: on the 3x3 box-filtered video (as in `detect`; a codec's or decoder's chroma bleed at
      edges averages out), the candidate whose blend fits best, if that fit is within `threshold` (Euclidean
      distance in [0, 1] RGB; default 0.3, half the closest palette pair's 0.62);
    - how much: on the unfiltered video, the fitted share a of `color` exceeds `coverage` (default 0.5).
    Pixels near the background fit every colour with a ~ 0 and stay out. Unlike `detect` this works on RGB, not
    chroma, so a shape rendered darker loses its edges (at 0.7x brightness a pixel needs coverage > 0.71).
    Measured when written (60 ShapesWorld scenes, control_iou against their own params): ground truth mean 0.998
    (min 0.98), after an H.264 round trip (write_mp4 / read_mp4) 0.974 (min 0.90, slanted triangle edges),
    Gaussian noise sigma 0.2 0.980, the dominant shape shifted 8 px 0.35.
    """
    _check_video(video)
    if color in PALETTE:
        names = _PALETTE_NAMES
    elif color in EXTRA_COLORS:
        names = _PALETTE_NAMES + (color,)
    else:
        raise ValueError(f"unknown colour {color!r}; expected one of {[*PALETTE, *EXTRA_COLORS]}")
    rgb = ((video.float() + 1) / 2).clamp(0, 1)  # (3, F, H, W)
    smooth = F.avg_pool2d(rgb.transpose(0, 1), 3, stride=1, padding=1, count_include_pad=False).transpose(0, 1)
    background = estimate_background(rgb)
    colors = torch.tensor([PALETTE[c] if c in PALETTE else EXTRA_COLORS[c] for c in names])  # (n, 3)
    _, residual = _blend_fit(smooth, background, colors)
    best_residual, best = residual.min(dim=0)  # (F, H, W)
    index = names.index(color)
    share, _ = _blend_fit(rgb, background, colors[index : index + 1])  # (1, F, H, W)
    return (best == index) & (best_residual < threshold**2) & (share[0] > coverage)


def mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame intersection over union of two bool masks (..., H, W) -> (...) float32 in [0, 1].

    Two empty masks agree perfectly: their IoU is 1.0 (one empty and one not: 0.0).
    """
    if pred.shape != target.shape:
        raise ValueError(f"masks differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred, target = pred.bool(), target.bool()
    inter = (pred & target).sum((-2, -1)).float()
    union = (pred | target).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def control_iou(video: Tensor, params: SceneParams, **mask_kw) -> float:
    """How well a video follows the silhouette control of scene `params`: mean over frames of the IoU between
    the dominant shape's colour mask in `video` and its true silhouette, in [0, 1] (1 = perfect).

    video: (3, F, H, W) in [-1, 1], e.g. generated from render_silhouette(params, F, H, W) as control; the
    silhouette is ltx.data.shapes.shape_masks(params, F, H, W)[0] > 0.5 at the video's own size (the dominant
    shape is drawn on top, so this is its whole shape); the mask is color_mask(video, dominant colour,
    **mask_kw). Only the dominant shape is scored (the second may be occluded; it is smaller). A frame where
    both are empty scores 1 (see `mask_iou`). Per-frame values: mask_iou(color_mask(...), shape_masks(...)[0] > 0.5).
    """
    _check_video(video)
    _, frames, height, width = video.shape
    target = shape_masks(params, frames, height, width)[0] > 0.5  # (F, H, W)
    return mask_iou(color_mask(video, params.shapes[0].color, **mask_kw), target).mean().item()


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
    def concept(self) -> bool:
        """The prompt's dominant colour or motion is a new one (EXTRA_COLORS, EXTRA_MOTIONS)."""
        return self.expected.color in EXTRA_COLORS or self.expected.motion in EXTRA_MOTION_DIRECTIONS

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
        (by the dominant triple), then 1-shape / 2-shape (by the prompt's scene); with extra colours in the
        config, "concept" (the dominant colour or motion is an extra one; those items are not in "seen")."""
        groups = {"seen": [r for r in self.items if not r.heldout and not r.concept],
                  "heldout": [r for r in self.items if r.heldout],
                  "all": self.items, "1-shape": [r for r in self.items if r.shapes == 1],
                  "2-shape": [r for r in self.items if r.shapes == 2]}
        if self.config.extra_colors or self.config.extra_motions:
            groups["concept"] = [r for r in self.items if r.concept]
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
            scene = parse_caption(prompt, cfg.extra_colors, cfg.extra_motions)
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
    """Decode all frames of a video file to (3, F, H, W) float32 in [-1, 1] (ltx.core.media.read_video)."""
    video, _ = media.read_video(path)  # (3, F, H, W) in [0, 1]
    return video * 2.0 - 1.0


def write_mp4(path: str | Path, video: Tensor, fps: int = 8, crf: int = 18) -> None:
    """Encode a (3, F, H, W) video in [-1, 1] as H.264 yuv420p (H and W must be even; ltx.core.media.write_mp4)."""
    _check_video(video)
    media.write_mp4(path, (video.float().clamp(-1, 1) + 1) / 2, fps, crf=crf)


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
        mapping = _read_json(mapping_file)
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{mapping_file} must be a JSON object {{\"<file>.mp4\": \"<prompt>\"}}")
        names = {v.name for v in videos}
        missing, extra = sorted(names - mapping.keys()), sorted(mapping.keys() - names)
        if missing or extra:
            raise ValueError(f"{mapping_file} does not match the mp4 files: no prompt for {missing}, "
                             f"no file for {extra}")
        return {v: mapping[v.name] for v in videos}
    return {v: sidecar_prompt(v) for v in videos}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 JSON text file") from None


def sidecar_prompt(video_path: str | Path) -> str:
    """The prompt stored next to a video as <stem>.json = {"prompt": "..."}."""
    sidecar = Path(video_path).with_suffix(".json")
    if not sidecar.exists():
        raise FileNotFoundError(f"no prompt for {Path(video_path).name}: write {sidecar} = {{\"prompt\": ...}} "
                                f"(or, for a folder, prompts.json = {{\"<file>.mp4\": \"<prompt>\", ...}})")
    record = _read_json(sidecar)
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
