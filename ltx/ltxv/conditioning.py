"""Image / video conditioning: first-frame images (I2V), keyframes at any frame, video extension.

Shapes: B batch · C latent channels · F, H, W latent grid · T tokens. Pixels are (B, 3, F_px, H_px, W_px) in
[-1, 1] with F_px = 8k + 1; latents are the VAE's *normalized* latents (per-channel statistics applied).
"8" here and below is the VAE's temporal factor (`scale[0]`, 8 for every released VAE and the demo VAE);
pixel sizes are latent sizes times its spatial factor (`scale[1:]`, 32 released, 8 demo).

What an item does depends on where it goes (official `LTXVideoPipeline.prepare_conditioning`):
- at frame 0 (an image, or a video = forward extension): its latents replace the first latent frames of
  the initial noise in place, lerp(noise, latents, strength); those tokens get conditioning mask = strength.
- at frame n > 0, an image (a keyframe): lerp(fresh noise, latents, strength) is added as *extra* tokens in
  front of the video tokens, positioned at the frame-0 time coordinate + n pixel frames, mask = strength;
  they are dropped before decoding (`num_prefix`).
- at frame n > 0, a video (backward extension / a middle clip; n must be a multiple of 8): its latent frames
  from the third on replace latent frames n/8 + 2 ... in place; its first two latent frames (which the causal
  VAE encodes differently) are added as extra tokens like a keyframe.
The sampler then gives a token with strength m the sigma min(sigma, 1 - m) and freezes it while
sigma >= 1 - m (ltx/core/sampling.py). `reinject_noise` is the official `image_cond_noise_scale`: each step,
strength-1 tokens are reset to their clean value plus scale * noise * sigma^2.

RNG order (for parity with the reference): the initial noise first (caller), then per item in order: the
VAE encode (its posterior sample uses the global RNG), then, for extra tokens, their noise from `generator`
drawn in (B, C, F, H, W) order.

Guide items (IC-LoRA control, `GuideItem`): a control or reference video (depth, pose, edges, ...) joins the
video tokens as extra *clean* tokens in the same self-attention sequence. Each guide token has the position
of the target voxel it aligns with: the guide's own latent grid placed at pixel frame `frame`, and for a
reference made at 1/`downscale` of the target's size, its row / column coordinates multiplied by `downscale`
so that they land on the target's pixel grid. A guide of strength m gets conditioning mask m like any other
item (sigma min(sigma, 1 - m); strength 1: sigma 0, never moves), but no noise re-injection and no loss.
Guides are encoded with the VAE's posterior *mean* (what `train.preprocess` caches for training) and removed
after sampling. The two layouts give the same target outputs (the model is permutation-equivariant given
explicit positions, tests/test_control.py):
- "append" (inference, as ComfyUI's `LTXVAddGuide`): [keyframe tokens, video, guides]; `num_suffix` guides.
- "prepend" (training, as LTX-Video-Trainer's reference strategy): [guides, keyframe tokens, video].
Text cross-attention is unchanged; the guides add their tokens to the self-attention cost only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.ltxv.patchify import VAE_SCALE, Scale, patchify, pixel_grid, pixels_to_positions

NUM_PREFIX_LATENT_FRAMES = 2  # latent frames of a non-first video handled as extra tokens (official default)
HARD_EPS = 1e-6  # mask > 1 - eps counts as hard (strength-1) conditioning


@dataclass
class ConditioningItem:
    """pixels (B or 1, 3, F, H, W) in [-1, 1] with F = 8k + 1, placed at pixel frame `frame`."""

    pixels: Tensor
    frame: int = 0
    strength: float = 1.0


@dataclass
class GuideItem:
    """An in-context guide (IC-LoRA control): pixels (B or 1, 3, F, H, W) in [-1, 1], F = 8k + 1, aligned with
    the target from pixel frame `frame` on, made at 1/`downscale` of the target's height and width (it is
    resized to exactly that). strength 1 = a fixed, clean guide (the official IC-LoRAs are used at 1)."""

    pixels: Tensor
    strength: float = 1.0
    frame: int = 0
    downscale: int = 1


@dataclass
class ConditionedTokens:
    x: Tensor  # (B, T, C) initial tokens: extra (prefix) tokens first, then the video grid, then appended guides
    positions: Tensor  # (B, 3, T) float32 (seconds, px, px)
    mask: Tensor | None  # (B, T) conditioning strength per token; None without conditioning
    num_prefix: int  # extra tokens in front, removed before decoding
    num_suffix: int = 0  # guide tokens at the end ("append" layout), removed before decoding
    reinject: Tensor | None = None  # (B, T) the mask noise re-injection acts on (guides excluded); None = mask
    num_guides: int = 0  # guide tokens (the suffix in the "append" layout, the first tokens in "prepend")

    def video(self, x: Tensor) -> Tensor:
        """The video-grid tokens of x (B, T, C): everything between the prefix and the suffix."""
        return x[:, self.num_prefix : x.shape[1] - self.num_suffix]


def check_items(items: Sequence[ConditioningItem], num_frames: int, temporal: int = VAE_SCALE[0]) -> None:
    """Validate frame indices and lengths before anything is encoded (errors name the valid range).

    temporal: the VAE's temporal compression (clips need temporal * k + 1 frames)."""
    t = temporal
    for i, it in enumerate(items):
        if it.pixels.ndim != 5 or it.pixels.shape[1] != 3:
            raise ValueError(f"conditioning item {i}: pixels must be (B, 3, F, H, W), got {tuple(it.pixels.shape)}")
        n = it.pixels.shape[2]
        if (n - 1) % t:
            raise ValueError(f"conditioning item {i}: {n} frames; a conditioning clip needs {t}k + 1 frames "
                             f"(nearest: {max(1, (n - 1) // t * t + 1)})")
        if not 0.0 <= it.strength <= 1.0:
            raise ValueError(f"conditioning item {i}: strength {it.strength} is outside [0, 1]")
        if not 0 <= it.frame <= num_frames - n:
            raise ValueError(f"conditioning item {i}: frame {it.frame} with {n} frame(s) does not fit a "
                             f"{num_frames}-frame video (valid start frames: 0..{num_frames - n})")
        if it.frame > 0 and n > 1 and it.frame % t:
            raise ValueError(f"conditioning item {i}: a video placed after frame 0 must start at a multiple of "
                             f"{t}, got {it.frame} (nearest: {round(it.frame / t) * t})")


def check_guides(guides: Sequence[GuideItem], num_frames: int, height: int, width: int,
                 scale: Scale = VAE_SCALE) -> None:
    """Validate guide items against the video size before anything is encoded (errors name what is valid)."""
    t, sh, sw = scale
    for i, g in enumerate(guides):
        what = f"guide {i}"
        if g.pixels.ndim != 5 or g.pixels.shape[1] != 3:
            raise ValueError(f"{what}: pixels must be (B, 3, F, H, W), got {tuple(g.pixels.shape)}")
        n = g.pixels.shape[2]
        if (n - 1) % t:
            raise ValueError(f"{what}: {n} frames; a guide needs {t}k + 1 frames (nearest below: "
                             f"{max(1, (n - 1) // t * t + 1)})")
        if not (isinstance(g.strength, (int, float)) and 0.0 <= g.strength <= 1.0):
            raise ValueError(f"{what}: strength {g.strength} is outside [0, 1]")
        if not (isinstance(g.frame, int) and 0 <= g.frame <= num_frames - n):
            raise ValueError(f"{what}: frame {g.frame} with {n} frame(s) does not fit a {num_frames}-frame video "
                             f"(valid start frames: 0..{max(0, num_frames - n)}; a guide is at most {num_frames} "
                             "frames)")
        if g.frame > 0 and n > 1 and g.frame % t:
            raise ValueError(f"{what}: a guide video placed after frame 0 must start at a multiple of {t}, got "
                             f"{g.frame} (nearest: {g.frame // t * t} or {g.frame // t * t + t})")
        d = g.downscale
        valid = [k for k in range(1, 9) if height % (sh * k) == 0 and width % (sw * k) == 0]
        if not (isinstance(d, int) and d >= 1 and height % (sh * d) == 0 and width % (sw * d) == 0):
            raise ValueError(f"{what}: downscale {d} does not divide a {height}x{width} video into whole latents "
                             f"(height and width must be multiples of {sh} * downscale); valid here: {valid}")


def slice_guide(g: GuideItem, start: int, frames: int, temporal: int = VAE_SCALE[0]) -> GuideItem | None:
    """The part of guide `g` (in whole-video frames) that falls into the window [start, start + frames), as a
    guide of that window (trimmed to temporal * k + 1 frames); None when nothing of it is inside."""
    lo, hi = max(g.frame, start), min(g.frame + g.pixels.shape[2], start + frames)
    if hi <= lo:
        return None
    n = (hi - lo - 1) // temporal * temporal + 1
    local = lo - start
    if local > 0 and n > 1 and local % temporal:
        raise ValueError(f"guide frames {g.frame}.. do not align with a window starting at frame {start}")
    return GuideItem(g.pixels[:, :, lo - g.frame : lo - g.frame + n], g.strength, local, g.downscale)


def guide_tokens(latents: Tensor, g: GuideItem, *, batch: int, causal: bool, scale: Scale,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """(tokens (B, Tg, C), integer pixel coordinates (B, 3, Tg), mask (B, Tg)) of one guide's normalized latents
    (b, C, f, h, w): positions on the target grid (frame offset, spatial factor times downscale)."""
    f, h, w = latents.shape[2:]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    x = patchify(torch.lerp(noise, latents, g.strength)).expand(batch, -1, -1)
    grid_scale = (scale[0], scale[1] * g.downscale, scale[2] * g.downscale)
    coords = pixel_grid(f, h, w, batch=batch, causal=causal, frame_offset=g.frame, scale=grid_scale,
                        device=latents.device)
    return x, coords, torch.full(x.shape[:2], float(g.strength), device=latents.device)


def resize_pixels(pixels: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of every frame to (height, width) (align_corners=False), as the official pipeline."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    B, _, n = pixels.shape[:3]
    flat = pixels.transpose(1, 2).flatten(0, 1)  # (B F, 3, H, W)
    flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return flat.unflatten(0, (B, n)).transpose(1, 2)


def apply_conditioning(
    init: Tensor,
    items: Sequence[ConditioningItem],
    encode: Callable[[Tensor], Tensor],
    *,
    num_frames: int,
    fps: float,
    causal: bool,
    generator: torch.Generator | None,
    scale: Scale = VAE_SCALE,
    guides: Sequence[GuideItem] = (),
    encode_guide: Callable[[Tensor], Tensor] | None = None,
    guide_layout: str = "append",
) -> ConditionedTokens:
    """Merge conditioning items and guides into the initial latents init (B, C, F, H, W) and patchify.

    encode: pixels (B, 3, F_px, H_px, W_px) -> normalized latents (B, C, F, H, W) (a posterior sample).
    scale: the VAE's (temporal, spatial, spatial) compression.
    guides: in-context guides, encoded by `encode_guide` (the posterior mean), after the items; their noise
    (strength < 1) is drawn after the items' (file docstring). guide_layout: "append" | "prepend".
    """
    B, C, Fl, Hl, Wl = init.shape
    height, width = Hl * scale[1], Wl * scale[2]
    check_items(items, num_frames, scale[0])
    check_guides(guides, num_frames, height, width, scale)
    if guide_layout not in ("append", "prepend"):
        raise ValueError(f"guide_layout must be 'append' or 'prepend', got {guide_layout!r}")
    if guides and encode_guide is None:
        raise ValueError("guides need an encoder (encode_guide)")
    init = init.clone()
    mask = torch.zeros(B, Fl, Hl, Wl, dtype=torch.float32, device=init.device)
    extra_x, extra_coords, extra_mask = [], [], []
    for it in items:
        lat = encode(resize_pixels(it.pixels, height, width)).to(device=init.device, dtype=init.dtype)
        f_l = lat.shape[2]
        if it.frame == 0:  # replace the first latent frames in place
            init[:, :, :f_l] = torch.lerp(init[:, :, :f_l], lat, it.strength)
            mask[:, :f_l] = it.strength
            continue
        if f_l > 1:  # a later video: all but its first two latent frames replace frames in place
            p = NUM_PREFIX_LATENT_FRAMES
            if f_l < p:
                raise ValueError(f"a video placed after frame 0 needs >= {p} latent frames ({(p - 1) * scale[0] + 1} "
                                 "pixel frames)")
            start = it.frame // scale[0] + p
            if f_l > p:
                init[:, :, start : start + f_l - p] = torch.lerp(init[:, :, start : start + f_l - p], lat[:, :, p:],
                                                                 it.strength)
                mask[:, start : start + f_l - p] = it.strength
            lat = lat[:, :, :p]
        noise = torch.randn(lat.shape, generator=generator, device=lat.device, dtype=lat.dtype)
        lat = torch.lerp(noise, lat, it.strength)
        extra_x.append(patchify(lat))  # (b, f_l H W, C)
        extra_coords.append(pixel_grid(lat.shape[2], Hl, Wl, batch=lat.shape[0], causal=causal,
                                       frame_offset=it.frame, scale=scale, device=init.device))
        extra_mask.append(torch.full(extra_x[-1].shape[:2], it.strength, dtype=torch.float32, device=init.device))
    x = patchify(init)
    coords = pixel_grid(Fl, Hl, Wl, batch=B, causal=causal, scale=scale, device=init.device)
    if not items and not guides:
        return ConditionedTokens(x, pixels_to_positions(coords, fps), None, 0)
    token_mask = mask.flatten(1)  # (B, T) in token order (f, h, w)
    num_prefix = sum(e.shape[1] for e in extra_x)
    if extra_x:
        x = torch.cat([*[e.expand(B, -1, -1) for e in extra_x], x], dim=1)
        coords = torch.cat([*[c.expand(B, -1, -1) for c in extra_coords], coords], dim=2)
        token_mask = torch.cat([*[m.expand(B, -1) for m in extra_mask], token_mask], dim=1)
    if not guides:
        return ConditionedTokens(x, pixels_to_positions(coords, fps), token_mask, num_prefix)
    gx, gc, gm = [], [], []
    for g in guides:
        d = g.downscale
        lat = encode_guide(resize_pixels(g.pixels, height // d, width // d)).to(device=init.device, dtype=init.dtype)
        tok, crd, m = guide_tokens(lat, g, batch=B, causal=causal, scale=scale, generator=generator)
        gx.append(tok), gc.append(crd), gm.append(m)
    gx, gc, gm = torch.cat(gx, 1), torch.cat(gc, 2), torch.cat(gm, 1)
    n = gx.shape[1]
    none = torch.zeros_like(gm)  # guides get no noise re-injection
    if guide_layout == "prepend":
        return ConditionedTokens(torch.cat([gx, x], 1), pixels_to_positions(torch.cat([gc, coords], 2), fps),
                                 torch.cat([gm, token_mask], 1), num_prefix + n, 0, torch.cat([none, token_mask], 1), n)
    return ConditionedTokens(torch.cat([x, gx], 1), pixels_to_positions(torch.cat([coords, gc], 2), fps),
                             torch.cat([token_mask, gm], 1), num_prefix, n, torch.cat([token_mask, none], 1), n)


def reinject_noise(x: Tensor, clean: Tensor, mask: Tensor, sigma: Tensor, scale: float,
                   generator: torch.Generator | None) -> Tensor:
    """Reset hard-conditioned tokens (mask ~ 1) to clean + scale * noise * sigma^2 (official
    `image_cond_noise_scale`); the noise (B, T, C) is drawn every call, hard tokens or not."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    hard = (mask > 1.0 - HARD_EPS)[..., None]
    return torch.where(hard, clean + scale * noise * sigma**2, x)
