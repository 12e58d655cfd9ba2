"""LTX-2 sampling facts as plain functions: the LTX2Scheduler schedule, the distilled sigma lists, the noiser,
the multi-modal guider's parameters and presets, and the res_2s sampler.

References: ltx-core 1.0.0 `components/{schedulers,diffusion_steps,guiders,noisers}.py`; ltx-pipelines 1.0.0
`utils/{samplers,helpers,constants,res2s}.py`. Every function reproduces the reference's operations in the same
order and dtype, so results are equal bit for bit (tests/ltx2/test_ltx2_sched.py), in fp32 and in bf16.

What both families share lives in `ltx.core`: the token shift and terminal stretch of the schedule
(`ltx.core.sigmas`), the sampling loop with the x0-form Euler and gradient-estimation steps, `to_denoised`
and the clean-token blend (`ltx.core.sampling`, whose docstring states the conventions: x, x0, noise (B, T, C)
tokens, denoise mask (B, T, 1), sigmas (N + 1,) float32 descending), and the guidance arithmetic
(`ltx.core.guidance.combine_multimodal`). The guider here (`GuiderParams`, `guide`), per modality, with cond /
uncond (negative prompt) / perturbed (STG: self-attention skipped in `stg_blocks`) / isolated (A<->V
cross-attention skipped in all blocks):

    pred = cond + (cfg - 1)(cond - uncond) + stg (cond - perturbed) + (modality - 1)(cond - isolated)
    pred *= rescale std(cond) / std(pred) + (1 - rescale)        if rescale != 0, global std (all elements)

res_2s (`res2s`, a step function for `ltx.core.sampling.sample`: Res2sDiffusionStep +
`res2s_audio_video_denoising_loop`, exponential-integrator RK2 with SDE noise, HQ pipeline): step size
h = -log(sigma_next / sigma) in float64, coefficients from the phi functions (`res2s_coefficients`), midpoint
sigma sqrt(sigma sigma_next), and an ancestral re-noise with sigma_up = sigma_next / 2 (`res2s_sde_step`) using
float64 noise standardised globally, then per (batch, ...) slice over the last two dims (`res2s_noise`). A
0.0011 step is inserted before a final 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ltx.core.guidance import combine_multimodal
from ltx.core.sampling import DenoiseModel, StepFn, Streams, keep_clean, keep_clean_all
from ltx.core.sigmas import MAX_SHIFT_TOKENS, shift, stretch_to_terminal, token_shift

DEFAULT_NUM_TOKENS = MAX_SHIFT_TOKENS  # the token count of the schedule when none is given (all but HQ): mu = max_shift

# Distilled checkpoint: 8 steps (stage 1) and the last 3 of them (stage 2; the README says "4 steps").
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE2_DISTILLED_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

RES2S_LAST_SIGMA = 0.0011  # res_2s replaces a final step to 0 by one to this value, then denoises fully
RES2S_C2 = 0.5  # res_2s midpoint (the sqrt midpoint sigma assumes this value)


# ----------------------------------------------------------------------------------------------------------
# Schedules


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


def ltx2_sigmas(
    steps: int, num_tokens: int | None = None, max_shift: float = 2.05, base_shift: float = 0.95,
    stretch: bool = True, terminal: float = 0.1,
) -> Tensor:
    """LTX2Scheduler.execute: (steps + 1,) float32 sigmas from 1 to 0.

    num_tokens: latent F·H·W (the reference's `prod(latent.shape[2:])`); None = 4096, i.e. mu = max_shift.
    `ltx.core.sigmas.shift` of t = linspace(1, 0, steps + 1) by mu = `token_shift(num_tokens)`, then (stretch)
    `stretch_to_terminal`: the last non-zero sigma becomes `terminal`; with steps == 1 that is the only one:
    [terminal, 0], as the reference. Raises where the reference returns NaN (a shift so large that every
    sigma rounds to 1).
    """
    _check_steps(steps)
    if num_tokens is None:
        num_tokens = DEFAULT_NUM_TOKENS
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be a positive integer (latent F*H*W) or None, got {num_tokens!r}")
    t = torch.linspace(1.0, 0.0, steps + 1)  # float32
    mu = token_shift(num_tokens, base_shift, max_shift)
    sigmas = shift(t, mu)
    if stretch:
        sigmas = stretch_to_terminal(sigmas, terminal)
        if torch.isnan(sigmas).any():  # every non-zero sigma rounded to 1: the stretch is 0 / 0
            raise ValueError(
                f"num_tokens={num_tokens} shifts every sigma to 1.0 in float32 (mu={mu:.2f}), so the stretch to "
                f"terminal={terminal} is undefined (the reference returns NaN); use fewer tokens or stretch=False"
            )
    return sigmas.to(torch.float32)


def distilled_sigmas(stage: int = 1, device: torch.device | str | None = None) -> Tensor:
    """The distilled schedule as the pipelines build it (float32): stage 1 = 8 steps, stage 2 = 3 steps."""
    if stage not in (1, 2):
        raise ValueError(f"distilled stage must be 1 or 2, got {stage!r}")
    return torch.tensor(DISTILLED_SIGMAS if stage == 1 else STAGE2_DISTILLED_SIGMAS, device=device)


# ----------------------------------------------------------------------------------------------------------
# Noising (GaussianNoiser)


def noise_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise with x's shape, dtype and device (drawn in that dtype, as GaussianNoiser)."""
    return torch.randn(*x.shape, device=x.device, dtype=x.dtype, generator=generator)


def add_noise(x: Tensor, noise: Tensor, mask: Tensor, noise_scale: float = 1.0) -> Tensor:
    """GaussianNoiser blend: noise m + x (1 - m) with m = mask * noise_scale, in x.dtype.

    noise_scale 1 starts from pure noise (stage 1); the stage-2 renoise uses the first stage-2 sigma.
    """
    if noise.shape != x.shape:
        raise ValueError(f"noise {tuple(noise.shape)} and x {tuple(x.shape)} differ in shape")
    if not 0 <= noise_scale <= 1:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")
    m = mask * noise_scale
    return (noise * m + x * (1 - m)).to(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Multi-modal guidance


@dataclass(frozen=True, kw_only=True)
class GuiderParams:
    """One modality's guidance (MultiModalGuiderParams). cfg 1, stg 0, modality 1, rescale 0 = off.

    stg_blocks: transformer blocks whose self-attention the perturbed pass skips. skip_step k > 0 reuses
    the previous step's prediction on every step with step % (k + 1) != 0.
    """

    cfg: float = 1.0
    stg: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    rescale: float = 0.0
    modality: float = 1.0
    skip_step: int = 0

    def __post_init__(self):
        object.__setattr__(self, "stg_blocks", tuple(self.stg_blocks))
        for name in ("cfg", "stg", "modality"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"guidance {name} scale must be a finite number >= 0, got {value}")
        if not 0 <= self.rescale <= 1:
            raise ValueError(f"guidance rescale must be in [0, 1] (0 = off), got {self.rescale}")
        if isinstance(self.skip_step, bool) or not isinstance(self.skip_step, int) or self.skip_step < 0:
            raise ValueError(f"skip_step must be an integer >= 0 (0 = never skip), got {self.skip_step!r}")
        bad = [b for b in self.stg_blocks if isinstance(b, bool) or not isinstance(b, int) or b < 0]
        if bad:
            raise ValueError(f"stg_blocks must be non-negative block indices, got {list(self.stg_blocks)}")

    # which extra transformer passes this modality needs (the reference uses math.isclose here, while
    # its arithmetic uses the exact scales)
    @property
    def needs_uncond(self) -> bool:
        return not math.isclose(self.cfg, 1.0)

    @property
    def needs_perturbed(self) -> bool:
        return not math.isclose(self.stg, 0.0)

    @property
    def needs_isolated(self) -> bool:
        return not math.isclose(self.modality, 1.0)

    def skips(self, step: int) -> bool:
        """Whether step `step` (0-based) reuses the previous prediction."""
        return self.skip_step != 0 and step % (self.skip_step + 1) != 0


@dataclass(frozen=True)
class GuidancePasses:
    """The transformer passes of one step for both modalities (`multi_modal_guider_denoising_func`).

    The cond pass always runs. The perturbed pass skips video self-attention in `stg_video_blocks` and
    audio self-attention in `stg_audio_blocks` together (None = that modality is not perturbed); the
    isolated pass skips A->V and V->A cross-attention in every block.
    """

    uncond: bool
    perturbed: bool
    isolated: bool
    stg_video_blocks: tuple[int, ...] | None
    stg_audio_blocks: tuple[int, ...] | None


def guidance_passes(video: GuiderParams, audio: GuiderParams) -> GuidancePasses:
    """A pass runs when either modality needs it."""
    return GuidancePasses(
        uncond=video.needs_uncond or audio.needs_uncond,
        perturbed=video.needs_perturbed or audio.needs_perturbed,
        isolated=video.needs_isolated or audio.needs_isolated,
        stg_video_blocks=video.stg_blocks if video.needs_perturbed else None,
        stg_audio_blocks=audio.stg_blocks if audio.needs_perturbed else None,
    )


def guide(
    params: GuiderParams, cond: Tensor, uncond: Tensor | None = None, perturbed: Tensor | None = None,
    isolated: Tensor | None = None,
) -> Tensor:
    """One modality's guided prediction (MultiModalGuider.calculate): `ltx.core.guidance.combine_multimodal`."""
    return combine_multimodal(cond, uncond, perturbed, isolated, cfg=params.cfg, stg=params.stg,
                              modality=params.modality, rescale=params.rescale)


@dataclass(frozen=True)
class GuiderPreset:
    """Official sampling defaults of a checkpoint family (`ltx_pipelines/utils/constants.py`)."""

    steps: int
    video: GuiderParams
    audio: GuiderParams


LTX_2 = GuiderPreset(
    steps=40,
    video=GuiderParams(cfg=3.0, stg=1.0, stg_blocks=(29,), rescale=0.7, modality=3.0),
    audio=GuiderParams(cfg=7.0, stg=1.0, stg_blocks=(29,), rescale=0.7, modality=3.0),
)
LTX_2_3 = GuiderPreset(
    steps=30,
    video=GuiderParams(cfg=3.0, stg=1.0, stg_blocks=(28,), rescale=0.7, modality=3.0),
    audio=GuiderParams(cfg=7.0, stg=1.0, stg_blocks=(28,), rescale=0.7, modality=3.0),
)
LTX_2_3_HQ = GuiderPreset(  # res_2s, schedule shifted for the real token count, no STG
    steps=15,
    video=GuiderParams(cfg=3.0, stg=0.0, rescale=0.45, modality=3.0),
    audio=GuiderParams(cfg=7.0, stg=0.0, rescale=1.0, modality=3.0),
)


def preset_for_version(model_version: str) -> GuiderPreset:
    """`detect_params`: LTX_2_3 from model_version 2.3 on (2.5 keeps 2.3's guidance: ltx-pipelines 1.2
    LTX_2_4_PARAMS changes only the image CRF), else LTX_2."""
    from ltx.ltx2.text import model_version_tuple

    return LTX_2_3 if model_version_tuple(model_version) >= (2, 3) else LTX_2


# ----------------------------------------------------------------------------------------------------------
# res_2s


def phi(j: int, neg_h: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j at z = neg_h; 1 / j! for |z| < 1e-10."""
    if abs(neg_h) < 1e-10:
        return 1.0 / math.factorial(j)
    head = sum(neg_h**k / math.factorial(k) for k in range(j))
    return (math.exp(neg_h) - head) / neg_h**j


def res2s_coefficients(h: float, c2: float = RES2S_C2) -> tuple[float, float, float]:
    """(a21, b1, b2) = (c2 phi1(-h c2), phi1(-h) - phi2(-h) / c2, phi2(-h) / c2) for step size h."""
    if not 0 < c2 <= 1:
        raise ValueError(f"c2 must be in (0, 1], got {c2}")
    a21 = c2 * phi(1, -h * c2)
    b2 = phi(2, -h) / c2
    b1 = phi(1, -h) - b2
    return a21, b1, b2


def res2s_sigmas(sigmas: Tensor) -> Tensor:
    """The res_2s schedule: a final 0 becomes [0.0011, 0] (the last full step stops at 0.0011)."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sigmas.shape)}")
    if sigmas[-1] != 0:
        return sigmas
    return torch.cat([sigmas[:-1], torch.tensor([RES2S_LAST_SIGMA, 0.0], device=sigmas.device)])


def res2s_step_sizes(sigmas: Tensor) -> Tensor:
    """h_i = -log(sigma_{i+1} / sigma_i), float64 on the CPU, for a res_2s schedule (`res2s_sigmas`)."""
    s = sigmas.double().cpu()
    return -torch.log(s[1:] / s[:-1])


def sde_coefficients(sigma_next: Tensor, sigma_up: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(alpha_ratio, sigma_down, sigma_up) of an ancestral step to sigma_next that injects sigma_up of noise
    (Res2sDiffusionStep.get_sde_coeff with sigma_up given): sigma_up is capped at 0.9999 sigma_next, then
    alpha = (1 - sigma_next) + sqrt(sigma_next^2 - sigma_up^2) and sigma_down = sqrt(...) / alpha."""
    sigma_up = torch.minimum(sigma_up, sigma_next * 0.9999)
    residual = (sigma_next**2 - sigma_up**2).clamp(min=0) ** 0.5
    alpha = (torch.ones_like(sigma_next) - sigma_next) + residual
    sigma_down = residual / alpha
    sigma_down = torch.where(torch.isnan(sigma_down), sigma_next.to(sigma_down.dtype), sigma_down)
    return torch.nan_to_num(alpha, 1.0), sigma_down, torch.nan_to_num(sigma_up, 0.0)


def res2s_sde_step(x: Tensor, x_target: Tensor, sigma: Tensor, sigma_next: Tensor, noise: Tensor) -> Tensor:
    """Res2sDiffusionStep.step: move x at sigma toward x_target (the deterministic sigma_next point) and
    re-noise with sigma_up = sigma_next / 2. Returns x_target unchanged when sigma_next = 0.

    The math happens in the promoted dtype of the inputs (float64 latents; the 0-dim sigmas keep their own
    dtype for the coefficients: float32 at the step level, float64 at the substep in the reference loop);
    the result is cast to x_target.dtype.
    """
    if not (x.shape == x_target.shape == noise.shape):
        raise ValueError(f"x {tuple(x.shape)}, x_target {tuple(x_target.shape)} and noise {tuple(noise.shape)} "
                         "differ in shape")
    alpha, sigma_down, sigma_up = sde_coefficients(sigma_next, sigma_next * 0.5)
    if torch.any(sigma_up == 0) or torch.any(sigma_next == 0):
        return x_target
    eps = (x - x_target) / (sigma - sigma_next)
    x0 = x - sigma * eps
    return (alpha * (x0 + sigma_down * eps) + sigma_up * noise).to(x_target.dtype)


def res2s_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> Tensor:
    """float64 noise on the generator's device, standardised over all elements, then per leading index over
    the last two dims (T, C) (`_get_new_noise`)."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    noise = (noise - noise.mean()) / noise.std()
    noise = noise - noise.mean(dim=(-2, -1), keepdim=True)
    return noise / noise.std(dim=(-2, -1), keepdim=True)


def res2s(
    masks: tuple[Tensor, ...], cleans: tuple[Tensor, ...], *, noise_seed: int = -1, bongmath: bool = True,
    bongmath_max_iter: int = 100, model_dtype: torch.dtype = torch.bfloat16,
) -> StepFn:
    """res_2s as a step function for `ltx.core.sampling.sample` (`res2s_audio_video_denoising_loop`,
    legacy_mode=True, the default): 2 model calls per step, and when the schedule ends at 0 its last step stops
    at 0.0011 and a third call denoises fully (2N + 1 calls in all). The model: `DenoiseModel`, x0 per stream.

    masks (B, T, 1) / cleans (B, T, C): per stream, the clean tokens kept after every call (`keep_clean`).
    Noise: generators on the latents' device seeded `noise_seed` (step level) and `noise_seed + 10000`
    (substep), (re)made at step 0 and drawn per stream in order, float64 (`res2s_noise`). Latents are carried
    in float64 inside a step and stored in `model_dtype` between steps.
    """
    generators: dict[str, torch.Generator] = {}

    def renoise(gen: torch.Generator, anchors: list[Tensor], targets: list[Tensor], s: Tensor, s_next: Tensor
                ) -> list[Tensor]:
        out = []
        for a, t, m, c in zip(anchors, targets, masks, cleans, strict=True):
            noise = res2s_noise(a.shape, gen)
            out.append(keep_clean(res2s_sde_step(a, t, s, s_next, noise), m, c))
        return out

    def step(model: DenoiseModel, xs: Streams, sigmas: Tensor, i: int) -> Streams:
        if i == 0:
            device = xs[0].device
            generators["step"] = torch.Generator(device=device).manual_seed(noise_seed)
            generators["substep"] = torch.Generator(device=device).manual_seed(noise_seed + 10000)
        last_to_zero = i == len(sigmas) - 2 and sigmas[-1] == 0
        sigmas = res2s_sigmas(sigmas)  # the same values up to i + 1, with 0.0011 in place of a final 0
        sigma, sigma_next = sigmas[i].double(), sigmas[i + 1].double()
        anchors = [x.clone().double() for x in xs]
        x0_1 = keep_clean_all(model(xs, sigmas[i], i), masks, cleans)
        h = res2s_step_sizes(sigmas)[i].item()
        a21, b1, b2 = res2s_coefficients(h)
        sub_sigma = torch.sqrt(sigma * sigma_next)  # the c2 = 1/2 point in log-sigma
        eps_1 = [x0.double() - a for x0, a in zip(x0_1, anchors)]
        mids = [a.double() + h * a21 * e for a, e in zip(anchors, eps_1)]
        mids = renoise(generators["substep"], anchors, mids, sigma, sub_sigma)
        if bongmath and h < 0.5 and sigma > 0.03:  # re-solve the anchor consistent with the noised midpoint
            for _ in range(bongmath_max_iter):
                for k in range(len(xs)):
                    anchors[k] = mids[k] - h * a21 * eps_1[k]
                    eps_1[k] = x0_1[k].double() - anchors[k]
        # the midpoint call passes step 0, as the reference (its guider's skip_step sees step 0)
        x0_2 = keep_clean_all(model(tuple(m.to(model_dtype) for m in mids), sub_sigma, 0), masks, cleans)
        nexts = [a + h * (b1 * e1 + b2 * (x0.double() - a)) for a, e1, x0 in zip(anchors, eps_1, x0_2)]
        nexts = renoise(generators["step"], anchors, nexts, sigmas[i], sigmas[i + 1])
        xs = tuple(x.to(model_dtype) for x in nexts)
        if last_to_zero:  # denoise fully from 0.0011
            xs = tuple(x0.to(model_dtype) for x0 in keep_clean_all(model(xs, sigmas[i + 1], i + 1), masks, cleans))
        return xs

    return step
