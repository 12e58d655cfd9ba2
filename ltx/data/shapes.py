"""ShapesWorld: a procedural, seeded video dataset of simple moving shapes with captions.

The synthetic world behind the bundled demo model: small enough to train and sample on a laptop CPU, and
simple enough that prompt following can be scored from the pixels alone (`ltx.data.shapes_eval`).

A scene holds 1 or 2 shapes (circle, square, triangle). Each has a colour from PALETTE and a motion: a
straight line at constant speed over the clip (left, right, up, down) or none (static). The background is
black or one of the dark TINTS.

Conventions
- video: (3, F, H, W) float32 RGB in [-1, 1]. F = 8N + 1 and H, W are multiples of 32, the sizes the VAE
  accepts (8x temporal compression after a causal first frame, 32x spatial).
- Geometry is resolution-free: `size` is a shape's half-extent as a fraction of min(H, W); centres are
  (x, y) fractions of (W, H) with x to the right and y *down* (image rows), so "up" means decreasing y.
  The same SceneParams render the same scene at any resolution of the same aspect ratio and any frame count.
- Shapes: circle of radius `size`; square of half-side 0.85 `size` (area 2.9 size^2, close to the
  circle's 3.1); upright triangle with apex (0, -size) and base corners (+-size, size) (area 2 size^2).
  Every shape fits in the box centre +- size, and stays fully inside the frame for the whole clip.
  Edges are anti-aliased with a one-pixel ramp on the signed distance.
- Control videos (IC-LoRA, tools/make_control_data.py): `render_silhouette` draws the same geometry with every
  shape white on black; `shape_masks` gives each shape's visible coverage (S, F, H, W) in [0, 1].
- The dominant shape is the first one. It is always the larger (size in [0.16, 0.20], area >= 0.051
  min(H, W)^2; the second has size in [0.09, 0.12], area <= 0.046), it is drawn on top (never occluded),
  and the two shapes always have different colours. The evaluator scores the dominant shape only.
- Moving shapes travel 25-40% of the frame's width (left/right) or height (up/down) over the clip.
- Captions follow one grammar (see `caption`), e.g. "a red circle moves to the left and a blue square stays
  still on a navy background"; the background phrase is left out for black. parse_caption(caption(s)) == s.
- Held-out combinations: HELDOUT lists 9 of the 90 (colour, shape, motion) triples (10%), placed so that
  every colour, shape and motion still occurs in training. split="train" never shows a held-out triple
  (in either shape), split="heldout" always has one as the dominant shape, and split="all" draws the
  dominant triple uniformly from all 90.
- Determinism: sample `index` of ShapesWorld(seed=s) is a function of (s, split, index) only (numpy
  SeedSequence([s, index]) for the parameters, no randomness in rendering), whatever the access order,
  worker count or machine.

New concepts (fine-tuning experiments, tools/make_concept_data.py): EXTRA_MOTIONS and EXTRA_COLORS are
motions and colours the bundled demo model never saw. They are opt-in: ShapesWorld, sample_params, VOCABULARY
and parse_caption (by default) never use them, so every existing sample and caption is unchanged.
ShapeSpec / render / caption accept them; ConceptWorld samples scenes whose dominant shape has one;
parse_caption(text, extra_colors=..., extra_motions=...) and ltx.data.shapes_eval.DetectorConfig(extra_colors=...,
extra_motions=...) understand them. The demo's concept is the diagonal motion "up-right" ("moves to the upper
right"): the demo VAE reconstructs it (its decoder, trained on the palette only, turns cyan into blue).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

# RGB in [0, 1]. Pairwise distances >= 0.6 (closest: blue-purple 0.62, red-purple 0.68), so the nearest
# palette colour survives blur, codec chroma loss and noise.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.85, 0.15),
    "white": (0.95, 0.95, 0.95),
    "purple": (0.70, 0.15, 0.80),
}
# Dark backgrounds, each >= 0.56 from every palette colour (closest: green on gray).
TINTS: dict[str, tuple[float, float, float]] = {
    "gray": (0.25, 0.25, 0.25),
    "navy": (0.08, 0.10, 0.30),
    "brown": (0.30, 0.18, 0.08),
    "teal": (0.05, 0.25, 0.25),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {"black": (0.0, 0.0, 0.0), **TINTS}
# Colours outside the training palette (opt-in, see the file docstring). Cyan is the one region of RGB far from
# every palette colour both in RGB (>= 0.62, closest: blue 0.62, green 0.72; the palette's own closest pair is
# 0.62) and in chroma = rgb / max(rgb) (>= 0.66, closest: blue 0.66, green 0.71; the evaluator keeps pixels
# within 0.3 of a colour), and >= 0.95 from every background. Warm candidates fail: orange is 0.32 from yellow
# in chroma, pink 0.42 from purple. Its chroma is the teal tint's (a bright teal), but the tint is 0.96 away in
# RGB and darker than the evaluator's min_brightness. Caution: the demo VAE decodes cyan as blue (its decoder
# saw the palette only; the encoder does separate them), so a DiT fine-tune alone cannot teach the bundled demo
# this colour. A sweep of bright colours found only mixes of neighbouring palette colours that its VAE keeps
# (cream between white and yellow, mint between green and blue), each ~0.4 from the palette in chroma.
EXTRA_COLORS: dict[str, tuple[float, float, float]] = {
    "cyan": (0.05, 0.95, 0.90),
}
COLORS: dict[str, tuple[float, float, float]] = {**PALETTE, **EXTRA_COLORS}  # every colour a shape may have
KINDS = ("circle", "square", "triangle")
MOTION_PHRASES: dict[str, str] = {
    "left": "moves to the left",
    "right": "moves to the right",
    "up": "moves up",
    "down": "moves down",
    "static": "stays still",
}
MOTIONS = tuple(MOTION_PHRASES)
# Unit vector of each motion in (x, y), y down.
MOTION_DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
                                                 "static": (0, 0)}
# Motions outside the training set (opt-in, see the file docstring): a diagonal moves the same distance
# (TRAVEL, fractions of W and of H) along both axes. "right" is a known word, "upper" a new one.
EXTRA_MOTION_PHRASES: dict[str, str] = {"up-right": "moves to the upper right"}
EXTRA_MOTION_DIRECTIONS: dict[str, tuple[int, int]] = {"up-right": (1, -1)}
EXTRA_MOTIONS = tuple(EXTRA_MOTION_PHRASES)
ALL_MOTION_PHRASES: dict[str, str] = {**MOTION_PHRASES, **EXTRA_MOTION_PHRASES}  # every motion a shape may have
ALL_MOTION_DIRECTIONS: dict[str, tuple[int, int]] = {**MOTION_DIRECTIONS, **EXTRA_MOTION_DIRECTIONS}

# (colour, shape, motion) triples never shown in training. A diagonal through the 6 x 3 x 5 grid: each shape
# three times, each colour and motion at most twice, so all values stay seen and only the combination is new.
HELDOUT: tuple[tuple[str, str, str], ...] = (
    ("red", "circle", "left"),
    ("green", "square", "right"),
    ("blue", "triangle", "up"),
    ("yellow", "circle", "down"),
    ("white", "square", "static"),
    ("purple", "triangle", "left"),
    ("red", "square", "up"),
    ("green", "triangle", "down"),
    ("blue", "circle", "static"),
)
SPLITS = ("train", "heldout", "all")

DOMINANT_SIZE = (0.16, 0.20)  # half-extent range, fraction of min(H, W)
SECOND_SIZE = (0.09, 0.12)
TRAVEL = (0.25, 0.40)  # distance moved over the clip, fraction of the frame along the motion axis
MARGIN = 0.02  # gap kept between a shape's box and the frame edge, fraction of the frame


@dataclass(frozen=True)
class ShapeSpec:
    """What a caption says about one shape."""

    color: str
    kind: str
    motion: str

    def __post_init__(self):
        for field, value, allowed in (("color", self.color, COLORS), ("kind", self.kind, KINDS),
                                      ("motion", self.motion, ALL_MOTION_PHRASES)):
            if value not in allowed:
                raise ValueError(f"unknown shape {field} {value!r}; expected one of {list(allowed)}")

    @property
    def heldout(self) -> bool:
        return (self.color, self.kind, self.motion) in HELDOUT


@dataclass(frozen=True)
class SceneSpec:
    """What a caption says about a scene: 1-2 shapes (dominant first) and the background."""

    shapes: tuple[ShapeSpec, ...]
    background: str = "black"

    def __post_init__(self):
        if not 1 <= len(self.shapes) <= 2:
            raise ValueError(f"a scene has 1 or 2 shapes, got {len(self.shapes)}")
        if len({s.color for s in self.shapes}) != len(self.shapes):
            raise ValueError(f"the shapes of a scene must have different colours: {self.shapes}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {list(BACKGROUNDS)}")


@dataclass(frozen=True)
class ShapeParams:
    """One shape with its geometry (fractions, see the file docstring)."""

    color: str
    kind: str
    motion: str
    size: float  # half-extent, fraction of min(H, W)
    start: tuple[float, float]  # centre (x, y) at the first frame, fractions of (W, H)
    end: tuple[float, float]  # centre (x, y) at the last frame

    @property
    def spec(self) -> ShapeSpec:
        return ShapeSpec(self.color, self.kind, self.motion)


@dataclass(frozen=True)
class SceneParams:
    """The parameter record of a sample: shapes (dominant = first = largest) and background."""

    shapes: tuple[ShapeParams, ...]
    background: str

    @property
    def spec(self) -> SceneSpec:
        return SceneSpec(tuple(s.spec for s in self.shapes), self.background)


@dataclass(frozen=True)
class ShapesSample:
    video: Tensor  # (3, F, H, W) float32 in [-1, 1]
    caption: str
    params: SceneParams


# ---------------------------------------------------------------------------------------------- captions

def caption(spec: SceneSpec | SceneParams) -> str:
    """The caption of a scene: shape phrases joined by " and ", then " on a <tint> background" unless black."""
    if isinstance(spec, SceneParams):
        spec = spec.spec
    text = " and ".join(f"a {s.color} {s.kind} {ALL_MOTION_PHRASES[s.motion]}" for s in spec.shapes)
    return text if spec.background == "black" else f"{text} on a {spec.background} background"


VOCABULARY: frozenset[str] = frozenset(
    {*PALETTE, *KINDS, *BACKGROUNDS, "a", "and", "on", "background"}
    | {word for phrase in MOTION_PHRASES.values() for word in phrase.split()}
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def check_extras(extra_colors: Iterable[str] = (), extra_motions: Iterable[str] = ()) -> tuple[tuple[str, ...],
                                                                                             tuple[str, ...]]:
    """The extra colours and motions as tuples; ValueError for a name not in EXTRA_COLORS / EXTRA_MOTIONS."""
    colors, motions = tuple(extra_colors), tuple(extra_motions)
    for kind, names, allowed in (("colour", colors, EXTRA_COLORS), ("motion", motions, EXTRA_MOTION_PHRASES)):
        for name in names:
            if name not in allowed:
                raise ValueError(f"unknown extra {kind} {name!r}; expected one of {list(allowed)}")
    return colors, motions


def unknown_words(prompt: str, extra_colors: Iterable[str] = (), extra_motions: Iterable[str] = ()) -> list[str]:
    """Words of `prompt` that no ShapesWorld caption uses (in order, without repeats); the words of
    `extra_colors` / `extra_motions` (names from EXTRA_COLORS / EXTRA_MOTIONS) count as known."""
    colors, motions = check_extras(extra_colors, extra_motions)
    known = VOCABULARY | set(colors) | {w for m in motions for w in EXTRA_MOTION_PHRASES[m].split()}
    return list(dict.fromkeys(w for w in _words(prompt) if w not in known))


def _alternation(names) -> str:
    return "|".join(re.escape(n) for n in names)


_SHAPE_RE = (rf"a (?P<color{{n}}>{_alternation(PALETTE)}) (?P<kind{{n}}>{_alternation(KINDS)}) "
             rf"(?P<motion{{n}}>{_alternation(MOTION_PHRASES.values())})")
_CAPTION_RE = re.compile(
    _SHAPE_RE.format(n=0) + f"(?: and {_SHAPE_RE.format(n=1)})?"
    + rf"(?: on a (?P<background>{_alternation(BACKGROUNDS)}) background)?"
)
_MOTION_OF_PHRASE = {phrase: motion for motion, phrase in ALL_MOTION_PHRASES.items()}


@functools.cache
def _caption_re(extra_colors: tuple[str, ...], extra_motions: tuple[str, ...]) -> re.Pattern:
    """The caption grammar with extra colours / motions added (the default pattern for none)."""
    if not extra_colors and not extra_motions:
        return _CAPTION_RE
    phrases = [*MOTION_PHRASES.values(), *(EXTRA_MOTION_PHRASES[m] for m in extra_motions)]
    shape = (rf"a (?P<color{{n}}>{_alternation([*PALETTE, *extra_colors])}) (?P<kind{{n}}>{_alternation(KINDS)}) "
             rf"(?P<motion{{n}}>{_alternation(phrases)})")
    return re.compile(shape.format(n=0) + f"(?: and {shape.format(n=1)})?"
                      + rf"(?: on a (?P<background>{_alternation(BACKGROUNDS)}) background)?")


def parse_caption(text: str, extra_colors: Iterable[str] = (), extra_motions: Iterable[str] = ()) -> SceneSpec:
    """Parse a caption in the grammar of `caption` (case, punctuation and spacing are ignored).

    extra_colors / extra_motions: names from EXTRA_COLORS / EXTRA_MOTIONS to accept too (default: the training
    vocabulary only). Raises ValueError naming the out-of-vocabulary words, or the grammar, when `text` is not
    a caption.
    """
    colors, motions = check_extras(extra_colors, extra_motions)
    normalized = " ".join(_words(text))
    m = _caption_re(colors, motions).fullmatch(normalized)
    if m is None:
        unknown = unknown_words(text, colors, motions)
        why = f"words outside the ShapesWorld vocabulary: {unknown}" if unknown else (
            "it does not follow 'a <colour> <shape> <motion> [and a <colour> <shape> <motion>] "
            "[on a <tint> background]'")
        raise ValueError(f"cannot parse caption {text!r}: {why}")
    shapes = tuple(
        ShapeSpec(m[f"color{n}"], m[f"kind{n}"], _MOTION_OF_PHRASE[m[f"motion{n}"]])
        for n in range(2) if m[f"color{n}"] is not None
    )
    return SceneSpec(shapes, m["background"] or "black")


# ---------------------------------------------------------------------------------------------- sizes

def check_video_size(frames: int, height: int, width: int) -> None:
    """Raise ValueError unless frames = 8N + 1 (N >= 0) and height, width are positive multiples of 32."""
    for name, value in (("height", height), ("width", width)):
        if value < 32 or value % 32:
            lower, upper = max(32, value // 32 * 32), max(32, value // 32 * 32 + 32)
            nearest = f"{lower}" if value < 32 else f"{lower} or {upper}"
            raise ValueError(f"{name}={value} must be a positive multiple of 32; nearest valid: {nearest}")
    if frames < 1 or (frames - 1) % 8:
        lower, upper = max(1, (frames - 1) // 8 * 8 + 1), max(1, (frames - 1) // 8 * 8 + 9)
        nearest = f"{lower}" if frames < 1 else f"{lower} or {upper}"
        raise ValueError(f"frames={frames} must be 8*N + 1; nearest valid: {nearest}")


# ---------------------------------------------------------------------------------------------- sampling

def _combos(split: str) -> list[tuple[str, str, str]]:
    every = [(c, k, m) for c in PALETTE for k in KINDS for m in MOTIONS]
    match split:
        case "train":
            return [t for t in every if t not in HELDOUT]
        case "heldout":
            return list(HELDOUT)
        case "all":
            return every
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _place(rng: np.random.Generator, triple: tuple[str, str, str], size: float, aspect: float) -> ShapeParams:
    """Draw a start and end centre that keep the shape's box inside the frame; aspect = W / H."""
    half = (size * min(1.0, 1.0 / aspect), size * min(1.0, aspect))  # half-extent as fractions of (W, H)
    lo = [h + MARGIN for h in half]
    hi = [1.0 - h - MARGIN for h in half]
    direction = ALL_MOTION_DIRECTIONS[triple[2]]
    travel = rng.uniform(*TRAVEL)
    start, end = [], []
    for axis in range(2):
        if direction[axis] == 0:
            c = rng.uniform(lo[axis], hi[axis])
            start.append(c)
            end.append(c)
        else:
            first = rng.uniform(lo[axis], hi[axis] - travel)  # the lower end of the path
            a, b = first, first + travel
            start.append(a if direction[axis] > 0 else b)
            end.append(b if direction[axis] > 0 else a)
    return ShapeParams(*triple, size=float(size), start=(float(start[0]), float(start[1])),
                       end=(float(end[0]), float(end[1])))


def sample_params(rng: np.random.Generator, split: str, aspect: float = 1.0, p_two_shapes: float = 0.5,
                  p_tinted: float = 0.5) -> SceneParams:
    """Draw one scene: the dominant triple uniformly from the split's combinations, then the rest."""
    dominant = _combos(split)
    triple = dominant[rng.integers(len(dominant))]
    shapes = [_place(rng, triple, rng.uniform(*DOMINANT_SIZE), aspect)]
    if rng.random() < p_two_shapes:
        # train: the second shape avoids held-out triples too; otherwise any triple of another colour
        second = [t for t in _combos("train" if split == "train" else "all") if t[0] != triple[0]]
        shapes.append(_place(rng, second[rng.integers(len(second))], rng.uniform(*SECOND_SIZE), aspect))
    background = "black" if rng.random() >= p_tinted else list(TINTS)[rng.integers(len(TINTS))]
    return SceneParams(tuple(shapes), background)


CONCEPTS = (*EXTRA_MOTIONS, *EXTRA_COLORS)  # every opt-in concept name


def concept_extras(concept: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(extra_colors, extra_motions) that enable `concept` (a name from EXTRA_COLORS or EXTRA_MOTIONS)."""
    if concept in EXTRA_COLORS:
        return (concept,), ()
    if concept in EXTRA_MOTION_PHRASES:
        return (), (concept,)
    raise ValueError(f"unknown concept {concept!r}; expected one of {list(CONCEPTS)}")


def sample_concept_params(rng: np.random.Generator, concept: str, aspect: float = 1.0, p_two_shapes: float = 0.5,
                          p_tinted: float = 0.5) -> SceneParams:
    """Draw one scene whose dominant shape has the new colour or motion `concept` (see `concept_extras`).

    The dominant triple's other values are uniform (colour over PALETTE, shape over KINDS, motion over
    MOTIONS); the second shape, if any, is a training-split triple of another colour (so the new concept is
    always seen next to familiar ones, never as the distractor); sizes, paths and backgrounds are drawn as in
    `sample_params`.
    """
    colors, motions = concept_extras(concept)
    dominant = [(c, k, m) for c in (colors or PALETTE) for k in KINDS for m in (motions or MOTIONS)]
    triple = dominant[rng.integers(len(dominant))]
    shapes = [_place(rng, triple, rng.uniform(*DOMINANT_SIZE), aspect)]
    if rng.random() < p_two_shapes:
        second = [t for t in _combos("train") if t[0] != triple[0]]
        shapes.append(_place(rng, second[rng.integers(len(second))], rng.uniform(*SECOND_SIZE), aspect))
    background = "black" if rng.random() >= p_tinted else list(TINTS)[rng.integers(len(TINTS))]
    return SceneParams(tuple(shapes), background)


# ---------------------------------------------------------------------------------------------- rendering

def _signed_distance(kind: str, dx: Tensor, dy: Tensor, size: float) -> Tensor:
    """Distance in pixels to the shape's edge, negative inside; dx, dy: offsets from the centre in pixels."""
    match kind:
        case "circle":
            # numpy's sqrt is IEEE (correctly rounded) everywhere; torch's CPU sqrt goes through MKL's vector
            # math, whose last bit depends on the CPU (AVX2 / AVX-512): the data must be the same on every machine
            r2 = (dx * dx + dy * dy).numpy()
            return torch.from_numpy(np.sqrt(r2)) - size
        case "square":
            return torch.maximum(dx.abs(), dy.abs()) - 0.85 * size
        case "triangle":
            # apex (0, -size), base (+-size, size): the base line and the two slanted edges (normals (+-2, -1)/sqrt5)
            base = dy - size
            left = (-2 * dx - dy - size) / math.sqrt(5)
            right = (2 * dx - dy - size) / math.sqrt(5)
            return torch.maximum(base, torch.maximum(left, right))
    raise ValueError(f"unknown shape kind {kind!r}")


def _coverage(params: SceneParams, frames: int, height: int, width: int) -> list[Tensor]:
    """Each shape's own (F, H, W) float32 pixel coverage in [0, 1], dominant first, ignoring occlusion.

    Pixel (i, j) is sampled at its centre; coverage is a one-pixel ramp on the signed distance (1 inside,
    0 outside, 0.5 on the edge). The geometry of `render`, `render_silhouette` and `shape_masks`.
    """
    check_video_size(frames, height, width)
    scale = min(height, width)
    t = torch.linspace(0.0, 1.0, frames)  # (F,) clip time; 0 at the first frame, 1 at the last
    ys = torch.arange(height, dtype=torch.float32) + 0.5  # (H,)
    xs = torch.arange(width, dtype=torch.float32) + 0.5  # (W,)
    alphas = []
    for shape in params.shapes:
        cx = (shape.start[0] + t * (shape.end[0] - shape.start[0])) * width  # (F,) pixels
        cy = (shape.start[1] + t * (shape.end[1] - shape.start[1])) * height
        dx = xs.view(1, 1, width) - cx.view(frames, 1, 1)  # (F, 1, W)
        dy = ys.view(1, height, 1) - cy.view(frames, 1, 1)  # (F, H, 1)
        sdf = _signed_distance(shape.kind, dx, dy, shape.size * scale)  # (F, H, W)
        alphas.append((0.5 - sdf).clamp(0.0, 1.0))  # pixel coverage, one-pixel ramp across the edge
    return alphas


def _composite(params: SceneParams, colors: list[tuple[float, float, float]], background: tuple[float, float, float],
               frames: int, height: int, width: int) -> Tensor:
    """Paint the shapes of `params` in `colors` ([0, 1] RGB, dominant first, drawn on top) over `background`
    -> (3, F, H, W) float32 in [-1, 1]."""
    alphas = _coverage(params, frames, height, width)
    video = torch.tensor(background).view(3, 1, 1, 1).expand(3, frames, height, width)
    for alpha, rgb in reversed(list(zip(alphas, colors))):  # the dominant (first) shape ends up on top
        color = torch.tensor(rgb).view(3, 1, 1, 1)
        video = video + alpha.unsqueeze(0) * (color - video)  # (3, F, H, W)
    return video * 2.0 - 1.0


def render(params: SceneParams, frames: int = 17, height: int = 64, width: int = 64) -> Tensor:
    """Render a scene to a (3, F, H, W) float32 video in [-1, 1]; pixel (i, j) is sampled at its centre."""
    return _composite(params, [COLORS[s.color] for s in params.shapes], BACKGROUNDS[params.background], frames,
                      height, width)


def render_silhouette(params: SceneParams, frames: int = 17, height: int = 64, width: int = 64) -> Tensor:
    """The scene's control video for IC-LoRA: every shape white on black -> (3, F, H, W) float32 in [-1, 1].

    Same geometry, motion and one-pixel anti-aliased edges as `render` (the colours and background are dropped):
    1.0 where a shape covers the pixel, -1.0 on the background, grey on edges; all three channels are equal.
    """
    return _composite(params, [(1.0, 1.0, 1.0)] * len(params.shapes), (0.0, 0.0, 0.0), frames, height, width)


def shape_masks(params: SceneParams, frames: int = 17, height: int = 64, width: int = 64) -> Tensor:
    """Visible coverage of each shape -> (S, F, H, W) float32 in [0, 1], dominant first (S = len(params.shapes)).

    As composited by `render`: the dominant shape is on top, so its mask is its full coverage and the second
    shape's is its coverage times (1 - the dominant's). Edges are the one-pixel ramp (0.5 on the edge); use
    `mask > 0.5` for a binary silhouette. The masks sum to at most 1 at every pixel.
    """
    visible, uncovered = [], None
    for alpha in _coverage(params, frames, height, width):
        visible.append(alpha if uncovered is None else alpha * uncovered)
        uncovered = 1.0 - alpha if uncovered is None else uncovered * (1.0 - alpha)
    return torch.stack(visible)


# ---------------------------------------------------------------------------------------------- dataset

class ShapesWorld(Dataset):
    """A map-style dataset of `num_samples` seeded ShapesWorld clips of one split (see the file docstring)."""

    def __init__(self, *, split: str = "train", num_samples: int = 10_000, frames: int = 17, height: int = 64,
                 width: int = 64, seed: int = 0, p_two_shapes: float = 0.5, p_tinted: float = 0.5):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        check_video_size(frames, height, width)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        for name, p in (("p_two_shapes", p_two_shapes), ("p_tinted", p_tinted)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.split, self.num_samples, self.seed = split, num_samples, seed
        self.frames, self.height, self.width = frames, height, width
        self.p_two_shapes, self.p_tinted = p_two_shapes, p_tinted

    def __len__(self) -> int:
        return self.num_samples

    def params(self, index: int) -> SceneParams:
        """The scene of sample `index` without rendering it."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for ShapesWorld of {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index])
        return sample_params(rng, self.split, self.width / self.height, self.p_two_shapes, self.p_tinted)

    def __getitem__(self, index: int) -> ShapesSample:
        params = self.params(index)
        return ShapesSample(render(params, self.frames, self.height, self.width), caption(params), params)


class ConceptWorld(ShapesWorld):
    """Seeded clips whose dominant shape has a new colour or motion `concept` (`sample_concept_params`).

    Sample `index` is a function of (seed, concept, index) only: numpy SeedSequence([seed, index, stream]) with
    a stream from the concept's name, disjoint from every ShapesWorld one (those use [seed, index]). Same sizes
    and probabilities as ShapesWorld; `split` is "all" (a new concept has no held-out triples).
    """

    def __init__(self, *, concept: str = "up-right", num_samples: int = 10_000, frames: int = 17, height: int = 64,
                 width: int = 64, seed: int = 0, p_two_shapes: float = 0.5, p_tinted: float = 0.5):
        concept_extras(concept)  # validates the name
        super().__init__(split="all", num_samples=num_samples, frames=frames, height=height, width=width, seed=seed,
                         p_two_shapes=p_two_shapes, p_tinted=p_tinted)
        self.concept = concept
        self._stream = int.from_bytes(f"concept/{concept}".encode(), "little")

    def params(self, index: int) -> SceneParams:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for ConceptWorld of {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index, self._stream])
        return sample_concept_params(rng, self.concept, self.width / self.height, self.p_two_shapes, self.p_tinted)


def collate(samples: list[ShapesSample]) -> tuple[Tensor, list[str], list[SceneParams]]:
    """DataLoader collate_fn: videos stacked to (B, 3, F, H, W), captions and params as lists."""
    return torch.stack([s.video for s in samples]), [s.caption for s in samples], [s.params for s in samples]
