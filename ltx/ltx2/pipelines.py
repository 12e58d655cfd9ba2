"""LTX-2 generation as functions over loaded modules: latent states, the guided sampler, the official pipelines.

Matches `ltx_pipelines` 1.0.0 (TI2VidOneStagePipeline, TI2VidTwoStagesPipeline, DistilledPipeline) step for
step (tests/ltx2/test_ltx2_pipeline.py: bitwise in fp32). Nothing here loads or frees models: the caller
passes modules, so a research loop can keep them resident.

`batch_passes=True` runs the guidance passes of a step (cond, uncond, STG-perturbed, modality-isolated) as one
batch through the transformer instead of up to four calls: equal up to summation order (~1e-6). It is off by
default because on the CPU it measured slower (1.16-1.31x at 6,144 video tokens, tools/bench_ltx2.py) with 3.2x the
activation memory; on a GPU that one batch-1 pass does not fill, it may pay off (not measured here).

A step, per modality (file docstring of ltx.ltx2.sched): per-token timesteps = denoise_mask * sigma; the
transformer predicts velocity; x0 = x - v * timesteps (fp32, rounded to the latent dtype); guidance combines
the passes' x0; tokens with mask 0 are reset to their clean latent; Euler to the next sigma.

Latent states are patchified: video (B, F*H*W, 128) with positions (B, 3, T, 2) (seconds, px, px) and audio
(B, T_a, 128) with positions (B, 1, T_a, 2) seconds. Keyframes are appended tokens; they are removed when
sampling ends. The noise of a run comes from one generator: video first, then audio (as the reference).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ltx.ltx2 import patchify as P
from ltx.ltx2.sched import (
    GuiderParams,
    euler_step,
    guidance_passes,
    guide,
    post_process,
    res2s_sample,
    to_denoised,
)

NO_GUIDANCE = GuiderParams()  # cfg 1, stg 0, modality 1: one conditional pass


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


@dataclass
class Prompt:
    """Text contexts of one prompt for both streams (ltx.ltx2.text.EmbeddingsProcessor output)."""

    video: Tensor  # (B, S, D_video)
    audio: Tensor  # (B, S, D_audio)
    mask: Tensor | None = None  # (B, S) 1 = token; the official pipelines pass None (attend to all)


# ----------------------------------------------------------------------------------------------------------
# States


def video_state(num_frames: int, height: int, width: int, fps: float, *, batch: int = 1, dtype=torch.float32,
                device=None, latent: Tensor | None = None, channels: int = P.VIDEO_LATENT_CHANNELS) -> LatentState:
    """The target video grid for a pixel size (VideoLatentTools.create_initial_state): zeros (or `latent`,
    (B, C, F, H/32, W/32)) with mask 1, positions cast to `dtype` as the reference does."""
    f, h, w = P.video_latent_shape(num_frames, height, width)
    if latent is None:
        latent = torch.zeros(batch, channels, f, h, w, dtype=dtype, device=device)
    elif tuple(latent.shape[2:]) != (f, h, w) or latent.shape[0] != batch:
        raise ValueError(f"initial video latent {tuple(latent.shape)} does not fit ({batch}, C, {f}, {h}, {w})")
    x = P.patchify_video(latent.to(dtype))
    mask = torch.ones(batch, x.shape[1], 1, dtype=torch.float32, device=x.device)
    pos = P.video_positions(f, h, w, fps, dtype, batch=batch, device=x.device)
    return LatentState(x, mask, x.clone(), pos, x.shape[1])


def audio_state(num_frames: int, fps: float, *, batch: int = 1, dtype=torch.float32, device=None,
                latent: Tensor | None = None) -> LatentState:
    """The audio latent matching a video of `num_frames` at `fps` (25 latents per second)."""
    t = P.audio_latent_frames_for_video(num_frames, fps)
    if t < 1:
        raise ValueError(f"{num_frames} frames at {fps} fps last {num_frames / fps:.3f} s: under one audio latent "
                         f"(40 ms); give more frames or a lower fps")
    shape = (batch, P.AUDIO_LATENT_CHANNELS, t, P.AUDIO_MEL_BINS)
    if latent is None:
        latent = torch.zeros(shape, dtype=dtype, device=device)
    elif tuple(latent.shape) != shape:
        raise ValueError(f"initial audio latent {tuple(latent.shape)} does not fit {shape}")
    x = P.patchify_audio(latent.to(dtype))
    mask = torch.ones(batch, t, 1, dtype=torch.float32, device=x.device)
    pos = P.audio_positions(t, batch=batch, device=x.device)
    return LatentState(x, mask, x.clone(), pos, t)


def condition_frame0(state: LatentState, latent: Tensor, strength: float = 1.0) -> LatentState:
    """An image at latent frame 0 (VideoConditionByLatentIndex, latent_idx 0): its tokens replace the first
    frame's in x and clean, with mask 1 - strength. latent: (B, C, 1, h, w) at the target's latent size."""
    tokens = P.patchify_video(latent.to(state.x.dtype))
    n = tokens.shape[1]
    if tokens.shape[0] != state.x.shape[0] or tokens.shape[2] != state.x.shape[2] or n > state.num_tokens:
        raise ValueError(f"image latent {tuple(latent.shape)} does not fit the video's first latent frame")
    x, clean, mask = state.x.clone(), state.clean.clone(), state.mask.clone()
    x[:, :n] = tokens
    clean[:, :n] = tokens
    mask[:, :n] = 1.0 - strength
    return replace(state, x=x, clean=clean, mask=mask)


def append_keyframe(state: LatentState, latent: Tensor, frame: int, fps: float, strength: float = 1.0) -> LatentState:
    """Keyframe latents (B, C, f, h, w) at pixel frame `frame` (VideoConditionByKeyframeIndex): appended tokens
    with their own grid's positions shifted by `frame`, mask 1 - strength. The reference's positions are
    float32, so appending promotes every position to float32 (its bf16 rounding of the grid stays)."""
    tokens = P.patchify_video(latent.to(state.x.dtype))
    _, _, f, h, w = latent.shape
    pos = P.keyframe_positions(f, h, w, fps, frame, batch=latent.shape[0], device=latent.device)
    mask = torch.full((*tokens.shape[:2], 1), 1.0 - strength, dtype=latent.dtype, device=latent.device)
    return replace(state, x=torch.cat([state.x, tokens], 1), clean=torch.cat([state.clean, tokens], 1),
                   mask=torch.cat([state.mask, mask], 1), positions=torch.cat([state.positions, pos], 2))


def append_reference(state: LatentState, latent: Tensor, fps: float, downscale: int = 1,
                     strength: float = 1.0) -> LatentState:
    """IC-LoRA reference latents (B, C, f, h, w) (VideoConditionByReferenceLatent): appended tokens on their own
    causal grid from time 0, rows and columns times `downscale` (a reference at 1/downscale of the target's
    size lands on the target's pixel grid), mask 1 - strength."""
    tokens = P.patchify_video(latent.to(state.x.dtype))
    _, _, f, h, w = latent.shape
    pos = P.reference_positions(f, h, w, fps, downscale, batch=latent.shape[0], device=latent.device)
    mask = torch.full((*tokens.shape[:2], 1), 1.0 - strength, dtype=latent.dtype, device=latent.device)
    return replace(state, x=torch.cat([state.x, tokens], 1), clean=torch.cat([state.clean, tokens], 1),
                   mask=torch.cat([state.mask, mask], 1), positions=torch.cat([state.positions, pos], 2))


def add_noise(state: LatentState, generator: torch.Generator | None, noise_scale: float = 1.0) -> LatentState:
    """GaussianNoiser: noise drawn in the latent dtype over every token (appended ones included), blended by
    mask * noise_scale."""
    noise = torch.randn(*state.x.shape, device=state.x.device, dtype=state.x.dtype, generator=generator)
    m = state.mask * noise_scale
    return replace(state, x=(noise * m + state.x * (1 - m)).to(state.x.dtype))


def unpatchified(video: LatentState, audio: LatentState | None, num_frames: int, height: int, width: int
                 ) -> tuple[Tensor, Tensor | None]:
    """The generated latents as (B, 128, F, H/32, W/32) and (B, 8, T, 16)."""
    f, h, w = P.video_latent_shape(num_frames, height, width)
    v = P.unpatchify_video(video.target(), f, h, w)
    return v, (P.unpatchify_audio(audio.target()) if audio is not None else None)


# ----------------------------------------------------------------------------------------------------------
# One denoising step with multi-modal guidance


Denoiser = Callable[[LatentState, LatentState, Tensor, int], tuple[Tensor, Tensor]]


def _stream(transformer, state: LatentState, context: Tensor, sigma: Tensor, rows: int):
    from ltx.ltx2.transformer import StreamInput

    def rep(t: Tensor) -> Tensor:
        return t.repeat(rows, *([1] * (t.ndim - 1))) if rows > 1 else t

    b = state.x.shape[0] * rows
    timesteps = (state.mask * sigma).squeeze(-1)  # (B, T) float32, as timesteps_from_mask
    return StreamInput(x=rep(state.x), timesteps=rep(timesteps), sigma=sigma.expand(b),  # its dtype, as the reference
                       positions=rep(state.positions), context=context)


def denoise_step(
    transformer,
    video: LatentState,
    audio: LatentState,
    sigma: Tensor,
    positive: Prompt,
    negative: Prompt | None,
    video_guidance: GuiderParams,
    audio_guidance: GuiderParams,
    *,
    batch_passes: bool = False,
) -> tuple[Tensor, Tensor]:
    """Guided x0 for both modalities at `sigma` (multi_modal_guider_denoising_func)."""
    from ltx.ltx2.transformer import Perturbations

    passes = guidance_passes(video_guidance, audio_guidance)
    if passes.uncond and negative is None:
        raise ValueError("CFG (cfg != 1) needs a negative prompt's contexts")
    b = video.x.shape[0]
    L = transformer.cfg.num_layers
    # rows of the batched call: (name, prompt, perturbation builder)
    runs: list[tuple[str, Prompt, Callable[[int], Perturbations] | None]] = [("cond", positive, None)]
    if passes.uncond:
        runs.append(("uncond", negative, None))
    if passes.perturbed:  # one pass skips video self-attention in the video blocks and audio in the audio blocks
        def stg(n: int) -> Perturbations:
            p = Perturbations.none(L, n)
            if passes.stg_video_blocks is not None:
                p = p & Perturbations.stg(L, n, list(passes.stg_video_blocks), audio=False)
            if passes.stg_audio_blocks is not None:
                p = p & Perturbations.stg(L, n, list(passes.stg_audio_blocks), video=False)
            return p

        runs.append(("perturbed", positive, stg))
    if passes.isolated:
        runs.append(("isolated", positive, lambda n: Perturbations.isolate_modalities(L, n)))

    def call(group: list[tuple[str, Prompt, Callable | None]]) -> dict[str, tuple[Tensor, Tensor]]:
        n = len(group)
        vctx = torch.cat([p.video for _, p, _ in group])
        actx = torch.cat([p.audio for _, p, _ in group])
        vin = _stream(transformer, video, vctx, sigma, n)
        ain = _stream(transformer, audio, actx, sigma, n)
        perturb = None
        if any(f is not None for _, _, f in group):
            parts = [f(b) if f is not None else Perturbations.none(L, b) for _, _, f in group]
            perturb = Perturbations.cat(parts)
        v_vel, a_vel = transformer(vin, ain, perturb)
        v0 = to_denoised(vin.x, v_vel, vin.timesteps.unsqueeze(-1))
        a0 = to_denoised(ain.x, a_vel, ain.timesteps.unsqueeze(-1))
        return {name: (v0[i * b:(i + 1) * b], a0[i * b:(i + 1) * b]) for i, (name, _, _) in enumerate(group)}

    if batch_passes:
        out = call(runs)
    else:
        out = {}
        for r in runs:
            out.update(call([r]))

    def pick(k: int) -> dict[str, Tensor | None]:
        return {name: (out[name][k] if name in out else None) for name in ("uncond", "perturbed", "isolated")}

    x0v = guide(video_guidance, out["cond"][0], **pick(0))
    x0a = guide(audio_guidance, out["cond"][1], **pick(1))
    return x0v, x0a


# ----------------------------------------------------------------------------------------------------------
# The sampler


def _refuse_skip_step(*guidance: GuiderParams) -> None:
    if any(g.skip_step for g in guidance):
        raise ValueError("skip_step > 0 is not supported by these samplers; use skip_step=0 (the official default)")


def sample(
    transformer,
    video: LatentState,
    audio: LatentState,
    sigmas: Tensor,
    positive: Prompt,
    negative: Prompt | None = None,
    video_guidance: GuiderParams = NO_GUIDANCE,
    audio_guidance: GuiderParams = NO_GUIDANCE,
    *,
    batch_passes: bool = False,
    on_step: Callable[[int, LatentState, LatentState], None] | None = None,
) -> tuple[LatentState, LatentState]:
    """Euler over `sigmas` (euler_denoising_loop) with guided x0; `on_step(i, video, audio)` sees each new state."""
    _refuse_skip_step(video_guidance, audio_guidance)
    sigmas = sigmas.to(torch.float32)
    for i in range(len(sigmas) - 1):
        x0v, x0a = denoise_step(transformer, video, audio, sigmas[i], positive, negative, video_guidance,
                                audio_guidance, batch_passes=batch_passes)
        x0v = post_process(x0v, video.mask, video.clean)
        x0a = post_process(x0a, audio.mask, audio.clean)
        video = replace(video, x=euler_step(video.x, x0v, sigmas[i], sigmas[i + 1]))
        audio = replace(audio, x=euler_step(audio.x, x0a, sigmas[i], sigmas[i + 1]))
        if on_step is not None:
            on_step(i, video, audio)
    return video, audio


def sample_res2s(
    transformer,
    video: LatentState,
    audio: LatentState,
    sigmas: Tensor,
    positive: Prompt,
    negative: Prompt | None = None,
    video_guidance: GuiderParams = NO_GUIDANCE,
    audio_guidance: GuiderParams = NO_GUIDANCE,
    *,
    batch_passes: bool = False,
    noise_seed: int = -1,
    on_call: Callable[[], None] | None = None,
) -> tuple[LatentState, LatentState]:
    """The res_2s sampler of the HQ pipeline (res2s_audio_video_denoising_loop, ltx.ltx2.sched.res2s_sample):
    two guided evaluations per step (at sigma and at the log-midpoint) with SDE renoising from generators seeded
    `noise_seed` / `noise_seed + 10000`, plus a final evaluation at 0.0011; latents stored in the run dtype
    between steps (the reference's default model dtype is bf16, the dtype of its pipelines)."""
    _refuse_skip_step(video_guidance, audio_guidance)

    def denoise(latents: tuple[Tensor, Tensor], sig: Tensor, i: int) -> tuple[Tensor, Tensor]:
        out = denoise_step(transformer, replace(video, x=latents[0]), replace(audio, x=latents[1]),
                           sig[i], positive, negative, video_guidance, audio_guidance,
                           batch_passes=batch_passes)
        if on_call is not None:
            on_call()
        return out

    xv, xa = res2s_sample(denoise, (video.x, audio.x), (video.mask, audio.mask), (video.clean, audio.clean),
                          sigmas, noise_seed=noise_seed, model_dtype=video.x.dtype)
    return replace(video, x=xv), replace(audio, x=xa)


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
) -> tuple[LatentState, LatentState]:
    """noise_video_state + noise_audio_state: initial states, conditionings applied, then noised (video first).
    `freeze_audio` (audio-to-video, denoise_video_only): the audio latent is kept as it is (its noise is still
    drawn, at scale 0, so the generator advances as the reference's) and its mask is 0 (timesteps 0)."""
    video = video_state(num_frames, height, width, fps, batch=batch, dtype=dtype, device=device, latent=video_latent)
    for c in conditionings:
        latent = c.latent.expand(batch, *c.latent.shape[1:]) if c.latent.shape[0] == 1 else c.latent  # every row
        if c.reference:
            video = append_reference(video, latent, fps, c.reference, c.strength)
        elif c.frame == 0 and not c.append:
            video = condition_frame0(video, latent, c.strength)
        else:
            video = append_keyframe(video, latent, c.frame, fps, c.strength)
    video = add_noise(video, generator, noise_scale)
    audio = audio_state(num_frames, fps, batch=batch, dtype=dtype, device=device, latent=audio_latent)
    audio = add_noise(audio, generator, 0.0 if freeze_audio else noise_scale)
    if freeze_audio:
        audio = replace(audio, mask=torch.zeros_like(audio.mask))
    return video, audio


# ----------------------------------------------------------------------------------------------------------
# The official pipelines


@dataclass
class AVModels:
    """Loaded modules of one run (ltx.ltx2.checkpoint.load gives the first four)."""

    transformer: object  # ltx.ltx2.transformer.AVTransformer (stage 1)
    vae: object  # ltx.ltx2.vae.VideoVAE
    audio_vae: object  # ltx.ltx2.audio_vae.AudioVAE
    vocoder: object  # ltx.ltx2.vocoder.Vocoder | VocoderWithBWE
    upsampler: object | None = None  # ltx.ltx2.upsampler.LatentUpsampler2 (two-stage / distilled)
    # two-stage: the transformer with the distilled LoRA fused, or a function called once stage 1 is done that
    # returns it (e.g. fusing the LoRA into the stage-1 transformer in place: one transformer in memory)
    stage_2_transformer: object | None = None


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


@dataclass
class AVResult:
    video: Tensor  # (B, 3, F, H, W) decoded, in [-1, 1]
    audio: Tensor  # (B, 2, N) waveform in [-1, 1]
    sample_rate: int
    video_latent: Tensor  # (B, 128, F', H', W') final latents
    audio_latent: Tensor  # (B, 8, T, 16)


def check_size(height: int, width: int, num_frames: int, two_stage: bool) -> None:
    """Frames 8k + 1; H and W multiples of 32 (one stage) or 64 (two stages, whose first runs at half size),
    with the nearest valid values in the message (the reference asserts without them)."""
    m = 64 if two_stage else 32
    for name, v in (("height", height), ("width", width)):
        if v < m or v % m:
            lo, hi = max(m, v // m * m), max(m, (v + m - 1) // m * m)
            raise ValueError(f"{name}={v} must be a positive multiple of {m}"
                             f"{' (two-stage pipelines: stage 1 runs at half size)' if two_stage else ''}; "
                             f"nearest valid: {lo}" + (f" or {hi}" if hi != lo else ""))
    if num_frames < 1 or (num_frames - 1) % 8:
        lo = (num_frames - 1) // 8 * 8 + 1
        raise ValueError(f"num_frames={num_frames} must be 8k + 1; nearest valid: "
                         f"{max(lo, 1)}" + (f" or {lo + 8}" if num_frames > 1 else ""))


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


def _encode_images(vae, images: Sequence[ImageInput], height: int, width: int, dtype, device,
                   as_keyframes: bool = False) -> list[Conditioning]:
    return [Conditioning(vae.encode(fit_image(im.pixels.to(device), height, width, dtype)).to(dtype), im.frame,
                         im.strength, as_keyframes) for im in images]


def decode(models: AVModels, video_latent: Tensor, audio_latent: Tensor) -> tuple[Tensor, Tensor]:
    """Video pixels (B, 3, F, H, W) and the vocoder's waveform (B, 2, N) (decode_video / decode_audio)."""
    video = models.vae.decode(video_latent)
    mel = models.audio_vae.decode(audio_latent)
    return video, models.vocoder(mel).float()


def generate_av(
    models: AVModels,
    positive: Prompt,
    negative: Prompt | None = None,
    *,
    pipeline: str = "two_stage",
    height: int,
    width: int,
    num_frames: int,
    fps: float,
    sigmas: Tensor,
    stage_2_sigmas: Tensor | None = None,
    video_guidance: GuiderParams = NO_GUIDANCE,
    audio_guidance: GuiderParams = NO_GUIDANCE,
    images: Sequence[ImageInput] = (),
    references: Sequence[ReferenceInput] = (),
    soundtrack: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    batch_passes: bool = False,
    on_step: Callable[[int, int, LatentState, LatentState], None] | None = None,
) -> AVResult:
    """One run of an official pipeline: "one_stage" (TI2VidOneStagePipeline), "two_stage"
    (TI2VidTwoStagesPipeline: guided stage 1 at half size, x2 upsample, unguided refine with
    `models.stage_2_transformer`), "hq" (TI2VidTwoStagesHQPipeline: the same stages with the res_2s sampler;
    the stage-1 sigmas are shifted for the stage-1 token count, `ltx2_sigmas(steps, num_tokens=...)`) or
    "distilled" (DistilledPipeline: both stages unguided, one transformer) or "keyframes"
    (KeyframeInterpolationPipeline: "two_stage" with every image, frame 0 included, appended as a guiding
    keyframe instead of replacing the first latent frame).

    `sigmas`: stage 1 (ltx2_sigmas(steps) or the distilled list); `stage_2_sigmas`: the refine pass (its first
    value is also the renoise level). `soundtrack`: an encoded audio latent (B or 1, 8, T, 16) of the video's
    length to generate the video for (A2VidPipelineTwoStage with any pipeline: the audio stays fixed in every
    stage and guides the video through the A<->V attention; audio guidance must be off). `on_step(stage, i,
    video, audio)` sees every state. `references`: IC-LoRA control clips, appended in stage 1 only (ICLoraPipeline:
    the "distilled" pipeline with `models.transformer` carrying the IC-LoRA and `models.stage_2_transformer`
    the one without it) (hq: called once per
    transformer evaluation, with None states: 2 per step + 1). Noise: one
    generator, video then audio, stage 1 then stage 2 (the reference's order)."""
    if pipeline not in ("one_stage", "two_stage", "hq", "distilled", "keyframes"):
        raise ValueError(f"pipeline={pipeline!r}: choose one_stage, two_stage, hq, distilled or keyframes")
    as_keyframes = pipeline == "keyframes"  # KeyframeInterpolationPipeline: two_stage, every image appended
    if references and pipeline != "distilled":
        raise ValueError("IC-LoRA references run with the distilled pipeline (as the official ICLoraPipeline)")
    for r in references:
        if r.downscale < 1 or (height // 2) % r.downscale or (width // 2) % r.downscale:
            raise ValueError(f"reference downscale {r.downscale}: the stage-1 size {height // 2}x{width // 2} must "
                             "be divisible by it")
    pipeline = "two_stage" if as_keyframes else pipeline
    two = pipeline != "one_stage"
    check_size(height, width, num_frames, two)
    if two and (models.upsampler is None or stage_2_sigmas is None):
        raise ValueError(f"the {pipeline} pipeline needs a spatial upsampler and stage_2_sigmas")
    guided = any(g.needs_uncond or g.needs_perturbed or g.needs_isolated for g in (video_guidance, audio_guidance))
    if soundtrack is not None and (audio_guidance.needs_uncond or audio_guidance.needs_perturbed
                                   or audio_guidance.needs_isolated):
        raise ValueError("with a soundtrack the audio is not generated: give no audio guidance (cfg 1, stg 0, "
                         "modality 1), as the official audio-to-video pipeline")
    if pipeline == "distilled" and guided:
        raise ValueError("the distilled pipeline samples without guidance (cfg 1, stg 0, modality 1)")
    batch = positive.video.shape[0]
    device = positive.video.device
    h1, w1 = (height // 2, width // 2) if two else (height, width)
    if soundtrack is not None:
        frames = P.audio_latent_frames_for_video(num_frames, fps)
        if soundtrack.ndim != 4 or soundtrack.shape[2] < frames or soundtrack.shape[0] not in (1, batch):
            raise ValueError(f"soundtrack latent {tuple(soundtrack.shape)}: need (1 or {batch}, 8, >= {frames}, 16) "
                             f"for {num_frames} frames at {fps} fps")
        soundtrack = soundtrack[:, :, :frames].to(dtype).expand(batch, -1, -1, -1)
        if negative is not None:  # the audio guider has no negative context: the uncond pass keeps the positive
            negative = replace(negative, audio=positive.audio)  # audio context (multi_modal_guider_denoising_func)

    def stage(k: int, transformer, h: int, w: int, sig: Tensor, vg, ag, noise_scale, vlat=None, alat=None):
        conds = _encode_images(models.vae, images, h, w, dtype, device, as_keyframes)
        if k == 1:
            for r in references:
                px = r.pixels[:num_frames]
                px = px[: (px.shape[0] - 1) // 8 * 8 + 1]  # 8k + 1 frames, as the reference encoder crops
                latent = models.vae.encode(fit_image(px.to(device), h // r.downscale, w // r.downscale, dtype))
                conds.append(Conditioning(latent.to(dtype), 0, r.strength, reference=r.downscale))
        video, audio = conditioned_states(num_frames, h, w, fps, conds, batch=batch, dtype=dtype, device=device,
                                          generator=generator, noise_scale=noise_scale, video_latent=vlat,
                                          audio_latent=soundtrack if soundtrack is not None else alat,
                                          freeze_audio=soundtrack is not None)
        if pipeline == "hq":
            calls = iter(range(10**9))
            hook = None if on_step is None else (lambda: on_step(k, next(calls), None, None))
            video, audio = sample_res2s(transformer, video, audio, sig, positive, negative, vg, ag,
                                        batch_passes=batch_passes, on_call=hook)
        else:
            step = None if on_step is None else (lambda i, v, a: on_step(k, i, v, a))
            video, audio = sample(transformer, video, audio, sig, positive, negative, vg, ag,
                                  batch_passes=batch_passes, on_step=step)
        return unpatchified(video, audio, num_frames, h, w)

    vlat, alat = stage(1, models.transformer, h1, w1, sigmas, video_guidance, audio_guidance, 1.0)
    if two:
        from ltx.ltx2.upsampler import upsample_latent

        stats = models.vae.per_channel_statistics
        up = upsample_latent(models.upsampler, vlat, stats.mean, stats.std).to(dtype)  # reference: row 0 only
        second = models.stage_2_transformer if pipeline in ("two_stage", "hq") or references else models.transformer
        if second is not None and not isinstance(second, torch.nn.Module):
            second = second()
        if second is None:
            raise ValueError(f"the {pipeline} pipeline{' with references' if references else ''} needs "
                             "models.stage_2_transformer (two-stage: the distilled LoRA fused; IC-LoRA: without it)")
        s2 = stage_2_sigmas.to(torch.float32)
        vlat, alat = stage(2, second, height, width, s2, NO_GUIDANCE, NO_GUIDANCE, s2[0], up, alat)
    video, audio = decode(models, vlat, alat)
    return AVResult(video, audio, int(models.vocoder.sample_rate), vlat, alat)
