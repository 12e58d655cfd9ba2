"""The DFR canvas layout (ltx/ltx2/dfr.py) against diffusers 0.42.1 `pipelines/ltx2/dfr_layout.py`, field by field
over sweeps of frame counts, rounds, grid sizes and tile counts (blend windows and token plans compared bitwise),
plus invariants that need no reference: refine tiles stitch to the whole canvas and cut on keyframes, epilogue
windows sum to one, token-plan weights sum to one per token. Where the official Lightricks/LTX-2 `dfr_layout.py`
is in the local mirror, its `tile_ranges` is compared on the uniform grids DFR produces. The denoising passes run a
tiny random 2.5 transformer on both sides: `tiled_denoise` against diffusers' `denoise`, and two whole temporal
refine rounds (`refine_round`) against `LTX2DFRTemporalRefinePipeline.__call__` with stubbed text/VAE/upsampler,
and DFR's stages 1 and 2 (`keyframe_pass`) against `LTX2DFRPipeline.__call__`.
"""

from __future__ import annotations

import itertools
import logging
import random
import types
import warnings

import pytest
import torch
from diffusers.pipelines.ltx2 import dfr_layout as ref
from official_mirror import load_official

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
    (lambda: dfr.refine_round(None, torch.zeros(1, 2, 5, 1, 1), torch.zeros(1, 2, 1, 1, 1), [8, 16],
                              torch.zeros(1, 3, 2), round_index=1, seed=0, fps=24.0), "keyframes"),
    (lambda: dfr.refine_round(None, torch.zeros(1, 2, 5, 1, 1), torch.zeros(1, 2, 2, 1, 1), [8, 16],
                              torch.zeros(1, 3, 2), round_index=0, seed=0, fps=24.0), "round_index"),
    (lambda: dfr.ancestral_denoise(None, *[torch.zeros(1, 1, 1)] * 4, torch.zeros(1, 3, 1, 2), [0.5, 0.0], None),
     "positive"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------- official code

def official_layout():
    stub = types.ModuleType("ltx_core.types")
    stub.VIDEO_SCALE_FACTORS = types.SimpleNamespace(time=8)
    name = "official_dfr_layout"
    return load_official({name: "packages/ltx-pipelines/src/ltx_pipelines/dfr_layout.py"},
                         {"ltx_core": types.ModuleType("ltx_core"), "ltx_core.types": stub})[name]


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



# ---------------------------------------------------------------------------------------------------- refine round


def test_audio_window_matches_diffusers():
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr_temporal_refine import _audio_window_for_tile

    audio = torch.randn(2, 61, 7, generator=torch.Generator().manual_seed(4))
    for start, frames, fps, seconds in itertools.product((0, 48, 96, 200), (9, 49, 97), (24.0, 48.0, 25.0),
                                                          (2.4, 73 / 24.0)):
        cond = dfr.conditioning_fps(2 * fps)
        ours = dfr.audio_window(audio, start, frames, 2 * fps, seconds, cond)
        theirs = _audio_window_for_tile(audio, start, frames, 2 * fps, seconds, cond, 25.0)
        assert torch.equal(ours, theirs)
    assert dfr.conditioning_fps(48.0) == 60.0 and dfr.conditioning_fps(30.0) == 30.0


def pass_model(transformer, context, audio_context, context_mask, calls: list | None = None):
    """A `render` pass model over our transformer with fixed text contexts: (video tokens, token sigmas, sigma,
    keyframe mask, positions, audio tokens, audio sigma) -> both streams' velocities; `calls` collects each video
    input."""
    from ltx.ltx2.patchify import audio_positions
    from ltx.ltx2.transformer import StreamInput

    def model(xt, token_sigma, sigma, kft, pos, audio, audio_sigma):
        if calls is not None:
            calls.append(xt.clone())
        batch, ta = xt.shape[0], audio.shape[1]
        return transformer(StreamInput(x=xt, timesteps=token_sigma, sigma=sigma, positions=pos, context=context,
                                       context_mask=context_mask, keyframes_mask=kft),
                           StreamInput(x=audio, timesteps=audio_sigma[:, None].expand(batch, ta), sigma=audio_sigma,
                                       positions=audio_positions(ta, batch=batch), context=audio_context,
                                       context_mask=context_mask))

    return model


def tiny_models(seed: int):
    """Our tiny random 2.5 AVTransformer (a denoiser: out = in channels) and diffusers' model on the same weights,
    with a nonzero keyframe marker."""
    import dataclasses

    from diffusers import LTX2VideoTransformer3DModel
    from test_ltx2_transformer import randomize_
    from test_ltx2_transformer25 import tiny

    from ltx.ltx2.diffusers_layout import diffusers_transformer_config, transformer_to_diffusers
    from ltx.ltx2.transformer import AVTransformer

    cfg = dataclasses.replace(tiny("2.5"), out_channels=32, audio_out_channels=20)
    ours = AVTransformer(cfg)
    randomize_(ours, seed=seed)
    theirs = LTX2VideoTransformer3DModel(**diffusers_transformer_config(cfg))
    theirs.load_state_dict(transformer_to_diffusers(ours.state_dict()), strict=True)
    with torch.no_grad():  # randomize_ may leave the marker at zero; make it count
        marker = torch.randn(ours.keyframes_abs_pos_embedding.shape, generator=torch.Generator().manual_seed(seed))
        ours.keyframes_abs_pos_embedding.copy_(0.5 * marker)
        theirs.keyframes_abs_pos_embedding.copy_(0.5 * marker)
    return cfg, ours.eval(), theirs.eval()


class _Bar:
    def update(self):
        pass

    def close(self):
        pass


def _stubbed(base: type, scheduler, transformer, context, audio_context, channels: int, audio_channels: int,
             mel_bins: int, **extra):
    """An instance of diffusers' DFR pipeline class `base` around `transformer` and `scheduler`, without the
    DiffusionPipeline registry (plain attributes): the text path hands back fixed contexts, the VAE statistics are
    the identity (mean 0, std 1, scale 1), input checks and the progress bar do nothing; `extra` attributes on top."""

    class Stub(base):
        _execution_device = torch.device("cpu")

        def __init__(self):
            pass

        def __setattr__(self, name, value):  # skip the registry bookkeeping of DiffusionPipeline
            object.__setattr__(self, name, value)

        def check_inputs(self, **kwargs):
            pass

        def progress_bar(self, total=None):
            return _Bar()

        def maybe_free_model_hooks(self):
            pass

    stats = types.SimpleNamespace
    pipe = Stub()
    attributes = dict(
        transformer=transformer, scheduler=scheduler,
        vae=stats(latents_mean=torch.zeros(channels), latents_std=torch.ones(channels),
                  config=stats(scaling_factor=1.0, timestep_conditioning=False)),
        audio_vae=stats(latents_mean=torch.zeros(audio_channels * mel_bins),
                        latents_std=torch.ones(audio_channels * mel_bins)),
        connectors=lambda embeds, mask, padding_side: (context, audio_context, mask),
        tokenizer_padding_side="left", vae_spatial_compression_ratio=32, vae_temporal_compression_ratio=8,
        transformer_spatial_patch_size=1, transformer_temporal_patch_size=1, audio_sampling_rate=16000,
        audio_hop_length=160, audio_vae_temporal_compression_ratio=4, audio_vae_mel_compression_ratio=4,
        audio_mel_bins=4 * mel_bins, **extra)
    for name, value in attributes.items():
        setattr(pipe, name, value)
    return pipe


def diffusers_refine_pipeline(transformer, upsampled: torch.Tensor, context, audio_context, channels: int,
                              audio_channels: int, mel_bins: int):
    """diffusers' `LTX2DFRTemporalRefinePipeline` with its real round loop (`__call__`, `prepare_latents`, `denoise`,
    `temporal_tile_plan`, `_audio_window_for_tile`, stitching, carry) and `LTXEulerAncestralRFScheduler(eta=0.5)`,
    around the given transformer. Stubbed: the text path (the connectors hand back fixed contexts), the VAE
    statistics (mean 0, std 1, scale 1: normalizing is the identity), the temporal upsampler (returns `upsampled`),
    input checks and the progress bar."""
    from diffusers import LTXEulerAncestralRFScheduler
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr_temporal_refine import LTX2DFRTemporalRefinePipeline

    class Upsampler:
        dtype = torch.float32

        def __call__(self, x):
            assert x.shape[2] == (upsampled.shape[2] - 1) // 2 + 1
            return upsampled.clone()

    return _stubbed(LTX2DFRTemporalRefinePipeline, LTXEulerAncestralRFScheduler(eta=0.5), transformer, context,
                    audio_context, channels, audio_channels, mel_bins, temporal_latent_upsampler=Upsampler())


def test_refine_round_matches_diffusers():
    """`refine_round` (round 1: 2 tiles over seams [48, 96, 144] of a 145-frame canvas, anchors incl. one at a tile's
    local frame 0, one slot generated by both tiles, 4 ancestral steps per tile) against diffusers'
    `LTX2DFRTemporalRefinePipeline.__call__(output_type="latent")` on the same tiny transformer, seed and inputs:
    the stitched canvas, the carried keyframes and their positions. Then round 2 (4 tiles) from round 1's outputs."""
    from ltx.core.sampling import ancestral_step_x0
    from ltx.ltx2.patchify import audio_positions, patchify_video
    from ltx.ltx2.transformer import StreamInput

    cfg, ours, theirs = tiny_models(seed=5)
    g = torch.Generator().manual_seed(12)
    B, C, H, W, S, fps, seed = 1, cfg.in_channels, 3, 4, 5, 24.0, 1234
    audio_ch, mel = 5, cfg.audio_in_channels // 5
    up = torch.randn(B, C, 19, H, W, generator=g)  # after the temporal x2 upsampler: 145 frames
    keys = torch.randn(B, C, 3, H, W, generator=g)
    positions = [24, 48, 72]
    audio = torch.randn(B, audio_ch, 77, mel, generator=g)  # public (B, C, L, M) stage-1 audio
    packed_audio = audio.transpose(1, 2).flatten(2, 3)
    context = torch.randn(B, S, cfg.inner_dim, generator=g)
    audio_context = torch.randn(B, S, cfg.audio_inner_dim, generator=g)
    context_mask = torch.ones(B, S, dtype=torch.long)
    context_mask[:, :1] = 0
    assert torch.equal(audio_positions(9, batch=B), theirs.audio_rope.prepare_audio_coords(B, 9, torch.device("cpu")))

    calls = []

    def model(xt, token_sigma, sigma, kft, pos, window):
        ta = window.shape[1]
        v, _ = ours(StreamInput(x=xt, timesteps=token_sigma, sigma=sigma, positions=pos, context=context,
                                context_mask=context_mask, keyframes_mask=kft),
                    StreamInput(x=window, timesteps=torch.zeros(B, ta), sigma=torch.zeros(B),
                                positions=audio_positions(ta, batch=B), context=audio_context,
                                context_mask=context_mask))
        calls.append((xt, token_sigma, sigma, kft, pos, window, v))
        return v

    def theirs_round(upsampled, carry, carry_positions, round_index, canvas_frames, canvas_fps):
        pipe = diffusers_refine_pipeline(theirs, upsampled, context, audio_context, C, audio_ch, mel)
        return pipe(latents=torch.zeros(B, C, (upsampled.shape[2] - 1) // 2 + 1, H, W), keyframes_latents=carry,
                    keyframe_positions=carry_positions, audio_latents=audio, height=32 * H, width=32 * W,
                    num_frames=canvas_frames, frame_rate=canvas_fps, source_seconds=73 / 24.0,
                    round_index=round_index, prompt_embeds=context, prompt_attention_mask=context_mask,
                    generator=torch.Generator().manual_seed(seed), output_type="latent", return_dict=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared CPU: extra threads only contend
    try:
        with torch.no_grad():
            r1 = dfr.refine_round(model, up, keys, positions, packed_audio, round_index=1, seed=seed, fps=fps,
                                  source_seconds=73 / 24.0)
            want_video, _, want_keys, want_pos = theirs_round(up, keys, positions, 1, 73, fps)
            up2 = torch.randn(B, C, 37, H, W, generator=g)  # round 2's upsampled 289-frame canvas
            r2 = dfr.refine_round(model, up2, r1.keyframes, r1.positions, packed_audio, round_index=2, seed=seed,
                                  fps=2 * fps, source_seconds=73 / 24.0)
            want2_video, _, want2_keys, want2_pos = theirs_round(up2, want_keys, want_pos, 2, 145, 2 * fps)
    finally:
        torch.set_num_threads(threads)

    t0, t1 = r1.tiles
    assert (t0.anchors, t0.slots, t1.anchors, t1.slots, t1.pixel_start) == ((48, 96), (24, 72), (48, 96, 144),
                                                                           (72, 120), 48)
    assert r1.positions == tuple(want_pos) == (24, 48, 72, 96, 120, 144)
    assert r2.positions == tuple(want2_pos) and len(r2.tiles) == 4 and len(r2.positions) == 12
    diffs = {name: (a - b).abs().max().item() for name, a, b in [
        ("round 1 canvas", r1.latent, want_video), ("round 1 keyframes", r1.keyframes, want_keys),
        ("round 2 canvas", r2.latent, want2_video), ("round 2 keyframes", r2.keyframes, want2_keys)]}
    print("refine_round vs diffusers, max |diff|:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert all(v <= 1e-5 for v in diffs.values())
    assert (r1.latent - up).abs().max() > 0.1  # it did denoise

    # Invariants, from the recorded model calls of round 1 (4 steps x 2 tiles).
    hw = H * W
    assert len(calls) >= 8
    for k, (xt, token_sigma, sigma, kft, pos, window, _) in enumerate(calls[:8]):
        tile = r1.tiles[k // 4]
        base, n_anchor, n_slot = tile.span.size * hw, len(tile.anchors) * hw, len(tile.slots) * hw
        assert xt.shape[1] == base + n_anchor + n_slot
        anchors = slice(base, base + n_anchor)
        # anchors sit at (1 - 0.95) sigma, everything else at sigma; the marker is on frame 0 and the slots only
        torch.testing.assert_close(token_sigma[:, anchors], (sigma[:, None] * (1 - 0.95)).expand(B, n_anchor))
        assert torch.equal(token_sigma[:, :base], sigma[:, None].expand(B, base))
        assert torch.equal(token_sigma[:, base + n_anchor:], sigma[:, None].expand(B, n_slot))
        assert kft[:, :hw].eq(1).all() and kft[:, hw:base + n_anchor].eq(0).all()
        assert kft[:, base + n_anchor:].eq(1).all()
        # anchors and slots span exactly one pixel frame at their tile-local position (60 fps time base)
        extra = pos[:, 0, base:]
        torch.testing.assert_close((extra[..., 1] - extra[..., 0]) * 60, torch.ones_like(extra[..., 0]))
        local = [p - tile.pixel_start for p in (*tile.anchors, *tile.slots)]
        torch.testing.assert_close(extra[0, ::hw, 0] * 60, torch.tensor(local, dtype=torch.float32))
        assert window.shape[1] == round(tile.num_frames / 60 * 25)
    # the start state: base = the tile's crop, slots seeded from the nearest latent frame, anchors at 0.95 x their
    # content (noise_scale 0 shows the layout); with the round's noise it is what the first call saw
    for t in r1.tiles:
        crop, carried = up[:, :, t.span.start:t.span.end], [keys[:, :, positions.index(p // 2)][:, :, None]
                                                            for p in t.anchors]
        st = dfr.refine_tile_state(t, crop, carried, 60.0, 0.0, None)
        base, n_anchor = st.base, len(t.anchors) * hw
        assert torch.equal(st.x[:, :base], patchify_video(crop))
        assert torch.equal(st.x[:, base:base + n_anchor], 0.95 * torch.cat([patchify_video(a) for a in carried], 1))
        nearest = [crop[:, :, (p - t.pixel_start) // 8][:, :, None] for p in t.slots]  # slots sit on latent borders
        assert torch.equal(st.x[:, st.slots], torch.cat([patchify_video(f) for f in nearest], 1))
        assert st.mask[:, base:base + n_anchor].eq(0.95).all() and st.mask[:, :base].eq(0).all()
        assert st.mask[:, st.slots].eq(0).all() and st.clean[:, st.slots].eq(0).all()
    first = dfr.refine_tile_state(t0, up[:, :, :t0.span.end], [keys[:, :, 0:1], keys[:, :, 1:2]], 60.0, 0.975,
                                  torch.Generator().manual_seed(seed))
    assert torch.equal(first.x, calls[0][0]) and torch.equal(first.positions, calls[0][4])
    # every step re-pins the anchors: the next call's anchors are 0.95 content + 0.05 x the ancestral step's output,
    # free tokens the step's output itself (its noise replayed from the tile's seed 1234 + 1000 + i)
    sigmas = [*dfr.REFINE_SIGMAS, 0.0]
    for i, t in enumerate(r1.tiles):
        steps = torch.Generator().manual_seed(seed + 1000 + i)
        st = dfr.refine_tile_state(t, up[:, :, t.span.start:t.span.end],
                                   [keys[:, :, positions.index(p // 2)][:, :, None] for p in t.anchors], 60.0, 0.0,
                                   None)
        m = st.mask
        for k in range(3):
            xt, token_sigma, _, _, _, _, v = calls[4 * i + k]
            x0 = (xt - v * token_sigma[..., None]) * (1 - m) + st.clean * m
            y = ancestral_step_x0(xt, x0, sigmas[k], sigmas[k + 1], torch.randn(xt.shape, generator=steps), eta=0.5)
            nxt = calls[4 * i + k + 1][0]
            torch.testing.assert_close(nxt, y * (1 - m) + st.clean * m, atol=1e-6, rtol=0)
            a = slice(st.base, st.slots.start)
            assert (nxt[:, a] - st.clean[:, a]).abs().max() < 0.06 * (y[:, a] - st.clean[:, a]).abs().max()
    # stitching: every canvas cell is the denoised cell of exactly the tile that owns it
    owner = [None] * up.shape[2]
    for i, t in enumerate(r1.tiles):
        for c in range(t.span.start + t.span.lead, t.span.end):
            assert owner[c] is None
            owner[c] = i
            assert torch.equal(r1.latent[:, :, c], r1.tile_latents[i][:, :, c - t.span.start])
    assert None not in owner
    # carry: seams pass through bitwise, slot 72 (generated by both tiles) is the first tile's
    for k, p in enumerate(r1.positions):
        if p in (48, 96, 144):
            assert torch.equal(r1.keyframes[:, :, k], keys[:, :, positions.index(p // 2)])
    # the last step lands on x0, so a free slot's final latent is the last call's x - v sigma
    def final_slot(call, tile, p):
        xt, token_sigma, *_, v = call
        start = (tile.span.size + len(tile.anchors) + tile.slots.index(p)) * hw
        return (xt - v * token_sigma[..., None])[:, start:start + hw]

    slot_72 = patchify_video(r1.keyframes[:, :, 2:3])
    assert r1.positions[2] == 72 and torch.equal(slot_72, final_slot(calls[3], t0, 72))
    assert (slot_72 - final_slot(calls[7], t1, 72)).abs().max() > 1e-3  # the second tile's version differs
    assert torch.equal(patchify_video(r1.keyframes[:, :, 4:5]), final_slot(calls[7], t1, 120))


# ---------------------------------------------------------------------------------------------------- keyframe pass


def diffusers_dfr_pipeline(transformer, context, audio_context, channels: int, audio_channels: int, mel_bins: int):
    """diffusers' `LTX2DFRPipeline` (its real `__call__`, `prepare_latents`, `prepare_audio_latents`, `denoise`,
    `_unpack_video_and_slots`) with `FlowMatchEulerDiscreteScheduler` around the given transformer. Stubbed as in
    `diffusers_refine_pipeline`: text path, VAE statistics (identity), input checks, progress bar."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr import LTX2DFRPipeline

    return _stubbed(LTX2DFRPipeline, FlowMatchEulerDiscreteScheduler(), transformer, context, audio_context,
                    channels, audio_channels, mel_bins, audio_latent_channels=audio_channels)


def test_keyframe_pass_matches_diffusers():
    """`keyframe_pass` as DFR's stage 1 (41 frames -> 49-frame canvas, slots at [24, 48], 8 distilled steps, fresh
    video + audio noise) and stage 2 (x2 size, video and slots seeded from the x2 upsampled stage-1 latents, stage-1
    audio re-noised, the stage-1 canvas as IC-LoRA reference, 3 steps) against `LTX2DFRPipeline.__call__(
    output_type="latent")` on the same tiny transformer, seed and inputs: canvas, slots, positions and audio."""
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES

    from ltx.ltx2.patchify import audio_positions, patchify_video
    from ltx.ltx2.transformer import StreamInput

    cfg, ours, theirs = tiny_models(seed=7)
    g = torch.Generator().manual_seed(21)
    B, C, H, W, S, fps, seed, requested = 1, cfg.in_channels, 3, 4, 5, 24.0, 4321, 41
    audio_ch, mel = 5, cfg.audio_in_channels // 5
    canvas = dfr.resolve_canvas(requested)
    assert (canvas.frames, canvas.keyframes) == (49, (24, 48))
    F, K = (canvas.frames - 1) // 8 + 1, len(canvas.keyframes)
    A = round(canvas.frames / fps * 25)
    context = torch.randn(B, S, cfg.inner_dim, generator=g)
    audio_context = torch.randn(B, S, cfg.audio_inner_dim, generator=g)
    context_mask = torch.ones(B, S, dtype=torch.long)
    context_mask[:, :1] = 0
    calls = []

    def model(xt, token_sigma, sigma, kft, pos, audio, audio_sigma):
        ta = audio.shape[1]
        v, va = ours(StreamInput(x=xt, timesteps=token_sigma, sigma=sigma, positions=pos, context=context,
                                 context_mask=context_mask, keyframes_mask=kft),
                     StreamInput(x=audio, timesteps=audio_sigma[:, None].expand(B, ta), sigma=audio_sigma,
                                 positions=audio_positions(ta, batch=B), context=audio_context,
                                 context_mask=context_mask))
        calls.append((xt, token_sigma, sigma, kft, pos))
        return v, va

    def theirs_pass(h, w, sigmas, **kwargs):
        pipe = diffusers_dfr_pipeline(theirs, context, audio_context, C, audio_ch, mel)
        return pipe(height=32 * h, width=32 * w, num_frames=requested, frame_rate=fps, sigmas=list(sigmas),
                    prompt_embeds=context, prompt_attention_mask=context_mask,
                    generator=torch.Generator().manual_seed(seed), output_type="latent", return_dict=False, **kwargs)

    def up2(x):  # a stand-in for the x2 spatial upsampler: any tensor will do, both sides get the same one
        return x.repeat_interleave(2, 3).repeat_interleave(2, 4) + 0.1 * torch.randn(
            *x.shape[:3], 2 * x.shape[3], 2 * x.shape[4], generator=g)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            s1 = dfr.keyframe_pass(model, torch.zeros(B, C, F, H, W), None, canvas.keyframes,
                                   torch.zeros(B, A, cfg.audio_in_channels), DISTILLED_SIGMA_VALUES, fps=fps,
                                   generator=torch.Generator().manual_seed(seed))
            n1 = len(calls)
            w1_video, w1_audio, w1_slots, w1_pos = theirs_pass(H, W, DISTILLED_SIGMA_VALUES)
            video2, slots2 = up2(s1.latent), up2(s1.slots)
            public_audio = s1.audio.unflatten(2, (audio_ch, mel)).transpose(1, 2)  # (B, C, A, M)
            s2 = dfr.keyframe_pass(model, video2, slots2, canvas.keyframes, s1.audio, STAGE_2_DISTILLED_SIGMA_VALUES,
                                   fps=fps, generator=torch.Generator().manual_seed(seed), reference=s1.latent)
            w2_video, w2_audio, w2_slots, w2_pos = theirs_pass(
                2 * H, 2 * W, STAGE_2_DISTILLED_SIGMA_VALUES, latents=video2, keyframes_latents=slots2,
                audio_latents=public_audio, reference_latents=s1.latent, reference_downscale_factor=2)
    finally:
        torch.set_num_threads(threads)

    def packed(public_audio):
        return public_audio.transpose(1, 2).flatten(2, 3)

    assert w1_pos == w2_pos == list(s1.positions) == list(s2.positions) == [24, 48]
    assert w1_video.shape == (B, C, F, H, W) and w2_slots.shape == (B, C, K, 2 * H, 2 * W)
    diffs = {name: (a - b).abs().max().item() for name, a, b in [
        ("stage 1 canvas", s1.latent, w1_video), ("stage 1 slots", s1.slots, w1_slots),
        ("stage 1 audio", s1.audio, packed(w1_audio)), ("stage 2 canvas", s2.latent, w2_video),
        ("stage 2 slots", s2.slots, w2_slots), ("stage 2 audio", s2.audio, packed(w2_audio))]}
    print("keyframe_pass vs diffusers, max |diff|:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert all(v <= 1e-5 for v in diffs.values())
    assert (s2.latent - video2).abs().max() > 0.1 and (s2.slots - slots2).abs().max() > 0.1  # it did denoise

    # Invariants from the recorded calls: [base | slots] (stage 1), [base | slots | reference] (stage 2).
    assert n1 == len(DISTILLED_SIGMA_VALUES) and len(calls) == n1 + len(STAGE_2_DISTILLED_SIGMA_VALUES)
    for k, (xt, token_sigma, sigma, kft, pos) in enumerate(calls):
        h, w = (H, W) if k < n1 else (2 * H, 2 * W)
        hw, base = h * w, F * h * w
        n_ref = 0 if k < n1 else F * H * W
        assert xt.shape[1] == base + K * hw + n_ref
        slot = slice(base, base + K * hw)
        # the marker: the first latent frame and the slots, nothing else (not the reference)
        assert kft[:, :hw].eq(1).all() and kft[:, hw:base].eq(0).all() and kft[:, slot].eq(1).all()
        assert kft[:, base + K * hw:].eq(0).all()
        # slots are free (schedule sigma), the reference pinned (sigma 0)
        assert torch.equal(token_sigma[:, :base + K * hw], sigma[:, None].expand(B, base + K * hw))
        assert token_sigma[:, base + K * hw:].eq(0).all()
        # each slot spans exactly one pixel frame, at its canvas pixel frame
        t = pos[:, 0, slot]
        torch.testing.assert_close((t[..., 1] - t[..., 0]) * fps, torch.ones_like(t[..., 0]))
        torch.testing.assert_close(t[0, ::hw, 0] * fps, torch.tensor(canvas.keyframes, dtype=torch.float32))
    # stage 2's slots start from the upsampled stage-1 slots: the first call sees them noised to sigma 0.909375
    st = dfr.keyframe_pass_state(video2, slots2, canvas.keyframes, s1.audio, fps, 0.0, None)
    assert torch.equal(st.x[:, st.slots], patchify_video(slots2)) and torch.equal(st.x[:, :st.base],
                                                                                    patchify_video(video2))
    st = dfr.keyframe_pass_state(video2, slots2, canvas.keyframes, s1.audio, fps, STAGE_2_DISTILLED_SIGMA_VALUES[0],
                                 torch.Generator().manual_seed(seed), reference=s1.latent)
    assert torch.equal(st.x, calls[n1][0]) and torch.equal(st.positions, calls[n1][4])


# ---------------------------------------------------------------------------------------------------- the pipeline


def tiny_upsamplers(channels: int, seed: int):
    """Random tiny spatial x2 and temporal x2 latent upsamplers (raw latents in and out)."""
    from test_ltx2_transformer import randomize_

    from ltx.ltx2.upsampler import LatentUpsampler2, LatentUpsamplerConfig

    spatial = LatentUpsampler2(LatentUpsamplerConfig(in_channels=channels, mid_channels=32, num_blocks_per_stage=1))
    temporal = LatentUpsampler2(LatentUpsamplerConfig(in_channels=channels, mid_channels=32, num_blocks_per_stage=1,
                                                      spatial_upsample=False, temporal_upsample=True))
    randomize_(spatial, seed=seed)
    randomize_(temporal, seed=seed + 1)
    return spatial.eval(), temporal.eval()


def test_render_matches_diffusers_chain():
    """`dfr.render` (41 frames -> the 49-frame canvas, an image at frame 0 and one at pixel frame 17, stage 1 at half
    size, the real spatial x2 upsampler between the stages, stage 2 with the detailing reference, two temporal
    rounds with the real temporal x2 upsampler, then the trim to (41 - 1) x 4 + 1 = 161 frames) against diffusers'
    chain of the same passes (`LTX2DFRPipeline` twice, the upsampler on raw latents, `LTX2DFRTemporalRefinePipeline`
    twice) on the same tiny transformer, VAE statistics and images, with one generator threaded through all of them
    as the official `DFRPipeline` threads its noiser. diffusers' public latents are raw (denormalized), ours stay
    normalized: the comparison normalizes theirs. (Dropping the frame-17 image on our side alone: video diff 4.2.)"""
    from diffusers import LTXEulerAncestralRFScheduler
    from diffusers.pipelines.ltx2.pipeline_ltx2_dfr_temporal_refine import LTX2DFRTemporalRefinePipeline
    from diffusers.pipelines.ltx2.utils import STAGE_2_DISTILLED_SIGMA_VALUES

    from ltx.ltx2.upsampler import upsample_latent

    cfg, ours, theirs = tiny_models(seed=9)
    g = torch.Generator().manual_seed(31)
    B, C, H, W, S, fps, seed, requested = 1, cfg.in_channels, 4, 4, 5, 24.0, 777, 41
    audio_ch, mel = 5, cfg.audio_in_channels // 5
    spatial, temporal = tiny_upsamplers(C, seed=3)
    mean, std = 0.3 * torch.randn(C, generator=g), 0.5 + torch.rand(C, generator=g)
    context = torch.randn(B, S, cfg.inner_dim, generator=g)
    audio_context = torch.randn(B, S, cfg.audio_inner_dim, generator=g)
    context_mask = torch.ones(B, S, dtype=torch.long)
    images = {h: [(0, torch.randn(1, C, 1, h, h, generator=g), 1.0), (17, torch.randn(1, C, 1, h, h, generator=g),
                                                                       0.8)] for h in (H // 2, H)}

    def norm(x):
        return (x - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)

    def denorm(x):
        return x * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)

    stage_model = pass_model(ours, context, audio_context, context_mask)

    def refine_model(xt, token_sigma, sigma, kft, pos, window):
        return stage_model(xt, token_sigma, sigma, kft, pos, window, torch.zeros(B))[0]

    def with_stats(pipe):
        pipe.vae = types.SimpleNamespace(latents_mean=mean, latents_std=std,
                                         config=types.SimpleNamespace(scaling_factor=1.0, timestep_conditioning=False))
        # the images, already encoded at the pass' size (the second positional argument is the height)
        pipe.encode_conditions = lambda *args, **kwargs: [(p, lat, s, 1) for p, lat, s in images[args[1] // 32]]
        return pipe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    passes = []
    try:
        with torch.no_grad():
            got = dfr.render(stage_model, stage_model, refine_model, num_frames=requested, latent_size=(H, W),
                             channels=C, audio_frames=round(49 / fps * 25), audio_channels=cfg.audio_in_channels,
                             fps=fps, spatial_upsample=lambda x: upsample_latent(spatial, x, mean, std),
                             temporal_upsample=lambda x: upsample_latent(temporal, x, mean, std), rounds=2, seed=seed,
                             generator=torch.Generator().manual_seed(seed), detailing=True,
                             conditions_half=[dfr.FrameCondition(*c) for c in images[H // 2]],
                             conditions=[dfr.FrameCondition(*c) for c in images[H]], on_pass=passes.append)

            common = dict(prompt_embeds=context, prompt_attention_mask=context_mask, output_type="latent",
                          return_dict=False, generator=torch.Generator().manual_seed(seed), conditions=[])
            one = with_stats(diffusers_dfr_pipeline(theirs, context, audio_context, C, audio_ch, mel))
            v1, a1, k1, p1 = one(height=32 * H // 2, width=32 * W // 2, num_frames=requested, frame_rate=fps,
                                 **common)
            up = denorm(upsample_latent(spatial, norm(v1), mean, std))
            up_slots = denorm(upsample_latent(spatial, norm(k1), mean, std))
            two = with_stats(diffusers_dfr_pipeline(theirs, context, audio_context, C, audio_ch, mel))
            v2, _, k2, p2 = two(height=32 * H, width=32 * W, num_frames=requested, frame_rate=fps, latents=up,
                                keyframes_latents=up_slots, audio_latents=a1, reference_latents=v1,
                                reference_downscale_factor=2, sigmas=list(STAGE_2_DISTILLED_SIGMA_VALUES), **common)

            class Temporal:
                dtype = torch.float32

                def __call__(self, x):  # raw in, raw out (diffusers denormalizes around it)
                    return temporal(x)

            refine = with_stats(_stubbed(LTX2DFRTemporalRefinePipeline, LTXEulerAncestralRFScheduler(eta=0.5),
                                         theirs, context, audio_context, C, audio_ch, mel,
                                         temporal_latent_upsampler=Temporal()))
            video, keys, positions, frames, rate = v2, k2, p2, 49, fps
            for r in (1, 2):
                video, _, keys, positions = refine(
                    latents=video, keyframes_latents=keys, keyframe_positions=positions, audio_latents=a1,
                    height=32 * H, width=32 * W, num_frames=frames, frame_rate=rate, source_seconds=49 / fps,
                    condition_num_frames=requested, round_index=r, **common)
                frames, rate = 2 * (frames - 1) + 1, 2 * rate
    finally:
        torch.set_num_threads(threads)

    assert passes == ["stage 1", "stage 2", "round 1", "round 2"]
    assert (got.num_frames, got.fps, frames) == (161, 96.0, 193)
    assert got.latent.shape == (B, C, 21, H, W) and video.shape[2] == 25  # their canvas keeps its padding
    diffs = {"video": (got.latent - norm(video)[:, :, :21]).abs().max().item(),
             "audio": (got.audio - a1.transpose(1, 2).flatten(2, 3)).abs().max().item()}
    print("render vs diffusers chain, max |diff|:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert all(v <= 1e-5 for v in diffs.values())
    # the frame-0 image at strength 1 is the first latent frame, exactly, after every pass
    torch.testing.assert_close(got.latent[:, :, :1], images[H][0][1], rtol=0, atol=1e-6)
