"""Patchify round trip and token positions: units (seconds, px, px), the causal fix, keyframe offsets, and the
same values as the reference (`SymmetricPatchifier` + `latent_to_pixel_coords`) when it is installed."""

from __future__ import annotations

import pytest
import torch

from ltx.ltxv.patchify import patchify, pixel_grid, token_positions, unpatchify


def test_round_trip_and_order():
    x = torch.randn(2, 5, 3, 4, 6)
    t = patchify(x)
    assert t.shape == (2, 72, 5)
    assert torch.equal(t[:, 1 * 24 + 2 * 6 + 3], x[:, :, 1, 2, 3])  # (frame, row, column) order
    assert torch.equal(unpatchify(t, 3, 4, 6), x)
    with pytest.raises(ValueError, match="3x4x5"):
        unpatchify(t, 3, 4, 5)


def test_positions_units_and_causal_fix():
    pos = token_positions(4, 1, 2, fps=25.0, causal=True)
    assert pos.shape == (1, 3, 8) and pos.dtype == torch.float32
    torch.testing.assert_close(pos[0, 0, ::2], torch.tensor([0, 1, 9, 17]) / 25.0)  # frames 0, 1, 9, 17
    assert pos[0, 2].tolist() == [0, 32] * 4
    plain = token_positions(3, 1, 1, fps=8.0, causal=False)
    assert plain[0, 0].tolist() == [0.0, 1.0, 2.0]
    shifted = pixel_grid(2, 1, 1, causal=True, frame_offset=16)
    assert shifted[0, 0].tolist() == [16, 17]
    demo = token_positions(3, 1, 2, fps=8.0, causal=True, scale=(8, 8, 8))  # the demo VAE: 8 px per latent
    assert demo[0, 0, ::2].tolist() == [0.0, 1 / 8, 9 / 8] and demo[0, 2].tolist() == [0, 8] * 3
    coarse = pixel_grid(3, 1, 1, causal=True, scale=(4, 16, 16))  # a 4x temporal VAE: frames 0, 1, 5
    assert coarse[0, 0].tolist() == [0, 1, 5]


def test_positions_match_reference():
    pytest.importorskip("ltx_video")
    from ltx_video.models.autoencoders.vae_encode import latent_to_pixel_coords_from_factors
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier

    x = torch.randn(2, 4, 3, 2, 5)
    tokens, coords = SymmetricPatchifier(1).patchify(x)
    assert torch.equal(tokens, patchify(x))
    for causal in (False, True):
        ref = latent_to_pixel_coords_from_factors(coords, (8, 32, 32), causal).float()
        ref[:, 0] = ref[:, 0] * (1.0 / 24.0)
        assert torch.equal(token_positions(3, 2, 5, fps=24.0, causal=causal, batch=2), ref)
