"""The sampler: one loop over a sigma schedule, Euler or the official stochastic variant.

Convention (rectified flow, used everywhere in ltx):
    x_sigma = (1 - sigma) * x0 + sigma * noise,   sigma = 1 is pure noise, sigma = 0 is data,
    velocity v = noise - x0,   so x0 = x_sigma - sigma * v  and  dx/dsigma = v.
The transformer predicts v (`ltx.ltxv.transformer.DiT`). The sampler contract is therefore
`velocity_fn(x, sigma_tokens, step) -> v` rather than a denoiser returning x0: conditioning tokens carry
sigma 0 (hard conditioning) where v -> x0 -> v would divide by zero, and the official update `x - dt * v`
is reproduced bit for bit only in this form. `velocity_from_x0` wraps a denoiser for tests and oracles.

Shapes: B batch · T tokens · C channels. x: (B, T, C) tokens (`ltx.ltxv.patchify`). sigmas: (N + 1,) float32,
descending, ending at 0 (`ltx.core.sigmas`).

Per-token sigma (conditioning): a token with conditioning strength m (`cond_mask`, (B, T), 0 = free,
1 = hard-conditioned) is fed sigma_tok = min(sigma, 1 - m) and is frozen while sigma >= 1 - m (1e-6 slack):
strength-1 tokens never move. Each token steps from its own sigma to the next schedule value strictly
below it (0 after the last): the official `RectifiedFlowScheduler.step` rule, which also makes truncated
schedules (`sigmas.truncate`) end at 0.

Stochastic sampling (official `stochastic_sampling`, used by the 0.9.6 distilled model): instead of the
Euler move, predict x0 = x - sigma_tok * v and re-noise it to sigma_next with fresh Gaussian noise.
The noise comes from `noise_generator` (None = torch's global RNG, which is what the reference uses).

The update is an fp32 island: x is kept in float32 across steps (the reference promotes to float32 after
its first step as well); the model sees whatever dtype it casts to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SIGMA_EPS = 1e-6  # slack in the "next lower sigma" search and in the conditioning freeze (official t_eps)

VelocityFn = Callable[[Tensor, Tensor, int], Tensor]  # (x (B,T,C), sigma_tok (B,T), step) -> v (B,T,C)


def next_sigma(sigmas: Tensor, sigma_tok: Tensor) -> Tensor:
    """For every entry of sigma_tok, the largest schedule value strictly below it (minus 1e-6), else 0."""
    below = sigmas[:, None, None] < sigma_tok[None] - SIGMA_EPS  # (N+1, B, T)
    return (below * sigmas[:, None, None]).amax(dim=0)  # (B, T); sigmas end at 0, so 0 is the fallback


def token_sigmas(sigma: Tensor, shape: tuple[int, int], cond_mask: Tensor | None) -> Tensor:
    """sigma_tok (B, T) = min(sigma, 1 - cond_mask): conditioning tokens sit at their own (lower) noise level."""
    s = sigma.to(torch.float32).expand(shape)
    return s if cond_mask is None else torch.minimum(s, 1.0 - cond_mask)


def euler_step(x: Tensor, v: Tensor, dt: Tensor) -> Tensor:
    """x at sigma - dt by one Euler step along dx/dsigma = v; dt = sigma - sigma_next, (B, T)."""
    return x - dt[..., None] * v


def stochastic_step(x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor, noise: Tensor) -> Tensor:
    """Predict x0 = x - sigma v, then re-noise it to sigma_next with fresh noise (official stochastic sampling)."""
    x0 = x - sigma[..., None] * v
    s = sigma_next[..., None]
    return (1 - s) * x0 + s * noise


def velocity_from_x0(denoise: Callable[[Tensor, Tensor], Tensor]) -> VelocityFn:
    """Adapt a denoiser `(x, sigma_tok) -> x0` to the velocity contract (v = (x - x0) / sigma; sigma > 0)."""
    return lambda x, sigma, step: (x - denoise(x, sigma)) / sigma[..., None]


def sample(
    velocity_fn: VelocityFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    cond_mask: Tensor | None = None,
    stochastic: bool = False,
    noise_generator: torch.Generator | None = None,
    before_step: Callable[[int, Tensor, Tensor], Tensor] | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Integrate x (B, T, C) from sigmas[0] to 0.

    Args:
        velocity_fn: (x, sigma_tok (B, T), step index) -> velocity (B, T, C); guidance lives in here.
        sigmas: (N + 1,) descending schedule ending at 0.
        cond_mask: (B, T) conditioning strength per token, or None.
        stochastic: official stochastic sampling instead of Euler.
        noise_generator: RNG for stochastic sampling (None: the global RNG, as the reference).
        before_step: (step, sigma, x) -> x, run before each model call (conditioning-noise re-injection).
        callback: (step, x after the step), e.g. for progress bars or per-step parity checks.
    """
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must be a 1-D schedule of at least one step ending at 0")
    sigmas = sigmas.to(device=x.device, dtype=torch.float32)
    x = x.float()
    B, T, _ = x.shape
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        if before_step is not None:
            x = before_step(i, sigma, x).float()
        sigma_tok = token_sigmas(sigma, (B, T), cond_mask)
        v = velocity_fn(x, sigma_tok, i).float()
        dt = sigma_tok - next_sigma(sigmas, sigma_tok)  # (B, T) >= 0
        if stochastic:
            noise = torch.randn(x.shape, generator=noise_generator, device=x.device, dtype=x.dtype)
            # sigma - dt rather than the lower value itself: the reference's rounding, bit for bit
            stepped = stochastic_step(x, v, sigma_tok, sigma_tok - dt, noise)
        else:
            stepped = euler_step(x, v, dt)
        if cond_mask is not None:  # frozen while sigma >= 1 - strength (strength-1 tokens: always)
            free = (sigma - SIGMA_EPS < 1.0 - cond_mask)[..., None]
            stepped = torch.where(free, stepped, x)
        x = stepped
        if callback is not None:
            callback(i, x)
    return x
