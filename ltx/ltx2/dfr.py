"""LTX-2.5 DFR ("Diffusion Fidelity Rendering"): the canvas layout, i.e. every integer decision the pipeline makes
before it calls the transformer.

DFR generates a video on a *keyframe grid*, then refines it: a detailing pass, up to two temporal x2 rounds and a
spatially tiled epilogue. This module plans all of that (1-4) and runs the tiled model calls of a denoising pass
over a given model callable (5). Units: "pixel frames" index decoded
frames, "latent frames" (cells) index the VAE grid, with `r` = the VAE's temporal ratio (8) and the causal border
`latent = pixel / r` (latent 0 holds pixel frame 0 alone).

1. Keyframe grid (`resolve_canvas`). `N - 1` content frames are padded up to a multiple of a segment length
   `S` in {3r, 4r} = {24, 32}, whichever pads least (ties: the longer). Keyframes sit at `S, 2S, ..., N' - 1`;
   frame 0 is not one (it is already an image latent), the last frame is.

       N = 97 -> content 96: S = 32 (pad 0), N' = 97, keyframes [32, 64, 96]
       N = 57 -> content 56: 24 pads 16, 32 pads 8 -> S = 32, N' = 65, keyframes [32, 64]

2. Temporal refine tiles (`refine_tiles`). A round doubles the frame rate (canvas `2 (N - 1) + 1` frames, seams
   at twice the previous keyframes) and denoises the canvas in `2**round` windows cut on keyframe seams. Segments
   are dealt out contiguously, leftovers to the leading tiles. Every tile but the first reaches back the first
   segment's length plus the seam cell (the *run-up*, `span.lead` latent frames, clamped at 0). On DFR's uniform
   grids its local latent 0 is then the previous keyframe (the KeyFrame@0 lock; on uneven seams it need not be, see
   below), and that image latent plus the seam the previous tile already owns are both discarded
   when the tiles are stitched (`stitch`: tile `i` contributes `latent[:, :, span.lead:]`). `anchors` are the
   seam keyframes inside the window (pinned from the previous round), `slots` the mid-segment keyframes the
   window generates: the integer midpoints of consecutive marks `[pixel_start, seams in (pixel_start, end]]`.

       seams [48, 96, 144, 192], N = 193, 2 tiles (latent seams 0|6|12|18|24, 25 cells):
       tile 0: cells [0, 13), lead 0, pixels 0..96, anchors (48, 96), slots (24, 72)
       tile 1: cells [6, 25), lead 7, pixels 48..192, anchors (48, 96, 144, 192), slots (72, 120, 168)

3. Epilogue tiles (`epilogue_tiles`). The spatial epilogue denoises the `(F, H, W)` latent grid in
   `frame_tiles x 2 x 2` windows. Height and width are split evenly with `EPILOGUE_OVERLAP` = 12 shared cells and
   trapezoid weights (the ramp is the interior of a linspace, so two tiles sharing `k` cells weigh `i / (k + 1)` and
   `1 - i / (k + 1)` and sum to exactly one). Time is cut on the interior keyframe seams like the refine rounds:
   the later tile's run-up gets weight 0 (a box, not a ramp), since both tiles reproduce the same settled keyframe
   there. With no interior seam, time is split evenly and ramped like space. An axis shorter than its tile count
   runs untiled; an overlap that leaves no room is clamped to `size - tiles` (both warn, as diffusers logs). A
   clamped overlap can exceed half a tile, so that with 3+ ramped frame tiles tile i also overlaps tile i + 2 and
   the windows sum to more than one (diffusers does the same; we warn).
   Otherwise `weight`, the separable `(F_t, H_t, W_t)` product, sums to one over the tiles, so
   `sum_t pred_t * weight_t` needs no normalisation.

4. Token plan (`token_plans`). A tiled transformer call on a packed `(B, T, C)` sequence whose first
   `F H W` tokens are the base grid (frame, row, column order) and the rest appended conditioning tokens
   (keyframes, slots, references) with `positions` (B, 3, T, 2) as `[start, end)` bounds. A tile keeps its
   window's base tokens (weighted by its blend window) plus every conditioning token whose interval overlaps the
   window's extent on all three axes for some batch row; one kept by `n` tiles weighs `1 / n`. Positions are
   rebased on the window's own minimum start, as a standalone pass over that crop would have built them.

5. Tiled denoising (`tiled_velocity`, `tiled_denoise`). Each step runs the model once per token plan on the kept
   tokens and index-adds `weight * v` into one full-canvas velocity; since every tile reads the same `x` and
   per-token sigma and the weights sum to one, blending `v` is blending `x0 = x - sigma_tok v`, and the sampler steps
   a single canvas on which the tiles agree at every step. `tiled_denoise` is DFR's deterministic pass (stage 2 and
   the epilogue; diffusers `denoise` with the flow-matching Euler scheduler): x0 is blended towards the clean
   conditioning in x0 space with each token's own sigma, then `x <- x + (sigma_next - sigma) (x - x0) / sigma`.
   The audio stream is the caller's (held clean during refinement: a constant input of the model callable). The
   temporal refine rounds' ancestral sampler (eta 0.5) and their per-tile state are not here.

Follows diffusers 0.42.1 `pipelines/ltx2/dfr_layout.py` field for field (tests/ltx2/test_ltx2_dfr.py checks every
field, blend masks bitwise). The official Lightricks/LTX-2 `ltx_pipelines/dfr_layout.py` (at 400fd31) has the
keyframe grid and the temporal tiles (`tile_ranges`, `drop_latent_prefix` = our `span.lead`); they agree on the
uniform grids `resolve_canvas` produces (and that the rounds keep: seams + midpoints, doubled). They part on uneven
seams: diffusers' run-up is the *first* segment + 1 cell, the official one the segment just before the tile (so
its window always opens on a keyframe), and the official code refuses segments under 2 latent frames. The spatial
epilogue and the token plan exist only in diffusers (the official DFR pipeline has no tiled epilogue).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Segment lengths in latent frames (x r = 24 and 32 pixel frames at r = 8). Whole latent frames, because every
# keyframe must sit on a latent border.
SEGMENT_LATENTS = (3, 4)
# Cells shared by neighbouring epilogue tiles along height and width.
EPILOGUE_OVERLAP = 12


@dataclass(frozen=True)
class Span:
    """A tile's half-open `[start, end)` extent along one axis, in that axis' cells, with the lengths of its ends
    that overlap a neighbour: `lead` at the start, `tail` at the end. (diffusers `DimensionInterval`:
    left_ramp / right_ramp.)"""

    start: int
    end: int
    lead: int = 0
    tail: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Canvas:
    """The keyframe grid of a request: `frames` = N' (padded), `segment` = S, `keyframes` = (S, 2S, ..., N' - 1)."""

    frames: int
    segment: int
    keyframes: tuple[int, ...]


@dataclass(frozen=True)
class RefineTile:
    """One temporal-refine window. `span` in latent frames (`span.lead` = run-up dropped at the stitch);
    `pixel_start` / `pixel_end` inclusive pixel bounds of `span`; `anchors` the seam keyframes it carries in
    (global pixel frames, including `pixel_start` on every tile but the first); `slots` the keyframes it generates."""

    span: Span
    pixel_start: int
    pixel_end: int
    anchors: tuple[int, ...]
    slots: tuple[int, ...]

    @property
    def num_frames(self) -> int:
        """Pixel frames of the window, `(cells - 1) r + 1`."""
        return self.pixel_end - self.pixel_start + 1


@dataclass(frozen=True)
class EpilogueTile:
    """One epilogue window: slices into the `(F, H, W)` latent grid and its `(F_t, H_t, W_t)` blend weight."""

    frames: slice
    heights: slice
    widths: slice
    weight: Tensor


@dataclass(frozen=True)
class TokenPlan:
    """One tile of a tiled transformer call: `keep` (K,) token indices (base tokens first), `weights` (K,) blend
    weight per kept token, `positions` (B, 3, K, 2) rebased positions of the kept tokens."""

    keep: Tensor
    weights: Tensor
    positions: Tensor


# ---------------------------------------------------------------------------------------------------- keyframe grid


def segment_length(content_frames: int, temporal_ratio: int = 8) -> int:
    """The segment length (pixel frames) among `SEGMENT_LATENTS * temporal_ratio` that pads `content_frames` least;
    ties keep the longer."""
    if content_frames < 1:
        raise ValueError(f"content_frames must be >= 1 (num_frames - 1), got {content_frames}")
    candidates = [n * temporal_ratio for n in SEGMENT_LATENTS]
    return min(candidates, key=lambda s: ((-content_frames) % s, -s))


def resolve_canvas(num_frames: int, temporal_ratio: int = 8) -> Canvas:
    """Pad `num_frames - 1` up to a whole number of segments and place the keyframes (see module docstring)."""
    if num_frames < temporal_ratio + 1 or (num_frames - 1) % temporal_ratio:
        raise ValueError(f"num_frames must be {temporal_ratio} k + 1 with k >= 1 (9, 17, 25, ...), got {num_frames}")
    content = num_frames - 1
    s = segment_length(content, temporal_ratio)
    padded = content + (-content) % s
    return Canvas(frames=padded + 1, segment=s, keyframes=tuple(range(s, padded + 1, s)))


def latent_index(pixel_frame: int, temporal_ratio: int = 8) -> int:
    """The latent frame of a pixel frame on a latent border (`pixel = latent * r`)."""
    if pixel_frame < 0 or pixel_frame % temporal_ratio:
        raise ValueError(f"pixel frame {pixel_frame} is not on a latent border (a multiple of {temporal_ratio} >= 0)")
    return pixel_frame // temporal_ratio


# ---------------------------------------------------------------------------------------------------- splitting axes


def split_at_seams(seams: Sequence[int], num_tiles: int, overlap: int, size: int) -> list[Span]:
    """Split `[0, size)` into `min(num_tiles, segments)` tiles cut on `seams` (the segment edges, `0` first and
    `size - 1` last). Tile `i` owns its segments' cells after the previous seam; every tile but the first starts
    `overlap` cells before its first owned cell (clamped at 0), and that run-up is its `lead`. Leftover segments
    go to the leading tiles."""
    seams = [int(s) for s in seams]
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if num_tiles < 1:
        raise ValueError(f"num_tiles must be >= 1, got {num_tiles}")
    if len(seams) < 2 or seams[0] != 0 or seams[-1] != size - 1:
        raise ValueError(f"seams must run from 0 to the last cell {size - 1} with at least one segment, got {seams}")
    if any(b <= a for a, b in itertools.pairwise(seams)):
        raise ValueError(f"seams must be strictly increasing, got {seams}")
    segments = len(seams) - 1
    num_tiles = min(num_tiles, segments)
    per, extra = divmod(segments, num_tiles)
    spans, edge = [], 0
    for i in range(num_tiles):
        first = seams[edge] + 1  # first cell this tile owns (tile 0 also owns cell 0)
        start = 0 if i == 0 else max(0, first - overlap)
        edge += per + (i < extra)
        spans.append(Span(start, seams[edge] + 1, lead=0 if i == 0 else first - start))
    return spans


def split_even(size: int, num_tiles: int, overlap: int) -> list[Span]:
    """Split `[0, size)` into `num_tiles` near-equal tiles, each adjacent pair sharing exactly `overlap` cells;
    the leading tiles are one cell longer when `size + (num_tiles - 1) overlap` does not divide evenly."""
    if num_tiles < 1 or size < 1 or overlap < 0:
        raise ValueError(f"need size >= 1, num_tiles >= 1, overlap >= 0; got size={size}, num_tiles={num_tiles}, "
                         f"overlap={overlap}")
    if num_tiles == 1:
        return [Span(0, size)]
    tile, extra = divmod(size + overlap * (num_tiles - 1), num_tiles)
    if tile <= overlap:
        raise ValueError(f"{num_tiles} tiles over {size} cells are {tile} cells long, not longer than the overlap "
                         f"{overlap}; use fewer tiles or a smaller overlap")
    stride = tile - overlap
    return [Span(i * stride + min(i, extra), i * stride + min(i, extra) + tile + (i < extra),
                 lead=overlap if i > 0 else 0, tail=overlap if i < num_tiles - 1 else 0)
            for i in range(num_tiles)]


def ramp_window(length: int, lead: int, tail: int) -> Tensor:
    """(length,) float32 weights: 1, faded in over the first `lead` cells and out over the last `tail` cells along
    the interior of a linspace (0, 1) of `lead + 2` / `tail + 2` points."""
    w = torch.ones(length)
    if lead:
        w[:lead] *= torch.linspace(0.0, 1.0, lead + 2)[1:-1]
    if tail:
        w[-tail:] *= torch.linspace(1.0, 0.0, tail + 2)[1:-1]
    return w


def cut_window(length: int, lead: int) -> Tensor:
    """(length,) float32 weights: 0 on the first `lead` cells (a seam run-up), 1 elsewhere."""
    w = torch.ones(length)
    w[:lead] = 0.0
    return w


# ---------------------------------------------------------------------------------------------------- temporal refine


def refine_tiles(seams: Sequence[int], num_frames: int, num_tiles: int, temporal_ratio: int = 8) -> list[RefineTile]:
    """The tile plan of one temporal refine round over a canvas of `num_frames` pixel frames whose keyframe seams
    (pixel frames, increasing, the last = `num_frames - 1`) are `seams`. The run-up is the first segment's length
    plus one cell. A round `k` uses `num_tiles = 2**k` (clamped to the segment count)."""
    if num_frames < temporal_ratio + 1 or (num_frames - 1) % temporal_ratio:
        raise ValueError(f"num_frames must be {temporal_ratio} k + 1 with k >= 1, got {num_frames}")
    seams = [int(s) for s in seams]
    if not seams or seams[-1] != num_frames - 1:
        raise ValueError(f"seams must end on the last frame {num_frames - 1}, got {seams}")
    cells = [0, *(latent_index(s, temporal_ratio) for s in seams)]
    tiles = []
    for span in split_at_seams(cells, num_tiles, cells[1] + 1, (num_frames - 1) // temporal_ratio + 1):
        lo, hi = span.start * temporal_ratio, (span.end - 1) * temporal_ratio
        inside = [s for s in seams if lo < s <= hi]
        marks = [lo, *inside]
        tiles.append(RefineTile(span, lo, hi, anchors=tuple(s for s in seams if lo <= s <= hi),
                                slots=tuple((a + b) // 2 for a, b in itertools.pairwise(marks))))
    return tiles


def stitch(tile_latents: Sequence[Tensor], tiles: Sequence[RefineTile]) -> Tensor:
    """Concatenate per-tile latents (B, C, cells, H, W) along time, each without its run-up: (B, C, F, H, W)."""
    if len(tile_latents) != len(tiles) or not tiles:
        raise ValueError(f"need one latent per tile, got {len(tile_latents)} latents for {len(tiles)} tiles")
    for x, t in zip(tile_latents, tiles):
        if x.ndim != 5 or x.shape[2] != t.span.size:
            raise ValueError(f"tile latent {tuple(x.shape)} is not (B, C, {t.span.size}, H, W) for {t.span}")
    return torch.cat([x[:, :, t.span.lead:] for x, t in zip(tile_latents, tiles)], dim=2)


# ---------------------------------------------------------------------------------------------------- epilogue


def epilogue_tiles(latent_shape: tuple[int, int, int], frame_tiles: int, frame_seams: Sequence[int]
                   ) -> list[EpilogueTile]:
    """The epilogue's `frame_tiles x 2 x 2` windows over an `(F, H, W)` latent grid (module docstring, 3).
    `frame_seams` are keyframe cells (latent frames); the time run-up is `frame_seams[0] + 1` cells. Tiles come in
    frame-major, then height, then width order."""
    if frame_tiles < 1 or min(latent_shape) < 1:
        raise ValueError(f"need frame_tiles >= 1 and a non-empty grid, got {frame_tiles} over {latent_shape}")
    seams = [int(s) for s in frame_seams]
    axes = []
    for name, size, n, overlap in zip(("frames", "height", "width"), latent_shape, (frame_tiles, 2, 2),
                                      (seams[0] + 1 if frame_tiles > 1 and seams else 0, EPILOGUE_OVERLAP,
                                       EPILOGUE_OVERLAP)):
        if n > 1 and size < n:
            warnings.warn(f"epilogue: latent {name} has {size} cells, fewer than {n} tiles; running it untiled",
                          stacklevel=2)
            n, overlap = 1, 0
        elif n > 1 and overlap > size - n:
            warnings.warn(f"epilogue: latent {name} has {size} cells, too few for {n} tiles sharing {overlap}; "
                          f"clamping the overlap to {size - n}", stacklevel=2)
            overlap = size - n
        axes.append((size, n, overlap))
    (size_f, n_f, overlap_f), ax_h, ax_w = axes
    interior = sorted({s for s in seams if 0 < s < size_f - 1})
    cut = n_f > 1 and bool(interior)
    if cut:
        frames = split_at_seams([0, *interior, size_f - 1], n_f, overlap_f, size_f)
    else:
        if seams and n_f > 1:
            warnings.warn(f"epilogue: seams {seams} are not interior to {size_f} latent frames; ramping the "
                          f"temporal tiles instead of cutting them", stacklevel=2)
        frames = split_even(size_f, n_f, overlap_f)
        if any(c.start < a.end for a, c in zip(frames, frames[2:])):
            warnings.warn(f"epilogue: {n_f} frame tiles sharing {overlap_f} of {size_f} cells overlap tile i + 2 "
                          f"too, so their windows sum to more than one there (as in diffusers)", stacklevel=2)
    tiles = []
    for f, h, w in itertools.product(frames, split_even(*ax_h), split_even(*ax_w)):
        wf = cut_window(f.size, f.lead) if cut else ramp_window(f.size, f.lead, f.tail)
        weight = wf[:, None, None] * ramp_window(h.size, h.lead, h.tail)[None, :, None] * \
            ramp_window(w.size, w.lead, w.tail)[None, None, :]
        tiles.append(EpilogueTile(slice(f.start, f.end), slice(h.start, h.end), slice(w.start, w.end), weight))
    return tiles


# ---------------------------------------------------------------------------------------------------- token plan


def token_plans(tiles: Sequence[EpilogueTile], positions: Tensor, grid: tuple[int, int, int]) -> list[TokenPlan]:
    """Resolve `tiles` over a `grid = (F, H, W)` base grid into per-tile token plans (module docstring, 4).
    `positions` (B, 3, T, 2) are the packed sequence's `[start, end)` bounds, `T >= F H W`. Raises if some
    conditioning token overlaps no tile."""
    f, h, w = grid
    base_n = f * h * w
    if positions.ndim != 4 or positions.shape[1] != 3 or positions.shape[2] < base_n or positions.shape[3] != 2:
        raise ValueError(f"positions must be (B, 3, T >= {base_n}, 2) for a {grid} grid, got {tuple(positions.shape)}")
    dev = positions.device
    cond = positions[:, :, base_n:]  # (B, 3, Tc, 2)
    bases, starts, claims = [], [], []
    for t in tiles:
        ar = lambda s: torch.arange(s.start, s.stop, device=dev)  # noqa: E731
        base = (ar(t.frames)[:, None, None] * (h * w) + ar(t.heights)[None, :, None] * w
                + ar(t.widths)[None, None, :]).reshape(-1)  # (Ft Ht Wt,)
        pos = positions[:, :, base]  # (B, 3, Ft Ht Wt, 2)
        lo, hi = pos[..., 0].amin(dim=2), pos[..., 1].amax(dim=2)  # (B, 3) the window's extent
        hit = (cond[..., 0] < hi[..., None]) & (cond[..., 1] > lo[..., None])  # (B, 3, Tc)
        bases.append(base)
        starts.append(lo)
        claims.append(hit.all(dim=1).any(dim=0))  # (Tc,) overlaps on every axis, for any batch row
    count = torch.stack(claims).sum(dim=0) if claims else torch.zeros(cond.shape[2], dtype=torch.long, device=dev)
    if not bool((count > 0).all()):
        orphans = (count == 0).nonzero().squeeze(1).tolist()
        raise ValueError(f"conditioning tokens {orphans} (after the {base_n} base tokens) overlap no tile; their "
                         f"positions must fall inside the tiled canvas")
    plans = []
    for t, base, lo, claim in zip(tiles, bases, starts, claims):
        keep = torch.cat([base, base_n + claim.nonzero().squeeze(1)])
        weights = torch.cat([t.weight.reshape(-1).to(dev), 1.0 / count[claim].to(dev, t.weight.dtype)])
        plans.append(TokenPlan(keep, weights, positions[:, :, keep] - lo[..., None, None]))
    return plans


# ---------------------------------------------------------------------------------------------------- tiled denoising

# model(x (B, K, C), token_sigma (B, K), sigma (B,), keyframes_mask (B, K), positions (B, 3, K, 2)) -> v (B, K, C)
VelocityFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def tiled_velocity(model: VelocityFn, x: Tensor, token_sigma: Tensor, sigma: Tensor, keyframes_mask: Tensor,
                   plans: Sequence[TokenPlan]) -> Tensor:
    """One tiled model call over a packed canvas `x` (B, T, C): the float32 blend `sum_t weight_t * v_t` of the
    per-plan predictions, cast back to `x.dtype`. `token_sigma`, `keyframes_mask` (B, T); `sigma` (B,)."""
    if not plans:
        raise ValueError("tiled_velocity needs at least one token plan")
    v = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for p in plans:
        keep = p.keep.to(x.device)
        vt = model(x[:, keep], token_sigma[:, keep], sigma, keyframes_mask[:, keep], p.positions)  # (B, K, C)
        v.index_add_(1, keep, vt.float() * p.weights.to(v).view(1, -1, 1))
    return v.to(x.dtype)


def tiled_denoise(model: VelocityFn, x: Tensor, clean: Tensor, mask: Tensor, keyframes_mask: Tensor,
                  positions: Tensor, sigmas: Sequence[float], plans: Sequence[TokenPlan] | None = None) -> Tensor:
    """DFR's deterministic denoising pass over a packed canvas (module docstring, 5).

    x, clean: (B, T, C) noisy and clean tokens; mask: (B, T, 1) or (B, T) conditioning strength (1 = pinned);
    keyframes_mask: (B, T); positions: (B, 3, T, 2), used when `plans` is None (one untiled call per step);
    sigmas: the schedule without its terminal 0. Returns the denoised (B, T, C) tokens in float32.
    """
    if len(sigmas) == 0 or any(float(s) <= 0 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty schedule of positive values (no terminal 0), got {sigmas}")
    m = mask.reshape(*mask.shape[:2], 1).float()  # (B, T, 1)
    schedule = [float(s) for s in sigmas] + [0.0]
    for s, s_next in itertools.pairwise(schedule):
        sigma = torch.full((x.shape[0],), s, device=x.device)
        token_sigma = sigma[:, None] * (1 - m[..., 0])  # (B, T) conditioned tokens sit lower
        if plans is None:
            v = model(x, token_sigma, sigma, keyframes_mask, positions)
        else:
            v = tiled_velocity(model, x, token_sigma, sigma, keyframes_mask, plans)
        x0 = x.float() - v.float() * token_sigma[..., None]
        x0 = x0 * (1 - m) + clean.float() * m
        x = x.float() + (s_next - s) * ((x.float() - x0) / s)  # flow Euler with velocity (x - x0) / sigma
    return x.float()
