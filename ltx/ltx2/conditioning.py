"""LTX-2 latent states and their conditioning: the target grids, images at frame 0, appended keyframes,
IC-LoRA references, noise (ltx_core's VideoLatentTools / AudioLatentTools, conditioning items, GaussianNoiser).

Latent states are patchified: video (B, F*H*W, 128) with positions (B, 3, T, 2) (seconds, px, px) and audio
(B, T_a, 128) with positions (B, 1, T_a, 2) seconds. Keyframes and references are appended tokens after the
target grid's (`LatentState.num_tokens`); sampling removes them at the end (`LatentState.target`). A token's
denoise mask is 1 - strength: 1 = generate, 0 = keep its clean latent. The noise of a run comes from one
generator: video first, then audio (as the reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ltx.ltx2 import patchify


@dataclass
class LatentState:
    """One modality's patchified latent during sampling."""

    x: Tensor  # (B, T, C) current latent tokens, in the run dtype
    mask: Tensor  # (B, T, 1) float32 denoise mask: 1 = generate, 0 = keep `clean`
    clean: Tensor  # (B, T, C) the conditioning latent (zeros where nothing is given)
    positions: Tensor  # (B, n_axes, T, 2) [start, end) per axis
    num_tokens: int  # tokens of the target grid; the ones after it are appended conditioning

    def target(self) -> Tensor:
        """The generated tokens only (appended keyframes removed)."""
        return self.x[:, : self.num_tokens]



def video_state(num_frames: int, height: int, width: int, fps: float, *, batch: int = 1, dtype=torch.float32,
                device=None, latent: Tensor | None = None, channels: int = patchify.VIDEO_LATENT_CHANNELS,
                scale: tuple[int, int, int] = patchify.VIDEO_SCALE) -> LatentState:
    """The target video grid for a pixel size (VideoLatentTools.create_initial_state): zeros (or `latent`,
    (B, C, F, H/32, W/32)) with mask 1, positions cast to `dtype` as the reference does. `channels` and `scale`
    (pixels per latent voxel) are the VAE's (`VideoVAEConfig.latent_channels`, `.scale`)."""
    f, h, w = patchify.video_latent_shape(num_frames, height, width, scale)
    if latent is None:
        latent = torch.zeros(batch, channels, f, h, w, dtype=dtype, device=device)
    elif tuple(latent.shape[2:]) != (f, h, w) or latent.shape[0] != batch:
        raise ValueError(f"initial video latent {tuple(latent.shape)} does not fit ({batch}, C, {f}, {h}, {w})")
    x = patchify.patchify_video(latent.to(dtype))
    mask = torch.ones(batch, x.shape[1], 1, dtype=torch.float32, device=x.device)
    pos = patchify.video_positions(f, h, w, fps, dtype, batch=batch, scale=scale, device=x.device)
    return LatentState(x, mask, x.clone(), pos, x.shape[1])


def audio_state(num_frames: int, fps: float, *, batch: int = 1, dtype=torch.float32, device=None,
                latent: Tensor | None = None) -> LatentState:
    """The audio latent matching a video of `num_frames` at `fps` (25 latents per second)."""
    t = patchify.audio_latent_frames_for_video(num_frames, fps)
    if t < 1:
        raise ValueError(f"{num_frames} frames at {fps} fps last {num_frames / fps:.3f} s: under one audio latent "
                         f"(40 ms); give more frames or a lower fps")
    shape = (batch, patchify.AUDIO_LATENT_CHANNELS, t, patchify.AUDIO_MEL_BINS)
    if latent is None:
        latent = torch.zeros(shape, dtype=dtype, device=device)
    elif tuple(latent.shape) != shape:
        raise ValueError(f"initial audio latent {tuple(latent.shape)} does not fit {shape}")
    x = patchify.patchify_audio(latent.to(dtype))
    mask = torch.ones(batch, t, 1, dtype=torch.float32, device=x.device)
    pos = patchify.audio_positions(t, batch=batch, device=x.device)
    return LatentState(x, mask, x.clone(), pos, t)


def condition_frame0(state: LatentState, latent: Tensor, strength: float = 1.0) -> LatentState:
    """An image at latent frame 0 (VideoConditionByLatentIndex, latent_idx 0): its tokens replace the first
    frame's in x and clean, with mask 1 - strength. latent: (B, C, 1, h, w) at the target's latent size."""
    tokens = patchify.patchify_video(latent.to(state.x.dtype))
    n = tokens.shape[1]
    if tokens.shape[0] != state.x.shape[0] or tokens.shape[2] != state.x.shape[2] or n > state.num_tokens:
        raise ValueError(f"image latent {tuple(latent.shape)} does not fit the video's first latent frame")
    x, clean, mask = state.x.clone(), state.clean.clone(), state.mask.clone()
    x[:, :n] = tokens
    clean[:, :n] = tokens
    mask[:, :n] = 1.0 - strength
    return replace(state, x=x, clean=clean, mask=mask)


def append_keyframe(state: LatentState, latent: Tensor, frame: int, fps: float, strength: float = 1.0, *,
                    scale: tuple[int, int, int] = patchify.VIDEO_SCALE) -> LatentState:
    """Keyframe latents (B, C, f, h, w) at pixel frame `frame` (VideoConditionByKeyframeIndex): appended tokens
    with their own grid's positions shifted by `frame`, mask 1 - strength. The reference's positions are
    float32, so appending promotes every position to float32 (its bf16 rounding of the grid stays)."""
    tokens = patchify.patchify_video(latent.to(state.x.dtype))
    _, _, f, h, w = latent.shape
    pos = patchify.keyframe_positions(f, h, w, fps, frame, batch=latent.shape[0], scale=scale, device=latent.device)
    mask = torch.full((*tokens.shape[:2], 1), 1.0 - strength, dtype=latent.dtype, device=latent.device)
    return replace(state, x=torch.cat([state.x, tokens], 1), clean=torch.cat([state.clean, tokens], 1),
                   mask=torch.cat([state.mask, mask], 1), positions=torch.cat([state.positions, pos], 2))


def append_reference(state: LatentState, latent: Tensor, fps: float, downscale: int = 1,
                     strength: float = 1.0, *, scale: tuple[int, int, int] = patchify.VIDEO_SCALE) -> LatentState:
    """IC-LoRA reference latents (B, C, f, h, w) (VideoConditionByReferenceLatent): appended tokens on their own
    causal grid from time 0, rows and columns times `downscale` (a reference at 1/downscale of the target's
    size lands on the target's pixel grid), mask 1 - strength."""
    tokens = patchify.patchify_video(latent.to(state.x.dtype))
    _, _, f, h, w = latent.shape
    pos = patchify.reference_positions(f, h, w, fps, downscale, batch=latent.shape[0], scale=scale,
                                       device=latent.device)
    mask = torch.full((*tokens.shape[:2], 1), 1.0 - strength, dtype=latent.dtype, device=latent.device)
    return replace(state, x=torch.cat([state.x, tokens], 1), clean=torch.cat([state.clean, tokens], 1),
                   mask=torch.cat([state.mask, mask], 1), positions=torch.cat([state.positions, pos], 2))


def add_noise(state: LatentState, generator: torch.Generator | None, noise_scale: float = 1.0) -> LatentState:
    """GaussianNoiser: noise drawn in the latent dtype over every token (appended ones included), blended by
    mask * noise_scale."""
    noise = torch.randn(*state.x.shape, device=state.x.device, dtype=state.x.dtype, generator=generator)
    m = state.mask * noise_scale
    return replace(state, x=(noise * m + state.x * (1 - m)).to(state.x.dtype))


def unpatchified(video: LatentState, audio: LatentState | None, num_frames: int, height: int, width: int,
                 scale: tuple[int, int, int] = patchify.VIDEO_SCALE) -> tuple[Tensor, Tensor | None]:
    """The generated latents as (B, 128, F, H/32, W/32) and (B, 8, T, 16)."""
    f, h, w = patchify.video_latent_shape(num_frames, height, width, scale)
    v = patchify.unpatchify_video(video.target(), f, h, w)
    return v, (patchify.unpatchify_audio(audio.target()) if audio is not None else None)


@dataclass
class Conditioning:
    """An encoded image (or clip) for image-to-video: latent (B, 128, f, h, w) at the pass's latent size,
    placed at pixel frame `frame` (0 = replaces the first latent frame, > 0 = appended keyframe)."""

    latent: Tensor
    frame: int = 0
    strength: float = 1.0
    append: bool = False  # frame 0 too as appended keyframe tokens (image_conditionings_by_adding_guiding_latent)
    reference: int = 0  # > 0: an IC-LoRA reference video at 1/reference of the target size (appended last)


def conditioned_states(
    num_frames: int, height: int, width: int, fps: float, conditionings: Sequence[Conditioning], *,
    batch: int, dtype, device, generator: torch.Generator | None, noise_scale: float = 1.0,
    video_latent: Tensor | None = None, audio_latent: Tensor | None = None, freeze_audio: bool = False,
    freeze_video: bool = False, channels: int = patchify.VIDEO_LATENT_CHANNELS,
    scale: tuple[int, int, int] = patchify.VIDEO_SCALE, with_audio: bool = True,
) -> tuple[LatentState, LatentState | None]:
    """noise_video_state + noise_audio_state: initial states, conditionings applied, then noised (video first).
    `freeze_audio` (audio-to-video, denoise_video_only): the audio latent is kept as it is (its noise is still
    drawn, at scale 0, so the generator advances as the reference's) and its mask is 0 (timesteps 0).
    `freeze_video` (video-to-audio, the trainer's v2a mode at inference): the same for `video_latent`.
    `channels` and `scale`: the video VAE's latent width and pixels per latent voxel. `with_audio` False: the video
    state alone (audio None, nothing drawn for it: the HDR IC-LoRA pipeline's video-only stages)."""
    video = video_state(num_frames, height, width, fps, batch=batch, dtype=dtype, device=device, latent=video_latent,
                        channels=channels, scale=scale)
    for c in conditionings:
        latent = c.latent.expand(batch, *c.latent.shape[1:]) if c.latent.shape[0] == 1 else c.latent  # every row
        if c.reference:
            video = append_reference(video, latent, fps, c.reference, c.strength, scale=scale)
        elif c.frame == 0 and not c.append:
            video = condition_frame0(video, latent, c.strength)
        else:
            video = append_keyframe(video, latent, c.frame, fps, c.strength, scale=scale)
    video = add_noise(video, generator, 0.0 if freeze_video else noise_scale)
    if freeze_video:
        video = replace(video, mask=torch.zeros_like(video.mask))
    if not with_audio:
        return video, None
    audio = audio_state(num_frames, fps, batch=batch, dtype=dtype, device=device, latent=audio_latent)
    audio = add_noise(audio, generator, 0.0 if freeze_audio else noise_scale)
    if freeze_audio:
        audio = replace(audio, mask=torch.zeros_like(audio.mask))
    return video, audio


@dataclass
class ImageInput:
    """A conditioning image (H, W, 3) or clip (f, H, W, 3) at its own size, values 0..255 (after the
    official H.264 round trip, `ltx.core.media.crf_compress`, if wanted), placed at pixel frame `frame`. Each stage
    fits it to its size: scale to cover, center crop (load_image_conditioning)."""

    pixels: Tensor
    frame: int = 0
    strength: float = 1.0


@dataclass
class ReferenceInput:
    """An IC-LoRA reference (control) clip (f, H, W, 3) in 0..255 at its own size; each stage-1 run fits it to
    1/downscale of the stage's size (per frame: scale to cover, center crop) and keeps 8k + 1 frames, as the
    reference encoder crops."""

    pixels: Tensor
    strength: float = 1.0
    downscale: int = 1


def fit_image(pixels: Tensor, height: int, width: int, dtype=torch.float32) -> Tensor:
    """(H, W, 3) or (f, H, W, 3) in 0..255 -> (1, 3, f, height, width) in [-1, 1]: bilinear scale to cover
    (sizes rounded up), then the center crop (resize_and_center_crop + normalize_latent)."""
    x = pixels.float()
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"a conditioning image is (H, W, 3) or (frames, H, W, 3), got {tuple(pixels.shape)}")
    x = x.permute(0, 3, 1, 2)  # (f, 3, H, W)
    src_h, src_w = x.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return (x.permute(1, 0, 2, 3)[None] / 127.5 - 1.0).to(dtype)
