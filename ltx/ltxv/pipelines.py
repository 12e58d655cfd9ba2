"""Text (+ images / videos) -> latents -> frames: the LTX-Video sampling pipeline as functions over loaded modules.

Shapes: B batch · C latent channels · F, H, W latent grid · T tokens. Latents are the VAE's *normalized*
latents. Sigma convention and the sampler: ltx/core/sampling.py.

Sizes come from the VAE (`vae_scale`): a latent voxel covers `scale = (temporal, spatial, spatial)` pixel
frames / rows / columns, (8, 32, 32) for every released VAE, (8, 8, 8) for the demo VAE. Videos have
temporal * k + 1 frames and multiples of `spatial` as height and width; the latent grid is
(frames // temporal + 1, height // spatial, width // spatial), and the transformer's positions use the same
factors (ltx/ltxv/patchify.py), as the official pipeline does (`get_vae_size_scale_factor`).

`denoise_pass` is one official `LTXVideoPipeline.__call__` up to the latents: schedule (from the checkpoint's
scheduler config, a step count or an explicit timestep list, optionally truncated), initial noise drawn as
(B, T, C) tokens from `generator`, conditioning items merged in (ltx/ltxv/conditioning.py; encoded with a
*posterior sample* from the global RNG, as the official `vae_encode`), then the sampler loop with one batched
guided transformer call per step (ltx/ltxv/guidance.py). `decode` mixes in the decode noise (global RNG,
timestep-conditioned VAEs only; the 0.9.0 and demo VAEs take no timestep), applies the optional tone map to
the normalized latents and decodes, optionally in tiles (ltx/ltxv/vae_tiling.py). For multi-scale presets
`generate_multiscale` runs the first pass at the reduced size, upsamples the latents x2 (the latent
upsampler maps *un-normalized* latents), matches each channel's mean / std to the first pass (AdaIN),
re-noises at the second schedule's first sigma and runs the second pass. `generate` chains all of it for a
preset's `SamplingDefaults`, and `check_request` validates a request (sizes, items, schedules, STG blocks,
negative prompt) from configs alone, before any weights are loaded.

With the same generator seed, global seed and fp32 weights, the latents of every step and the decoded
frames match `ltx_video`'s `LTXVideoPipeline` / `LTXMultiScalePipeline`, with our VAE and upsampler loaded
from the same official file as the reference's (tests/parity/test_pipeline_parity.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.core.sampling import sample, velocity_euler, velocity_stochastic
from ltx.core.shapes import nearest_valid
from ltx.core.sigmas import SAMPLERS, check_allowed, from_list, schedule, truncate
from ltx.ltxv.conditioning import (
    ConditioningItem,
    GuideItem,
    apply_conditioning,
    check_guides,
    check_items,
    reinject_noise,
)
from ltx.ltxv.guidance import GuidanceSchedule, TextConditioning, guided_velocity, skip_mask_for
from ltx.ltxv.patchify import VAE_SCALE, Scale, unpatchify
from ltx.ltxv.transformer import DiT, DiTConfig, STGMode
from ltx.ltxv.vae import VAEConfig, VideoVAE, check_dit_compatible
from ltx.ltxv.vae_tiling import tiled_decode, tiled_encode
from ltx.presets import PassConfig, PipelineType, SamplingDefaults


def vae_scale(cfg: VAEConfig) -> Scale:
    """(temporal, spatial, spatial) compression of a VAE: pixel frames / rows / columns per latent voxel."""
    return cfg.temporal_factor, cfg.spatial_factor, cfg.spatial_factor


@dataclass(frozen=True)
class SchedulerSpec:
    """The checkpoint's scheduler (official metadata `config.scheduler`). The defaults are the official
    `RectifiedFlowScheduler`'s (Uniform, no shifting), the same as `from_official` of an empty config; the
    0.9.5+ checkpoints store sampler "LinearQuadratic"."""

    sampler: str = "Uniform"
    shifting: str | None = None
    terminal: float | None = None
    allowed_sigmas: tuple[float, ...] | None = None  # official top-level `allowed_inference_steps` (distilled)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; supported: {SAMPLERS}")
        if self.shifting not in (None, "SD3"):
            raise ValueError(f"unsupported shifting {self.shifting!r}; supported: None, 'SD3'")
        if self.terminal is not None and not (math.isfinite(self.terminal) and 0 < self.terminal < 1):
            raise ValueError(f"target_shift_terminal must be in (0, 1), got {self.terminal}")

    @staticmethod
    def from_official(scheduler: dict | None, allowed: Sequence[float] | None = None) -> SchedulerSpec:
        c = scheduler or {}
        return SchedulerSpec(sampler=c.get("sampler") or "Uniform", shifting=c.get("shifting"),
                             terminal=c.get("target_shift_terminal"),
                             allowed_sigmas=None if allowed is None else tuple(float(a) for a in allowed))


@dataclass(kw_only=True)
class PassOptions:
    """Everything besides the PassConfig that a pass needs (release-wide settings, see ltx.presets)."""

    stg_mode: STGMode = STGMode.attention_values
    stochastic: bool = False
    image_cond_noise_scale: float = 0.15  # the official inference default (0 = no noise re-injection)
    progress: Callable[[int], None] | None = None  # called with the step index after each step
    callback: Callable[[int, Tensor], None] | None = None  # (step, x tokens (B, T, C)) after each step
    forward_rows: list[int] = field(default_factory=list)  # filled: transformer batch rows per step
    guide_layout: str = "append"  # where guide tokens go: "append" (inference) | "prepend" (the training layout)


def check_size(height: int, width: int, num_frames: int, scale: Scale = VAE_SCALE) -> None:
    """Height / width multiples of the spatial factor and temporal * k + 1 frames, else an error naming the
    nearest valid values (for the released VAEs: multiples of 32 and 8k + 1)."""
    def near(v: int, m: int, off: int = 0) -> str:
        return nearest_valid(v, m, off, off or m)

    t, sh, sw = scale
    errs = []
    if height < sh or height % sh:
        errs.append(f"height {height} is not a positive multiple of {sh} (nearest: {near(height, sh)})")
    if width < sw or width % sw:
        errs.append(f"width {width} is not a positive multiple of {sw} (nearest: {near(width, sw)})")
    if num_frames < 1 or (num_frames - 1) % t:
        errs.append(f"num_frames {num_frames} is not of the form {t}k + 1 (nearest: {near(num_frames, t, 1)})")
    if errs:
        raise ValueError("; ".join(errs))


def latent_grid(height: int, width: int, num_frames: int, scale: Scale = VAE_SCALE) -> tuple[int, int, int]:
    """(F, H, W) latent grid of a valid video size (official: frames // temporal + 1, floor division)."""
    return num_frames // scale[0] + 1, height // scale[1], width // scale[2]


def pass_sigmas(p: PassConfig, tokens: int, sched: SchedulerSpec) -> Tensor:
    """The (N + 1,) sigmas of a pass; explicit timesteps or distilled allowed lists are checked here."""
    if p.timesteps is not None:
        sig = from_list(p.timesteps)
    else:
        sig = schedule(p.num_inference_steps, tokens, sampler=sched.sampler, shifting=sched.shifting,
                       terminal=sched.terminal)
        sig = truncate(sig, p.skip_initial_inference_steps, p.skip_final_inference_steps)
    check_allowed(sig, sched.allowed_sigmas)
    return sig


def pass_guidance(p: PassConfig) -> GuidanceSchedule:
    return GuidanceSchedule.from_lists(p.guidance_scale, p.stg_scale, p.rescaling_scale, p.skip_block_list,
                                       p.guidance_timesteps, cfg_star=p.cfg_star_rescale)


def denoise_pass(
    dit: DiT,
    vae: VideoVAE | None,
    text: TextConditioning,
    p: PassConfig,
    sched: SchedulerSpec,
    *,
    height: int,
    width: int,
    num_frames: int,
    fps: float,
    generator: torch.Generator | None,
    items: Sequence[ConditioningItem] = (),
    latents: Tensor | None = None,
    opts: PassOptions | None = None,
    scale: Scale | None = None,
    tiled_vae: bool = False,
    noise: Tensor | None = None,
    guides: Sequence[GuideItem] = (),
) -> Tensor:
    """One denoising pass -> normalized latents (B, C, F, H, W) (see the file docstring).

    scale: the VAE's compression; None = `vae_scale(vae.cfg)`, or the released (8, 32, 32) without a VAE.
    tiled_vae: encode conditioning items in tiles (`ltx.ltxv.vae_tiling.tiled_encode`).
    noise: the initial noise as (B, T, C) tokens instead of a draw from `generator` (chained segments).
    guides: in-context guides (IC-LoRA control, ltx/ltxv/conditioning.py), resized to this pass's size / downscale.
    """
    opts = opts or PassOptions()
    scale = scale or (vae_scale(vae.cfg) if vae is not None else VAE_SCALE)
    check_size(height, width, num_frames, scale)
    check_items(items, num_frames, scale[0])
    check_guides(guides, num_frames, height, width, scale)
    if (items or guides) and vae is None:
        raise ValueError("conditioning items and guides need a VAE to encode them")
    B = text.context.shape[0]
    Fl, Hl, Wl = latent_grid(height, width, num_frames, scale)
    C = dit.cfg.in_channels
    sigmas = pass_sigmas(p, Fl * Hl * Wl, sched)
    guidance = pass_guidance(p)
    device = text.context.device

    if noise is None:
        noise = torch.randn((B, Fl * Hl * Wl, C), generator=generator, device=device, dtype=text.context.dtype)
    elif tuple(noise.shape) != (B, Fl * Hl * Wl, C):
        raise ValueError(f"noise must be (B, T, C) = {(B, Fl * Hl * Wl, C)} tokens, got {tuple(noise.shape)}")
    init = unpatchify(noise.to(device=device, dtype=text.context.dtype), Fl, Hl, Wl)  # (B, C, F, H, W)
    if latents is not None:
        if tuple(latents.shape) != (B, C, Fl, Hl, Wl):
            raise ValueError(f"latents must be {(B, C, Fl, Hl, Wl)}, got {tuple(latents.shape)}")
        s0 = sigmas[0]
        if not s0 < 1:
            raise ValueError("starting from latents needs a schedule that starts below sigma 1 (skip initial steps)")
        init = s0 * init + (1 - s0) * latents.to(init.dtype)
    tokens = apply_conditioning(init, items, encoder(vae, tiled_vae) if vae is not None else None,
                                num_frames=num_frames, fps=fps, causal=dit.cfg.causal_temporal_positioning,
                                generator=generator, scale=scale, guides=guides,
                                encode_guide=encoder(vae, tiled_vae, sample=False) if guides else None,
                                guide_layout=opts.guide_layout)
    clean = tokens.x.clone()

    def velocity(xs: tuple[Tensor], sigma_toks: tuple[Tensor], i: int) -> tuple[Tensor]:
        v, rows = guided_velocity(dit, xs[0], sigma_toks[0], tokens.positions, text,
                                  guidance.at(float(sigmas[i])), opts.stg_mode)
        opts.forward_rows.append(rows)
        return (v,)

    before = None
    if tokens.mask is not None and opts.image_cond_noise_scale > 0:
        def before(i: int, sigma: Tensor, xs: tuple[Tensor]) -> tuple[Tensor]:
            x = xs[0]
            mask = tokens.reinject if tokens.reinject is not None else tokens.mask
            n = tokens.num_guides if opts.guide_layout == "prepend" else 0
            if not n:
                return (reinject_noise(x, clean, mask, sigma, opts.image_cond_noise_scale, generator),)
            # prepended guides: draw the noise in the append layout's token order (the same noise per token)
            rolled = reinject_noise(x.roll(-n, 1), clean.roll(-n, 1), mask.roll(-n, 1), sigma,
                                    opts.image_cond_noise_scale, generator)
            return (rolled.roll(n, 1),)

    def after(i: int, xs: tuple[Tensor]) -> None:
        if opts.callback is not None:
            opts.callback(i, xs[0])
        if opts.progress is not None:
            opts.progress(i)

    cond_masks = (tokens.mask,)
    step = velocity_stochastic(cond_masks) if opts.stochastic else velocity_euler(cond_masks)
    # the update is an fp32 island (ltx/core/sampling.py): x and the schedule in float32 from the start
    (x,) = sample(velocity, (tokens.x.float(),), sigmas.to(device=device, dtype=torch.float32), step,
                  before_step=before, callback=after)
    return unpatchify(tokens.video(x), Fl, Hl, Wl)


def tone_map(latents: Tensor, compression: float) -> Tensor:
    """Soft sigmoid compression of large latent values (official 0.9.8 `tone_map_compression_ratio`):
    x * (1 - 0.8 s sigmoid(4 s (|x| - 1))) with s = 0.75 * compression; compression 0 is the identity."""
    if not 0 <= compression <= 1:
        raise ValueError(f"tone-map compression must be in [0, 1], got {compression}")
    s = 0.75 * compression
    return latents * (1.0 - 0.8 * s * torch.sigmoid(4.0 * s * (latents.abs() - 1.0)))


def adain(latents: Tensor, reference: Tensor, factor: float = 1.0) -> Tensor:
    """Match each (sample, channel)'s mean and unbiased std over (F, H, W) to `reference`, blended by factor."""
    std, mean = torch.std_mean(latents, dim=(2, 3, 4), keepdim=True)
    r_std, r_mean = torch.std_mean(reference, dim=(2, 3, 4), keepdim=True)
    return torch.lerp(latents, (latents - mean) / std * r_std + r_mean, factor)


def encoder(vae: VideoVAE, tiled: bool = False, sample: bool = True) -> Callable[[Tensor], Tensor]:
    """pixels (B, 3, F, H, W) in [-1, 1] -> normalized latents, a posterior *sample* from the global RNG (the
    official `vae_encode` draws `latent_dist.sample()` without a generator); `sample=False`: the posterior mean
    (guides, as the training cache)."""
    dtype = next(vae.parameters()).dtype

    def encode(pixels: Tensor) -> Tensor:
        if tiled:
            return tiled_encode(vae, pixels.to(dtype), sample=sample)
        return vae.encode(pixels.to(dtype), sample=sample)

    return encode


def decode(vae: VideoVAE, latents: Tensor, *, decode_timestep: float = 0.05, decode_noise_scale: float | None = 0.025,
           tone_map_ratio: float = 0.0, tiled: bool = False, memory_budget: int | None = None,
           finite: bool = False) -> Tensor:
    """Normalized latents (B, C, F, H, W) -> frames (B, 3, F_px, H_px, W_px) in [0, 1].

    Timestep-conditioned decoders (0.9.1+) get the latents mixed with global-RNG noise, z (1 - s) + noise s
    (s = decode_noise_scale, or decode_timestep when None, as the reference), and the decode timestep; other
    VAEs (0.9.0, the demo VAE) get neither. The tone map acts on the normalized latents after the noise, right
    before decoding (official order). `tiled`: decode in tiles that fit `memory_budget` bytes (default 2 GiB).
    `finite`: raise ValueError when the decoded frames hold NaN / inf (the clamp to [0, 1] would hide inf).
    """
    timestep = None
    if vae.cfg.timestep_conditioning:
        s = decode_timestep if decode_noise_scale is None else decode_noise_scale
        noise = torch.randn_like(latents)
        latents = latents * (1 - s) + noise * s
        timestep = torch.full((latents.shape[0],), float(decode_timestep), device=latents.device)
    latents = tone_map(latents, tone_map_ratio).to(next(vae.parameters()).dtype)
    if tiled:
        frames = tiled_decode(vae, latents, timestep, memory_budget=memory_budget)
    else:
        frames = vae.decode(latents, timestep)
    if finite and not bool(torch.isfinite(frames).all()):
        raise ValueError(f"the VAE decoded {int((~torch.isfinite(frames)).sum())} non-finite pixel values (NaN / inf)")
    return (frames.float() * 0.5 + 0.5).clamp(0, 1)


def multiscale_sizes(height: int, width: int, factor: float, spatial: int = VAE_SCALE[1]) -> tuple[int, int]:
    """First-pass size: int(size * factor) floored to a multiple of the VAE's spatial factor (official)."""
    h, w = int(height * factor), int(width * factor)
    h, w = h - h % spatial, w - w % spatial
    if h < spatial or w < spatial:
        raise ValueError(f"downscale factor {factor} makes the first pass of {height}x{width} empty ({h}x{w})")
    return h, w


def upsample_latents(vae: VideoVAE, upsampler: Callable[[Tensor], Tensor], latents: Tensor) -> Tensor:
    """x2 latent upsampling: the upsampler works on un-normalized latents."""
    dtype = latents.dtype
    up = upsampler(vae.denormalize(latents.to(next(vae.parameters()).dtype)))
    return vae.normalize(up).to(dtype)


def generate_multiscale(
    dit: DiT, vae: VideoVAE, upsampler: Callable[[Tensor], Tensor], text: TextConditioning,
    first: PassConfig, second: PassConfig, sched: SchedulerSpec, *, height: int, width: int, num_frames: int,
    fps: float, downscale_factor: float, generator: torch.Generator | None, items: Sequence[ConditioningItem] = (),
    opts: PassOptions | None = None, tiled_vae: bool = False, noise: Tensor | None = None,
    guides: Sequence[GuideItem] = (),
) -> Tensor:
    """Low-res pass, x2 latent upsample + AdaIN, refining pass at 2x the low-res size -> latents at that size.
    `noise`: the first pass's initial noise (B, T, C), else drawn from `generator`. Each pass gets the guides
    at its own size."""
    h1, w1 = multiscale_sizes(height, width, downscale_factor, vae.cfg.spatial_factor)
    low = denoise_pass(dit, vae, text, first, sched, height=h1, width=w1, num_frames=num_frames, fps=fps,
                       generator=generator, items=items, opts=opts, tiled_vae=tiled_vae, noise=noise, guides=guides)
    up = adain(upsample_latents(vae, upsampler, low), low)
    return denoise_pass(dit, vae, text, second, sched, height=2 * h1, width=2 * w1, num_frames=num_frames, fps=fps,
                        generator=generator, items=items, latents=up, opts=opts, tiled_vae=tiled_vae, guides=guides)


def pass_sizes(sampling: SamplingDefaults, height: int, width: int, spatial: int) -> list[tuple[int, int]]:
    """(height, width) of each pass of a preset: one for base, (first, second) for multi-scale."""
    if sampling.pipeline_type is PipelineType.base:
        return [(height, width)]
    if sampling.downscale_factor is None:
        raise ValueError("a multi-scale preset needs downscale_factor")
    h1, w1 = multiscale_sizes(height, width, sampling.downscale_factor, spatial)
    return [(h1, w1), (2 * h1, 2 * w1)]


def passes(sampling: SamplingDefaults) -> list[PassConfig]:
    return [sampling.first_pass] + ([sampling.second_pass] if sampling.second_pass is not None else [])


def first_pass_tokens(sampling: SamplingDefaults, vae: VAEConfig, *, height: int, width: int, num_frames: int) -> int:
    """Number of video tokens T of a preset's first pass (the shape of its initial noise is (B, T, C))."""
    scale = vae_scale(vae)
    h, w = pass_sizes(sampling, height, width, scale[1])[0]
    Fl, Hl, Wl = latent_grid(h, w, num_frames, scale)
    return Fl * Hl * Wl


def check_request(
    dit: DiTConfig, vae: VAEConfig, sampling: SamplingDefaults, sched: SchedulerSpec, *, height: int, width: int,
    num_frames: int, items: Sequence[ConditioningItem] = (), has_negative: bool = True,
    guides: Sequence[GuideItem] = (),
) -> list[Tensor]:
    """Validate a generation request from configs alone (no weights needed); returns each pass's sigmas.

    Raises ValueError for: a transformer / VAE mismatch, sizes the VAE cannot take (naming the nearest valid
    ones), conditioning items outside the video, step counts or timesteps the checkpoint does not allow, STG
    blocks the transformer does not have, and CFG without negative-prompt embeddings.
    """
    check_dit_compatible(vae, dit)
    scale = vae_scale(vae)
    check_size(height, width, num_frames, scale)
    check_items(items, num_frames, scale[0])
    sigmas = []
    for p, (h, w) in zip(passes(sampling), pass_sizes(sampling, height, width, scale[1])):
        check_size(h, w, num_frames, scale)
        try:
            check_guides(guides, num_frames, h, w, scale)
        except ValueError as e:
            raise ValueError(f"{e} (at this pass's size {h}x{w})" if (h, w) != (height, width) else str(e)) from None
        Fl, Hl, Wl = latent_grid(h, w, num_frames, scale)
        sig = pass_sigmas(p, Fl * Hl * Wl, sched)
        guidance = pass_guidance(p)
        for step in guidance.steps:
            bad = [b for b in step.stg_blocks if not 0 <= b < dit.num_layers]
            if bad:  # checked even where STG is off: a block the model lacks is a typo either way
                raise ValueError(f"STG blocks {bad} do not exist: the transformer has blocks 0..{dit.num_layers - 1}")
            if step.use_stg:
                skip_mask_for(dit.num_layers, 1, 1, step.stg_blocks)
            if step.use_cfg and not has_negative:
                raise ValueError(f"guidance scale {step.cfg} > 1 (CFG) needs negative-prompt embeddings")
        sigmas.append(sig)
    if sampling.pipeline_type is PipelineType.multi_scale and float(sigmas[1][0]) >= 1:
        raise ValueError("the second multi-scale pass must start below sigma 1 (skip initial steps or timesteps)")
    return sigmas


def generate(
    dit: DiT,
    vae: VideoVAE,
    text: TextConditioning,
    sampling: SamplingDefaults,
    sched: SchedulerSpec,
    *,
    height: int,
    width: int,
    num_frames: int,
    fps: float,
    generator: torch.Generator | None,
    items: Sequence[ConditioningItem] = (),
    upsampler: Callable[[Tensor], Tensor] | None = None,
    image_cond_noise_scale: float = 0.15,
    tiled_vae: bool = False,
    progress: Callable[[int], None] | None = None,
    noise: Tensor | None = None,
    guides: Sequence[GuideItem] = (),
) -> Tensor:
    """Text (+ conditioning items, + guides) -> frames (B, 3, num_frames, height, width) in [0, 1], for a preset.

    Args:
        dit, vae: loaded modules; `upsampler`: the latent upsampler (multi-scale presets only).
        text: prompt (and negative-prompt) states, batch B.
        sampling: the preset's sampling defaults (base or multi-scale, per-pass schedules and guidance).
        sched: the checkpoint's scheduler config (and allowed timesteps of distilled checkpoints).
        height, width, num_frames: a size the VAE takes (`check_size`); multi-scale output is resized to it.
        generator: noise RNG (the global RNG is used where the official pipeline uses it, see the docstring).
        items: image / video conditioning; image_cond_noise_scale: official inference default 0.15.
        tiled_vae: encode / decode in tiles (bounded memory).
        progress: called with the step index after every denoising step of every pass.
        noise: the first pass's initial noise as (B, T, C) tokens (`first_pass_tokens`), else drawn from generator.
        guides: in-context guides for an IC-LoRA (control videos; ltx/ltxv/conditioning.py), at every pass.
    """
    check_request(dit.cfg, vae.cfg, sampling, sched, height=height, width=width, num_frames=num_frames, items=items,
                  has_negative=text.neg_context is not None, guides=guides)
    opts = PassOptions(stg_mode=sampling.stg_mode, stochastic=sampling.stochastic_sampling,
                       image_cond_noise_scale=image_cond_noise_scale, progress=progress)
    if sampling.pipeline_type is PipelineType.multi_scale:
        if upsampler is None:
            raise ValueError("a multi-scale preset needs the latent upsampler")
        assert sampling.second_pass is not None and sampling.downscale_factor is not None
        latents = generate_multiscale(dit, vae, upsampler, text, sampling.first_pass, sampling.second_pass, sched,
                                      height=height, width=width, num_frames=num_frames, fps=fps,
                                      downscale_factor=sampling.downscale_factor, generator=generator, items=items,
                                      opts=opts, tiled_vae=tiled_vae, noise=noise, guides=guides)
        tone = sampling.second_pass.tone_map_compression_ratio
    else:
        latents = denoise_pass(dit, vae, text, sampling.first_pass, sched, height=height, width=width,
                               num_frames=num_frames, fps=fps, generator=generator, items=items, opts=opts,
                               tiled_vae=tiled_vae, noise=noise, guides=guides)
        tone = sampling.first_pass.tone_map_compression_ratio
    frames = decode(vae, latents, decode_timestep=sampling.decode_timestep,
                    decode_noise_scale=sampling.decode_noise_scale, tone_map_ratio=tone, tiled=tiled_vae)
    return resize_frames(frames, height, width)


def resize_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of (B, 3, F, H, W) frames (align_corners=False), as the official multi-scale output."""
    if frames.shape[-2:] == (height, width):
        return frames
    B, _, n = frames.shape[:3]
    flat = F.interpolate(frames.transpose(1, 2).flatten(0, 1), size=(height, width), mode="bilinear",
                         align_corners=False)
    return flat.unflatten(0, (B, n)).transpose(1, 2)
