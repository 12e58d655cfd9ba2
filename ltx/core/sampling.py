"""The sampler: one loop over a sigma schedule and a tuple of latent streams; the update rule is a parameter.

Convention (rectified flow, used everywhere in ltx):
    x_sigma = (1 - sigma) * x0 + sigma * noise,   sigma = 1 is pure noise, sigma = 0 is data,
    velocity v = noise - x0,   so x0 = x_sigma - sigma * v  and  dx/dsigma = v.

Shapes: B batch · T tokens · C channels. A stream is one latent as tokens x (B, T, C): LTX-Video 0.9.x samples
one stream (`ltx.ltxv.patchify`), LTX-2 two, video and audio (`ltx.ltx2.patchify`), which its transformer sees
together. sigmas: (N + 1,) descending (`ltx.core.sigmas`, `ltx.ltx2.sched`).

The contract (k-diffusion's shape: a sampler is a step function, nothing else changes when one is added):

    sample(model, xs, sigmas, step)      for i in 0..N-1: xs = step(model, xs, sigmas, i)
    step(model, xs, sigmas, i) -> xs    moves every stream from sigmas[i] to sigmas[i + 1]; it decides how
                                        often and at which sigma it calls the model
    model(xs, sigma, i) -> predictions  one per stream; what it predicts and what `sigma` is belong to the step:

The samplers (step factories), what their model predicts and at which sigma, and the reference each matches:
- `velocity_euler`: v at per-token sigma ((B, T) per stream); ltx_video `RectifiedFlowScheduler.step`.
- `velocity_stochastic`: the same, re-noising x0 (`stochastic_sampling=True`).
- `x0_euler`: x0 at the schedule value (0-dim); ltx-core `EulerDiffusionStep` in `euler_denoising_loop`.
- `x0_gradient_euler`: the same with ltx-pipelines `gradient_estimating_euler_denoising_loop`'s correction.
- `ltx.ltx2.sched.res2s`: x0 at the schedule value and a midpoint; `res2s_audio_video_denoising_loop`.

Per-token sigma and conditioning, the two official rules (both kept: each family's parity needs its own):
- 0.9.x (velocity steps): a token with conditioning strength m (`cond_mask`, (B, T), 0 = free, 1 = hard) is
  fed sigma_tok = min(sigma, 1 - m) and is frozen while sigma >= 1 - m (1e-6 slack): strength-1 tokens never
  move. Each token steps from its own sigma to the next schedule value strictly below it (0 after the last):
  the official rule, which also makes truncated schedules (`sigmas.truncate`) end at 0. The velocity form
  (rather than a denoiser returning x0) is what conditioning tokens at sigma 0 need (v -> x0 -> v would
  divide by zero), and the official update `x - dt * v` is reproduced bit for bit only in this form.
- LTX-2 (x0 steps): a denoise mask d (B, T, 1) (1 = generate, 0 = keep the clean latent, d = 1 - strength);
  the model sees per-token timesteps d * sigma (formed by the LTX-2 model function, which also needs the
  scalar sigma) and every x0 prediction is blended back to the clean latent, x0 d + clean (1 - d), before
  the step (`keep_clean`).

dtypes: the velocity steps are an fp32 island (x is kept in float32 across steps, as the reference after its
first step; the model sees whatever dtype it casts to). The x0 steps keep the latent dtype (bf16 in the LTX-2
pipelines): velocity, x0 and the Euler update are computed in float32 and rounded back, the velocity being
rounded once in between (as ltx-core's `to_velocity`).

Step functions are built per run by the factories below (`velocity_euler(...)` etc.); the ones with memory
(the gradient estimate's previous velocity, res_2s's generators) start afresh at step 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

SIGMA_EPS = 1e-6  # slack in the "next lower sigma" search and in the conditioning freeze (official t_eps)
GE_GAMMA = 2.0  # gradient-estimation sampler default (Wang et al., https://openreview.net/pdf?id=o2ND9v0CeK)

Streams = tuple[Tensor, ...]  # one (B, T, C) latent per stream
VelocityModel = Callable[[Streams, Streams, int], Streams]  # (xs, sigma_tok (B, T) per stream, step) -> v per stream
DenoiseModel = Callable[[Streams, Tensor, int], Streams]  # (xs, sigma 0-dim, step) -> x0 per stream
StepFn = Callable[[Callable, Streams, Tensor, int], Streams]  # (model, xs, sigmas, i) -> xs at sigmas[i + 1]


def sample(
    model: VelocityModel | DenoiseModel,
    xs: Sequence[Tensor],
    sigmas: Tensor,
    step: StepFn,
    *,
    before_step: Callable[[int, Tensor, Streams], Sequence[Tensor]] | None = None,
    callback: Callable[[int, Streams], None] | None = None,
) -> Streams:
    """Integrate the streams `xs` over the schedule with the sampler `step` (file docstring).

    Args:
        model: the prediction function the step expects (guidance lives in here).
        xs: the streams at sigmas[0], each (B, T, C).
        sigmas: (N + 1,) descending schedule.
        step: a step function (`velocity_euler(...)`, `x0_euler(...)`, `ltx.ltx2.sched.res2s(...)`, ...).
        before_step: (step, sigma, xs) -> xs, run before each step (conditioning-noise re-injection).
        callback: (step, xs after the step), e.g. for progress bars or per-step parity checks.
    """
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D schedule of at least one step, got shape {tuple(sigmas.shape)}")
    xs = tuple(xs)
    for i in range(len(sigmas) - 1):
        if before_step is not None:
            xs = tuple(before_step(i, sigmas[i], xs))
        xs = tuple(step(model, xs, sigmas, i))
        if callback is not None:
            callback(i, xs)
    return xs


# ----------------------------------------------------------------------------------------------------------
# Per-token sigma and conditioning


def token_sigmas(sigma: Tensor, shape: tuple[int, int], cond_mask: Tensor | None) -> Tensor:
    """0.9.x: sigma_tok (B, T) = min(sigma, 1 - cond_mask): conditioning tokens sit at their own (lower) level."""
    s = sigma.to(torch.float32).expand(shape)
    return s if cond_mask is None else torch.minimum(s, 1.0 - cond_mask)


def next_sigma(sigmas: Tensor, sigma_tok: Tensor) -> Tensor:
    """0.9.x: for every entry of sigma_tok, the largest schedule value strictly below it (minus 1e-6), else 0."""
    below = sigmas[:, None, None] < sigma_tok[None] - SIGMA_EPS  # (N+1, B, T)
    return (below * sigmas[:, None, None]).amax(dim=0)  # (B, T); sigmas end at 0, so 0 is the fallback


def keep_conditioned(stepped: Tensor, x: Tensor, sigma: Tensor, cond_mask: Tensor | None) -> Tensor:
    """0.9.x: `stepped` where a token is free, x where it is frozen (sigma >= 1 - strength, 1e-6 slack)."""
    if cond_mask is None:
        return stepped
    free = (sigma - SIGMA_EPS < 1.0 - cond_mask)[..., None]
    return torch.where(free, stepped, x)


def keep_clean(x0: Tensor, mask: Tensor, clean: Tensor) -> Tensor:
    """LTX-2: x0 where the denoise mask is 1, clean where it is 0 (ltx-pipelines `post_process_latent`):
    x0 m + clean (1 - m), in x0.dtype."""
    if x0.shape != clean.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and clean {tuple(clean.shape)} differ in shape")
    return (x0 * mask + clean.float() * (1 - mask)).to(x0.dtype)


def keep_clean_all(x0s: Sequence[Tensor], masks: Sequence[Tensor], cleans: Sequence[Tensor]) -> list[Tensor]:
    """`keep_clean` per stream."""
    return [keep_clean(x0, m, c) for x0, m, c in zip(x0s, masks, cleans, strict=True)]


# ----------------------------------------------------------------------------------------------------------
# Update rules


def euler_step(x: Tensor, v: Tensor, dt: Tensor) -> Tensor:
    """Velocity Euler (0.9.x, `RectifiedFlowScheduler.step`): x at sigma - dt along dx/dsigma = v;
    dt = sigma - sigma_next, (B, T)."""
    return x - dt[..., None] * v


def stochastic_step(x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor, noise: Tensor) -> Tensor:
    """Predict x0 = x - sigma v, then re-noise it to sigma_next with fresh noise (official stochastic sampling)."""
    x0 = x - sigma[..., None] * v
    s = sigma_next[..., None]
    return (1 - s) * x0 + s * noise


def _sigma_tensor(sigma: float | Tensor) -> Tensor:
    return sigma.to(torch.float32) if isinstance(sigma, Tensor) else torch.tensor(sigma, dtype=torch.float32)


def to_velocity(x: Tensor, x0: Tensor, sigma: float | Tensor) -> Tensor:
    """v = (x - x0) / sigma in float32 (sigma as a Python float, as ltx-core `to_velocity`), rounded to x.dtype."""
    s = float(_sigma_tensor(sigma))
    if s == 0:
        raise ValueError("sigma must be non-zero to form a velocity")
    return ((x.to(torch.float32) - x0.to(torch.float32)) / s).to(x.dtype)


def to_denoised(x: Tensor, v: Tensor, timesteps: float | Tensor) -> Tensor:
    """x0 = x - v * timesteps in float32, rounded to x.dtype (ltx-core `to_denoised`). timesteps: scalar sigma
    or per token (B, T, 1)."""
    if x.shape != v.shape:
        raise ValueError(f"x {tuple(x.shape)} and v {tuple(v.shape)} differ in shape")
    if isinstance(timesteps, Tensor):
        timesteps = timesteps.to(torch.float32)
    return (x.to(torch.float32) - v.to(torch.float32) * timesteps).to(x.dtype)


def euler_step_x0(x: Tensor, x0: Tensor, sigma: float | Tensor, sigma_next: float | Tensor) -> Tensor:
    """x0-form Euler (LTX-2, ltx-core `EulerDiffusionStep`): x + v (sigma_next - sigma), v = (x - x0) / sigma;
    float32 math, the velocity rounded to x.dtype in between, result in x.dtype."""
    if x.shape != x0.shape:
        raise ValueError(f"x {tuple(x.shape)} and x0 {tuple(x0.shape)} differ in shape")
    s, s_next = _sigma_tensor(sigma), _sigma_tensor(sigma_next)
    v = to_velocity(x, x0, s)  # rounded to x.dtype, as the reference
    return (x.to(torch.float32) + v.to(torch.float32) * (s_next - s)).to(x.dtype)


def ancestral_step_x0(x: Tensor, x0: Tensor, sigma: float | Tensor, sigma_next: float | Tensor, noise: Tensor | None,
                      eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    """Euler ancestral for rectified flow (LTX-2.5's distilled stage 1 uses eta = s_noise = 1; ltx-core 1.2
    `EulerAncestralDiffusionStep`, diffusers `LTXEulerAncestralRFScheduler`). An Euler step down to
    sigma_down = sigma_next (1 + (sigma_next / sigma - 1) eta) <= sigma_next, then noise back up to sigma_next with
    the signal scaled by alpha_next / alpha_down (alpha = 1 - sigma), so x stays (1 - s) x0 + s eps in law:

        x' = (a_n / a_d) (r x + (1 - r) x0) + s_noise c noise,   r = sigma_down / sigma,
        c = sqrt(max(0, sigma_next^2 - sigma_down^2 a_n^2 / a_d^2))

    eta = 0 is the plain x0 Euler step (no noise needed); sigma_next = 0 returns x0. float32 math, x.dtype out."""
    s, s_next = _sigma_tensor(sigma).float(), _sigma_tensor(sigma_next).float()
    if bool(s_next == 0):
        return x0.to(x.dtype)
    if eta > 0 and noise is None:
        raise ValueError("an ancestral step with eta > 0 needs a noise tensor")
    s_down = s_next * (1.0 + (s_next / s - 1.0) * eta)
    r = s_down / s
    out = r * x.to(torch.float32) + (1.0 - r) * x0.to(torch.float32)
    if eta > 0:
        a_next, a_down = 1.0 - s_next, 1.0 - s_down
        c = (s_next**2 - s_down**2 * a_next**2 / a_down**2).clamp(min=0) ** 0.5
        out = (a_next / a_down) * out + noise.to(torch.float32) * s_noise * c
    return out.to(x.dtype)


def ge_denoised(
    x: Tensor, x0: Tensor, sigma: float | Tensor, v_prev: Tensor | None, gamma: float = GE_GAMMA,
) -> tuple[Tensor, Tensor]:
    """Gradient-estimation correction of x0 (ltx-pipelines `gradient_estimating_euler_denoising_loop`).

    Returns (v, x0'): v = to_velocity(x, x0, sigma) is the next step's v_prev; with a previous velocity,
    x0' = x - (gamma (v - v_prev) + v_prev) sigma, else x0' = x0.
    """
    v = to_velocity(x, x0, sigma)
    if v_prev is None:
        return v, x0
    if v_prev.shape != v.shape:
        raise ValueError(f"v_prev {tuple(v_prev.shape)} and x {tuple(x.shape)} differ in shape")
    v_total = gamma * (v - v_prev) + v_prev
    return v, to_denoised(x, v_total, _sigma_tensor(sigma))


# ----------------------------------------------------------------------------------------------------------
# Step functions (samplers)


def _velocity_step(cond_masks: Sequence[Tensor | None] | None, update: Callable[..., Tensor]) -> StepFn:
    """The 0.9.x step around an update rule `update(x, v, sigma_tok, dt) -> x`: per-token sigma in, frozen
    conditioning tokens out."""

    def step(model: VelocityModel, xs: Streams, sigmas: Tensor, i: int) -> Streams:
        if i == 0 and float(sigmas[-1]) != 0.0:
            raise ValueError("the velocity samplers need a schedule that ends at 0")
        xs = tuple(x.float() for x in xs)
        sigmas = sigmas.to(device=xs[0].device, dtype=torch.float32)
        masks = cond_masks if cond_masks is not None else (None,) * len(xs)
        sigma = sigmas[i]
        sigma_toks = tuple(token_sigmas(sigma, x.shape[:2], m) for x, m in zip(xs, masks, strict=True))
        vs = model(xs, sigma_toks, i)
        out = []
        for x, v, sigma_tok, mask in zip(xs, vs, sigma_toks, masks, strict=True):
            dt = sigma_tok - next_sigma(sigmas, sigma_tok)  # (B, T) >= 0
            out.append(keep_conditioned(update(x, v.float(), sigma_tok, dt), x, sigma, mask))
        return tuple(out)

    return step


def velocity_euler(cond_masks: Sequence[Tensor | None] | None = None) -> StepFn:
    """0.9.x Euler (`RectifiedFlowScheduler.step`); cond_masks: per stream (B, T) strength or None."""
    return _velocity_step(cond_masks, lambda x, v, sigma_tok, dt: euler_step(x, v, dt))


def velocity_stochastic(cond_masks: Sequence[Tensor | None] | None = None,
                        generator: torch.Generator | None = None) -> StepFn:
    """0.9.x stochastic sampling (official `stochastic_sampling`, the 0.9.6 distilled model): x0 re-noised to
    the next sigma with fresh noise from `generator` (None: torch's global RNG, as the reference)."""

    def update(x: Tensor, v: Tensor, sigma_tok: Tensor, dt: Tensor) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        # sigma - dt rather than the lower value itself: the reference's rounding, bit for bit
        return stochastic_step(x, v, sigma_tok, sigma_tok - dt, noise)

    return _velocity_step(cond_masks, update)


def velocity_from_x0(denoise: Callable[[Tensor, Tensor], Tensor]) -> VelocityModel:
    """Adapt a denoiser `(x, sigma_tok) -> x0` (applied to every stream) to the velocity contract
    (v = (x - x0) / sigma; sigma > 0), for tests and oracles."""
    return lambda xs, sigma_toks, i: tuple((x - denoise(x, s)) / s[..., None] for x, s in zip(xs, sigma_toks))


def x0_euler(masks: Sequence[Tensor], cleans: Sequence[Tensor]) -> StepFn:
    """LTX-2 Euler (ltx-pipelines `euler_denoising_loop` with `EulerDiffusionStep`): x0 from the model at
    sigmas[i], clean tokens kept, then `euler_step_x0`. masks: (B, T, 1) denoise masks; cleans: (B, T, C)."""

    def step(model: DenoiseModel, xs: Streams, sigmas: Tensor, i: int) -> Streams:
        x0s = keep_clean_all(model(xs, sigmas[i], i), masks, cleans)
        return tuple(euler_step_x0(x, x0, sigmas[i], sigmas[i + 1]) for x, x0 in zip(xs, x0s))

    return step


def x0_ancestral(masks: Sequence[Tensor], cleans: Sequence[Tensor], generator: torch.Generator,
                eta: float = 1.0, s_noise: float = 1.0) -> StepFn:
    """LTX-2.5's distilled stage 1 (ltx-pipelines 1.2 `euler_ancestral_denoising_loop`): x0 from the model, clean
    tokens kept, then `ancestral_step_x0` with fresh noise from `generator` (one draw per stream and step, the
    streams in order, in the latent's dtype), and the clean tokens put back after the noise; the step to sigma 0
    returns x0."""

    def step(model: DenoiseModel, xs: Streams, sigmas: Tensor, i: int) -> Streams:
        x0s = keep_clean_all(model(xs, sigmas[i], i), masks, cleans)
        if sigmas[i + 1] == 0:
            return tuple(x0.to(x.dtype) for x, x0 in zip(xs, x0s))
        out = []
        for x, x0, mask, clean in zip(xs, x0s, masks, cleans):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x_next = ancestral_step_x0(x, x0, sigmas[i], sigmas[i + 1], noise, eta, s_noise)
            out.append(keep_clean(x_next, mask, clean))
        return tuple(out)

    return step


def x0_gradient_euler(masks: Sequence[Tensor], cleans: Sequence[Tensor], gamma: float = GE_GAMMA) -> StepFn:
    """LTX-2 gradient-estimation Euler (ltx-pipelines `gradient_estimating_euler_denoising_loop`): x0 corrected
    by `ge_denoised` from the previous step's velocity; the step to sigma 0 returns the (clean-kept) x0."""
    v_prev: list[Tensor | None] = []

    def step(model: DenoiseModel, xs: Streams, sigmas: Tensor, i: int) -> Streams:
        if i == 0:
            v_prev[:] = [None] * len(xs)
        x0s = keep_clean_all(model(xs, sigmas[i], i), masks, cleans)
        if sigmas[i + 1] == 0:
            return tuple(x0s)
        for k, (x, x0) in enumerate(zip(xs, x0s)):
            v_prev[k], x0s[k] = ge_denoised(x, x0, sigmas[i], v_prev[k], gamma)
        return tuple(euler_step_x0(x, x0, sigmas[i], sigmas[i + 1]) for x, x0 in zip(xs, x0s))

    return step
