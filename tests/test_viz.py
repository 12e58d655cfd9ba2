"""Contact sheets: frames land where the grid says, in the [-1, 1] -> [0, 255] mapping."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ltx.core.viz import save_video_grid, video_grid


def test_grid_places_each_frame():
    F, H, W = 9, 4, 6
    # video r, frame f: a constant value that encodes (r, f)
    value = lambda r, f: -1 + 0.1 * r + 0.02 * f  # noqa: E731
    videos = [torch.stack([torch.full((3, H, W), value(r, f)) for f in range(F)], dim=1) for r in range(2)]
    grid = video_grid(videos, frames=3, gap=2)
    assert grid.shape == (2 * H + 2, 3 * W + 2 * 2, 3) and grid.dtype.name == "uint8"
    for r in range(2):
        for c, f in enumerate((0, 4, 8)):  # evenly spaced over 9 frames
            tile = grid[r * (H + 2) : r * (H + 2) + H, c * (W + 2) : c * (W + 2) + W]
            expected = round((value(r, f) + 1) * 127.5)
            assert (tile == expected).all(), (r, f, tile[0, 0], expected)
    assert (grid[H : H + 2] == 255).all()  # the white gap between rows


def test_grid_rejects_mixed_shapes_and_writes_png(tmp_path):
    with pytest.raises(ValueError, match="share one"):
        video_grid([torch.zeros(3, 9, 4, 4), torch.zeros(3, 9, 4, 8)])
    path = save_video_grid(tmp_path / "sheet.png", [torch.zeros(3, 5, 4, 4)], frames=5, scale=2)
    assert Image.open(path).size == (2 * (5 * 4 + 4 * 2), 2 * 4)
