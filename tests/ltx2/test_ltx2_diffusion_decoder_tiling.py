"""The diffusion decoder's tiled decode (`ltx.ltx2.diffusion_decoder.decode(..., tiling=)`), ltx-core's layout:
stages 1-3 on the whole latents, stages 4-5 per tile on the stage-4 grid, blended with trapezoid weights.

Always run: one tile covering everything is the untiled decode bitwise; the layout's tiles cover the output and
their weights sum to 1 (or the decode divides by the sum); away from the seams (by more than the tiled stages'
reach) a tiled decode is the untiled one; the pipelines' decode applies `AVModels.video_decoder_tiling`; bad
options are one line. diffusers' tiled decode is a different layout (stride-cropped tiles blended in place, its
own noise order), so it is not a parity target (README: where the official code and diffusers differ).

`test_tiled_decode_matches_ltx_core_head`: ltx-core at 400fd31's `DiffusionVideoDecoder.tiled_decode`
(eager-SDPA NA) on the released spatial layout, six tilings (spatial, temporal, both; one to three steps; x0 and v;
a clip padded to the kernels; overlapping ramps that do not sum to 1), fp32. Measured max |diff| 0.0 in three;
9.5e-7 in two, the same as the untiled decodes of those latents (attention rounding); 7.2e-7 where the weights are
divided (untiled: 0.0; ours divides by the separable product of the 1-D weight sums, ltx-core by a dense weight
canvas summed tile by tile). It runs from the local mirror of Lightricks/LTX-2 (or LTX_CORE_HEAD_SRC).
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch
from official_mirror import run_with_ltx_core
from torch import nn

from ltx.ltx2 import pipelines
from ltx.ltx2.diffusion_decoder import (
    DiffusionDecoder,
    DiffusionDecodeTiling,
    check_tiling,
    decode,
    min_tile,
    min_tile_overlap,
    tile_cell,
    tile_layout,
)
from tests.ltx2.test_ltx2_diffusion_decoder import ATOL, CFG, _randomize

# the released spatial layout (8 px cells, 32 px per latent), narrow and shallow (ltx-core hard-codes 8 / 32 / 32)
RELEASED = dataclasses.replace(
    CFG, patch_size=4, stage_kernels=((3, 1, 1), (3, 1, 1), (3, 1, 1), (3, 3, 3), (3, 3, 3)), stage5_kernel=(3, 5, 5),
    upsamples=(((1, 2, 2), 2), ((2, 1, 1), 1), ((2, 2, 2), 1), ((2, 2, 2), 1)))
HUGE = DiffusionDecodeTiling(spatial_tile_px=4096, spatial_overlap_px=64, temporal_tile_frames=4096,
                             temporal_overlap_frames=64)


@pytest.fixture(scope="module")
def released():
    return _randomize(DiffusionDecoder(RELEASED).eval())


def _decoder(cfg, output_type: str, steps: int) -> DiffusionDecoder:
    return _randomize(DiffusionDecoder(dataclasses.replace(cfg, model_output_type=output_type,
                                                           default_num_inference_steps=steps)).eval())


def test_released_layout_constants():
    """The numbers ltx-core derives for this layout, and for the released decoder (its class defaults with the
    released stage-5 kernel): cells of 2 frames / 8 px, a tile of at least 3 cells, overlaps of 8 frames / 32 px
    (released: 8 frames / 64 px, which its default 80 / 24, 768 / 64 tiling meets)."""
    assert tile_cell(RELEASED) == (2, 8, 8) and min_tile(RELEASED) == (3, 3, 3)
    assert min_tile_overlap(RELEASED) == (8, 32)
    full = dataclasses.replace(type(CFG)(), stage5_kernel=(3, 5, 5))
    assert tile_cell(full) == (2, 8, 8) and min_tile_overlap(full) == (8, 64)
    check_tiling(full, DiffusionDecodeTiling())


# ------------------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize("output_type, steps", [("x0", 1), ("x0", 3), ("v", 2)])
@pytest.mark.parametrize("tiling", [HUGE, DiffusionDecodeTiling(spatial_tile_px=None, temporal_tile_frames=None),
                                    DiffusionDecodeTiling(spatial_tile_px=None, temporal_tile_frames=24,
                                                          temporal_overlap_frames=8)])
def test_one_tile_is_the_untiled_decode(output_type, steps, tiling):
    """Tiles larger than the video, untiled axes, a temporal tile that covers all 17 frames: the same noise, the
    same calls, weights of exactly 1, so the same bits. On the small test layout (4 px cells) and a clip padded
    to the kernels."""
    ours = _decoder(CFG, output_type, steps)
    for shape in [(2, 8, 3, 2, 3), (1, 8, 1, 1, 2)]:
        z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            tiled = decode(ours, z, seed=4, tiling=tiling)
            untiled = decode(ours, z, seed=4)
        assert tiled.shape == untiled.shape and torch.equal(tiled, untiled)


# a stage-5 kernel wider than its reach (one block): a 6-cell smallest tile, a 4-cell overlap, so a short last tile
# is grown back to 6 cells (ltx-core `_grow_last_tile_to_min`)
GROW = dataclasses.replace(RELEASED, stage_depths=(1, 1, 1, 1, 1), stage5_kernel=(3, 11, 11))


@pytest.mark.parametrize("cfg, latent, tiling", [
    (RELEASED, (5, 4, 7), DiffusionDecodeTiling(spatial_tile_px=64, spatial_overlap_px=32, temporal_tile_frames=16,
                                                temporal_overlap_frames=8)),
    (RELEASED, (9, 3, 9), DiffusionDecodeTiling(spatial_tile_px=80, spatial_overlap_px=32, temporal_tile_frames=24,
                                                temporal_overlap_frames=8)),
    (RELEASED, (3, 9, 2), DiffusionDecodeTiling(spatial_tile_px=104, spatial_overlap_px=40,
                                                temporal_tile_frames=None)),
    (GROW, (3, 5, 2), DiffusionDecodeTiling(spatial_tile_px=72, spatial_overlap_px=32, temporal_tile_frames=None)),
])  # fmt: skip
def test_tiles_cover_the_output_and_weights_sum_to_one(cfg, latent, tiling):
    """Per axis: the cell intervals cover the stage-4 grid in order, each at least `min_tile` cells and overlapping
    its neighbour by at least the overlap; their pixel intervals cover the output exactly (temporal: the causal
    2x map, the origin tile one frame shorter) and the 1-D weights sum to 1 at every pixel."""
    frames, rows, cols = tile_layout(cfg, latent, tiling)
    cells = (8 * (latent[0] - 1) // 2 + 1, 4 * latent[1], 4 * latent[2])
    pixels = (8 * (latent[0] - 1) + 1, 32 * latent[1], 32 * latent[2])
    cell, smallest = tile_cell(cfg), min_tile(cfg)
    if cfg is GROW:
        assert smallest[1] == 6 and [(t.start, t.end) for t in rows] == [(0, 9), (5, 14), (10, 19), (14, 20)]
    overlaps = (tiling.temporal_overlap_frames, tiling.spatial_overlap_px, tiling.spatial_overlap_px)
    for axis, tiles in enumerate((frames, rows, cols)):
        assert tiles[0].start == 0 and tiles[-1].end == cells[axis]
        assert tiles[0].pixel_start == 0 and tiles[-1].pixel_end == pixels[axis]
        total = torch.zeros(pixels[axis])
        for i, t in enumerate(tiles):
            assert t.end - t.start >= smallest[axis]
            drop = axis == 0
            assert t.pixel_start == t.start * cell[axis] - (drop and t.start > 0)
            assert t.pixel_end == t.end * cell[axis] - drop
            if i:
                assert tiles[i - 1].start < t.start < tiles[i - 1].end <= t.end
                assert (tiles[i - 1].end - t.start) * cell[axis] >= overlaps[axis]
            if len(tiles) > 1:
                assert t.weights.shape == (t.pixel_end - t.pixel_start,) and 0 < t.weights.min() <= 1
            total[t.pixel_start:t.pixel_end] += t.weights
        assert (total - 1).abs().max() <= 1e-6
    assert max(len(frames), len(rows), len(cols)) > 1  # something is tiled


def test_overlapping_ramps_are_divided_by_their_sum():
    """A tile shorter than two overlaps: its ramps overlap, the weights no longer sum to 1 and the decode divides
    by their sum (ltx-core), so a decoder that outputs a constant canvas decodes to that constant."""
    tiling = DiffusionDecodeTiling(spatial_tile_px=None, temporal_tile_frames=12, temporal_overlap_frames=8)
    frames, _, _ = tile_layout(RELEASED, (3, 1, 1), tiling)
    total = torch.zeros(17)
    for t in frames:
        total[t.pixel_start:t.pixel_end] += t.weights
    assert len(frames) == 3 and (total - 1).abs().max() > 0.05  # measured: up to 1.074
    ours = _decoder(RELEASED, "x0", 1)
    with torch.no_grad():
        ours.conv_out.weight.zero_()
        ours.conv_out.bias.fill_(0.375)  # every pixel of every tile: 0.375
        out = decode(ours, torch.randn(1, 8, 3, 1, 1), seed=0, tiling=tiling)
    assert out.shape == (1, 3, 17, 32, 32) and (out - 0.375).abs().max() <= 1e-6


@pytest.mark.parametrize("output_type, steps", [("x0", 2), ("v", 2)])
def test_tiles_match_the_untiled_decode_away_from_seams(released, output_type, steps):
    """With overlaps at least stage 4's and stage 5's reach together (2 cells of frames, 3 of rows / columns; the
    least overlaps, 4 cells each, are wider),
    every pixel whose weight is exactly 1 sees the same keys as in the untiled decode, so it is the untiled value:
    this checks where each tile's context and noise are cut (the causal temporal offsets, the ghost frames of the
    last tile). The seams differ (tiling is not a no-op). Multi-step: every tile starts from its part of one noise
    canvas. float64 but for the RoPE rotation, a float32 island whose positions restart at 0 in each tile: the
    same angles differ by float32 rounding (measured 4.0e-6 x0, 2.0e-6 v, after two steps; the seams by 0.4 - 0.6)."""
    ours = _decoder(RELEASED, output_type, steps).double()
    ours.load_state_dict(released.state_dict())
    tiling = DiffusionDecodeTiling(spatial_tile_px=64, spatial_overlap_px=32, temporal_tile_frames=16,
                                   temporal_overlap_frames=8)
    z = torch.randn(1, 8, 4, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        tiled = decode(ours, z, seed=5, tiling=tiling)
        untiled = decode(ours, z, seed=5)
    layout = tile_layout(RELEASED, (4, 3, 3), tiling)
    exclusive = []
    for tiles, n in zip(layout, tiled.shape[2:]):
        mask = torch.zeros(n, dtype=torch.bool)
        for t in tiles:
            mask[t.pixel_start:t.pixel_end][t.weights == 1] = True
            if t.weights.numel() == 1:
                mask[:] = True
        exclusive.append(mask)
    assert [len(t) for t in layout] == [3, 2, 2]
    keep = exclusive[0][:, None, None] & exclusive[1][:, None] & exclusive[2]
    assert 0.1 < keep.float().mean() < 0.5  # measured: 16% of the pixels
    diff = (tiled - untiled).abs().amax(dim=(0, 1))
    assert diff[keep].max() <= 1e-5 and diff[~keep].max() > 1e-2


def test_the_pipelines_decode_applies_the_tiling(released):
    """`pipelines.decode` hands `AVModels.video_decoder_tiling` to the diffusion decode (the audio path stubbed)."""
    class Stub(nn.Module):
        sample_rate = 16_000

        def decode(self, x):
            return x

        def forward(self, x):
            return x

    tiling = DiffusionDecodeTiling(spatial_tile_px=64, spatial_overlap_px=32, temporal_tile_frames=None)
    z = torch.randn(1, 8, 2, 1, 3, generator=torch.Generator().manual_seed(3))
    models = pipelines.AVModels(None, None, Stub(), Stub(), video_decoder=released, video_decoder_tiling=tiling)
    with torch.no_grad():
        video, _ = pipelines.decode(models, z, torch.zeros(1, 8, 4, 16), torch.Generator().manual_seed(7))
        want = decode(released, z, generator=torch.Generator().manual_seed(7), tiling=tiling)
        untiled = decode(released, z, generator=torch.Generator().manual_seed(7))
    assert torch.equal(video, want) and not torch.equal(video, untiled)


@pytest.mark.parametrize("tiling, match", [
    (dict(spatial_tile_px=60, spatial_overlap_px=32), r"multiples of 8 px"),
    (dict(spatial_tile_px=64, spatial_overlap_px=36), r"multiples of 8 px"),
    (dict(spatial_tile_px=64, spatial_overlap_px=24), r"overlap at least 32 px"),
    (dict(spatial_tile_px=16, spatial_overlap_px=0), r"tile at least 24 px"),
    (dict(temporal_tile_frames=4, temporal_overlap_frames=2), r"tile at least 6 frames"),
    (dict(temporal_tile_frames=16, temporal_overlap_frames=6), r"overlap at least 8 frames"),
    (dict(temporal_tile_frames=15, temporal_overlap_frames=8), r"multiples of 2 frames"),
])  # fmt: skip
def test_a_tiling_the_decoder_cannot_use_is_one_line(tiling, match):
    bad = DiffusionDecodeTiling(**tiling)
    with pytest.raises(ValueError, match=match) as e:
        check_tiling(RELEASED, bad)
    assert "\n" not in str(e.value)


def test_bad_options_are_one_line(released):
    with pytest.raises(ValueError, match=r"spatial tile 64 with overlap 64: expected integers with 0 <= overlap"):
        DiffusionDecodeTiling(spatial_tile_px=64, spatial_overlap_px=64)
    with pytest.raises(ValueError, match="temporal tile 16.0"):
        DiffusionDecodeTiling(temporal_tile_frames=16.0)
    with pytest.raises(ValueError, match="callback= sees the one canvas of an untiled decode"):
        decode(released, torch.randn(1, 8, 3, 1, 1), seed=0, tiling=HUGE, callback=lambda i, x: None)


# ------------------------------------------------------------------------------------------------ opt-in: ltx-core


_OFFICIAL_SCRIPT = textwrap.dedent("""
    import sys, torch
    from ltx_core.model.video_vae.model_configurator import _build_diffusion_video_decoder
    from ltx_core.model.video_vae.transformer import EagerSdpaAttention, NeighborhoodAttention3D
    from ltx_core.tiling import DimensionSizeConfig, TileSizeConfig
    sys.path.insert(0, sys.argv[1])
    from tests.ltx2.test_ltx2_diffusion_decoder import _randomize
    from tests.ltx2.test_ltx2_diffusion_decoder_tiling import RELEASED
    from ltx.ltx2.diffusion_decoder import DiffusionDecoder, DiffusionDecodeTiling, decode
    import dataclasses

    def axis(tile):
        return DimensionSizeConfig() if tile is None else DimensionSizeConfig(tile_size=tile[0], overlap=tile[1])

    # (output type, steps, latent shape, (frames, overlap), (pixels, overlap)); ltx-core's multi-step x0 takes
    # batch 1 only (its to_velocity calls .item() on the per-sample sigma)
    for kind, steps, shape, t, s in [
            ("x0", 1, (2, 8, 3, 2, 3), (16, 8), (64, 32)), ("x0", 1, (1, 8, 3, 2, 3), (12, 8), (48, 32)),
            ("x0", 3, (1, 8, 3, 3, 2), (16, 8), (64, 32)), ("v", 2, (2, 8, 4, 2, 3), (16, 8), None),
            ("v", 2, (1, 8, 2, 3, 3), None, (56, 40)), ("x0", 2, (1, 8, 1, 1, 3), (16, 8), (64, 32))]:
        cfg = dataclasses.replace(RELEASED, model_output_type=kind, default_num_inference_steps=steps)
        ours = _randomize(DiffusionDecoder(cfg).eval())
        official = _build_diffusion_video_decoder(cfg.to_metadata()).eval()
        for m in official.modules():
            if isinstance(m, NeighborhoodAttention3D):
                m.attention_function = EagerSdpaAttention()
        official.load_state_dict(ours.state_dict(), strict=True)
        z = torch.randn(shape, generator=torch.Generator().manual_seed(5))
        tiling = DiffusionDecodeTiling(temporal_tile_frames=t and t[0], temporal_overlap_frames=t[1] if t else 0,
                                       spatial_tile_px=s and s[0], spatial_overlap_px=s[1] if s else 0)
        config = TileSizeConfig(frames=axis(t), height=axis(s), width=axis(s))
        with torch.no_grad():
            chunks = list(official.tiled_decode(z, config, generator=torch.Generator().manual_seed(3)))
            a = torch.cat(chunks, dim=2)
            b = decode(ours, z, generator=torch.Generator().manual_seed(3), tiling=tiling)
            untiled = decode(ours, z, generator=torch.Generator().manual_seed(3))
        assert a.shape == b.shape, (a.shape, b.shape)
        assert (b - untiled).abs().max() > 1e-3  # the tiling does something
        print(kind, steps, shape, len(chunks), (a - b).abs().max().item())
""")


@pytest.mark.parity
def test_tiled_decode_matches_ltx_core_head(tmp_path_factory):
    """ltx-core's tiled decode (chunks concatenated) against ours from the same generator, fp32 (module
    docstring: 0.0 in three cases, <= 9.5e-7 in three)."""
    repo = Path(__file__).resolve().parents[2]
    diffs = run_with_ltx_core(_OFFICIAL_SCRIPT, tmp_path_factory.getbasetemp(), str(repo))
    assert len(diffs) == 6 and max(diffs) <= ATOL, diffs
