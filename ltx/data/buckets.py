"""Resolution buckets for fine-tuning: every clip is cut and resized into one (frames, height, width) bucket.

Conventions
- A bucket is (frames, height, width) in pixels. It must be a size the VAE encodes: frames = t k + 1 and
  height, width multiples of s, for the VAE's temporal factor t and spatial factor s
  (`VideoVAE.cfg.temporal_factor / spatial_factor`: 8 and 8 for the demo VAE, 8 and 32 for the released
  ones). A 1-frame bucket holds images (and single frames).
- Text form: "17x64x64;9x64x96" (frames x height x width, `;` or `,` between buckets).

Bucket choice (`choose_bucket`), for a clip of F frames and H x W pixels:
1. Candidates: buckets with at most F frames. An image (F = 1) only fits 1-frame buckets. A video (F > 1)
   only fits multi-frame buckets, unless the list has none (image training: it then gives its first frame);
   so a video shorter than every video bucket is "too short", even when there are 1-frame buckets.
2. Optionally (`max_upscale`), drop buckets the clip could only cover by upscaling more than that factor.
3. Pick the closest aspect ratio (|log(H / W) - log(h / w)|); ties go to more frames, then the larger area.
No candidate: None (`no_bucket_reason` says why: too short or too small).

Fitting (`fit_to_bucket`): the first `frames` frames, resized aspect-preserving (antialiased bilinear, so a
downscale averages like an area filter) until the bucket is covered, then centre-cropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from ltx.core.shapes import invalid_sizes


class Bucket(NamedTuple):
    frames: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def check_bucket(bucket: Bucket, temporal_factor: int, spatial_factor: int) -> None:
    """Raise a ValueError naming the nearest valid sizes unless the VAE can encode `bucket`."""
    t, s = temporal_factor, spatial_factor
    problems = [f"{axis} {n} is not {f'{t}k + 1' if axis == 'frames' else f'a positive multiple of {s}'} "
                f"(nearest: {nearest})" for axis, n, nearest in invalid_sizes(*bucket, t, s)]
    if problems:
        raise ValueError(f"bucket {bucket}: " + "; ".join(problems))


def parse_buckets(spec: str | Iterable, temporal_factor: int, spatial_factor: int) -> list[Bucket]:
    """Buckets from "17x64x64;9x64x96", a list of such strings, or a list of (frames, height, width);
    each checked against the VAE factors (errors name the nearest valid sizes). Order is kept."""
    if isinstance(spec, str):
        spec = [spec]
    buckets: list[Bucket] = []
    for entry in spec:
        if isinstance(entry, str):
            parts = [p for p in re.split(r"[;,\s]+", entry.strip()) if p]
        else:
            parts = [entry]
        for p in parts:
            if isinstance(p, str):
                m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", p.strip().lower())
                if m is None:
                    raise ValueError(f"bucket {p!r} is not FRAMESxHEIGHTxWIDTH (e.g. 17x64x64)")
                b = Bucket(*map(int, m.groups()))
            else:
                values = list(p)
                if len(values) != 3:
                    raise ValueError(f"bucket {values} is not [frames, height, width]")
                b = Bucket(*map(int, values))
            check_bucket(b, temporal_factor, spatial_factor)
            if b in buckets:
                raise ValueError(f"bucket {b} is listed twice")
            buckets.append(b)
    if not buckets:
        raise ValueError("no buckets given; pass at least one FRAMESxHEIGHTxWIDTH, e.g. buckets='[\"17x64x64\"]'")
    return buckets


def upscale_needed(height: int, width: int, bucket: Bucket) -> float:
    """The resize factor that makes an H x W frame cover the bucket (> 1: upscaling)."""
    return max(bucket.height / height, bucket.width / width)


def _candidates(frames: int, height: int, width: int, buckets: Iterable[Bucket],
                max_upscale: float | None) -> list[Bucket]:  # fmt: skip
    buckets = list(buckets)
    video_buckets = any(b.frames > 1 for b in buckets)
    fits = [b for b in buckets if b.frames <= frames and (b.frames > 1 or frames == 1 or not video_buckets)]
    if max_upscale is not None:
        fits = [b for b in fits if upscale_needed(height, width, b) <= max_upscale]
    return fits


def choose_bucket(frames: int, height: int, width: int, buckets: Iterable[Bucket], *,
                  max_upscale: float | None = None) -> Bucket | None:  # fmt: skip
    """The bucket for a clip of `frames` x `height` x `width` (rules in the module docstring), or None."""
    fits = _candidates(frames, height, width, buckets, max_upscale)
    if not fits:
        return None
    aspect = math.log(height / width)

    def key(b: Bucket):
        return round(abs(math.log(b.height / b.width) - aspect), 9), -b.frames, -b.height * b.width

    return min(fits, key=key)


def no_bucket_reason(frames: int, height: int, width: int, buckets: Iterable[Bucket], *,
                     max_upscale: float | None = None) -> str:  # fmt: skip
    """Why `choose_bucket` found nothing: "too short: ..." or "too small: ..." (one line)."""
    buckets = list(buckets)
    by_frames = _candidates(frames, height, width, buckets, None)
    if not by_frames:
        if frames == 1:
            return "an image, and no bucket has 1 frame (add one, e.g. 1x64x64)"
        shortest = min(b.frames for b in buckets if b.frames > 1)
        return f"too short: {frames} frames, the shortest video bucket has {shortest}"
    need = min(upscale_needed(height, width, b) for b in by_frames)
    return (f"too small: {height}x{width} would need upscaling x{need:.2f} to fill a bucket "
            f"(max_upscale={max_upscale})")


def fit_to_bucket(video: Tensor, bucket: Bucket) -> Tensor:
    """(3, F, H, W) float -> (3, bucket.frames, bucket.height, bucket.width): the first frames, resized
    (aspect kept, antialiased bilinear) to cover the bucket, centre-cropped. Any value range."""
    _, num_frames, H, W = video.shape
    if num_frames < bucket.frames:
        raise ValueError(f"clip of {num_frames} frames is shorter than bucket {bucket}")
    x = video[:, : bucket.frames].transpose(0, 1)  # (F, 3, H, W)
    scale = upscale_needed(H, W, bucket)
    h, w = max(bucket.height, round(H * scale)), max(bucket.width, round(W * scale))
    if (h, w) != (H, W):
        x = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (h - bucket.height) // 2, (w - bucket.width) // 2
    x = x[:, :, top : top + bucket.height, left : left + bucket.width]
    return x.transpose(0, 1).contiguous()  # (3, F, h, w)
