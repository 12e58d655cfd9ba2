"""Text (+ images / videos) -> latents -> frames: the LTX-Video sampling pipeline as functions over loaded modules.

Shapes: B batch · C latent channels · F, H, W latent grid · T tokens. Latents are the VAE's *normalized*
latents. Sigma convention and the sampler: ltx/sched/sample.py.

Sizes come from the VAE (`vae_scale`): a latent voxel covers `scale = (temporal, spatial, spatial)` pixel
frames / rows / columns, (8, 32, 32) for every released VAE, (8, 8, 8) for the demo VAE. Videos have
temporal * k + 1 frames and multiples of `spatial` as height and width; the latent grid is
(frames // temporal + 1, height // spatial, width // spatial), and the transformer's positions use the same
factors (ltx/patchify.py), as the official pipeline does (`get_vae_size_scale_factor`).

`denoise_pass` is one official `LTXVideoPipeline.__call__` up to the latents: schedule (from the checkpoint's
scheduler config, a step count or an explicit timestep list, optionally truncated), initial noise drawn as
(B, T, C) tokens from `generator`, conditioning items merged in (ltx/conditioning.py; encoded with a
*posterior sample* from the global RNG, as the official `vae_encode`), then the sampler loop with one batched
guided transformer call per step (ltx/sched/guidance.py). `decode` mixes in the decode noise (global RNG,
timestep-conditioned VAEs only; the 0.9.0 and demo VAEs take no timestep), applies the optional tone map to
the normalized latents and decodes, optionally in tiles (ltx/models/vae_tiling.py). For multi-scale presets
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.conditioning import ConditioningItem, apply_conditioning, check_items, reinject_noise
from ltx.models.dit import DiT, DiTConfig, STGMode
from ltx.models.vae import VAEConfig, VideoVAE, check_dit_compatible
from ltx.models.vae_tiling import tiled_decode, tiled_encode
from ltx.patchify import VAE_SCALE, Scale, unpatchify
from ltx.presets import PassConfig, PipelineType, SamplingDefaults
from ltx.sched import sigmas as S
from ltx.sched.guidance import GuidanceSchedule, TextConditioning, guided_velocity, skip_mask_for
from ltx.sched.sample import sample


def vae_scale(cfg: VAEConfig) -> Scale:
    """(temporal, spatial, spatial) compression of a VAE: pixel frames / rows / columns per latent voxel."""
    return cfg.temporal_factor, cfg.spatial_factor, cfg.spatial_factor


@dataclass(frozen=True)
class SchedulerSpec:
    """The checkpoint's scheduler (official metadata `config.scheduler`)."""

    sampler: str = "LinearQuadratic"
    shifting: str | None = None
    terminal: float | None = None
    allowed_sigmas: tuple[float, ...] | None = None  # official top-level `allowed_inference_steps` (distilled)

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
    image_cond_noise_scale: float = 0.0  # official inference default: 0.15
    progress: Callable[[int], None] | None = None  # called with the step index after each step
    callback: Callable[[int, Tensor], None] | None = None  # (step, x tokens (B, T, C)) after each step
    forward_rows: list[int] = field(default_factory=list)  # filled: transformer batch rows per step


def check_size(height: int, width: int, num_frames: int, scale: Scale = VAE_SCALE) -> None:
    """Height / width multiples of the spatial factor and temporal * k + 1 frames, else an error naming the
    nearest valid values (for the released VAEs: multiples of 32 and 8k + 1)."""
    def near(v: int, m: int, off: int = 0) -> str:
        lo = max(m + off if off else m, (v - off) // m * m + off)
        return f"{lo} or {lo + m}" if lo != v and lo < v else str(lo)

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
        sig = S.from_list(p.timesteps)
    else:
        sig = S.schedule(p.num_inference_steps, tokens, sampler=sched.sampler, shifting=sched.shifting,
                         terminal=sched.terminal)
        sig = S.truncate(sig, p.skip_initial_inference_steps, p.skip_final_inference_steps)
    S.check_allowed(sig, sched.allowed_sigmas)
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
) -> Tensor:
    """One denoising pass -> normalized latents (B, C, F, H, W) (see the file docstring).

    scale: the VAE's compression; None = `vae_scale(vae.cfg)`, or the released (8, 32, 32) without a VAE.
    tiled_vae: encode conditioning items in tiles (`ltx.models.vae_tiling.tiled_encode`).
    """
    opts = opts or PassOptions()
    scale = scale or (vae_scale(vae.cfg) if vae is not None else VAE_SCALE)
    check_size(height, width, num_frames, scale)
    check_items(items, num_frames, scale[0])
    if items and vae is None:
        raise ValueError("conditioning items need a VAE to encode them")
    B = text.context.shape[0]
    Fl, Hl, Wl = latent_grid(height, width, num_frames, scale)
    C = dit.cfg.in_channels
    sigmas = pass_sigmas(p, Fl * Hl * Wl, sched)
    guidance = pass_guidance(p)
    device = text.context.device

    noise = torch.randn((B, Fl * Hl * Wl, C), generator=generator, device=device, dtype=text.context.dtype)
    init = unpatchify(noise, Fl, Hl, Wl)  # (B, C, F, H, W)
    if latents is not None:
        if tuple(latents.shape) != (B, C, Fl, Hl, Wl):
            raise ValueError(f"latents must be {(B, C, Fl, Hl, Wl)}, got {tuple(latents.shape)}")
        s0 = sigmas[0]
        if not s0 < 1:
            raise ValueError("starting from latents needs a schedule that starts below sigma 1 (skip initial steps)")
        init = s0 * init + (1 - s0) * latents.to(init.dtype)
    tokens = apply_conditioning(init, items, encoder(vae, tiled_vae) if vae is not None else None,
                                num_frames=num_frames, fps=fps, causal=dit.cfg.causal_temporal_positioning,
                                generator=generator, scale=scale)
    clean = tokens.x.clone()

    def velocity(x: Tensor, sigma_tok: Tensor, i: int) -> Tensor:
        v, rows = guided_velocity(dit, x, sigma_tok, tokens.positions, text, guidance.at(float(sigmas[i])),
                                  opts.stg_mode)
        opts.forward_rows.append(rows)
        return v

    before = None
    if tokens.mask is not None and opts.image_cond_noise_scale > 0:
        def before(i: int, sigma: Tensor, x: Tensor) -> Tensor:
            return reinject_noise(x, clean, tokens.mask, sigma, opts.image_cond_noise_scale, generator)

    def after(i: int, x: Tensor) -> None:
        if opts.callback is not None:
            opts.callback(i, x)
        if opts.progress is not None:
            opts.progress(i)

    x = sample(velocity, tokens.x, sigmas, cond_mask=tokens.mask, stochastic=opts.stochastic, before_step=before,
               callback=after)
    return unpatchify(x[:, tokens.num_prefix :], Fl, Hl, Wl)


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


def decode(vae: LatentVAE, latents: Tensor, *, decode_timestep: float = 0.05, decode_noise_scale: float | None = 0.025,
           tone_map_ratio: float = 0.0) -> Tensor:
    """Normalized latents -> frames (B, 3, F, H, W) in [0, 1]. Timestep-conditioned decoders (0.9.1+) get
    latents mixed with global-RNG noise, z (1 - s) + noise s, and the decode timestep, as the reference."""
    timestep = None
    if vae.timestep_conditioning:
        s = decode_timestep if decode_noise_scale is None else decode_noise_scale
        noise = torch.randn_like(latents)
        latents = latents * (1 - s) + noise * s
        timestep = torch.full((latents.shape[0],), float(decode_timestep), device=latents.device)
    latents = tone_map(latents, tone_map_ratio)
    frames = vae.decode(latents, timestep)
    return (frames.float() * 0.5 + 0.5).clamp(0, 1)


def multiscale_sizes(height: int, width: int, factor: float) -> tuple[int, int]:
    """First-pass size: int(size * factor) floored to a multiple of 32 (official multi-scale)."""
    h, w = int(height * factor), int(width * factor)
    h, w = h - h % VAE_SCALE[1], w - w % VAE_SCALE[2]
    if h < 32 or w < 32:
        raise ValueError(f"downscale factor {factor} makes the first pass of {height}x{width} empty ({h}x{w})")
    return h, w


def upsample_latents(vae: LatentVAE, upsampler: Callable[[Tensor], Tensor], latents: Tensor) -> Tensor:
    """x2 latent upsampling: the upsampler works on un-normalized latents."""
    return vae.normalize(upsampler(vae.unnormalize(latents)))


def generate_multiscale(
    dit: DiT, vae: LatentVAE, upsampler: Callable[[Tensor], Tensor], text: TextConditioning,
    first: PassConfig, second: PassConfig, sched: SchedulerSpec, *, height: int, width: int, num_frames: int,
    fps: float, downscale_factor: float, generator: torch.Generator | None, items: Sequence[ConditioningItem] = (),
    opts: PassOptions | None = None,
) -> Tensor:
    """Low-res pass, x2 latent upsample + AdaIN, refining pass at 2x the low-res size -> latents at that size."""
    h1, w1 = multiscale_sizes(height, width, downscale_factor)
    low = denoise_pass(dit, vae, text, first, sched, height=h1, width=w1, num_frames=num_frames, fps=fps,
                       generator=generator, items=items, opts=opts)
    up = adain(upsample_latents(vae, upsampler, low), low)
    return denoise_pass(dit, vae, text, second, sched, height=2 * h1, width=2 * w1, num_frames=num_frames, fps=fps,
                        generator=generator, items=items, latents=up, opts=opts)


def resize_frames(frames: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of (B, 3, F, H, W) frames (align_corners=False), as the official multi-scale output."""
    if frames.shape[-2:] == (height, width):
        return frames
    B, _, n = frames.shape[:3]
    flat = F.interpolate(frames.transpose(1, 2).flatten(0, 1), size=(height, width), mode="bilinear",
                         align_corners=False)
    return flat.unflatten(0, (B, n)).transpose(1, 2)
