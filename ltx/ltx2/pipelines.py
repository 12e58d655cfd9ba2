"""LTX-2 generation as functions over loaded modules: the guided denoising step, the samplers, and one small
function per official pipeline (`one_stage`, `two_stage`, `hq`, `keyframes`, `audio_to_video`, `distilled`,
`ic_lora`, and LTX-2.5's `dfr`, whose passes are ltx/ltx2/dfr.py, and `hdr_ic_lora`, video only).

Matches `ltx_pipelines` 1.0.0 (TI2VidOneStagePipeline, TI2VidTwoStagesPipeline, TI2VidTwoStagesHQPipeline,
KeyframeInterpolationPipeline, A2VidPipelineTwoStage, DistilledPipeline, ICLoraPipeline) step for step
(tests/ltx2/test_ltx2_pipeline.py: bitwise in fp32). Nothing here loads or frees models: the caller passes
modules, so a research loop can keep them resident (ltx.ltx2.api loads them, stages LoRAs and encodes prompts).

`batch_passes=True` runs the guidance passes of a step (cond, uncond, STG-perturbed, modality-isolated) as one
batch through the transformer instead of up to four calls: equal up to summation order (~1e-6). It is off by
default because on the CPU it measured slower (1.16-1.31x at 6,144 video tokens, tools/bench_ltx2.py) with 3.2x the
activation memory; on a GPU that one batch-1 pass does not fill, it may pay off (not measured here).

A step, per modality (file docstring of ltx.ltx2.sched): per-token timesteps = denoise_mask * sigma; the
transformer predicts velocity; x0 = x - v * timesteps (fp32, rounded to the latent dtype); guidance combines
the passes' x0; tokens with mask 0 are reset to their clean latent; Euler to the next sigma. The latent states
and their conditioning are ltx/ltx2/conditioning.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum

import torch
from torch import Tensor

from ltx.core import sampling
from ltx.core.sampling import to_denoised
from ltx.ltx2 import patchify
from ltx.ltx2.conditioning import (
    Conditioning,
    ImageInput,
    LatentState,
    ReferenceInput,
    conditioned_states,
    fit_image,
    unpatchified,
)
from ltx.ltx2.sched import GuiderParams, guidance_passes, guide, res2s
from ltx.ltx2.transformer import Perturbations, StreamInput
from ltx.ltx2.upsampler import upsample_latent

NO_GUIDANCE = GuiderParams()  # cfg 1, stg 0, modality 1: one conditional pass


class AVPipeline(Enum):
    """The official LTX-2 pipelines (ltx_pipelines 1.0.0) this repository runs."""

    one_stage = "one_stage"  # TI2VidOneStagePipeline: guided, at the full size
    two_stage = "two_stage"  # TI2VidTwoStagesPipeline: guided at half size, x2 upsample, distilled-LoRA refine
    hq = "hq"  # TI2VidTwoStagesHQPipeline: two_stage with res_2s, a token-shifted schedule, LoRA in both stages
    keyframes = "keyframes"  # KeyframeInterpolationPipeline: two_stage with every image appended as a keyframe
    distilled = "distilled"  # DistilledPipeline: the distilled checkpoint, 8 + 3 sigmas, no guidance
    dfr = "dfr"  # LTX-2.5 DFRPipeline: keyframe slots, x2 detailing, 0-2 temporal x2 rounds, x2 epilogue (ltx.ltx2.dfr)

    @property
    def two_stages(self) -> bool:
        return self is not AVPipeline.one_stage

    @property
    def uses_distilled_lora(self) -> bool:
        """Stage 2 (hq, dfr: every pass) runs with the distilled LoRA fused into the -dev transformer."""
        return self in (AVPipeline.two_stage, AVPipeline.hq, AVPipeline.keyframes, AVPipeline.dfr)


@dataclass
class Prompt:
    """Text contexts of one prompt for both streams (ltx.ltx2.text.EmbeddingsProcessor output)."""

    video: Tensor  # (B, S, D_video)
    audio: Tensor  # (B, S, D_audio)
    mask: Tensor | None = None  # (B, S) 1 = token; the official pipelines pass None (attend to all)


# ----------------------------------------------------------------------------------------------------------
# One denoising step with multi-modal guidance


Denoiser = Callable[[LatentState, LatentState, Tensor, int], tuple[Tensor, Tensor]]


def _stream(transformer, state: LatentState, context: Tensor, sigma: Tensor, rows: int):
    def rep(t: Tensor) -> Tensor:
        return t.repeat(rows, *([1] * (t.ndim - 1))) if rows > 1 else t

    b = state.x.shape[0] * rows
    timesteps = (state.mask * sigma).squeeze(-1)  # (B, T) float32, as timesteps_from_mask
    return StreamInput(x=rep(state.x), timesteps=rep(timesteps), sigma=sigma.expand(b),  # its dtype, as the reference
                       positions=rep(state.positions), context=context)


def denoise_step(
    transformer,
    video: LatentState,
    audio: LatentState | None,
    sigma: Tensor,
    positive: Prompt,
    negative: Prompt | None,
    video_guidance: GuiderParams,
    audio_guidance: GuiderParams,
    *,
    batch_passes: bool = False,
) -> tuple[Tensor, Tensor]:
    """Guided x0 for both modalities at `sigma` (multi_modal_guider_denoising_func). `audio` None: the video
    stream alone (no audio tokens, no A<->V attention; the HDR IC-LoRA pipeline's video-only passes); x0 audio None."""
    if audio is None and is_guided(audio_guidance):
        raise ValueError("audio guidance needs the audio stream")
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
        ain = None if audio is None else _stream(transformer, audio, actx, sigma, n)
        perturb = None
        if any(f is not None for _, _, f in group):
            parts = [f(b) if f is not None else Perturbations.none(L, b) for _, _, f in group]
            perturb = Perturbations.cat(parts)
        v_vel, a_vel = transformer(vin, ain, perturb)
        v0 = to_denoised(vin.x, v_vel, vin.timesteps.unsqueeze(-1))
        a0 = None if ain is None else to_denoised(ain.x, a_vel, ain.timesteps.unsqueeze(-1))
        return {name: (v0[i * b:(i + 1) * b], None if a0 is None else a0[i * b:(i + 1) * b])
                for i, (name, _, _) in enumerate(group)}

    if batch_passes:
        out = call(runs)
    else:
        out = {}
        for r in runs:
            out.update(call([r]))

    def pick(k: int) -> dict[str, Tensor | None]:
        return {name: (out[name][k] if name in out else None) for name in ("uncond", "perturbed", "isolated")}

    x0v = guide(video_guidance, out["cond"][0], **pick(0))
    x0a = None if audio is None else guide(audio_guidance, out["cond"][1], **pick(1))
    return x0v, x0a


# ----------------------------------------------------------------------------------------------------------
# The sampler


def _refuse_skip_step(*guidance: GuiderParams) -> None:
    if any(g.skip_step for g in guidance):
        raise ValueError("skip_step > 0 is not supported by these samplers; use skip_step=0 (the official default)")


def sample(
    transformer,
    video: LatentState,
    audio: LatentState | None,
    sigmas: Tensor,
    positive: Prompt,
    negative: Prompt | None = None,
    video_guidance: GuiderParams = NO_GUIDANCE,
    audio_guidance: GuiderParams = NO_GUIDANCE,
    *,
    batch_passes: bool = False,
    on_step: Callable[[int, LatentState, LatentState | None], None] | None = None,
    ancestral: torch.Generator | None = None,
) -> tuple[LatentState, LatentState | None]:
    """Euler over `sigmas` (euler_denoising_loop) with guided x0; `on_step(i, video, audio)` sees each new state.
    `ancestral`: Euler ancestral instead (eta = s_noise = 1, LTX-2.5's distilled stage 1), noise from this
    generator. `audio` None: the video stream alone (`denoise_step`)."""
    _refuse_skip_step(video_guidance, audio_guidance)
    streams = (video,) if audio is None else (video, audio)

    def states(latents: Sequence[Tensor]) -> tuple[LatentState, LatentState | None]:
        return replace(video, x=latents[0]), None if audio is None else replace(audio, x=latents[1])

    def denoise(latents: tuple[Tensor, ...], sigma: Tensor, i: int) -> tuple[Tensor, ...]:
        x0s = denoise_step(transformer, *states(latents), sigma, positive, negative, video_guidance, audio_guidance,
                           batch_passes=batch_passes)
        return x0s[:len(streams)]

    def after(i: int, latents: tuple[Tensor, ...]) -> None:
        on_step(i, *states(latents))

    masks, cleans = tuple(s.mask for s in streams), tuple(s.clean for s in streams)
    step = sampling.x0_euler(masks, cleans) if ancestral is None else sampling.x0_ancestral(masks, cleans, ancestral)
    xs = sampling.sample(denoise, tuple(s.x for s in streams), sigmas.to(torch.float32), step,
                         callback=after if on_step is not None else None)
    return states(xs)


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
    """The res_2s sampler of the HQ pipeline (res2s_audio_video_denoising_loop, ltx.ltx2.sched.res2s):
    two guided evaluations per step (at sigma and at the log-midpoint) with SDE renoising from generators seeded
    `noise_seed` / `noise_seed + 10000`, plus a final evaluation at 0.0011; latents stored in the run dtype
    between steps (the reference's default model dtype is bf16, the dtype of its pipelines)."""
    _refuse_skip_step(video_guidance, audio_guidance)

    def denoise(latents: tuple[Tensor, Tensor], sigma: Tensor, i: int) -> tuple[Tensor, Tensor]:
        out = denoise_step(transformer, replace(video, x=latents[0]), replace(audio, x=latents[1]), sigma,
                           positive, negative, video_guidance, audio_guidance, batch_passes=batch_passes)
        if on_call is not None:
            on_call()
        return out

    step = res2s((video.mask, audio.mask), (video.clean, audio.clean), noise_seed=noise_seed,
                 model_dtype=video.x.dtype)
    xv, xa = sampling.sample(denoise, (video.x, audio.x), sigmas, step)
    return replace(video, x=xv), replace(audio, x=xa)


# ----------------------------------------------------------------------------------------------------------
# The official pipelines: one function each, over shared stage code


@dataclass
class AVModels:
    """Loaded modules of one run (ltx.ltx2.checkpoint.load gives the first four)."""

    transformer: torch.nn.Module  # ltx.ltx2.transformer.AVTransformer (stage 1)
    vae: torch.nn.Module  # ltx.ltx2.vae.VideoVAE
    audio_vae: torch.nn.Module  # ltx.ltx2.audio_vae.AudioVAE
    vocoder: torch.nn.Module  # ltx.ltx2.vocoder.Vocoder | VocoderWithBWE
    upsampler: torch.nn.Module | None = None  # ltx.ltx2.upsampler.LatentUpsampler2 (two-stage pipelines)
    # LTX-2.5's diffusion decoder (ltx.ltx2.diffusion_decoder.DiffusionDecoder) decodes the video instead of the
    # VAE's conv decoder (the VAE still encodes); its noise comes from the run's generator, after the stages' draws
    video_decoder: torch.nn.Module | None = None
    # its tiled decode (ltx.ltx2.diffusion_decoder.DiffusionDecodeTiling; None: untiled)
    video_decoder_tiling: object | None = None


@dataclass
class AVRequest:
    """What every pipeline takes besides the models and the prompt contexts.

    `sigmas`: stage 1 (ltx2_sigmas(steps), token-shifted for hq, or the distilled list); `stage_2_sigmas`: the
    refine pass of the two-stage pipelines (its first value is also the renoise level). `soundtrack`: an encoded
    audio latent (B or 1, 8, >= T, 16) for audio-to-video: it stays fixed in every stage and guides the video
    through the A<->V attention (audio guidance must be off). `video`: an encoded video latent (B or 1, C, F', H',
    W') for video-to-audio (one stage): it stays fixed and only the audio is generated (video guidance must be
    off), as the trainer's v2a mode conditions it. `on_step(stage, i, video, audio)` sees every new
    state (hq: called once per transformer evaluation, with None states). Noise: one generator, video then
    audio, stage 1 then stage 2 (the reference's order)."""

    height: int
    width: int
    num_frames: int
    fps: float
    sigmas: Tensor
    stage_2_sigmas: Tensor | None = None
    video_guidance: GuiderParams = NO_GUIDANCE
    audio_guidance: GuiderParams = NO_GUIDANCE
    images: Sequence[ImageInput] = ()
    soundtrack: Tensor | None = None
    video: Tensor | None = None
    generator: torch.Generator | None = None
    dtype: torch.dtype = torch.float32
    batch_passes: bool = False
    # LTX-2.5 distilled: stage 1 samples Euler ancestral with noise from this generator (seeded seed + 10000 by the
    # official pipeline, so its first draw is not the initial noise again); None = plain Euler
    ancestral_generator: torch.Generator | None = None
    on_step: Callable[[int, int, LatentState | None, LatentState | None], None] | None = None


@dataclass
class AVResult:
    video: Tensor  # (B, 3, F, H, W) decoded, in [-1, 1]
    audio: Tensor  # (B, 2, N) waveform in [-1, 1]
    sample_rate: int
    video_latent: Tensor  # (B, 128, F', H', W') final latents
    audio_latent: Tensor  # (B, 8, T, 16)
    fps: float | None = None  # the video's frame rate when the pipeline changes it (DFR's temporal rounds)


def check_size(height: int, width: int, num_frames: int, two_stage: bool,
               scale: tuple[int, int, int] = patchify.VIDEO_SCALE) -> None:
    """Frames 8k + 1; H and W multiples of 32 (one stage) or 64 (two stages, whose first runs at half size),
    with the nearest valid values in the message (the reference asserts without them). `scale`: the VAE's
    pixels per latent voxel (frames, rows, columns), (8, 32, 32) for every released one."""
    multiple = scale[1] * (2 if two_stage else 1)
    for name, value in (("height", height), ("width", width)):
        if value < multiple or value % multiple:
            lo = max(multiple, value // multiple * multiple)
            hi = max(multiple, (value + multiple - 1) // multiple * multiple)
            raise ValueError(f"{name}={value} must be a positive multiple of {multiple}"
                             f"{' (two-stage pipelines: stage 1 runs at half size)' if two_stage else ''}; "
                             f"nearest valid: {lo}" + (f" or {hi}" if hi != lo else ""))
    t = scale[0]
    if num_frames < 1 or (num_frames - 1) % t:
        lo = (num_frames - 1) // t * t + 1
        raise ValueError(f"num_frames={num_frames} must be {t}k + 1; nearest valid: "
                         f"{max(lo, 1)}" + (f" or {lo + t}" if num_frames > 1 else ""))


def is_guided(*guidance: GuiderParams) -> bool:
    """Whether any modality needs more than the conditional pass (CFG, STG or modality isolation)."""
    return any(g.needs_uncond or g.needs_perturbed or g.needs_isolated for g in guidance)


def decode(models: AVModels, video_latent: Tensor, audio_latent: Tensor,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Video pixels (B, 3, F, H, W) and the vocoder's waveform (B, 2, N) (decode_video / decode_audio)."""
    video = decode_video(models, video_latent, generator)
    mel = models.audio_vae.decode(audio_latent)
    return video, models.vocoder(mel).float()


def decode_video(models: AVModels, video_latent: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Video pixels (B, 3, F, H, W) in [-1, 1]: the diffusion decoder when there is one, else the VAE's."""
    if models.video_decoder is not None:
        from ltx.ltx2.diffusion_decoder import decode as diffusion_decode

        return diffusion_decode(models.video_decoder, video_latent, generator=generator,
                                tiling=models.video_decoder_tiling)
    return models.vae.decode(video_latent)


def one_stage(models: AVModels, positive: Prompt, negative: Prompt | None, request: AVRequest) -> AVResult:
    """TI2VidOneStagePipeline: one guided stage at the full size."""
    check_size(request.height, request.width, request.num_frames, two_stage=False, scale=models.vae.cfg.scale)
    request, negative = _with_soundtrack(request, positive, negative)
    request, negative = _with_video(models, request, positive, negative)
    video, audio = _stage(1, models.transformer, models, positive, negative, request, request.height,
                          request.width, request.sigmas, request.video_guidance, request.audio_guidance)
    return _decoded(models, video, audio, request.generator)


def two_stage(models: AVModels, positive: Prompt, negative: Prompt | None, request: AVRequest, *,
              stage_2_transformer: torch.nn.Module | None = None,
              before_stage_2: Callable[[], None] | None = None) -> AVResult:
    """TI2VidTwoStagesPipeline: guided stage 1 at half size, x2 latent upsample, an unguided refine with
    `stage_2_transformer` (the distilled LoRA fused). None = `models.transformer` after `before_stage_2`, called
    once stage 1 is done (e.g. fusing the LoRA into it in place: one transformer in memory)."""
    return _two_stages(models, positive, negative, request, stage_2_transformer, before_stage_2)


def hq(models: AVModels, positive: Prompt, negative: Prompt | None, request: AVRequest, *,
       stage_2_transformer: torch.nn.Module | None = None,
       before_stage_2: Callable[[], None] | None = None) -> AVResult:
    """TI2VidTwoStagesHQPipeline: `two_stage` with the res_2s sampler in both stages; its stage-1 sigmas are
    shifted for the stage-1 token count (`ltx2_sigmas(steps, num_tokens=...)`)."""
    if request.soundtrack is not None:
        raise ValueError("a soundtrack runs with the one_stage, two_stage and distilled pipelines, not hq")
    return _two_stages(models, positive, negative, request, stage_2_transformer, before_stage_2, res2s=True)


def keyframes(models: AVModels, positive: Prompt, negative: Prompt | None, request: AVRequest, *,
              stage_2_transformer: torch.nn.Module | None = None,
              before_stage_2: Callable[[], None] | None = None) -> AVResult:
    """KeyframeInterpolationPipeline: `two_stage` with every image, frame 0 included, appended as a guiding
    keyframe instead of replacing the first latent frame."""
    return _two_stages(models, positive, negative, request, stage_2_transformer, before_stage_2, as_keyframes=True)


def audio_to_video(models: AVModels, positive: Prompt, negative: Prompt | None, request: AVRequest, *,
                   stage_2_transformer: torch.nn.Module | None = None,
                   before_stage_2: Callable[[], None] | None = None) -> AVResult:
    """A2VidPipelineTwoStage: `two_stage` with `request.soundtrack` (required) fixed in both stages."""
    if request.soundtrack is None:
        raise ValueError("audio-to-video needs request.soundtrack (an encoded audio latent)")
    return _two_stages(models, positive, negative, request, stage_2_transformer, before_stage_2)


def distilled(models: AVModels, positive: Prompt, request: AVRequest) -> AVResult:
    """DistilledPipeline: both stages unguided, one transformer (the distilled checkpoint)."""
    _refuse_guidance(request)
    return _two_stages(models, positive, None, request, models.transformer, None)


def ic_lora(models: AVModels, positive: Prompt, request: AVRequest, references: Sequence[ReferenceInput], *,
            stage_2_transformer: torch.nn.Module | None = None,
            before_stage_2: Callable[[], None] | None = None) -> AVResult:
    """ICLoraPipeline: `distilled` with the control clips appended in stage 1, where `models.transformer`
    carries the IC-LoRA; stage 2 runs `stage_2_transformer`, the distilled model without it (None =
    `models.transformer` after `before_stage_2`, e.g. its own weights copied back in place)."""
    _refuse_guidance(request)
    for r in references:
        if r.downscale < 1 or (request.height // 2) % r.downscale or (request.width // 2) % r.downscale:
            raise ValueError(f"reference downscale {r.downscale}: the stage-1 size {request.height // 2}x"
                             f"{request.width // 2} must be divisible by it")
    return _two_stages(models, positive, None, request, stage_2_transformer, before_stage_2, references=references)


# The HDR IC-LoRA's stage-2 tiling (ltx_pipelines.hdr_ic_lora STAGE2_TILINGS): (tiles, overlap) per latent axis
# (frames, rows, columns), overlaps in latent cells; its stage-2 schedule is STAGE_2_DISTILLED_SIGMAS' first two values
HDR_STAGE_2_TILING = ((2, 8), (2, 6), (2, 6))
HDR_STAGE_2_SIGMAS = (0.909375, 0.725, 0.0)


# The HDR IC-LoRA's size rule (hdr_ic_lora ALIGNMENT_DIVISOR with align_resolution's REFLECT_PAD branch): height and
# width are each rounded up to a multiple of 64, the reference is fitted (scale to fit, reflect pad) to that size,
# and the decoded frames are cropped back to the top-left height x width.
HDR_ALIGNMENT = 64


def hdr_generation_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) the HDR IC-LoRA pipeline generates at for a requested size: each rounded up to a
    multiple of HDR_ALIGNMENT (a multiple already is kept); a size that is not a positive integer is refused."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return -(-height // HDR_ALIGNMENT) * HDR_ALIGNMENT, -(-width // HDR_ALIGNMENT) * HDR_ALIGNMENT


def hdr_generation_frames(num_frames: int, high_quality: bool) -> int:
    """Frames the HDR IC-LoRA pipeline generates: num_frames, or 2 num_frames - 1 in the high-quality mode (8k + 1
    when num_frames is; every other one is kept)."""
    return 2 * num_frames - 1 if high_quality else num_frames


def hdr_doubled_reference(frames: Tensor, high_quality: bool, dim: int = 0) -> Tensor:
    """The high-quality mode's reference: each of the (num_frames + 1) // 2 loaded frames twice in a row, cut to
    the generated count (repeat_interleave(2)[:2 num_frames - 1]); unchanged when not high_quality."""
    if not high_quality:
        return frames
    n = frames.shape[dim]
    return frames.repeat_interleave(2, dim=dim).narrow(dim, 0, 2 * n - 1)


@dataclass
class HDRResult:
    video: Tensor  # (B, 3, F, H, W) decoded pixels in [-1, 1] (working-space codes 2 v - 1), float32
    linear: Tensor  # (B, F, H, W, 3) scene-linear Rec.709 light >= 0, float32 (to_hdr_linear)
    video_latent: Tensor  # (B, 128, F', H', W') final latent


@dataclass(frozen=True)
class LatentTile:
    """One stage-2 tile: slices of the (F', H', W') latent grid and its (f, h, w) float32 blend weight."""

    frames: slice
    rows: slice
    columns: slice
    weight: Tensor


def latent_tiles(shape: tuple[int, int, int], tiling: Sequence[tuple[int, int]]) -> list[LatentTile]:
    """The tiles of a (F', H', W') latent grid, frames slowest (create_tiles over split_by_count, non-causal in
    time): per axis `tiles` near-equal spans sharing `overlap` cells, the leading ones a cell longer when the
    split is uneven; an axis shorter than `tiles` is not split, and the overlap is clamped to `size - tiles`
    (_clamp_tile_to_latent). Weights: linear ramps over each overlap (the interior of a linspace, so two
    neighbours' weights sum to 1), multiplied across the axes."""
    from ltx.ltx2.dfr import ramp_window, split_even

    if len(shape) != 3 or len(tiling) != 3:
        raise ValueError(f"need a (frames, rows, columns) shape and one (tiles, overlap) per axis, got {shape}, "
                         f"{tiling}")
    axes = []
    for size, (count, overlap) in zip(shape, tiling):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1 or overlap < 0:
            raise ValueError(f"tiling {tuple(tiling)}: each axis is (tiles >= 1, overlap >= 0)")
        count = count if size >= count else 1
        spans = split_even(size, count, min(overlap, size - count) if count > 1 else 0)
        axes.append([(slice(sp.start, sp.end), ramp_window(sp.size, sp.lead, sp.tail)) for sp in spans])
    return [LatentTile(f, h, w, wf[:, None, None] * wh[None, :, None] * ww[None, None, :])
            for (f, wf), (h, wh), (w, ww) in itertools.product(*axes)]


def hdr_ic_lora(models: AVModels, positive: Prompt, request: AVRequest, reference: Tensor, *, strength: float = 1.0,
                transfer=None, reference_downscale: int = 1,
                tiling: Sequence[tuple[int, int]] | None = HDR_STAGE_2_TILING,
                high_quality: bool = False) -> HDRResult:
    """HDRICLoraPipeline (ltx_pipelines.hdr_ic_lora): an SDR Rec.709 `reference` clip (F >= num_frames, H, W, 3)
    in 0..255 -> scene-linear HDR video, with the HDR IC-LoRA fused into `models.transformer` for both stages.

    Size: `request.height` / `width` may be any positive size; the run is at `hdr_generation_size` (each rounded up
    to a multiple of 64) and the decoded frames are cropped back to the top-left height x width (the latent stays
    at the generated size). `high_quality` (the official high_quality_hdr): 2 num_frames - 1 frames are generated
    at the same frame rate, the reference's first num_frames frames each given twice (`hdr_doubled_reference`),
    and every other decoded frame is kept (num_frames out; the latent is the doubled run's).

    Video only (no audio stream: the transformer runs without audio tokens or A<->V attention). Stage 1 at half
    size: `request.sigmas` (the distilled list), Euler, the reference fitted to 1/`reference_downscale` of that
    size (`hdr.sdr_conditioning`: scale to fit, reflect pad, x / 255 as LogC3 codes) and appended as IC-LoRA
    tokens at `strength`. `models.upsampler` x2. Stage 2 at full size over `tiling` ((tiles, overlap) per latent
    axis; None: one pass over the whole latent): each tile is its own run on its slice of the upsampled latent
    and of the full-size reference latent, noised to `request.stage_2_sigmas[0]` from a generator seeded
    `seed + tile index` (seed: `request.generator`'s), Euler; the tiles are blended by their weights. The final
    latent is decoded in float32 (the VAE, or the diffusion decoder, cast to float32 for the decode and back, as
    the official decodes HDR in float32 whatever the run's dtype) and expanded with `transfer` (an `hdr.Transfer`;
    None: LogC3) to linear Rec.709. Unguided; `request.images` / soundtrack / video are refused."""
    from ltx.ltx2.hdr import Transfer, decode_hdr, sdr_conditioning

    transfer = Transfer.LOGC3 if transfer is None else transfer
    scale = models.vae.cfg.scale
    if not isinstance(high_quality, bool):
        raise ValueError(f"high_quality must be True or False, got {high_quality!r}")
    out_height, out_width = request.height, request.width
    height, width = hdr_generation_size(out_height, out_width)
    check_size(height, width, request.num_frames, two_stage=True, scale=scale)
    _refuse_guidance(request)
    if request.images or request.soundtrack is not None or request.video is not None:
        raise ValueError("the HDR IC-LoRA pipeline takes the reference clip only: give no images, soundtrack or video")
    if request.ancestral_generator is not None:
        raise ValueError("the HDR IC-LoRA pipeline samples Euler in both stages: give no ancestral_generator")
    if models.upsampler is None or request.stage_2_sigmas is None:
        raise ValueError("the HDR IC-LoRA pipeline needs a spatial upsampler (models.upsampler) and "
                         "request.stage_2_sigmas")
    if isinstance(reference_downscale, bool) or not isinstance(reference_downscale, int) or reference_downscale < 1 \
            or (height // 2) % reference_downscale or (width // 2) % reference_downscale:
        raise ValueError(f"reference downscale {reference_downscale!r}: the stage-1 size {height // 2}x"
                         f"{width // 2} must be divisible by it")
    if not isinstance(reference, Tensor) or reference.ndim != 4 or reference.shape[-1] != 3 \
            or reference.shape[0] < request.num_frames:
        raise ValueError(f"the reference must be an SDR clip (F, H, W, 3) of at least {request.num_frames} frames, "
                         f"got {getattr(reference, 'shape', reference)}")
    dtype, device = request.dtype, positive.video.device
    seed = int(request.generator.initial_seed()) if request.generator is not None else 0
    frames = reference[:request.num_frames]
    frames = frames[:(frames.shape[0] - 1) // scale[0] * scale[0] + 1]
    request = replace(request, height=height, width=width,
                      num_frames=hdr_generation_frames(request.num_frames, high_quality))
    df = reference_downscale

    def encoded_reference(height: int, width: int) -> Tensor:
        pixels = sdr_conditioning(frames.to(device), height // df, width // df, dtype=dtype)
        pixels = hdr_doubled_reference(pixels, high_quality, dim=2)  # (1, 3, frames generated, h, w)
        return models.vae.encode(pixels).to(dtype)  # (1, C, f, h / df, w / df)

    stage_1 = [Conditioning(encoded_reference(height // 2, width // 2), 0, strength, reference=df)]
    video, _ = _stage(1, models.transformer, models, positive, None, request, height // 2, width // 2,
                      request.sigmas, NO_GUIDANCE, NO_GUIDANCE, encoded=stage_1, with_audio=False)
    stats = models.vae.per_channel_statistics
    upsampled = upsample_latent(models.upsampler, video[:1], stats.mean, stats.std).to(dtype)
    ref = encoded_reference(height, width)
    sigmas = request.stage_2_sigmas.to(torch.float32)

    def refine(latent: Tensor, reference_latent: Tensor, tile_seed: int) -> Tensor:
        f, h, w = latent.shape[2:]
        tile_request = replace(request, num_frames=(f - 1) * scale[0] + 1, height=h * scale[1], width=w * scale[2],
                               generator=torch.Generator(device).manual_seed(tile_seed))
        out, _ = _stage(2, models.transformer, models, positive, None, tile_request, tile_request.height,
                        tile_request.width, sigmas, NO_GUIDANCE, NO_GUIDANCE, noise_scale=float(sigmas[0]),
                        video_latent=latent, encoded=[Conditioning(reference_latent, 0, strength, reference=df)],
                        with_audio=False)
        return out

    if tiling is None:
        latent = refine(upsampled, ref, seed)
    else:  # the tiles' blend, accumulated in the run dtype as the official token buffer
        latent = torch.zeros_like(upsampled)
        for i, t in enumerate(latent_tiles(tuple(upsampled.shape[2:]), tiling)):
            rows = slice(t.rows.start // df, t.rows.stop // df)
            columns = slice(t.columns.start // df, t.columns.stop // df)
            out = refine(upsampled[:, :, t.frames, t.rows, t.columns], ref[:, :, t.frames, rows, columns], seed + i)
            latent[:, :, t.frames, t.rows, t.columns] += out * t.weight.to(device, dtype)
    with _float32(models.video_decoder if models.video_decoder is not None else models.vae):
        pixels = decode_video(models, latent.float(), request.generator).float()
    pixels = pixels[:, :, ::2 if high_quality else 1, :out_height, :out_width]
    return HDRResult(pixels, decode_hdr(pixels, transfer), latent)


@contextmanager
def _float32(module: torch.nn.Module):
    """`module`'s floating parameters and buffers in float32 for the block, each back to its own dtype after
    (bfloat16 -> float32 -> bfloat16 is exact)."""
    tensors = [t for t in itertools.chain(module.parameters(), module.buffers())
               if t.is_floating_point() and t.dtype != torch.float32]
    dtypes = [t.dtype for t in tensors]
    for t in tensors:
        t.data = t.data.float()
    try:
        yield module
    finally:
        for t, d in zip(tensors, dtypes):
            t.data = t.data.to(d)


def dfr(models: AVModels, positive: Prompt, request: AVRequest, *, rounds: int = 0,
        temporal_upsampler: torch.nn.Module | None = None, detailing: bool = False, reference_downscale: int = 2,
        before_stage_2: Callable[[], None] | None = None, after_stage_2: Callable[[], None] | None = None,
        on_pass: Callable[[str], None] | None = None, spatial_epilogue: bool = False,
        epilogue_frame_tiles: int | None = None, before_epilogue: Callable[[], None] | None = None) -> AVResult:
    """LTX-2.5 DFRPipeline (`ltx.ltx2.dfr.render`), unguided: stage 1 at half size with keyframe slots,
    `models.upsampler` x2, stage 2 (with `detailing`, the stage-1 canvas as the reference of the detailing IC-LoRA
    that `before_stage_2` fuses and `after_stage_2` removes), `rounds` temporal x2 rounds with `temporal_upsampler`,
    optionally the tiled spatial epilogue (`spatial_epilogue`: x2 again, the carried keyframes rebuilt through
    `models.vae` and PIL Lanczos, `before_epilogue` first, `epilogue_frame_tiles` frame tiles, default 2**rounds),
    the decode. `request.sigmas` / `stage_2_sigmas` are the two stages' schedules (the epilogue: stage 2's);
    `request.images` condition every pass (rounds and epilogue: at 2**rounds times their frame). The result has
    (num_frames - 1) 2**rounds + 1 frames at fps 2**rounds (with the epilogue at twice the height and width), and
    the stage-1 soundtrack cut to that duration."""
    from ltx.ltx2 import dfr as dfr_passes

    scale = models.vae.cfg.scale
    check_size(request.height, request.width, request.num_frames, two_stage=True, scale=scale)
    _refuse_guidance(request)
    if request.soundtrack is not None or request.video is not None:
        raise ValueError("the DFR pipeline generates both streams: give no soundtrack or video")
    if models.upsampler is None or request.stage_2_sigmas is None:
        raise ValueError("the DFR pipeline needs a spatial upsampler (models.upsampler) and request.stage_2_sigmas")
    if rounds and temporal_upsampler is None:
        raise ValueError(f"{rounds} temporal round(s) need the temporal x2 upsampler")
    dtype, device, batch = request.dtype, positive.video.device, positive.video.shape[0]
    stats = models.vae.per_channel_statistics
    canvas = dfr_passes.resolve_canvas(request.num_frames, scale[0])

    def conditions(height: int, width: int) -> list:
        return [dfr_passes.FrameCondition(c.frame, c.latent, c.strength)
                for c in _encode_images(models.vae, request.images, height, width, dtype, device)]

    def upsampled(upsampler: torch.nn.Module) -> Callable[[Tensor], Tensor]:
        return lambda x: upsample_latent(upsampler, x.to(dtype), stats.mean, stats.std).float()

    def model(x, token_sigma, sigma, keyframes_mask, positions, audio, audio_sigma):
        if request.on_step is not None:  # one call per step (unguided): the progress tick
            request.on_step(0, 0, None, None)
        b, t = audio.shape[:2]
        v, a = models.transformer(
            StreamInput(x=x.to(dtype), timesteps=token_sigma, sigma=sigma, positions=positions, context=positive.video,
                        context_mask=positive.mask, keyframes_mask=keyframes_mask),
            StreamInput(x=audio.to(dtype), timesteps=audio_sigma[:, None].expand(b, t), sigma=audio_sigma,
                        positions=patchify.audio_positions(t, batch=b, device=device), context=positive.audio,
                        context_mask=positive.mask))
        return v.float(), a.float()

    def rebuild(keyframes: Tensor) -> Tensor:  # the epilogue's keyframes: the VAE's decoder, as diffusers
        return dfr_passes.rebuild_keyframes(keyframes, lambda z: models.vae.decode(z.to(dtype)).float(),
                                            lambda x: models.vae.encode(x.to(dtype)).float())

    def refine(x, token_sigma, sigma, keyframes_mask, positions, audio):
        return model(x, token_sigma, sigma, keyframes_mask, positions, audio, torch.zeros_like(sigma))[0]

    _, h, w = patchify.video_latent_shape(request.num_frames, request.height, request.width, scale)
    out = dfr_passes.render(
        model, model, refine, num_frames=request.num_frames, latent_size=(h, w),
        channels=models.vae.cfg.latent_channels,
        audio_frames=patchify.audio_latent_frames_for_video(canvas.frames, request.fps),
        audio_channels=models.transformer.cfg.audio_in_channels, fps=request.fps,
        spatial_upsample=upsampled(models.upsampler),
        temporal_upsample=None if temporal_upsampler is None else upsampled(temporal_upsampler), rounds=rounds,
        seed=int(request.generator.initial_seed()) if request.generator is not None else 0,
        generator=request.generator, batch=batch,
        conditions_half=conditions(request.height // 2, request.width // 2),
        conditions=conditions(request.height, request.width), detailing=detailing,
        reference_downscale=reference_downscale, stage_1_sigmas=_positive(request.sigmas),
        stage_2_sigmas=_positive(request.stage_2_sigmas), before_stage_2=before_stage_2, after_stage_2=after_stage_2,
        on_pass=on_pass, temporal_ratio=scale[0], spatial_epilogue=spatial_epilogue,
        epilogue_frame_tiles=epilogue_frame_tiles, rebuild=rebuild,
        conditions_double=conditions(2 * request.height, 2 * request.width) if spatial_epilogue else (),
        before_epilogue=before_epilogue)
    video_latent = out.latent.to(dtype)
    audio_latent = patchify.unpatchify_audio(out.audio.to(dtype))
    video, audio = decode(models, video_latent, audio_latent, request.generator)
    rate = int(models.vocoder.sample_rate)
    audio = audio[..., :min(audio.shape[-1], round(out.num_frames / out.fps * rate))]  # the padded canvas' tail
    return AVResult(video, audio, rate, video_latent, audio_latent, out.fps)


def _positive(sigmas: Tensor) -> list[float]:
    """A schedule without its terminal 0 (the DFR passes take the positive sigmas)."""
    return [float(s) for s in sigmas if float(s) > 0]


def _refuse_guidance(request: AVRequest) -> None:
    if is_guided(request.video_guidance, request.audio_guidance):
        raise ValueError("the distilled pipeline samples without guidance (cfg 1, stg 0, modality 1)")


def _with_soundtrack(request: AVRequest, positive: Prompt, negative: Prompt | None
                     ) -> tuple[AVRequest, Prompt | None]:
    """The soundtrack cut to the video's audio length and given every row; the uncond pass keeps the positive
    audio context (the audio guider has no negative context: multi_modal_guider_denoising_func)."""
    soundtrack = request.soundtrack
    if soundtrack is None:
        return request, negative
    ag = request.audio_guidance
    if ag.needs_uncond or ag.needs_perturbed or ag.needs_isolated:
        raise ValueError("with a soundtrack the audio is not generated: give no audio guidance (cfg 1, stg 0, "
                         "modality 1), as the official audio-to-video pipeline")
    batch = positive.video.shape[0]
    frames = patchify.audio_latent_frames_for_video(request.num_frames, request.fps)
    if soundtrack.ndim != 4 or soundtrack.shape[2] < frames or soundtrack.shape[0] not in (1, batch):
        raise ValueError(f"soundtrack latent {tuple(soundtrack.shape)}: need (1 or {batch}, 8, >= {frames}, 16) for "
                         f"{request.num_frames} frames at {request.fps} fps")
    soundtrack = soundtrack[:, :, :frames].to(request.dtype).expand(batch, -1, -1, -1)
    if negative is not None:
        negative = replace(negative, audio=positive.audio)
    return replace(request, soundtrack=soundtrack), negative


def _with_video(models: AVModels, request: AVRequest, positive: Prompt, negative: Prompt | None
                ) -> tuple[AVRequest, Prompt | None]:
    """Video-to-audio: the given video latent checked against the request's size and given every row; the
    uncond pass keeps the positive video context (mirror of `_with_soundtrack`)."""
    video = request.video
    if video is None:
        return request, negative
    if request.soundtrack is not None:
        raise ValueError("give a soundtrack (audio-to-video) or a video (video-to-audio), not both")
    vg = request.video_guidance
    if vg.needs_uncond or vg.needs_perturbed or vg.needs_isolated:
        raise ValueError("with a given video the video is not generated: give no video guidance (cfg 1, stg 0, "
                         "modality 1)")
    batch = positive.video.shape[0]
    cfg = models.vae.cfg
    f, h, w = patchify.video_latent_shape(request.num_frames, request.height, request.width, cfg.scale)
    if video.ndim != 5 or tuple(video.shape[1:]) != (cfg.latent_channels, f, h, w) or video.shape[0] not in (1, batch):
        raise ValueError(f"video latent {tuple(video.shape)}: need (1 or {batch}, {cfg.latent_channels}, {f}, {h}, "
                         f"{w}) for {request.num_frames} frames of {request.height}x{request.width}")
    if negative is not None:
        negative = replace(negative, video=positive.video)
    return replace(request, video=video.to(request.dtype).expand(batch, -1, -1, -1, -1)), negative


def _two_stages(models: AVModels, positive: Prompt, negative: Prompt | None, request: AVRequest,
                stage_2_transformer: torch.nn.Module | None, before_stage_2: Callable[[], None] | None, *,
                as_keyframes: bool = False, references: Sequence[ReferenceInput] = (),
                res2s: bool = False) -> AVResult:
    """Stage 1 at half size (guided as `request` says), x2 upsample, stage 2 unguided at the full size."""
    check_size(request.height, request.width, request.num_frames, two_stage=True, scale=models.vae.cfg.scale)
    if request.video is not None:
        raise ValueError("video-to-audio (request.video) runs with the one_stage pipeline")
    if models.upsampler is None or request.stage_2_sigmas is None:
        raise ValueError("a two-stage pipeline needs a spatial upsampler (models.upsampler) and "
                         "request.stage_2_sigmas")
    request, negative = _with_soundtrack(request, positive, negative)
    video, audio = _stage(1, models.transformer, models, positive, negative, request, request.height // 2,
                          request.width // 2, request.sigmas, request.video_guidance, request.audio_guidance,
                          as_keyframes=as_keyframes, references=references, res2s=res2s)
    stats = models.vae.per_channel_statistics
    upsampled = upsample_latent(models.upsampler, video, stats.mean, stats.std).to(request.dtype)  # row 0 only
    if before_stage_2 is not None:
        before_stage_2()
    transformer = models.transformer if stage_2_transformer is None else stage_2_transformer
    sigmas = request.stage_2_sigmas.to(torch.float32)
    video, audio = _stage(2, transformer, models, positive, negative, request, request.height, request.width,
                          sigmas, NO_GUIDANCE, NO_GUIDANCE, noise_scale=sigmas[0], video_latent=upsampled,
                          audio_latent=audio, as_keyframes=as_keyframes, res2s=res2s)
    return _decoded(models, video, audio, request.generator)


def _stage(stage: int, transformer, models: AVModels, positive: Prompt, negative: Prompt | None,
           request: AVRequest, height: int, width: int, sigmas: Tensor, video_guidance: GuiderParams,
           audio_guidance: GuiderParams, *, noise_scale: float | Tensor = 1.0, video_latent: Tensor | None = None,
           audio_latent: Tensor | None = None, as_keyframes: bool = False,
           references: Sequence[ReferenceInput] = (), res2s: bool = False, encoded: Sequence[Conditioning] = (),
           with_audio: bool = True) -> tuple[Tensor, Tensor | None]:
    """One stage at (height, width): conditionings encoded at its size (`encoded`: already encoded ones, appended
    after them), noised states, the sampler; returns the unpatchified (video, audio) latents. `with_audio` False:
    the video stream alone, no audio drawn (audio latent None)."""
    dtype, device, batch = request.dtype, positive.video.device, positive.video.shape[0]
    conditionings = _encode_images(models.vae, request.images, height, width, dtype, device, as_keyframes)
    for r in references:
        pixels = r.pixels[:request.num_frames]
        pixels = pixels[: (pixels.shape[0] - 1) // 8 * 8 + 1]  # 8k + 1 frames, as the reference encoder crops
        latent = models.vae.encode(fit_image(pixels.to(device), height // r.downscale, width // r.downscale, dtype))
        conditionings.append(Conditioning(latent.to(dtype), 0, r.strength, reference=r.downscale))
    conditionings += list(encoded)
    fixed_audio, fixed_video = request.soundtrack is not None, request.video is not None
    vae = models.vae.cfg
    video, audio = conditioned_states(request.num_frames, height, width, request.fps, conditionings, batch=batch,
                                      dtype=dtype, device=device, generator=request.generator,
                                      noise_scale=noise_scale,
                                      video_latent=request.video if fixed_video else video_latent,
                                      audio_latent=request.soundtrack if fixed_audio else audio_latent,
                                      freeze_audio=fixed_audio, freeze_video=fixed_video,
                                      channels=vae.latent_channels, scale=vae.scale, with_audio=with_audio)
    on_step = request.on_step
    if res2s:
        if audio is None:
            raise ValueError("the res_2s sampler runs both streams")
        calls = itertools.count()
        on_call = None if on_step is None else (lambda: on_step(stage, next(calls), None, None))
        video, audio = sample_res2s(transformer, video, audio, sigmas, positive, negative, video_guidance,
                                    audio_guidance, batch_passes=request.batch_passes, on_call=on_call)
    else:
        step = None if on_step is None else (lambda i, v, a: on_step(stage, i, v, a))
        ancestral = request.ancestral_generator if stage == 1 else None
        video, audio = sample(transformer, video, audio, sigmas, positive, negative, video_guidance,
                              audio_guidance, batch_passes=request.batch_passes, on_step=step, ancestral=ancestral)
    return unpatchified(video, audio, request.num_frames, height, width, vae.scale)


def _encode_images(vae, images: Sequence[ImageInput], height: int, width: int, dtype, device,
                   as_keyframes: bool = False) -> list[Conditioning]:
    return [Conditioning(vae.encode(fit_image(im.pixels.to(device), height, width, dtype)).to(dtype), im.frame,
                         im.strength, as_keyframes) for im in images]


def _decoded(models: AVModels, video_latent: Tensor, audio_latent: Tensor,
             generator: torch.Generator | None = None) -> AVResult:
    video, audio = decode(models, video_latent, audio_latent, generator)
    return AVResult(video, audio, int(models.vocoder.sample_rate), video_latent, audio_latent)
