"""LTX-2 token geometry: latents <-> transformer tokens, and each token's [start, end) position for RoPE.

References: ltx-core 1.0.0 `components/patchifiers.py` (VideoLatentPatchifier, AudioPatchifier,
get_pixel_coords), `tools.py` (VideoLatentTools / AudioLatentTools.create_initial_state), `types.py`
(latent shapes), `conditioning/types/{keyframe_cond,reference_video_cond}.py`; digest §2.7.

Video: latent (B, C, F, H, W) <-> tokens (B, F·H·W, C), token order (frame, row, column), patch size 1 (all
released checkpoints). Positions (B, 3, T, 2): per token and axis (time in seconds, y in pixels, x in
pixels) the [start, end) span of pixels it covers. A latent voxel spans (8, 32, 32) pixel frames / rows /
columns (`VIDEO_SCALE`); with the causal fix (the causal VAE's first latent frame holds one pixel frame)
pixel frame p becomes max(p + 1 - 8, 0), so latent frame 0 covers [0, 1) and frame k >= 1 covers
[8k - 7, 8k + 1). Time is divided by fps in float32, then the whole tensor is cast to the latent dtype
(bf16 in the pipelines: the rounding point the model sees; digest §8 item 1).

Audio: latent (B, 8, T, 16) <-> tokens (B, T, 8·16), channel-major features (c, mel bin). Positions
(B, 1, T, 2) float32 seconds: latent i covers mel frames [max(4i - 3, 0), max(4i + 1, 0)), times hop 160 /
16 kHz, i.e. 40 ms per token with a causal offset. Audio positions stay float32 in the reference.

Conditioning tokens appended after the generated ones (float32; `torch.cat` with bf16 positions promotes):
keyframes at `frame_idx` (pixel frames; causal fix only at frame 0) and IC-LoRA references, whose spatial
positions are multiplied by the reference downscale factor.

Each division is written as the reference writes it (tensor / Python number), so positions are equal bit
for bit on the same device (CUDA divides by a CPU scalar through its reciprocal, the CPU does not).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

VIDEO_SCALE = (8, 32, 32)  # pixel frames, rows, columns per latent voxel (every released video VAE)
VIDEO_LATENT_CHANNELS = 128
AUDIO_LATENT_CHANNELS = 8
AUDIO_MEL_BINS = 16  # latent mel bins (64 mel bins / 4)
AUDIO_SAMPLE_RATE = 16_000
AUDIO_HOP_LENGTH = 160
AUDIO_DOWNSAMPLE = 4  # mel frames per audio latent frame

Device = torch.device | str | None


# ----------------------------------------------------------------------------------------------------------
# Shapes


def video_latent_shape(num_frames: int, height: int, width: int, scale: tuple[int, int, int] = VIDEO_SCALE
                       ) -> tuple[int, int, int]:
    """Latent (F, H, W) of a pixel video (VideoLatentShape.from_pixel_shape): ((n - 1) // 8 + 1, h // 32, w // 32)."""
    if num_frames < 1 or height < scale[1] or width < scale[2]:
        raise ValueError(f"a {num_frames}x{height}x{width} video has no latent; need >= 1 frame and >= "
                         f"{scale[1]}x{scale[2]} pixels")
    return (num_frames - 1) // scale[0] + 1, height // scale[1], width // scale[2]


def audio_latent_frames(duration: float) -> int:
    """Audio latent frames for `duration` seconds (AudioLatentShape.from_duration): round(duration * 25)."""
    if duration < 0:
        raise ValueError(f"duration must be >= 0 seconds, got {duration}")
    per_second = float(AUDIO_SAMPLE_RATE) / float(AUDIO_HOP_LENGTH) / float(AUDIO_DOWNSAMPLE)
    return round(duration * per_second)


def audio_latent_frames_for_video(num_frames: int, fps: float) -> int:
    """Audio latent frames matching a video of `num_frames` at `fps` (AudioLatentShape.from_video_pixel_shape)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return audio_latent_frames(float(num_frames) / float(fps))


# ----------------------------------------------------------------------------------------------------------
# Patchify


def patchify_video(latent: Tensor) -> Tensor:
    """(B, C, F, H, W) -> (B, F·H·W, C)."""
    if latent.ndim != 5:
        raise ValueError(f"video latent must be (B, C, F, H, W), got shape {tuple(latent.shape)}")
    return rearrange(latent, "b c f h w -> b (f h w) c")


def unpatchify_video(tokens: Tensor, frames: int, height: int, width: int) -> Tensor:
    """(B, F·H·W, C) -> (B, C, F, H, W)."""
    if tokens.ndim != 3 or tokens.shape[1] != frames * height * width:
        raise ValueError(f"tokens {tuple(tokens.shape)} do not form a (B, {frames}x{height}x{width}, C) video grid")
    return rearrange(tokens, "b (f h w) c -> b c f h w", f=frames, h=height, w=width)


def patchify_audio(latent: Tensor) -> Tensor:
    """(B, C, T, M) -> (B, T, C·M), features ordered (channel, mel bin)."""
    if latent.ndim != 4:
        raise ValueError(f"audio latent must be (B, C, T, mel_bins), got shape {tuple(latent.shape)}")
    return rearrange(latent, "b c t m -> b t (c m)")


def unpatchify_audio(tokens: Tensor, channels: int = AUDIO_LATENT_CHANNELS, mel_bins: int = AUDIO_MEL_BINS) -> Tensor:
    """(B, T, C·M) -> (B, C, T, M)."""
    if tokens.ndim != 3 or tokens.shape[2] != channels * mel_bins:
        raise ValueError(f"audio tokens {tuple(tokens.shape)} are not (B, T, {channels}*{mel_bins})")
    return rearrange(tokens, "b t (c m) -> b c t m", c=channels, m=mel_bins)


# ----------------------------------------------------------------------------------------------------------
# Positions


def _check_grid(frames: int, height: int, width: int, batch: int, fps: float) -> None:
    if min(frames, height, width, batch) < 1:
        raise ValueError(f"frames, height, width and batch must be positive, got {frames}, {height}, {width}, "
                         f"{batch}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")


def pixel_bounds(
    frames: int, height: int, width: int, *, batch: int = 1, causal: bool = True,
    scale: tuple[int, int, int] = VIDEO_SCALE, device: Device = None,
) -> Tensor:
    """Integer pixel [start, end) of every latent voxel: (B, 3, F·H·W, 2) int64 (get_pixel_coords)."""
    f, h, w = torch.meshgrid(
        torch.arange(frames, device=device), torch.arange(height, device=device),
        torch.arange(width, device=device), indexing="ij",
    )
    starts = torch.stack([f.flatten(), h.flatten(), w.flatten()])  # (3, T) latent indices
    bounds = torch.stack([starts, starts + 1], dim=-1)  # (3, T, 2)
    bounds = bounds * torch.tensor(scale, device=device).view(3, 1, 1)  # pixels
    if causal:  # the first latent frame holds one pixel frame, later ones scale[0]
        bounds[0] = (bounds[0] + 1 - scale[0]).clamp(min=0)
    return bounds[None].expand(batch, 3, -1, 2).clone()


def video_positions(
    frames: int, height: int, width: int, fps: float, dtype: torch.dtype = torch.float32, *, batch: int = 1,
    causal: bool = True, scale: tuple[int, int, int] = VIDEO_SCALE, device: Device = None,
) -> Tensor:
    """Positions (B, 3, F·H·W, 2) of a generated latent grid, (seconds, px, px), in `dtype` (the latent dtype).

    As VideoLatentTools.create_initial_state: float32, time / fps, then one cast to `dtype`.
    """
    _check_grid(frames, height, width, batch, fps)
    pos = pixel_bounds(frames, height, width, batch=batch, causal=causal, scale=scale, device=device).float()
    pos[:, 0] = pos[:, 0] / fps
    return pos.to(dtype)


def keyframe_positions(
    frames: int, height: int, width: int, fps: float, frame_idx: int, *, batch: int = 1, causal: bool = True,
    scale: tuple[int, int, int] = VIDEO_SCALE, device: Device = None,
) -> Tensor:
    """float32 positions (B, 3, T, 2) of keyframe tokens placed at pixel frame `frame_idx`
    (VideoConditionByKeyframeIndex): own grid, causal fix only when frame_idx == 0, + frame_idx, / fps."""
    _check_grid(frames, height, width, batch, fps)
    if frame_idx < 0:
        raise ValueError(f"frame_idx must be >= 0, got {frame_idx}")
    pos = pixel_bounds(frames, height, width, batch=batch, causal=causal and frame_idx == 0, scale=scale,
                       device=device)
    pos[:, 0] += frame_idx
    pos = pos.to(torch.float32)
    pos[:, 0] /= fps
    return pos


def reference_positions(
    frames: int, height: int, width: int, fps: float, downscale_factor: int = 1, *, batch: int = 1,
    causal: bool = True, scale: tuple[int, int, int] = VIDEO_SCALE, device: Device = None,
) -> Tensor:
    """float32 positions (B, 3, T, 2) of IC-LoRA reference tokens (VideoConditionByReferenceLatent): own grid,
    / fps, spatial axes times `downscale_factor` (target / reference resolution) so they land on the target's
    pixel coordinates."""
    _check_grid(frames, height, width, batch, fps)
    if downscale_factor < 1:
        raise ValueError(f"downscale_factor must be >= 1, got {downscale_factor}")
    pos = pixel_bounds(frames, height, width, batch=batch, causal=causal, scale=scale, device=device)
    pos = pos.to(torch.float32)
    pos[:, 0] /= fps
    if downscale_factor != 1:
        pos[:, 1] *= downscale_factor
        pos[:, 2] *= downscale_factor
    return pos


def _audio_seconds(start: int, end: int, causal: bool, device: Device) -> Tensor:
    mel = torch.arange(start, end, dtype=torch.float32, device=device) * AUDIO_DOWNSAMPLE
    if causal:  # +1: the first mel frame fully available to a causal receptive field
        mel = (mel + 1 - AUDIO_DOWNSAMPLE).clip(min=0)
    return mel * AUDIO_HOP_LENGTH / AUDIO_SAMPLE_RATE


def audio_positions(
    frames: int, *, batch: int = 1, shift: int = 0, causal: bool = True, device: Device = None,
) -> Tensor:
    """float32 positions (B, 1, T, 2) in seconds of T = `frames` audio latent frames (AudioPatchifier;
    `shift` offsets the latent indices)."""
    if frames < 1 or batch < 1:
        raise ValueError(f"audio frames and batch must be positive, got {frames}, {batch}")
    device = torch.device("cpu") if device is None else device
    starts = _audio_seconds(shift, frames + shift, causal, device)
    ends = _audio_seconds(shift + 1, frames + shift + 1, causal, device)
    pos = torch.stack([starts, ends], dim=-1)  # (T, 2)
    return pos[None, None].expand(batch, 1, -1, 2).clone()
