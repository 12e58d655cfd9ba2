"""Size checks shared by both families' video VAEs and the data buckets: errors name the nearest valid sizes.

A causal video VAE with temporal factor t and spatial factor s encodes (B, C, t k + 1, s m, s n) pixels (k >= 0,
m, n >= 1): 8k + 1 frames and multiples of 32 for every released VAE.
"""

from __future__ import annotations


def nearest_valid(n: int, step: int, offset: int, lowest: int) -> str:
    """The valid sizes (step k + offset, at least `lowest`) either side of n, e.g. "9 or 17" for 16 frames."""
    below = max(lowest, (n - offset) // step * step + offset)
    above = below + step if below < n else below
    return f"{below}" if below == above else f"{below} or {above}"


def invalid_sizes(frames: int, height: int, width: int, temporal_factor: int, spatial_factor: int
                  ) -> list[tuple[str, int, str]]:
    """(axis, value, nearest valid values) for each of frames (t k + 1), height and width (multiples of s) that a
    VAE with these factors cannot encode; callers word the message."""
    t, s = temporal_factor, spatial_factor
    bad = [("frames", frames, nearest_valid(frames, t, 1, 1))] if frames < 1 or (frames - 1) % t else []
    return bad + [(axis, n, nearest_valid(n, s, 0, s)) for axis, n in (("height", height), ("width", width))
                  if n < s or n % s]


def check_pixel_shape(
    shape: tuple[int, ...],
    *,
    channels: int,
    temporal_factor: int,
    spatial_factor: int,
    noun: str = "pixels",
    frame_symbol: str = "k",
) -> None:
    """Raise a ValueError naming every problem and the nearest valid sizes unless `shape` is
    (B, channels, t k + 1, s m, s n) with t = temporal_factor, s = spatial_factor.

    `noun` names the tensor in the message ("pixels", "video"); `frame_symbol` is the letter of the frame-count
    form ("16 frames is not 8k+1"; the 0.9.x VAE's messages say 8N+1).
    """
    if len(shape) != 5:
        raise ValueError(f"{noun} must be (B, C, F, H, W), got shape {tuple(shape)}")
    _, c, f, h, w = shape
    t, s = temporal_factor, spatial_factor
    problems = [] if c == channels else [f"{c} channels; the VAE takes {channels}"]
    for axis, n, nearest in invalid_sizes(f, h, w, t, s):
        what = f"{n} frames is not {t}{frame_symbol}+1" if axis == "frames" else f"{axis} {n} is not a multiple of {s}"
        problems.append(f"{what}; nearest valid: {nearest}")
    if problems:
        raise ValueError(f"{noun} of shape {tuple(shape)}: " + "; ".join(problems))


def check_latent_shape(shape: tuple[int, ...], *, channels: int, vae_name: str = "") -> None:
    """Raise a ValueError unless `shape` is (B, channels, F', H', W') with no empty axis; `vae_name` follows
    "this VAE" in the message (e.g. " (0.9.5 layout)")."""
    if len(shape) != 5:
        raise ValueError(f"latents must be (B, C, F', H', W'), got shape {tuple(shape)}")
    if shape[1] != channels:
        raise ValueError(
            f"latents have {shape[1]} channels; this VAE{vae_name} has {channels} (shape {tuple(shape)}: latents "
            "from another model, or (B, T, C) tokens that were not unpatchified?)"
        )
    if min(shape[2:]) < 1:
        raise ValueError(f"latents of shape {tuple(shape)} are empty")
