"""Long videos as a chain of segments: each segment is conditioned on the previous one's last frames, and
its initial noise is a SLERP between the previous segment's noise and fresh noise.

Shapes: B batch · T first-pass tokens · C latent channels · frames (B, 3, F, H, W) in [0, 1].

Segment k > 0 gets the last `overlap` frames of segment k - 1 as a video conditioning item at frame 0
(a forward extension, official `ConditioningItem` at frame 0 with `strength`), so its first `overlap`
frames re-create those frames; the stitched video keeps segment k - 1's copy and drops segment k's, so a
chain of n segments of F frames has n F - (n - 1) overlap frames. `overlap` must be temporal * k + 1 frames
(a clip the VAE can encode, e.g. 9 or 17 for 8x VAEs).

Noise: noise_0 is fresh; noise_k = slerp(noise_{k-1}, fresh_k, noise_mix) per sample over all (T, C)
(ltx/core/interp.py). SLERP keeps the norm of Gaussian noise (a LERP would shrink it towards the middle and leave
the sampler with too little noise), and for independent draws (angle ~ 90 degrees) gives consecutive
segments a noise cosine of cos(noise_mix * pi / 2): 0 = the same noise (strongest carry-over of layout and
motion), 1 = independent segments. Fresh noise comes from `generator` in (B, T, C) order, segment by segment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ltx.core.interp import slerp
from ltx.ltxv.conditioning import ConditioningItem, GuideItem, slice_guide
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.pipelines import SchedulerSpec, first_pass_tokens, generate
from ltx.ltxv.transformer import DiT
from ltx.ltxv.vae import VideoVAE
from ltx.presets import SamplingDefaults


def chain_noise(previous: Tensor | None, fresh: Tensor, noise_mix: float) -> Tensor:
    """The next segment's initial noise (B, T, C): slerp(previous, fresh, noise_mix) per sample; fresh first."""
    if not 0.0 <= noise_mix <= 1.0:
        raise ValueError(f"noise_mix must be in [0, 1], got {noise_mix}")
    if previous is None:
        return fresh
    return slerp(previous, fresh, noise_mix, dim=(1, 2))


def stitch(segments: Sequence[Tensor], overlap: int) -> Tensor:
    """Concatenate segment frames (B, 3, F_k, H, W) in time, dropping each later segment's first `overlap`."""
    return torch.cat([segments[0], *[s[:, :, overlap:] for s in segments[1:]]], dim=2)


def generate_chain(
    dit: DiT,
    vae: VideoVAE,
    text: TextConditioning,
    sampling: SamplingDefaults,
    sched: SchedulerSpec,
    *,
    num_segments: int,
    segment_frames: int,
    overlap: int,
    height: int,
    width: int,
    fps: float,
    generator: torch.Generator | None,
    noise_mix: float = 0.5,
    strength: float = 1.0,
    items: Sequence[ConditioningItem] = (),
    upsampler: Callable[[Tensor], Tensor] | None = None,
    image_cond_noise_scale: float = 0.15,
    tiled_vae: bool = False,
    progress: Callable[[int], None] | None = None,
    guides: Sequence[GuideItem] = (),
) -> Tensor:
    """`num_segments` chained calls of `ltx.ltxv.pipelines.generate` -> frames (B, 3, n F - (n - 1) overlap, H, W).

    Args:
        segment_frames: frames per segment (a size `generate` accepts, temporal * k + 1).
        overlap: frames shared by consecutive segments (temporal * k + 1, less than segment_frames).
        noise_mix: SLERP fraction from the previous segment's noise to fresh noise (file docstring).
        strength: conditioning strength of the carried-over frames (1 = frozen).
        items: conditioning of the first segment only (an image-to-video start, keyframes).
        upsampler, image_cond_noise_scale, tiled_vae, progress: as `generate`, for every segment.
        guides: in-context guides in whole-video frames (frame, length up to the chain's n F - (n - 1) overlap);
            segment k gets the part inside its frames [k (F - overlap), k (F - overlap) + F) (`slice_guide`).
    """
    t = vae.cfg.temporal_factor
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if not (1 <= overlap < segment_frames and (overlap - 1) % t == 0):
        raise ValueError(f"overlap must be {t}k + 1 frames and less than segment_frames ({segment_frames}), got "
                         f"{overlap}")  # fmt: skip
    if not 0.0 <= noise_mix <= 1.0:
        raise ValueError(f"noise_mix must be in [0, 1], got {noise_mix}")
    B, C = text.context.shape[0], dit.cfg.in_channels
    T = first_pass_tokens(sampling, vae.cfg, height=height, width=width, num_frames=segment_frames)
    device = text.context.device
    segments: list[Tensor] = []
    noise = None
    for k in range(num_segments):
        fresh = torch.randn((B, T, C), generator=generator, device=device, dtype=text.context.dtype)
        noise = chain_noise(noise, fresh, noise_mix)
        if k == 0:
            seg_items = list(items)
        else:  # the previous segment's last frames, back in [-1, 1], as a forward extension at frame 0
            seg_items = [ConditioningItem(segments[-1][:, :, -overlap:] * 2 - 1, 0, strength)]
        start = k * (segment_frames - overlap)
        seg_guides = [p for g in guides if (p := slice_guide(g, start, segment_frames, t)) is not None]
        segments.append(generate(dit, vae, text, sampling, sched, height=height, width=width,
                                 num_frames=segment_frames, fps=fps, generator=generator, items=seg_items,
                                 noise=noise, upsampler=upsampler, image_cond_noise_scale=image_cond_noise_scale,
                                 tiled_vae=tiled_vae, progress=progress, guides=seg_guides))  # fmt: skip
    return stitch(segments, overlap)
