"""ltx.ltx2.patchify vs ltx-core 1.0.0: token order, round trips, RoPE positions (bitwise, fp32 and bf16)."""

from __future__ import annotations

import pytest
import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
from ltx_core.conditioning.types.reference_video_cond import VideoConditionByReferenceLatent
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape

from ltx.ltx2 import patchify as P

GRIDS = [(1, 1, 1), (1, 4, 6), (3, 2, 5), (16, 17, 30)]
FPS = [24.0, 25.0, 30.0, 23.976, 8]


def _video_tools(grid, fps, batch=1, channels=4):
    shape = VideoLatentShape(batch=batch, channels=channels, frames=grid[0], height=grid[1], width=grid[2])
    return VideoLatentTools(VideoLatentPatchifier(patch_size=1), shape, fps)


# ---------------------------------------------------------------------------------------------- patchify


@pytest.mark.parametrize("grid", GRIDS)
def test_video_patchify_matches_reference(grid):
    latent = torch.randn(2, 5, *grid)
    ref_p = VideoLatentPatchifier(patch_size=1)
    tokens = P.patchify_video(latent)
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 5)
    assert torch.equal(tokens, ref_p.patchify(latent))
    back = P.unpatchify_video(tokens, *grid)
    assert torch.equal(back, latent)
    assert torch.equal(back, ref_p.unpatchify(tokens, VideoLatentShape(2, 5, *grid)))
    # order: frame-major, then row, then column; channels last
    f, h, w = grid[0] - 1, grid[1] - 1, grid[2] - 1
    assert torch.equal(tokens[:, -1], latent[:, :, f, h, w])
    if grid[2] > 1:
        assert torch.equal(tokens[:, 1], latent[:, :, 0, 0, 1])


@pytest.mark.parametrize("frames", [1, 7, 126])
def test_audio_patchify_matches_reference(frames):
    latent = torch.randn(2, 8, frames, 16).to(torch.bfloat16)
    ref_p = AudioPatchifier(patch_size=1)
    tokens = P.patchify_audio(latent)
    assert tokens.shape == (2, frames, 128)
    assert torch.equal(tokens, ref_p.patchify(latent))
    assert torch.equal(P.unpatchify_audio(tokens), latent)
    assert torch.equal(P.unpatchify_audio(tokens), ref_p.unpatchify(tokens, AudioLatentShape(2, 8, frames, 16)))
    assert torch.equal(tokens[0, 0, 16:32], latent[0, 1, 0])  # features ordered (channel, mel bin)


def test_patchify_errors():
    with pytest.raises(ValueError, match=r"\(B, C, F, H, W\)"):
        P.patchify_video(torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="video grid"):
        P.unpatchify_video(torch.zeros(1, 10, 4), 2, 2, 2)
    with pytest.raises(ValueError, match="mel_bins"):
        P.patchify_audio(torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match="audio tokens"):
        P.unpatchify_audio(torch.zeros(1, 3, 100))


# ---------------------------------------------------------------------------------------------- positions


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("fps", FPS)
def test_video_positions_bitwise(dtype, grid, fps):
    ref = _video_tools(grid, fps, batch=2).create_initial_state("cpu", dtype).positions
    ours = P.video_positions(*grid, fps, dtype, batch=2)
    assert ours.dtype == ref.dtype == dtype and ours.shape == (2, 3, grid[0] * grid[1] * grid[2], 2)
    assert torch.equal(ours, ref)


def test_video_positions_values():
    pos = P.video_positions(3, 1, 2, 24.0)
    # causal fix: frame 0 covers pixel frames [0, 1), frame k >= 1 covers [8k - 7, 8k + 1)
    assert pos[0, 0, ::2].flatten().tolist() == pytest.approx([0, 1 / 24, 1 / 24, 9 / 24, 9 / 24, 17 / 24])
    assert pos[0, 2, :2].tolist() == [[0.0, 32.0], [32.0, 64.0]]
    nc = P.video_positions(2, 1, 1, 1.0, causal=False)
    assert nc[0, 0].tolist() == [[0.0, 8.0], [8.0, 16.0]]
    bf = P.video_positions(16, 1, 1, 24.0, torch.bfloat16)
    assert not torch.equal(bf.float(), P.video_positions(16, 1, 1, 24.0))  # the bf16 rounding is kept


@pytest.mark.parametrize("frames", [1, 2, 25, 121, 251])
@pytest.mark.parametrize("shift", [0, 3])
def test_audio_positions_bitwise(frames, shift):
    patchifier = AudioPatchifier(patch_size=1, shift=shift)
    ref = AudioLatentTools(patchifier, AudioLatentShape(2, 8, frames, 16)).create_initial_state(
        "cpu", torch.bfloat16).positions
    ours = P.audio_positions(frames, batch=2, shift=shift)
    assert ours.dtype == torch.float32 and ours.shape == (2, 1, frames, 2)
    assert torch.equal(ours, ref)


def test_audio_positions_values_and_non_causal():
    pos = P.audio_positions(4)
    assert pos[0, 0].flatten().tolist() == pytest.approx([0, 0.01, 0.01, 0.05, 0.05, 0.09, 0.09, 0.13])
    ref = AudioPatchifier(patch_size=1, is_causal=False).get_patch_grid_bounds(AudioLatentShape(1, 8, 9, 16))
    assert torch.equal(P.audio_positions(9, causal=False), ref)


@pytest.mark.parametrize("num_frames, fps", [(121, 24.0), (97, 25.0), (9, 30.0), (1, 24.0), (241, 23.976)])
def test_latent_shapes(num_frames, fps):
    px = VideoPixelShape(batch=1, frames=num_frames, height=544, width=960, fps=fps)
    ref = VideoLatentShape.from_pixel_shape(px)
    assert P.video_latent_shape(num_frames, 544, 960) == (ref.frames, ref.height, ref.width)
    assert P.audio_latent_frames_for_video(num_frames, fps) == AudioLatentShape.from_video_pixel_shape(px).frames
    assert P.audio_latent_frames(num_frames / fps) == AudioLatentShape.from_duration(1, num_frames / fps).frames


def _conditioned(item, grid, fps, dtype):
    tools = _video_tools(grid, fps)
    state = tools.create_initial_state("cpu", dtype)
    return item.apply_to(state, tools).positions[:, :, tools.target_shape.token_count():]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frame_idx", [0, 1, 8, 57, 120])
@pytest.mark.parametrize("fps", [24.0, 25.0])
def test_keyframe_positions_bitwise(dtype, frame_idx, fps):
    key_grid = (1, 3, 4) if frame_idx % 2 == 0 else (2, 3, 4)
    keyframes = torch.randn(1, 4, *key_grid).to(dtype)
    ref = _conditioned(VideoConditionByKeyframeIndex(keyframes, frame_idx, 1.0), (3, 3, 4), fps, dtype)
    ours = P.keyframe_positions(*key_grid, fps, frame_idx)
    assert ref.dtype == ours.dtype == torch.float32  # cat with the bf16 grid positions promotes to float32
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("downscale", [1, 2, 3])
@pytest.mark.parametrize("fps", [24.0, 30.0])
def test_reference_positions_bitwise(downscale, fps):
    ref_latent = torch.randn(1, 4, 2, 2, 3)
    ref = _conditioned(VideoConditionByReferenceLatent(ref_latent, downscale, 1.0), (2, 4, 6), fps, torch.float32)
    ours = P.reference_positions(2, 2, 3, fps, downscale)
    assert torch.equal(ours, ref)


def test_position_errors():
    with pytest.raises(ValueError, match="positive"):
        P.video_positions(0, 2, 2, 24.0)
    with pytest.raises(ValueError, match="fps"):
        P.video_positions(1, 2, 2, 0.0)
    with pytest.raises(ValueError, match="frame_idx"):
        P.keyframe_positions(1, 2, 2, 24.0, -1)
    with pytest.raises(ValueError, match="downscale_factor"):
        P.reference_positions(1, 2, 2, 24.0, 0)
    with pytest.raises(ValueError, match="audio frames"):
        P.audio_positions(0)
    with pytest.raises(ValueError, match="no latent"):
        P.video_latent_shape(0, 512, 768)
    with pytest.raises(ValueError, match="duration"):
        P.audio_latent_frames(-1.0)
