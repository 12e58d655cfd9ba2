"""Pictures of videos: a grid with one row per video and a few evenly spaced frames per row.

Used for validation samples during training, evaluation sheets and reconstruction checks. Videos are
(3, F, H, W) tensors in [-1, 1] (the ShapesWorld / VAE pixel convention).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ltx.core.checkpoint import atomic_file


def video_grid(videos: Sequence[Tensor], frames: int = 5, gap: int = 2) -> np.ndarray:
    """(rows * H + gaps, frames * W + gaps, 3) uint8: row r shows `frames` evenly spaced frames of videos[r]."""
    if not videos:
        raise ValueError("video_grid needs at least one video")
    shapes = {tuple(v.shape) for v in videos}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4 or next(iter(shapes))[0] != 3:
        raise ValueError(f"videos must share one (3, F, H, W) shape, got {sorted(shapes)}")
    _, F, H, W = videos[0].shape
    idx = torch.linspace(0, F - 1, min(frames, F)).round().long().tolist()
    sheet = torch.ones(3, len(videos) * (H + gap) - gap, len(idx) * (W + gap) - gap)  # white gaps
    for r, v in enumerate(videos):
        for c, f in enumerate(idx):
            sheet[:, r * (H + gap) : r * (H + gap) + H, c * (W + gap) : c * (W + gap) + W] = v[:, f].float()
    return ((sheet.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def save_video_grid(path: str | os.PathLike, videos: Sequence[Tensor], frames: int = 5, scale: int = 2) -> Path:
    """Write `video_grid` as a PNG (nearest-neighbour upscaled by `scale`), atomically."""
    from PIL import Image

    grid = video_grid(videos, frames)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        image.save(f, format="PNG")
    return path
