"""The DFR canvas layout (ltx/ltx2/dfr.py) against diffusers 0.42.1 `pipelines/ltx2/dfr_layout.py`, field by field
over sweeps of frame counts, rounds, grid sizes and tile counts (blend windows and token plans compared bitwise),
plus invariants that need no reference: refine tiles stitch to the whole canvas and cut on keyframes, epilogue
windows sum to one, token-plan weights sum to one per token. Where the official Lightricks/LTX-2 `dfr_layout.py`
is in the local mirror, its `tile_ranges` is compared on the uniform grids DFR produces.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import types
import warnings

import pytest
import torch
from diffusers.pipelines.ltx2 import dfr_layout as ref

from ltx.ltx2 import dfr

RATIOS = (8, 4)


def same_span(ours: dfr.Span, theirs: ref.DimensionInterval) -> bool:
    return (ours.start, ours.end, ours.lead, ours.tail) == tuple(theirs)


@pytest.fixture(autouse=True)
def quiet():
    """Both sides warn on clamped epilogue axes; the sweeps hit those cases on purpose."""
    logging.getLogger(ref.__name__).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def refine_rounds(num_frames: int, ratio: int):
    """(seams, canvas frames, tiles) for up to three refine rounds after the keyframe grid of `num_frames`, carrying
    each round's seams + slots into the next, as the pipeline does."""
    canvas = dfr.resolve_canvas(num_frames, ratio)
    keys, frames = list(canvas.keyframes), canvas.frames
    for k in range(3):
        seams, frames = [2 * p for p in keys], 2 * (frames - 1) + 1
        tiles = dfr.refine_tiles(seams, frames, 2**k, ratio)
        yield seams, frames, 2**k, tiles
        keys = sorted({*seams, *(s for t in tiles for s in t.slots)})


# ---------------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("ratio", RATIOS)
def test_keyframe_grid_parity(ratio):
    for content in range(1, 400):
        assert dfr.segment_length(content, ratio) == ref.choose_segment_length(content, ratio)
    for n in range(ratio + 1, 4000, ratio):
        c = dfr.resolve_canvas(n, ratio)
        assert (c.frames, c.segment, list(c.keyframes)) == ref.resolve_canvas(n, ratio)


@pytest.mark.parametrize("ratio", RATIOS)
def test_refine_tiles_parity_dfr_rounds(ratio):
    checked = 0
    for n in range(ratio + 1, 700, ratio):
        for seams, frames, num_tiles, tiles in refine_rounds(n, ratio):
            theirs = ref.temporal_tile_plan(seams, frames, num_tiles, ratio)
            assert len(tiles) == len(theirs)
            for a, b in zip(tiles, theirs):
                assert same_span(a.span, b.interval)
                assert (a.pixel_start, a.pixel_end, a.anchors, a.slots) == tuple(b)[1:]
                checked += 1
    assert checked > 500


def random_seams(rng: random.Random, ratio: int) -> tuple[list[int], int]:
    cells = sorted(rng.sample(range(1, 40), rng.randint(1, 12)))
    return [c * ratio for c in cells], cells[-1] * ratio + 1


def test_refine_tiles_parity_irregular_seams():
    rng = random.Random(0)
    for _ in range(400):
        ratio = rng.choice(RATIOS)
        seams, frames = random_seams(rng, ratio)
        for num_tiles in (1, 2, 3, 4, 7):
            ours, theirs = dfr.refine_tiles(seams, frames, num_tiles, ratio), ref.temporal_tile_plan(
                seams, frames, num_tiles, ratio)
            assert [(a.span.start, a.span.end, a.span.lead, a.span.tail, a.pixel_start, a.pixel_end, a.anchors,
                     a.slots) for a in ours] == [(*b.interval, *tuple(b)[1:]) for b in theirs]


def test_axis_splits_parity():
    rng = random.Random(1)
    for _ in range(300):
        cells = [0, *sorted(rng.sample(range(1, 50), rng.randint(1, 10)))]
        for num_tiles in range(1, 6):
            for overlap in (0, 1, 3, 9):
                ours = dfr.split_at_seams(cells, num_tiles, overlap, cells[-1] + 1)
                theirs = ref.split_canvas_at_seams(cells, num_tiles, overlap, cells[-1] + 1)
                assert len(ours) == len(theirs) and all(map(same_span, ours, theirs))
    for size in range(1, 60):
        for num_tiles in range(1, 5):
            for overlap in range(0, 14):
                try:
                    theirs = ref.split_by_count(size, num_tiles, overlap)
                except ValueError:
                    with pytest.raises(ValueError):
                        dfr.split_even(size, num_tiles, overlap)
                    continue
                ours = dfr.split_even(size, num_tiles, overlap)
                assert len(ours) == len(theirs) and all(map(same_span, ours, theirs))
    for length in range(1, 30):
        for lead in range(0, length + 1):
            for tail in range(0, length + 1 - lead):
                assert torch.equal(dfr.ramp_window(length, lead, tail), ref.trapezoidal_mask_1d(length, lead, tail))
            assert torch.equal(dfr.cut_window(length, lead), ref.rectangular_mask_1d(length, lead))


def epilogue_cases():
    """(latent_shape, frame_tiles, frame_seams): DFR's own grids (seams = keyframe cells) plus odd sizes that hit the
    untiled / clamped / non-interior fallbacks."""
    rng = random.Random(2)
    cases = []
    for n in (9, 49, 97, 121, 193, 241):
        c = dfr.resolve_canvas(n)
        f = (c.frames - 1) // 8 + 1
        seams = [p // 8 for p in c.keyframes]
        for frame_tiles in (1, 2, 3, 4):
            cases.append(((f, rng.randint(1, 40), rng.randint(1, 40)), frame_tiles, seams))
    for _ in range(150):
        f = rng.randint(1, 30)
        seams = sorted(rng.sample(range(0, f + 2), rng.randint(0, min(5, f + 2))))
        cases.append(((f, rng.randint(1, 34), rng.randint(1, 34)), rng.randint(1, 4), seams))
    return cases


def test_epilogue_tiles_parity():
    for shape, frame_tiles, seams in epilogue_cases():
        ours, theirs = dfr.epilogue_tiles(shape, frame_tiles, seams), ref.epilogue_tiles(shape, frame_tiles, seams)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert (a.frames, a.heights, a.widths) == (b.frames, b.heights, b.widths)
            assert a.weight.dtype == b.blend_weight.dtype and torch.equal(a.weight, b.blend_weight)


def packed_positions(grid, num_cond: int, batch: int, seed: int) -> torch.Tensor:
    """(B, 3, F H W + num_cond, 2) positions: the base grid as [start, end) cells in (time, y, x) with a causal-ish
    time offset, then conditioning tokens of random extent, some of them partly off the canvas."""
    f, h, w = grid
    g = torch.Generator().manual_seed(seed)
    ft, yy, xx = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    starts = torch.stack([(ft * 8 - 7).clamp(min=0) / 24.0, yy * 32.0, xx * 32.0]).reshape(3, -1).float()
    ends = torch.stack([(ft * 8 + 1) / 24.0, yy * 32.0 + 32, xx * 32.0 + 32]).reshape(3, -1).float()
    base = torch.stack([starts, ends], -1)[None].repeat(batch, 1, 1, 1)
    scale = torch.tensor([(f * 8) / 24.0, h * 32.0, w * 32.0]).view(1, 3, 1)
    lo = torch.rand(batch, 3, num_cond, generator=g) * scale
    ext = torch.rand(batch, 3, num_cond, generator=g) * scale / 3 + 1e-3
    cond = torch.stack([lo, lo + ext], -1)
    return torch.cat([base, cond], 2)


def test_token_plans_parity_and_weights():
    rng = random.Random(3)
    checked = 0
    small = [c for c in epilogue_cases() if c[0][0] * c[0][1] * c[0][2] <= 2500]  # keep the sweep quick
    for shape, frame_tiles, seams in small[:50]:
        tiles = dfr.epilogue_tiles(shape, frame_tiles, seams)
        pos = packed_positions(shape, rng.randint(0, 9), rng.randint(1, 2), seed=checked)
        theirs_tiles = ref.epilogue_tiles(shape, frame_tiles, seams)
        try:
            theirs = ref.video_tile_plan(theirs_tiles, pos, *shape)
        except ValueError:
            with pytest.raises(ValueError, match="overlap no tile"):
                dfr.token_plans(tiles, pos, shape)
            continue
        ours = dfr.token_plans(tiles, pos, shape)
        acc = torch.zeros(pos.shape[2])
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a.keep, b.keep) and torch.equal(a.weights, b.weights)
            assert torch.equal(a.positions, b.coords)
            acc.index_add_(0, a.keep, a.weights)
        if (shape, frame_tiles) != ((12, 9, 15), 3):  # the clamped-overlap case, see below
            torch.testing.assert_close(acc, torch.ones_like(acc), atol=1e-6, rtol=0)
        checked += 1
    assert checked > 25


# ---------------------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("ratio", RATIOS)
def test_refine_tiles_cover_canvas_and_cut_on_keyframes(ratio):
    for n in range(ratio + 1, 500, ratio):
        for seams, frames, num_tiles, tiles in refine_rounds(n, ratio):
            cells = (frames - 1) // ratio + 1
            assert len(tiles) == min(num_tiles, len(seams))
            x = torch.arange(cells).view(1, 1, cells, 1, 1).float()
            stitched = dfr.stitch([x[:, :, t.span.start:t.span.end] for t in tiles], tiles)
            assert torch.equal(stitched, x)  # each cell owned by exactly one tile, in order
            for prev, t in zip(tiles, tiles[1:]):
                seam = prev.pixel_end
                assert seam in seams
                # the window opens on a keyframe it carries, or on frame 0 when the run-up reaches the start
                assert t.pixel_start in t.anchors or t.pixel_start == 0
                assert (t.span.start + t.span.lead - 1) * ratio == seam  # hands over right after the shared seam
                assert t.span.lead >= 2  # the image latent at local 0 and the seam are both dropped
            for t in tiles:
                assert t.num_frames == (t.span.size - 1) * ratio + 1
                assert all(s % ratio == 0 and t.pixel_start < s < t.pixel_end for s in t.slots)
                assert t.pixel_end in seams


def test_epilogue_windows_sum_to_one():
    for shape, frame_tiles, seams in epilogue_cases():
        if (shape, frame_tiles) == ((12, 9, 15), 3):
            continue  # the clamped-overlap case below
        total = torch.zeros(shape)
        for t in dfr.epilogue_tiles(shape, frame_tiles, seams):
            total[t.frames, t.heights, t.widths] += t.weight
        torch.testing.assert_close(total, torch.ones(shape), atol=1e-6, rtol=0)


def test_clamped_frame_overlap_overcounts_like_diffusers():
    """A frame axis ramped in 3+ tiles whose overlap was clamped to `F - tiles` lets tile i overlap tile i + 2, and
    the windows no longer sum to one. diffusers does the same (parity above); we also warn."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiles = dfr.epilogue_tiles((12, 9, 15), 3, [12])
    assert any("overlap tile" in str(w.message) for w in caught)
    total = torch.zeros(12, 9, 15)
    for t in tiles:
        total[t.frames, t.heights, t.widths] += t.weight
    assert abs(float(total.max()) - 1.2) < 1e-6


def test_worked_examples():
    assert dfr.resolve_canvas(97) == dfr.Canvas(97, 32, (32, 64, 96))
    assert dfr.resolve_canvas(57) == dfr.Canvas(65, 32, (32, 64))
    assert dfr.resolve_canvas(73) == dfr.Canvas(73, 24, (24, 48, 72))
    t0, t1 = dfr.refine_tiles([48, 96, 144, 192], 193, 2)
    assert t0 == dfr.RefineTile(dfr.Span(0, 13), 0, 96, (48, 96), (24, 72))
    assert t1 == dfr.RefineTile(dfr.Span(6, 25, lead=7), 48, 192, (48, 96, 144, 192), (72, 120, 168))


@pytest.mark.parametrize("call, match", [
    (lambda: dfr.resolve_canvas(50), "8 k \\+ 1"),
    (lambda: dfr.resolve_canvas(1), "8 k \\+ 1"),
    (lambda: dfr.refine_tiles([12, 32], 33, 2), "not on a latent border"),
    (lambda: dfr.refine_tiles([16, 24], 33, 2), "end on the last frame"),
    (lambda: dfr.refine_tiles([24, 16, 32], 33, 2), "strictly increasing"),
    (lambda: dfr.refine_tiles([16, 32], 33, 0), "num_tiles must be >= 1"),
    (lambda: dfr.split_at_seams([0, 4, 9], 2, -1, 10), "overlap must be >= 0"),
    (lambda: dfr.split_at_seams([1, 4, 9], 2, 1, 10), "run from 0"),
    (lambda: dfr.split_even(10, 3, 8), "not longer than the overlap"),
    (lambda: dfr.split_even(10, 0, 1), "num_tiles >= 1"),
    (lambda: dfr.epilogue_tiles((4, 8, 8), 0, []), "frame_tiles >= 1"),
    (lambda: dfr.token_plans(dfr.epilogue_tiles((2, 4, 4), 1, []), torch.zeros(1, 3, 31, 2), (2, 4, 4)),
     "positions must be"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------- official code

OFFICIAL = "/work/.mirror/Lightricks+LTX-2/repo"


def official_layout():
    try:
        src = subprocess.run(["git", "-C", OFFICIAL, "show",
                              "HEAD:packages/ltx-pipelines/src/ltx_pipelines/dfr_layout.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no local mirror of Lightricks/LTX-2")
    stub = types.ModuleType("ltx_core.types")
    stub.VIDEO_SCALE_FACTORS = types.SimpleNamespace(time=8)
    saved = {k: sys.modules.get(k) for k in ("ltx_core", "ltx_core.types")}
    sys.modules.update({"ltx_core": types.ModuleType("ltx_core"), "ltx_core.types": stub})
    try:
        module = types.ModuleType("official_dfr_layout")
        exec(compile(src, "official_dfr_layout.py", "exec"), module.__dict__)  # noqa: S102  (trusted local mirror)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


def test_official_tile_ranges_agree_on_dfr_grids():
    off = official_layout()
    for n in range(9, 700, 8):
        c = dfr.resolve_canvas(n)
        assert (c.frames, c.segment, list(c.keyframes)) == off.resolve_canvas(n)
        for seams, frames, num_tiles, tiles in refine_rounds(n, 8):
            for a, b in zip(tiles, off.tile_ranges(seams, frames, num_tiles), strict=True):
                assert (a.pixel_start, a.pixel_end, a.span.start, a.span.end, a.anchors, a.slots, a.span.lead) == \
                    (b.pixel_start, b.pixel_end, b.latent_start, b.latent_end_exclusive, b.anchor_kf_global,
                     b.slot_kf_global, b.drop_latent_prefix)
    # Where they part: uneven segments (diffusers' run-up is the *first* segment + 1, the official one the segment
    # before the tile) and one-latent segments (the official code refuses them).
    # Here diffusers' last window opens on pixel 16, which is no keyframe; the official one opens on keyframe 32.
    ours, theirs = dfr.refine_tiles([32, 48, 64], 65, 3)[2], off.tile_ranges([32, 48, 64], 65, 3)[2]
    assert (ours.span.start, ours.span.lead, ours.pixel_start) == (2, 5, 16)
    assert (theirs.latent_start, theirs.drop_latent_prefix, theirs.pixel_start) == (4, 3, 32)
    with pytest.raises(ValueError, match="under 2 latent frames"):
        off.tile_ranges([8, 16], 17, 2)
    assert [t.span for t in dfr.refine_tiles([8, 16], 17, 2)] == [dfr.Span(0, 2), dfr.Span(0, 3, lead=2)]


# ---------------------------------------------------------------------------------------------------- tiled denoise


def test_tiled_denoise_matches_diffusers_dfr_denoise():
    """`tiled_denoise` over an epilogue token plan (2 frame x 2 x 2 tiles, seam cut, slot tokens marked as keyframes,
    a pinned first frame) with our tiny 2.5 AVTransformer, against diffusers'
    `LTX2DFRTemporalRefinePipeline.denoise` (flow Euler, frozen audio, `video_tile_plan`) on the same weights."""
    import dataclasses

    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr_temporal_refine import LTX2DFRTemporalRefinePipeline
    from test_ltx2_transformer import randomize_
    from test_ltx2_transformer25 import tiny

    from ltx.ltx2.diffusers_layout import diffusers_transformer_config, transformer_to_diffusers
    from ltx.ltx2.patchify import keyframe_positions, video_positions
    from ltx.ltx2.transformer import AVTransformer, StreamInput

    cfg = dataclasses.replace(tiny("2.5"), out_channels=32, audio_out_channels=20)  # a denoiser: out = in
    ours = AVTransformer(cfg)
    randomize_(ours, seed=5)
    theirs = LTX2VideoTransformer3DModel(**diffusers_transformer_config(cfg))
    theirs.load_state_dict(transformer_to_diffusers(ours.state_dict()), strict=True)
    ours, theirs = ours.eval(), theirs.eval()
    g = torch.Generator().manual_seed(11)
    B, (F, H, W), fps, S, TA = 1, (4, 6, 6), 24.0, 5, 6
    base_n = F * H * W
    slots = [12, 20]  # two generated keyframes, one latent frame of tokens each
    slot_pos = torch.cat([keyframe_positions(1, H, W, fps, p) for p in slots], 2)
    slot_pos[:, 0, :, 1] = slot_pos[:, 0, :, 0] + 1 / fps  # a slot spans one pixel frame
    positions = torch.cat([video_positions(F, H, W, fps), slot_pos], 2)
    T = positions.shape[2]
    with torch.no_grad():  # randomize_ may leave the marker at zero; make it count
        marker = torch.randn(ours.keyframes_abs_pos_embedding.shape, generator=g) * 0.5
        ours.keyframes_abs_pos_embedding.copy_(marker)
        theirs.keyframes_abs_pos_embedding.copy_(marker)
    x = torch.randn(B, T, cfg.in_channels, generator=g)
    clean = torch.randn(B, T, cfg.in_channels, generator=g)
    mask = torch.zeros(B, T, 1)
    mask[:, : H * W] = 1.0  # pinned first frame
    mask[:, H * W: 2 * H * W] = 0.5  # a partly held second frame
    kf = torch.zeros(B, T)
    kf[:, : H * W] = 1.0
    kf[:, base_n:] = 1.0
    context = torch.randn(B, S, cfg.inner_dim, generator=g)
    audio_context = torch.randn(B, S, cfg.audio_inner_dim, generator=g)
    context_mask = torch.ones(B, S, dtype=torch.long)
    context_mask[:, :1] = 0
    audio = torch.randn(B, TA, cfg.audio_in_channels, generator=g)
    audio_pos = theirs.audio_rope.prepare_audio_coords(B, TA, torch.device("cpu"))
    sigmas = [0.9, 0.5]

    tiles = dfr.epilogue_tiles((F, H, W), 2, [2])
    plans = dfr.token_plans(tiles, positions, (F, H, W))
    assert len(plans) == 8 and all(int((p.keep >= base_n).sum()) > 0 for p in plans[4:])  # later tiles get slots

    def model(xt, token_sigma, sigma, kft, pos):
        v, _ = ours(StreamInput(x=xt, timesteps=token_sigma, sigma=sigma, positions=pos, context=context,
                                context_mask=context_mask, keyframes_mask=kft),
                    StreamInput(x=audio, timesteps=torch.zeros(B, TA), sigma=torch.zeros(B), positions=audio_pos,
                                context=audio_context, context_mask=context_mask))
        return v

    pipe = types.SimpleNamespace(transformer=theirs, scheduler=FlowMatchEulerDiscreteScheduler(), interrupt=False)
    pipe._inference_timesteps = types.MethodType(LTX2DFRTemporalRefinePipeline._inference_timesteps, pipe)

    def run_both():
        with torch.no_grad():
            got = dfr.tiled_denoise(model, x, clean, mask, kf, positions, sigmas, plans)
            untiled = dfr.tiled_denoise(model, x, clean, mask, kf, positions, sigmas)
            ref_plans = ref.video_tile_plan(ref.epilogue_tiles((F, H, W), 2, [2]), positions, F, H, W)
            want, _ = LTX2DFRTemporalRefinePipeline.denoise(
                pipe, latents=x, conditioning_mask=mask, clean_latents=clean, video_coords=positions,
                keyframes_mask=kf[..., None], prompt_embeds=context, audio_prompt_embeds=audio_context,
                prompt_attention_mask=context_mask, sigmas=sigmas, frame_rate=fps, audio_latents=audio,
                freeze_audio=True, video_tile_plan=ref_plans)
        return got, untiled, want

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared CPU: extra threads only contend
    try:
        got, untiled, want = run_both()
    finally:
        torch.set_num_threads(threads)
    diff = (got - want).abs().max().item()
    print(f"tiled_denoise vs diffusers: max |diff| {diff:.2e} (scale {want.abs().max():.2f})")
    assert diff <= 1e-5
    assert (got - untiled).abs().max() > 1e-3  # the tiling is exercised (tiles see less context than the canvas)
    torch.testing.assert_close(got[:, : H * W], clean[:, : H * W])  # the pinned frame stays clean

