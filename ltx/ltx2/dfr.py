"""LTX-2.5 DFR ("Diffusion Fidelity Rendering"): the canvas layout, i.e. every integer decision the pipeline makes
before it calls the transformer, and the denoising passes over a model callable.

DFR generates a video on a *keyframe grid*, then refines it: a detailing pass, up to two temporal x2 rounds and an
optional spatially tiled epilogue. This module plans all of that (1-4) and runs the denoising passes over a given
model callable: tiled (5), a temporal refine round (6), the keyframe-slot pass of stages 1 and 2 (7), the whole
pipeline (8) and its epilogue (9). Units:
"pixel frames" index decoded frames, "latent frames" (cells) index the VAE grid, with `r` = the VAE's temporal ratio
(8) and the causal border `latent = pixel / r` (latent 0 holds pixel frame 0 alone).

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
   The audio stream is the caller's (held clean during refinement: a constant input of the model callable).

6. Temporal refine round (`refine_round`). Input: the previous canvas after the temporal x2 latent upsampler (the
   caller runs it), the carried keyframes and their pixel frames on the previous canvas, and the frozen stage-1
   audio tokens. The seams are the doubled positions; each tile of `refine_tiles(seams, ..., 2**round)` is denoised
   on its own (`refine_tile_state`, `ancestral_denoise`), as a packed sequence `[base | anchors | slots]`:
   base = the tile's crop of the upsampled canvas; anchors = the carried keyframes of the seams in the window, one
   latent frame each, pinned at `ANCHOR_STRENGTH` 0.95 (clean content, token sigma `0.05 sigma`, unmarked); slots =
   the generated mid-segment keyframes, seeded from the nearest latent frame of the crop, free (mask 0) and marked
   by the 2.5 keyframe embedding, like the base's first latent frame. Anchors and slots sit at their tile-local
   pixel frame with a time extent of exactly one pixel frame. Positions use the conditioning fps (`conditioning_fps`:
   60 for doubled playback rates above 30). One normal draw per tile (all tiles from one generator seeded `seed`,
   in order) noises the sequence to `sigmas[0]` and the conditioned tokens are blended back by strength. The
   sampler is rectified-flow Euler ancestral (`REFINE_ETA` 0.5) over `REFINE_SIGMAS` (the distilled schedule from its
   fifth sigma), x0 blended towards the anchors in x0 space, and the blend re-applied after every renoise; tile `i`
   draws from its own generator seeded `seed + 1000 round + i`. The model sees the tile's audio window
   (`audio_window`: the tile's wall-clock span as a fraction of the stage-1 duration, linearly resampled to
   `round(frames / fps_cond * 25)` tokens) at sigma 0. The tiles' grids are stitched (`stitch`); the next round's
   keyframes are the seams' carried latents (unchanged) plus this round's slots, the first tile's version where a
   run-up generated a slot twice, sorted by pixel frame (on this round's canvas; the next round doubles them).

7. Keyframe pass (`keyframe_pass_state`, `keyframe_pass`): DFR's stage 1 (half size, from noise) and stage 2
   (detailing at full size after the caller's x2 spatial upsampler). A packed sequence `[base | slots | reference]`:
   base = the canvas grid (stage 1: zeros, stage 2: the upsampled stage-1 canvas), free, its first latent frame
   marked; slots = one latent frame of tokens per keyframe of `resolve_canvas` (stage 1: zeros, stage 2: the
   upsampled stage-1 slots), free (mask 0, clean 0: their seed lives in the noisy tokens), marked, spanning exactly
   one pixel frame `[p, p + 1) / fps` (`frame_token_positions`); reference (stage 2's optional IC-LoRA input, the
   stage-1 canvas) = fully clean, unmarked, at the causal grid positions with rows and columns scaled by the
   downscale factor (2). One normal draw noises the sequence to `sigmas[0]` (the reference blended back), then one
   draw noises the packed audio (stage 1: zeros at 1.0, i.e. pure noise; stage 2: the stage-1 audio re-noised to
   `sigmas[0]`). The sampler is `tiled_denoise`'s flow Euler (untiled), and the audio takes an Euler step with the
   audio velocity of the same call (`freeze_audio`: held at sigma 0, not stepped). Returns the canvas (on the padded
   grid; trimming is the caller's), the slot latents, the positions and the audio tokens.

Follows diffusers 0.42.1 `pipelines/ltx2/dfr_layout.py` field for field (tests/ltx2/test_ltx2_dfr.py checks every
field, blend masks bitwise). The official Lightricks/LTX-2 `ltx_pipelines/dfr_layout.py` (at 400fd31) has the
keyframe grid and the temporal tiles (`tile_ranges`, `drop_latent_prefix` = our `span.lead`); they agree on the
uniform grids `resolve_canvas` produces (and that the rounds keep: seams + midpoints, doubled). They part on uneven
seams: diffusers' run-up is the *first* segment + 1 cell, the official one the segment just before the tile (so
its window always opens on a keyframe), and the official code refuses segments under 2 latent frames. The spatial
epilogue and the token plan exist only in diffusers (the official DFR pipeline at 400fd31 has no tiled epilogue).
The refine round follows diffusers' `LTX2DFRTemporalRefinePipeline.__call__` (tests/ltx2/test_ltx2_dfr.py runs it on
the same tiny transformer, two rounds, max |diff| ~7e-7). The official `dfr_pipeline.py` agrees on the tile state,
strengths, seeds, sampler and carry, but calls the temporal tiles without audio (`audio=None`, so no audio
cross-attention) and conditions at `min(playback fps, 60)` (48 for a 24 fps source, where diffusers uses 60).
The keyframe pass follows diffusers' `LTX2DFRPipeline.__call__(output_type="latent")` (the test runs stage 1 and
stage 2 with a reference on the same tiny transformer, max |diff| ~7e-7). By reading, the official
`VideoGeneratedKeyframeSlots` agrees on the slot layout (appended contiguously, denoise mask 1 with the seed in the
noisy latent and zero clean content, marked, time extent `[p, p + 1) / fps` without the causal fix) and
`dfr_pipeline.py` on the stage inputs (slots and canvas upsampled, stage-1 audio re-noised to the stage-2 sigma,
the half-size canvas as reference only with the detailing IC-LoRA); its noise draws come from its own noiser and
are not compared. Frame conditions (`FrameCondition`, user images) follow diffusers' `prepare_latents`: frame 0
writes the first latent frame's clean content and mask, other frames are appended as guiding keyframe tokens
before the slots (pass: `[base | conditions | slots | reference]`, tile: `[base | conditions | anchors | slots]`).

8. The pipeline (`render`): the official `DFRPipeline.__call__` up to the decode, over model callables: stage 1,
   the spatial upsampler on canvas and slots, stage 2, the rounds, the trim to `output_frames`. One generator
   threads every start-noise draw, as the official noiser (diffusers' pipelines take it one by one). Checked
   against diffusers' chain of the same pipelines (test_ltx2_dfr.py, max |diff| ~7e-7).

9. The spatial epilogue (`render(spatial_epilogue=True)`, off by default): one more x2 in space after the rounds.
   diffusers has no pipeline for it; its LTX-2 docs compose it from one more `LTX2DFRPipeline` call (generate_slots
   off, `video_tiles=epilogue_tiles(...)`, freeze_audio, the stage-2 schedule, the refined canvas as the detailing
   reference) after the x2 spatial upsampler on the refined canvas, with the carried keyframes rebuilt at twice the
   size by way of RGB (`rebuild_epilogue_keyframes`: each plane decoded alone, 8-bit, PIL Lanczos x2, encoded; never
   latent-upsampled) and pinned at strength 1, its frame tiles (`2**rounds`) cut on the seams the last round
   stitched on. Here that is a `keyframe_pass` with `tiles` (`epilogue_layout`, `rebuild_keyframes`); images sit at
   `2**rounds` times their frame, as in the rounds. The official pipeline at 400fd31 has no epilogue. Checked
   against diffusers' composed call (tests/ltx2/test_ltx2_dfr_epilogue.py).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ltx.core.sampling import ancestral_step_x0
from ltx.ltx2.patchify import VIDEO_SCALE, patchify_video, unpatchify_video, video_positions

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


# ---------------------------------------------------------------------------------------------------- refine round

# Seam keyframes carried in from the previous round are held just short of clean, so a tile can settle them.
ANCHOR_STRENGTH = 0.95
# The rounds' ancestral noise fraction (Euler ancestral, rectified flow).
REFINE_ETA = 0.5
# The distilled schedule from its fifth sigma on (no terminal 0): a round densifies an already structured canvas.
REFINE_SIGMAS = (0.975, 0.909375, 0.725, 0.421875)
# The RoPE time base of a round: playback rates above 30 fps are conditioned at 60.
MAX_CONDITIONING_FPS = 60.0
# Audio latent frames per second: 16 kHz / hop 160 / 4 mel frames per latent.
AUDIO_LATENTS_PER_SECOND = 25.0

# model(x (B, K, C), token_sigma (B, K), sigma (B,), keyframes_mask (B, K), positions (B, 3, K, 2),
#       audio (B, A, Ca) clean audio tokens held at sigma 0) -> v (B, K, C)
RefineModelFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def conditioning_fps(playback_fps: float) -> float:
    """The fps a round's positions are built at: `MAX_CONDITIONING_FPS` above 30 fps playback, else the playback
    rate (diffusers; the official pipeline takes `min(playback, 60)`, which differs at 48 fps)."""
    return MAX_CONDITIONING_FPS if playback_fps > 30.0 else float(playback_fps)


def frame_token_positions(pixel_frame: int, height: int, width: int, fps: float, batch: int = 1,
                          scale: tuple[int, int, int] = VIDEO_SCALE) -> Tensor:
    """float32 (B, 3, H W, 2) positions of one latent frame of keyframe tokens at `pixel_frame` whose time extent is
    the single pixel frame `[pixel_frame, pixel_frame + 1) / fps` (carried anchors and generated slots alike)."""
    if pixel_frame < 0 or fps <= 0:
        raise ValueError(f"need pixel_frame >= 0 and fps > 0, got {pixel_frame}, {fps}")
    hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    y, x = hh.reshape(-1) * scale[1], ww.reshape(-1) * scale[2]
    t = torch.full_like(y, pixel_frame)
    pos = torch.stack([torch.stack([t, t + 1]), torch.stack([y, y + scale[1]]), torch.stack([x, x + scale[2]])])
    pos = pos.transpose(1, 2).float()  # (3, H W, 2)
    pos[0] /= fps
    return pos[None].expand(batch, -1, -1, -1).clone()


def audio_window(audio: Tensor, pixel_start: int, num_frames: int, playback_fps: float, source_seconds: float,
                 fps: float, latents_per_second: float = AUDIO_LATENTS_PER_SECOND) -> Tensor:
    """The frozen audio tokens (B, A, Ca) under a tile's wall-clock window `[pixel_start, pixel_start + num_frames)
    / playback_fps`, read as a fraction of the audio's `source_seconds` and linearly resampled to the tile's own
    token count `round(num_frames / fps * latents_per_second)` (`fps` = the conditioning fps the video side uses).
    Wall clock rather than canvas fraction: a round maps N frames to 2 (N - 1) + 1, a hair short of twice the
    duration, so a canvas fraction would drift on the tail tiles."""
    src = audio.shape[1]
    n = round(num_frames / fps * latents_per_second)
    if n < 1:
        raise ValueError(f"a {num_frames}-frame tile at {fps} fps covers no audio latent frame")
    first = pixel_start / playback_fps / source_seconds * src
    step = num_frames / playback_fps / source_seconds * src / n
    at = (first + step * torch.arange(n, device=audio.device, dtype=torch.float32)).clamp(0, src - 1)
    lo = at.floor().long()
    hi = (lo + 1).clamp(max=src - 1)
    frac = (at - lo).to(audio.dtype).view(1, -1, 1)
    return audio[:, lo] * (1 - frac) + audio[:, hi] * frac


@dataclass(frozen=True)
class FrameCondition:
    """A conditioning image on a DFR canvas: `latent` (B or 1, C, 1, H, W) normalized, at pixel frame `pixel_frame`,
    held at `strength`. Frame 0 replaces the first latent frame's clean content (its tokens' conditioning mask =
    `strength`); any other frame is appended as guiding keyframe tokens (clean content, mask = `strength`, unmarked)
    spanning the one pixel frame `[p, p + 1) / fps` (diffusers `prepare_latents`' frame conditions)."""

    pixel_frame: int
    latent: Tensor
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.latent.ndim != 5 or self.latent.shape[2] != 1:
            raise ValueError(f"a frame condition is one latent frame (B, C, 1, H, W), got {tuple(self.latent.shape)}")
        if self.pixel_frame < 0 or not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"frame condition at pixel frame {self.pixel_frame} with strength {self.strength}: need "
                             "a frame >= 0 and a strength in [0, 1]")


# One packed block: x (B, n, C) noisy seed, clean (B, n, C), mask (B, n, 1), keyframe marker (B, n), positions
# (B, 3, n, 2).
_Block = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


def _frame_blocks(conditions: Sequence[FrameCondition], base: _Block, h: int, w: int, fps: float
                  ) -> tuple[_Block, _Block]:
    """The base block (an (h, w) latent grid) with frame-0 conditions written into its first latent frame (clean
    content and mask; the noisy seed kept), and the block of the other conditions' appended keyframe tokens, in the
    given order."""
    x, clean, mask, kf, pos = base
    b, _, c = x.shape
    hw = h * w
    appended = []
    for cond in conditions:
        if tuple(cond.latent.shape[3:]) != (h, w) or cond.latent.shape[1] != c or cond.latent.shape[0] not in (1, b):
            raise ValueError(f"frame condition latent {tuple(cond.latent.shape)} does not fit the canvas "
                             f"({b}, {c}, F, {h}, {w})")
        tokens = patchify_video(cond.latent.float().to(x.device)).expand(b, -1, -1)
        if cond.pixel_frame == 0:
            clean, mask = clean.clone(), mask.clone()
            clean[:, :hw], mask[:, :hw] = tokens, cond.strength
            continue
        appended.append((torch.zeros_like(tokens), tokens, tokens.new_full((b, hw, 1), cond.strength),
                         tokens.new_zeros(b, hw), frame_token_positions(cond.pixel_frame, h, w, fps, b).to(x.device)))
    if not appended:
        empty = x.new_zeros(b, 0, c)
        appended = [(empty, empty, x.new_zeros(b, 0, 1), x.new_zeros(b, 0), pos[:, :, :0])]
    return (x, clean, mask, kf, pos), _packed(appended)


def _packed(blocks: Sequence[_Block]) -> _Block:
    """Blocks concatenated along the token axis (dim 1; the positions' dim 2)."""
    return tuple(torch.cat(parts, 2 if i == 4 else 1) for i, parts in enumerate(zip(*blocks, strict=True)))


@dataclass(frozen=True)
class TileState:
    """A refine tile's packed float32 canvas `[base | anchors | slots]`: `x` the noised start (B, T, C), `clean`
    (B, T, C) the anchors' content (zero elsewhere), `mask` (B, T, 1) conditioning strength, `keyframes_mask` (B, T)
    the 2.5 keyframe marker (the first latent frame and the slots), `positions` (B, 3, T, 2); `base` the number of
    grid tokens and `slots` the slot tokens' slice."""

    x: Tensor
    clean: Tensor
    mask: Tensor
    keyframes_mask: Tensor
    positions: Tensor
    base: int
    slots: slice


def refine_tile_state(tile: RefineTile, video: Tensor, anchors: Sequence[Tensor], fps: float, noise_scale: float,
                      generator: torch.Generator | None, temporal_ratio: int = 8,
                      conditions: Sequence[FrameCondition] = ()) -> TileState:
    """The start state of one refine tile, packed `[base | conditions | anchors | slots]`. `video` (B, C, cells, H, W)
    is the tile's crop of the upsampled canvas; `anchors` one (B, C, 1, H, W) latent per `tile.anchors` entry;
    `conditions` the user images inside the window at tile-local pixel frames (`FrameCondition`). Anchors are
    appended at `ANCHOR_STRENGTH`, slots seeded from the nearest latent frame of `video` (`round(local pixel / r)`,
    clamped) and left free; both span one pixel frame at their tile-local position. One (B, T, C) standard normal draw
    from `generator` noises the whole sequence to `noise_scale`, then the conditioned tokens are blended back towards
    their content by strength."""
    b, c, f, h, w = video.shape
    if f != tile.span.size:
        raise ValueError(f"tile video has {f} latent frames, the tile spans {tile.span.size}")
    if len(anchors) != len(tile.anchors):
        raise ValueError(f"need {len(tile.anchors)} anchor latents, got {len(anchors)}")
    hw, dev = h * w, video.device
    base = patchify_video(video.float())
    local_slots = [p - tile.pixel_start for p in tile.slots]
    seeds = [min(max(round(p / temporal_ratio), 0), f - 1) for p in local_slots]
    n_anchor, n_slot = len(anchors) * hw, len(seeds) * hw
    grid = (base, torch.zeros_like(base), base.new_zeros(b, f * hw, 1),
            torch.cat([base.new_ones(b, hw), base.new_zeros(b, (f - 1) * hw)], 1),
            video_positions(f, h, w, fps, batch=b, device=dev))
    grid, conds = _frame_blocks(conditions, grid, h, w, fps)
    anchor_block = (base.new_zeros(b, n_anchor, c),
                    torch.cat([patchify_video(a.float().to(dev)) for a in anchors], 1) if anchors
                    else base.new_zeros(b, 0, c),
                    base.new_full((b, n_anchor, 1), ANCHOR_STRENGTH), base.new_zeros(b, n_anchor),
                    torch.cat([frame_token_positions(p - tile.pixel_start, h, w, fps, b).to(dev)
                               for p in tile.anchors], 2) if anchors else grid[4][:, :, :0])
    slot_block = (torch.cat([base[:, i * hw:(i + 1) * hw] for i in seeds], 1) if seeds else base.new_zeros(b, 0, c),
                  base.new_zeros(b, n_slot, c), base.new_zeros(b, n_slot, 1), base.new_ones(b, n_slot),
                  torch.cat([frame_token_positions(p, h, w, fps, b).to(dev) for p in local_slots], 2) if seeds
                  else grid[4][:, :, :0])
    x, clean, mask, kf, positions = _packed([grid, conds, anchor_block, slot_block])
    noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    x = noise * noise_scale + x * (1 - noise_scale)
    x = clean * mask + x * (1 - mask)
    first_slot = f * hw + conds[0].shape[1] + n_anchor
    return TileState(x, clean, mask, kf, positions, f * hw, slice(first_slot, first_slot + n_slot))


def ancestral_denoise(model: VelocityFn, x: Tensor, clean: Tensor, mask: Tensor, keyframes_mask: Tensor,
                      positions: Tensor, sigmas: Sequence[float], generator: torch.Generator | None,
                      eta: float = REFINE_ETA) -> Tensor:
    """A refine tile's sampler: per step, x0 from the model with each token's own sigma `sigma (1 - mask)`, blended
    towards `clean` by `mask`, one rectified-flow Euler-ancestral step (`ltx.core.sampling.ancestral_step_x0`, a
    (B, T, C) normal draw from `generator` on every step but the last), then the blend again, since the step renoises
    every token and would otherwise erode the strength-0.95 anchors. `sigmas` without the terminal 0. float32 out."""
    if len(sigmas) == 0 or any(float(s) <= 0 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty schedule of positive values (no terminal 0), got {sigmas}")
    m = mask.reshape(*mask.shape[:2], 1).float()
    x, clean = x.float(), clean.float()
    schedule = [float(s) for s in sigmas] + [0.0]
    for s, s_next in itertools.pairwise(schedule):
        sigma = torch.full((x.shape[0],), s, device=x.device)
        token_sigma = sigma[:, None] * (1 - m[..., 0])
        v = model(x, token_sigma, sigma, keyframes_mask, positions)
        x0 = (x - v.float() * token_sigma[..., None]) * (1 - m) + clean * m
        noise = None if s_next == 0 or eta == 0 else torch.randn(x.shape, generator=generator, device=x.device)
        x = ancestral_step_x0(x, x0, s, s_next, noise, eta=eta).float()
        x = x * (1 - m) + clean * m
    return x


@dataclass(frozen=True)
class RoundResult:
    """One temporal refine round: `latent` (B, C, F, H, W) the stitched canvas; `keyframes` (B, C, K, H, W) and
    `positions` (K pixel frames on this round's canvas) the next round's carry (seams + this round's slots);
    `tiles` the plan and `tile_latents` each tile's denoised grid (B, C, cells, H, W), before stitching."""

    latent: Tensor
    keyframes: Tensor
    positions: tuple[int, ...]
    tiles: tuple[RefineTile, ...]
    tile_latents: tuple[Tensor, ...]


def refine_round(model: RefineModelFn, latent: Tensor, keyframes: Tensor, positions: Sequence[int], audio: Tensor,
                 *, round_index: int, seed: int, fps: float, source_seconds: float | None = None,
                 sigmas: Sequence[float] = REFINE_SIGMAS, noise_scale: float | None = None, eta: float = REFINE_ETA,
                 audio_latents_per_second: float = AUDIO_LATENTS_PER_SECOND, temporal_ratio: int = 8,
                 conditions: Sequence[FrameCondition] = (), generator: torch.Generator | None = None
                 ) -> RoundResult:
    """One DFR temporal refine round (module docstring, 6).

    latent: (B, C, F, H, W) the previous canvas after the temporal x2 latent upsampler (normalized latents);
    keyframes: (B, C, K, H, W) the carried keyframes at pixel frames `positions` of the *previous* canvas (its fps is
    `fps`); audio: (B, A, Ca) the frozen stage-1 audio tokens (normalized, packed) spanning `source_seconds`
    (default: the previous canvas' duration, right for round 1 only). Each tile runs `model` with its audio window.
    `conditions`: the request's images at pixel frames of the *original* (stage-2) canvas; round r places them at
    `2**r` times that frame, in every tile whose window holds it (diffusers; the official pipeline does not scale
    them). Noise: `generator` (default: a new one seeded `seed`) draws every tile's start noise in tile order; tile
    `i`'s ancestral draws come from its own generator seeded `seed + 1000 round_index + i`."""
    if round_index < 1:
        raise ValueError(f"round_index must be >= 1, got {round_index}")
    _, _, cells, h, w = latent.shape
    if latent.ndim != 5 or keyframes.ndim != 5 or keyframes.shape[2] != len(positions) or \
            keyframes.shape[:2] != latent.shape[:2] or keyframes.shape[3:] != latent.shape[3:]:
        raise ValueError(f"keyframes {tuple(keyframes.shape)} must be (B, C, {len(positions)}, H, W) for a "
                         f"(B, C, F, H, W) latent {tuple(latent.shape)}")
    if audio.ndim != 3 or audio.shape[0] != latent.shape[0]:
        raise ValueError(f"audio must be packed (B, A, Ca) tokens, got {tuple(audio.shape)}")
    frames = (cells - 1) * temporal_ratio + 1
    seams = [2 * int(p) for p in positions]
    tiles = refine_tiles(seams, frames, 2**round_index, temporal_ratio)
    playback = 2 * fps
    cond_fps = conditioning_fps(playback)
    if source_seconds is None:
        source_seconds = ((frames - 1) // 2 + 1) / fps
    noise_scale = float(sigmas[0]) if noise_scale is None else noise_scale
    carried = {s: keyframes[:, :, i:i + 1] for i, s in enumerate(seams)}
    start_noise = torch.Generator(latent.device).manual_seed(seed) if generator is None else generator
    scale = 2**round_index
    outs, slot_latents = [], {}
    for i, tile in enumerate(tiles):
        video = latent[:, :, tile.span.start:tile.span.end]
        inside = [FrameCondition(c.pixel_frame * scale - tile.pixel_start, c.latent, c.strength) for c in conditions
                  if tile.pixel_start <= c.pixel_frame * scale <= tile.pixel_end]
        state = refine_tile_state(tile, video, [carried[p] for p in tile.anchors], cond_fps, noise_scale,
                                  start_noise, temporal_ratio, inside)
        window = audio_window(audio, tile.pixel_start, tile.num_frames, playback, source_seconds, cond_fps,
                              audio_latents_per_second)

        def tile_model(x, token_sigma, sigma, kf, pos, _audio=window):
            return model(x, token_sigma, sigma, kf, pos, _audio)

        steps = torch.Generator(latent.device).manual_seed(seed + 1000 * round_index + i)
        x = ancestral_denoise(tile_model, state.x, state.clean, state.mask, state.keyframes_mask, state.positions,
                              sigmas, steps, eta)
        outs.append(unpatchify_video(x[:, :state.base], tile.span.size, h, w))
        slots = unpatchify_video(x[:, state.slots], len(tile.slots), h, w) if tile.slots else None
        for k, p in enumerate(tile.slots):
            slot_latents.setdefault(p, slots[:, :, k:k + 1])  # a run-up repeats earlier slots: the first tile wins
    carry = {**carried, **slot_latents}
    order = tuple(sorted(carry))
    return RoundResult(stitch(outs, tiles), torch.cat([carry[p] for p in order], 2), order, tuple(tiles),
                       tuple(outs))


# ---------------------------------------------------------------------------------------------------- keyframe pass

# model(x (B, T, C), token_sigma (B, T), sigma (B,), keyframes_mask (B, T), positions (B, 3, T, 2),
#       audio (B, A, Ca), audio_sigma (B,)) -> (v (B, T, C), audio v (B, A, Ca))
PassModelFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class PassState(TileState):
    """A keyframe pass' packed float32 start state `[base | slots | reference]` (the fields of `TileState`), plus
    the noised packed audio (B, A, Ca)."""

    audio: Tensor


@dataclass(frozen=True)
class PassResult:
    """One keyframe pass: `latent` (B, C, F, H, W) the canvas, `slots` (B, C, K, H, W) the generated keyframes at
    pixel frames `positions` (None for a pass without slots), `audio` (B, A, Ca) the packed audio tokens (normalized
    latents throughout)."""

    latent: Tensor
    slots: Tensor | None
    positions: tuple[int, ...]
    audio: Tensor


def keyframe_pass_state(video: Tensor, slots: Tensor | None, positions: Sequence[int], audio: Tensor, fps: float,
                        noise_scale: float, generator: torch.Generator | None, *,
                        audio_noise_scale: float | None = None, reference: Tensor | None = None,
                        reference_downscale: int = 2, conditions: Sequence[FrameCondition] = ()) -> PassState:
    """The start state of a keyframe pass (module docstring, 7), packed `[base | conditions | slots | reference]`.
    `video` (B, C, F, H, W) seeds the base grid, `slots` (B, C, K, H, W) the K slots at pixel frames `positions`
    (None: zeros); `conditions` the user images (`FrameCondition`: frame 0 in the base, others appended);
    `reference` (B, C, F', H', W') is appended fully clean and unmarked at `video_positions` with rows and columns
    scaled by `reference_downscale`. One (B, T, C) normal draw noises the sequence to `noise_scale`, the conditioned
    tokens are blended back by strength, then one (B, A, Ca) draw noises `audio` to `audio_noise_scale` (default
    `noise_scale`)."""
    b, c, f, h, w = video.shape
    k = len(positions)
    if (k == 0 and slots is not None) or any(q < 0 for q in positions) or \
            any(q1 <= q0 for q0, q1 in itertools.pairwise(positions)):
        raise ValueError(f"slot positions must be non-negative and strictly increasing (empty: no slots, and no slot "
                         f"latents), got {positions}")
    if slots is not None and (slots.ndim != 5 or slots.shape[2] != k or slots.shape[:2] != (b, c)
                              or slots.shape[3:] != (h, w)):
        raise ValueError(f"slots {tuple(slots.shape)} must be (B, C, {k}, H, W) for a video {tuple(video.shape)}")
    if audio.ndim != 3 or audio.shape[0] != b:
        raise ValueError(f"audio must be packed (B, A, Ca) tokens, got {tuple(audio.shape)}")
    hw, dev = h * w, video.device
    base = patchify_video(video.float())
    grid = (base, torch.zeros_like(base), base.new_zeros(b, f * hw, 1),
            torch.cat([base.new_ones(b, hw), base.new_zeros(b, (f - 1) * hw)], 1),
            video_positions(f, h, w, fps, batch=b, device=dev))
    grid, conds = _frame_blocks(conditions, grid, h, w, fps)
    slot_tokens = base.new_zeros(b, k * hw, c) if slots is None else patchify_video(slots.float().to(dev))
    slot_block = (slot_tokens, torch.zeros_like(slot_tokens), base.new_zeros(b, k * hw, 1), base.new_ones(b, k * hw),
                  torch.cat([frame_token_positions(p, h, w, fps, b).to(dev) for p in positions], 2) if k
                  else grid[4][:, :, :0])
    blocks = [grid, conds, slot_block]
    if reference is not None:
        ref = patchify_video(reference.float().to(dev))
        ref_pos = video_positions(*reference.shape[2:], fps, batch=b, device=dev)
        ref_pos[:, 1:] = ref_pos[:, 1:] * reference_downscale
        blocks.append((torch.zeros_like(ref), ref, ref.new_ones(b, ref.shape[1], 1), ref.new_zeros(b, ref.shape[1]),
                       ref_pos))
    x, clean, mask, kf, pos = _packed(blocks)
    noise = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    x = noise * noise_scale + x * (1 - noise_scale)
    x = clean * mask + x * (1 - mask)
    a = audio.float()
    a_scale = noise_scale if audio_noise_scale is None else audio_noise_scale
    a = a_scale * torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype) + (1 - a_scale) * a
    first_slot = f * hw + conds[0].shape[1]
    return PassState(x, clean, mask, kf, pos, f * hw, slice(first_slot, first_slot + k * hw), a)


def keyframe_pass(model: PassModelFn, video: Tensor, slots: Tensor | None, positions: Sequence[int], audio: Tensor,
                  sigmas: Sequence[float], *, fps: float, generator: torch.Generator | None,
                  noise_scale: float | None = None, freeze_audio: bool = False, reference: Tensor | None = None,
                  reference_downscale: int = 2, conditions: Sequence[FrameCondition] = (),
                  tiles: Sequence[EpilogueTile] | None = None) -> PassResult:
    """One DFR keyframe-slot pass (module docstring, 7): stage 1 (`video` zeros, `slots` None, `audio` zeros,
    `sigmas` the distilled schedule from 1.0) or stage 2 (`video` / `slots` the x2 upsampled stage-1 latents,
    `audio` the stage-1 audio tokens, `sigmas` the stage-2 schedule, optionally the stage-1 canvas as `reference`).

    video: (B, C, F, H, W) on the padded keyframe grid; slots: (B, C, K, H, W) or None; positions: the K slot pixel
    frames (`resolve_canvas(...).keyframes`); audio: (B, A, Ca) packed; sigmas without the terminal 0; fps: the
    conditioning fps (`conditioning_fps(playback)`); conditions: user images encoded at this pass' size. The noise
    (video then audio) comes from `generator`. Video is flow-Euler stepped as in `tiled_denoise` (untiled); audio,
    unless `freeze_audio` (held at sigma 0, not stepped), is Euler-stepped on the same schedule from the audio
    velocity of the same call.

    `tiles` (the spatial epilogue, `epilogue_tiles` over this pass' `(F, H, W)` grid): every step runs `model` once
    per tile on its token plan (`token_plans` over this pass' packed positions) and blends the velocities
    (`tiled_velocity`); needs `freeze_audio` (the tiles' audio predictions are not used). Empty `positions` with
    `slots` None: no slot tokens (the epilogue pins its keyframes as `conditions` instead); `PassResult.slots` is
    then None."""
    if len(sigmas) == 0 or any(float(s) <= 0 for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty schedule of positive values (no terminal 0), got {sigmas}")
    if tiles is not None and not freeze_audio:
        raise ValueError("a tiled keyframe pass holds the audio clean: pass freeze_audio=True")
    noise_scale = float(sigmas[0]) if noise_scale is None else noise_scale
    st = keyframe_pass_state(video, slots, positions, audio, fps, noise_scale, generator,
                             audio_noise_scale=0.0 if freeze_audio else None, reference=reference,
                             reference_downscale=reference_downscale, conditions=conditions)
    x, a, m, clean = st.x, st.audio, st.mask, st.clean
    _, _, f, h, w = video.shape
    plans = None if tiles is None else token_plans(tiles, st.positions, (f, h, w))
    schedule = [float(s) for s in sigmas] + [0.0]
    for s, s_next in itertools.pairwise(schedule):
        sigma = torch.full((x.shape[0],), s, device=x.device)
        token_sigma = sigma[:, None] * (1 - m[..., 0])
        audio_sigma = torch.zeros_like(sigma) if freeze_audio else sigma
        if plans is None:
            v, va = model(x, token_sigma, sigma, st.keyframes_mask, st.positions, a, audio_sigma)
        else:
            def video_only(xt, ts, sg, kf, pos, _a=a, _as=audio_sigma):
                return model(xt, ts, sg, kf, pos, _a, _as)[0]

            v = tiled_velocity(video_only, x, token_sigma, sigma, st.keyframes_mask, plans)
        x0 = (x - v.float() * token_sigma[..., None]) * (1 - m) + clean * m
        x = x + (s_next - s) * ((x - x0) / s)
        if not freeze_audio:
            a0 = a - va.float() * s
            a = a + (s_next - s) * ((a - a0) / s)
    return PassResult(unpatchify_video(x[:, :st.base], f, h, w),
                      unpatchify_video(x[:, st.slots], len(positions), h, w) if len(positions) else None,
                      tuple(int(p) for p in positions), a)


# ---------------------------------------------------------------------------------------------------- the pipeline

# Distilled schedules (no terminal 0): stage 1 from pure noise, stage 2 from the upsampled canvas.
STAGE_1_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)
STAGE_2_SIGMAS = (0.909375, 0.725, 0.421875)
MAX_ROUNDS = 2


@dataclass(frozen=True)
class Rendered:
    """A DFR run's latents: `latent` (B, C, F, H, W) trimmed to `num_frames` = (requested - 1) 2**rounds + 1 frames
    at `fps` (the playback rate, doubled per round); `audio` (B, A, Ca) the stage-1 audio tokens, which span the
    padded canvas (`audio_seconds`; cut the waveform to the video); `canvas` the keyframe grid of the request."""

    latent: Tensor
    audio: Tensor
    num_frames: int
    fps: float
    audio_seconds: float
    canvas: Canvas


def output_frames(num_frames: int, rounds: int) -> int:
    """Frames a DFR run returns for `num_frames` requested: each temporal round maps N to 2 (N - 1) + 1."""
    return (num_frames - 1) * 2**rounds + 1


def _rounds_plan(num_frames: int, rounds: int, temporal_ratio: int = 8
                 ) -> tuple[list[list[RefineTile]], list[int], int]:
    """The refine tiles of each of `rounds` rounds for a request of `num_frames`, the seams the last round cuts on
    (its carried keyframes, doubled; no round: the keyframe grid) and the refined canvas' pixel frames."""
    canvas = resolve_canvas(num_frames, temporal_ratio)
    positions, frames, plan, seams = canvas.keyframes, canvas.frames, [], list(canvas.keyframes)
    for r in range(1, rounds + 1):
        seams = [2 * p for p in positions]
        frames = 2 * (frames - 1) + 1
        tiles = refine_tiles(seams, frames, 2**r, temporal_ratio)
        plan.append(tiles)
        positions = sorted(set(seams) | {p for t in tiles for p in t.slots})
    return plan, seams, frames


def round_tiles(num_frames: int, rounds: int, temporal_ratio: int = 8) -> list[int]:
    """The number of refine tiles each of `rounds` temporal rounds runs for a request of `num_frames` (at most
    `2**round`: a short canvas has fewer segments than that)."""
    return [len(tiles) for tiles in _rounds_plan(num_frames, rounds, temporal_ratio)[0]]


def epilogue_layout(num_frames: int, rounds: int, latent_size: tuple[int, int], frame_tiles: int | None = None,
                    temporal_ratio: int = 8) -> list[EpilogueTile]:
    """The spatial epilogue's windows for a request of `num_frames` after `rounds` temporal rounds (module docstring,
    9): `epilogue_tiles` over the refined, still padded canvas at twice the stage-2 latent size `latent_size`, with
    `frame_tiles` (default `2**rounds`) cut on the seams the last round stitched on (the keyframes handed into it,
    doubled, not that round's new slots; with no round, the keyframe grid)."""
    frame_tiles = 2**rounds if frame_tiles is None else frame_tiles
    if isinstance(frame_tiles, bool) or not isinstance(frame_tiles, int) or frame_tiles < 1:
        raise ValueError(f"epilogue frame tiles must be a positive integer, got {frame_tiles!r}")
    _, seams, frames = _rounds_plan(num_frames, rounds, temporal_ratio)
    cells = (frames - 1) // temporal_ratio + 1
    h, w = latent_size
    return epilogue_tiles((cells, 2 * h, 2 * w), frame_tiles, [latent_index(p, temporal_ratio) for p in seams])


# ---------------------------------------------------------------------------------------------------- spatial epilogue

# The epilogue's keyframes are finished frames rebuilt at its size: pinned fully clean.
EPILOGUE_KEYFRAME_STRENGTH = 1.0


def lanczos_x2(pixels: Tensor) -> Tensor:
    """(B, 3, H, W) pixels in [-1, 1] -> (B, 3, 2H, 2W) float32 in [-1, 1]: each image quantized to 8 bits
    (`round((x + 1) 127.5)`) and stretched x2 with PIL's Lanczos filter, as diffusers rebuilds the epilogue's
    keyframes (deterministic: integer input, one well-kept implementation)."""
    import numpy as np
    from PIL import Image

    out = []
    for image in pixels:
        codes = ((image.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)  # (3, H, W)
        big = Image.fromarray(codes.permute(1, 2, 0).cpu().numpy())
        big = big.resize((2 * big.width, 2 * big.height), resample=Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.asarray(big).copy()).permute(2, 0, 1).float() / 127.5 - 1.0)
    return torch.stack(out).to(pixels.device)


def rebuild_keyframes(keyframes: Tensor, decode: Callable[[Tensor], Tensor], encode: Callable[[Tensor], Tensor]
                      ) -> Tensor:
    """The epilogue's keyframes: the carried (B, C, K, H, W) normalized latents -> (B, C, K, 2H, 2W). Each plane is
    decoded as a clip of its own (`decode`: (B, C, 1, H, W) -> pixels (B, 3, 1, H', W') in [-1, 1]; stacked planes
    would leak into each other through the causal VAE), stretched by `lanczos_x2` and encoded again (`encode`:
    (B, 3, 1, 2H', 2W') pixels -> normalized latents): the settled frame, on the epilogue's grid."""
    if keyframes.ndim != 5:
        raise ValueError(f"keyframes must be (B, C, K, H, W), got {tuple(keyframes.shape)}")
    planes = []
    for k in range(keyframes.shape[2]):
        pixels = decode(keyframes[:, :, k:k + 1])[:, :, 0]  # (B, 3, H', W')
        planes.append(encode(lanczos_x2(pixels)[:, :, None]).float())  # (B, C, 1, 2H, 2W)
    return torch.cat(planes, 2)


def render(stage_1: PassModelFn, stage_2: PassModelFn, refine: RefineModelFn | None, *, num_frames: int,
           latent_size: tuple[int, int], channels: int, audio_frames: int, audio_channels: int, fps: float,
           spatial_upsample: Callable[[Tensor], Tensor], temporal_upsample: Callable[[Tensor], Tensor] | None = None,
           rounds: int = 0, seed: int, generator: torch.Generator, batch: int = 1,
           conditions_half: Sequence[FrameCondition] = (), conditions: Sequence[FrameCondition] = (),
           detailing: bool = False, reference_downscale: int = 2,
           stage_1_sigmas: Sequence[float] = STAGE_1_SIGMAS, stage_2_sigmas: Sequence[float] = STAGE_2_SIGMAS,
           refine_sigmas: Sequence[float] = REFINE_SIGMAS, before_stage_2: Callable[[], None] | None = None,
           after_stage_2: Callable[[], None] | None = None, on_pass: Callable[[str], None] | None = None,
           temporal_ratio: int = 8, spatial_epilogue: bool = False, epilogue_frame_tiles: int | None = None,
           rebuild: Callable[[Tensor], Tensor] | None = None, conditions_double: Sequence[FrameCondition] = (),
           before_epilogue: Callable[[], None] | None = None) -> Rendered:
    """DFR end to end over model callables (the official `DFRPipeline.__call__` up to the decode):

    1. `resolve_canvas(num_frames)`: the padded keyframe grid; stage 1 (`stage_1`, half the latent size
       `latent_size`, from noise, `conditions_half`) generates the canvas, the keyframe slots and the audio;
    2. `spatial_upsample` (x2, normalized latents in and out) of the canvas and of the slots;
    3. `before_stage_2()`, stage 2 (`stage_2`: at full size, from the upsampled canvas and slots, the stage-1 audio
       re-noised to the stage-2 sigma, `conditions`; with `detailing`, the stage-1 canvas as the IC-LoRA reference
       at `reference_downscale`), `after_stage_2()`;
    4. `rounds` (0-2) temporal refine rounds (`refine`, `temporal_upsample`: x2 in time), each from the previous
       canvas and the carried keyframes, with the frozen stage-1 audio;
    5. with `spatial_epilogue` (module docstring, 9): `spatial_upsample` of the refined canvas, the carried
       keyframes through `rebuild` (x2 by way of RGB: `rebuild_keyframes`), `before_epilogue()`, then one more
       stage-2 pass (`stage_2`, `stage_2_sigmas`) at twice the size, tiled (`epilogue_layout`, `epilogue_frame_tiles`),
       without slots, the rebuilt keyframes pinned at `EPILOGUE_KEYFRAME_STRENGTH` after the images
       (`conditions_double`, encoded at twice the size, at `2**rounds` times their frame), the audio frozen, with
       `detailing` the refined canvas as the reference;
    6. the canvas trimmed to `output_frames(num_frames, rounds)`.

    Noise: `generator` draws stage 1's video and audio noise, stage 2's, every refine tile's start noise, then the
    epilogue's, in that order (the official pipeline's one noiser); the tiles' ancestral steps draw from generators
    seeded `seed + 1000 round + tile`. `fps`: the request's playback rate (stage 1 and 2 are conditioned at
    `conditioning_fps(fps)`). `on_pass(name)` is called after each pass ("stage 1", "stage 2", "round 1", ...,
    "epilogue")."""
    if rounds not in range(MAX_ROUNDS + 1):
        raise ValueError(f"temporal rounds must be 0, 1 or 2, got {rounds}")
    if rounds and (refine is None or temporal_upsample is None):
        raise ValueError("temporal refine rounds need a refine model and a temporal x2 upsampler")
    if spatial_epilogue and rebuild is None:
        raise ValueError("the spatial epilogue needs `rebuild` (the keyframes' x2 rebuild through the VAE)")
    h, w = latent_size
    if h % 2 or w % 2:
        raise ValueError(f"the latent grid {h}x{w} must be even: stage 1 runs at half size")
    canvas = resolve_canvas(num_frames, temporal_ratio)
    cells = (canvas.frames - 1) // temporal_ratio + 1
    cond_fps = conditioning_fps(fps)
    tick = on_pass or (lambda name: None)

    s1 = keyframe_pass(stage_1, torch.zeros(batch, channels, cells, h // 2, w // 2), None, canvas.keyframes,
                       torch.zeros(batch, audio_frames, audio_channels), stage_1_sigmas, fps=cond_fps,
                       generator=generator, conditions=conditions_half)
    tick("stage 1")
    video, slots = spatial_upsample(s1.latent), spatial_upsample(s1.slots)
    if before_stage_2 is not None:
        before_stage_2()
    s2 = keyframe_pass(stage_2, video, slots, canvas.keyframes, s1.audio, stage_2_sigmas, fps=cond_fps,
                       generator=generator, reference=s1.latent if detailing else None,
                       reference_downscale=reference_downscale, conditions=conditions)
    if after_stage_2 is not None:
        after_stage_2()
    tick("stage 2")
    latent, keyframes, positions, frames, rate = s2.latent, s2.slots, s2.positions, canvas.frames, float(fps)
    for r in range(1, rounds + 1):
        result = refine_round(refine, temporal_upsample(latent), keyframes, positions, s1.audio, round_index=r,
                              seed=seed, fps=rate, source_seconds=canvas.frames / fps, sigmas=refine_sigmas,
                              temporal_ratio=temporal_ratio, conditions=conditions, generator=generator)
        latent, keyframes, positions = result.latent, result.keyframes, result.positions
        frames, rate = 2 * (frames - 1) + 1, 2 * rate
        tick(f"round {r}")
    if latent.shape[2] != (frames - 1) // temporal_ratio + 1:
        raise RuntimeError(f"the refined canvas has {latent.shape[2]} latent frames, expected "
                           f"{(frames - 1) // temporal_ratio + 1}")
    if spatial_epilogue:
        tiles = epilogue_layout(num_frames, rounds, (h, w), epilogue_frame_tiles, temporal_ratio)
        video, rebuilt = spatial_upsample(latent), rebuild(keyframes)
        scale = 2**rounds
        pinned = [FrameCondition(c.pixel_frame * scale, c.latent, c.strength) for c in conditions_double] + \
            [FrameCondition(p, rebuilt[:, :, i:i + 1], EPILOGUE_KEYFRAME_STRENGTH) for i, p in enumerate(positions)]
        if before_epilogue is not None:
            before_epilogue()
        latent = keyframe_pass(stage_2, video, None, (), s1.audio, stage_2_sigmas, fps=conditioning_fps(rate),
                               generator=generator, freeze_audio=True, reference=latent if detailing else None,
                               reference_downscale=reference_downscale, conditions=pinned, tiles=tiles).latent
        tick("epilogue")
    target = output_frames(num_frames, rounds)
    latent = latent[:, :, :(target - 1) // temporal_ratio + 1]
    return Rendered(latent, s1.audio, target, rate, canvas.frames / fps, canvas)
