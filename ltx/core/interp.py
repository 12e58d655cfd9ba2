"""Spherical interpolation (SLERP) and keyframe interpolation of noise, latents or text embeddings.

slerp(a, b, t) walks the great circle from a to b at constant angular speed: with omega the angle between
a and b, slerp = sin((1 - t) omega) / sin(omega) * a + sin(t omega) / sin(omega) * b (Shoemake, 1985). For
Gaussian noise this keeps the norm (and so the "noise-ness") that a straight LERP would shrink in the middle.
When a and b are nearly parallel or antiparallel (sin(omega) < eps) the formula is 0/0 and we fall back to
LERP: for parallel inputs that is the right limit, for antiparallel ones there is no unique great circle.

Computed in float32 (an fp32 island: acos and small sines), returned in the input dtype. Leading dimensions
broadcast; `dim` names the dimension(s) that form one vector (default: the last; a tuple for e.g. a whole
(T, C) latent per sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def slerp(a: Tensor, b: Tensor, t: float | Tensor, *, dim: int | tuple[int, ...] = -1, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation between a and b at fraction t (0 -> a, 1 -> b); LERP for (anti)parallel inputs.

    t: a float, or a tensor broadcastable against a with size 1 along `dim` (e.g. (K, 1) fractions for
    (1, D) vectors evaluates K points of one arc at once).
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a32, b32 = a.float(), b.float()
    t = torch.as_tensor(t, dtype=torch.float32, device=a.device)
    dot = (a32 * b32).sum(dims, keepdim=True)
    norms = a32.square().sum(dims, keepdim=True).sqrt() * b32.square().sum(dims, keepdim=True).sqrt()
    cos = (dot / norms.clamp_min(1e-30)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    parallel = sin < eps
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe_sin)
    return (wa * a32 + wb * b32).to(dtype)


def lerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    return a + (b - a) * t


def interpolate_keyframes(keys: Tensor, key_frames: Sequence[int], num_frames: int, *,
                          dim: int | tuple[int, ...] = -1, spherical: bool = True) -> Tensor:
    """Fill `num_frames` frames from K keyframes placed at `key_frames` (strictly increasing, first 0, last
    num_frames - 1): frame n between keys k and k+1 gets slerp(keys[k], keys[k+1], (n - f_k) / (f_{k+1} - f_k)).

    keys: (K, ...) one entry per keyframe (noise, latents, or text embeddings); returns (num_frames, ...).
    `dim` is the vector dimension(s) of one entry, counted in `keys[k]` (so -1 = its last dimension).
    """
    frames = list(key_frames)
    if len(frames) != keys.shape[0] or len(frames) < 2:
        raise ValueError(
            f"need one keyframe index per key (>= 2 keys); got {len(frames)} indices for {keys.shape[0]} keys"
        )
    if frames[0] != 0 or frames[-1] != num_frames - 1 or any(a >= b for a, b in zip(frames, frames[1:])):
        raise ValueError(
            f"keyframe indices must increase strictly from 0 to num_frames - 1 = {num_frames - 1}; got {frames}"
        )
    out = []
    for k in range(len(frames) - 1):
        f0, f1 = frames[k], frames[k + 1]
        last = k == len(frames) - 2
        for n in range(f0, f1 + 1 if last else f1):
            t = (n - f0) / (f1 - f0)
            out.append(slerp(keys[k], keys[k + 1], t, dim=dim) if spherical else lerp(keys[k], keys[k + 1], t))
    return torch.stack(out)
