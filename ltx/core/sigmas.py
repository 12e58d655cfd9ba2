"""Noise schedules as functions: each returns a float32 sigma tensor of shape (steps + 1,), descending, ending at 0.

Convention (see ltx/core/sampling.py): sigma = 1 is pure noise, sigma = 0 is data. The official scheduler
(`ltx_video.schedulers.rf.RectifiedFlowScheduler`) keeps the same values without the final 0 and calls them
"timesteps"; its Euler step goes from each value to the next one below it, and from the last one to 0.

- `uniform(n)`: linspace(1, 1/n, n) (official sampler "Uniform").
- `ltx_shifted(n, tokens)`: uniform, shifted for the token count F·H·W (official `shifting="SD3"`, the
  0.9.0 / 0.9.1 checkpoints' scheduler), then stretched so the last value is `terminal` (0.1).
- `linear_quadratic(n)`: official "LinearQuadratic" (0.9.5+ checkpoints): the first n//2 steps drop sigma
  linearly to 1 - 0.025, the rest follow a quadratic that continues with the same slope and would reach 0
  at step n. The distilled checkpoints' timesteps are entries of linear_quadratic(8).
- `from_list(values)`: explicit sigmas (distilled configs), checked against a checkpoint's
  `allowed_inference_steps` with `check_allowed`.
- `truncate(sigmas, skip_initial, skip_final)`: the official `skip_*_inference_steps` (refinement passes,
  the 13B dev first pass); the last kept step then goes straight to 0, as in the official pipeline.

The token shift (one definition, used by `ltx_shifted`, by LTX-2's `ltx.ltx2.sched.ltx2_sigmas` and by the
training sigma samplers in `ltx.core.losses`): mu = `token_shift(tokens)` is linear in the latent token count
F·H·W (0.95 at 1024, 2.05 at 4096, not clamped; Esser et al. 2024 / Flux's resolution shift), and
`shift(sigmas, mu)` maps sigma -> e^mu / (e^mu + 1/sigma - 1) (sigma 0 stays 0). `stretch_to_terminal` is
the affine map of 1 - sigma both official schedulers apply afterwards.

Values are computed with the same float32 / float64 operations as the references (mu in float64 as
slope * tokens + intercept; the shift and the stretch in float32), so the tensors are equal bit for bit
(tests/parity/test_sched_parity.py, tests/ltx2/test_ltx2_sched.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_ALLOWED_DECIMALS = 4  # the official pipeline rounds timesteps to 4 decimals before the allowed-list check


def _with_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas.to(torch.float32), sigmas.new_zeros(1, dtype=torch.float32)])


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


def uniform(steps: int) -> Tensor:
    """Evenly spaced sigmas 1, 1 - 1/n, ..., 1/n, 0."""
    _check_steps(steps)
    return _with_zero(torch.linspace(1, 1 / steps, steps))


# Anchors of the token shift: mu = base_shift at BASE_SHIFT_TOKENS tokens, max_shift at MAX_SHIFT_TOKENS.
BASE_SHIFT, MAX_SHIFT = 0.95, 2.05
BASE_SHIFT_TOKENS, MAX_SHIFT_TOKENS = 1024, 4096


def token_shift(tokens: int, base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT,
                base_tokens: int = BASE_SHIFT_TOKENS, max_tokens: int = MAX_SHIFT_TOKENS) -> float:
    """mu of the resolution-dependent shift: linear in the number of latent tokens, not clamped.

    Evaluated as slope * tokens + intercept in float64, the operation order of both official schedulers
    (another order, e.g. base + slope * (tokens - base_tokens), differs in the last bit for many counts).
    """
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return slope * tokens + (base_shift - slope * base_tokens)


def shift(sigmas: Tensor, mu: float) -> Tensor:
    """sigma' = e^mu / (e^mu + 1/sigma - 1) elementwise, in sigmas' dtype (float32 rounding as the references:
    sigma 1 may come out a few ulp below 1); sigma 0 stays 0. Larger mu keeps sigma near 1 for longer."""
    e = math.exp(mu)
    return torch.where(sigmas != 0, e / (e + (1 / sigmas - 1)), 0)


def stretch_to_terminal(sigmas: Tensor, terminal: float) -> Tensor:
    """Scale 1 - sigma so that the last non-zero sigma becomes `terminal`; zeros are kept."""
    if not 0 < terminal < 1:
        raise ValueError(f"terminal must be in (0, 1), got {terminal}")
    nonzero = sigmas != 0
    one_minus = 1 - sigmas[nonzero]
    out = sigmas.clone()
    out[nonzero] = 1 - one_minus / (one_minus[-1] / (1 - terminal))
    return out


def ltx_shifted(steps: int, tokens: int, *, base_shift: float = BASE_SHIFT, max_shift: float = MAX_SHIFT,
                terminal: float | None = 0.1) -> Tensor:
    """Uniform sigmas shifted toward noise for larger latents (SD3 / Flux style), last value = `terminal`."""
    _check_steps(steps)
    if tokens < 1:
        raise ValueError(f"tokens must be positive, got {tokens}")
    if steps == 1:  # a single step starts at pure noise; the terminal stretch is 0/0 there (NaN in the reference)
        return torch.tensor([1.0, 0.0])
    sigmas = shift(torch.linspace(1, 1 / steps, steps), token_shift(tokens, base_shift, max_shift))  # float32
    if terminal is not None:
        sigmas = stretch_to_terminal(sigmas, terminal)
    return _with_zero(sigmas)


def linear_quadratic(steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> Tensor:
    """Linear drop of (1 - sigma) to `threshold_noise` over `linear_steps` (default n // 2), then a quadratic
    with matching value and slope that reaches 1 at step n (sigma 0)."""
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([1.0, 0.0])
    L = steps // 2 if linear_steps is None else linear_steps
    Q = steps - L
    # (1 - sigma)(i) = a i^2 + b i + c for i >= L; a, b, c from q(L) = thr, q'(L) = thr / L, q(n) = 1
    a = (L - threshold_noise * steps) / (L * Q**2)
    b = threshold_noise / L - 2 * (L - threshold_noise * steps) / Q**2
    c = a * L**2
    drops = [i * threshold_noise / L for i in range(L)] + [a * i**2 + b * i + c for i in range(L, steps)]
    return torch.tensor([1.0 - d for d in drops] + [0.0], dtype=torch.float32)


def from_list(values: Sequence[float]) -> Tensor:
    """Explicit sigmas (strictly descending, in (0, 1]); the trailing 0 is appended."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("explicit timesteps must not be empty")
    if any(not 0 < x <= 1 for x in v) or any(a <= b for a, b in zip(v, v[1:])):
        raise ValueError(f"explicit timesteps must be strictly descending values in (0, 1], got {v}")
    return _with_zero(torch.tensor(v, dtype=torch.float32))


def truncate(sigmas: Tensor, skip_initial: int = 0, skip_final: int = 0) -> Tensor:
    """Drop the first `skip_initial` and the last `skip_final` steps; the schedule still ends at 0."""
    n = len(sigmas) - 1
    if skip_initial < 0 or skip_final < 0 or skip_initial + skip_final >= n:
        raise ValueError(
            f"skip_initial ({skip_initial}) + skip_final ({skip_final}) must be non-negative and less than the "
            f"number of steps ({n})"
        )
    return _with_zero(sigmas[:-1][skip_initial : n - skip_final])


def check_allowed(sigmas: Tensor, allowed: Sequence[float] | None) -> None:
    """Raise unless every step's sigma (rounded to 4 decimals) is in the checkpoint's allowed list."""
    if allowed is None:
        return
    allowed_r = {round(float(a), _ALLOWED_DECIMALS) for a in allowed}
    bad = [round(s, _ALLOWED_DECIMALS) for s in sigmas[:-1].tolist() if round(s, _ALLOWED_DECIMALS) not in allowed_r]
    if bad:
        counts = allowed_step_counts(allowed)
        raise ValueError(
            f"timesteps {bad} are not allowed by this (distilled) checkpoint; allowed timesteps: "
            f"{sorted(allowed_r, reverse=True)}; step counts whose linear-quadratic schedule is allowed: {counts}"
        )


def allowed_step_counts(allowed: Sequence[float], max_steps: int = 64) -> list[int]:
    """Step counts n for which every value of linear_quadratic(n) is in `allowed` (e.g. 1, 2, 4, 8 for LQ(8))."""
    allowed_r = {round(float(a), _ALLOWED_DECIMALS) for a in allowed}
    return [
        n for n in range(1, max_steps + 1)
        if all(round(s, _ALLOWED_DECIMALS) in allowed_r for s in linear_quadratic(n)[:-1].tolist())
    ]


SAMPLERS = ("Uniform", "LinearQuadratic")


def schedule(steps: int, tokens: int, *, sampler: str = "LinearQuadratic", shifting: str | None = None,
             terminal: float | None = None) -> Tensor:
    """The schedule a checkpoint's scheduler config asks for (official `RectifiedFlowScheduler` fields:
    `sampler`, `shifting`, `target_shift_terminal`); `tokens` = latent F·H·W, used only by SD3 shifting."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; supported: {SAMPLERS}")
    if shifting not in (None, "SD3"):
        raise ValueError(f"unsupported shifting {shifting!r}; supported: None, 'SD3'")
    if shifting == "SD3":
        if sampler != "Uniform":
            raise ValueError("SD3 shifting is only used with the Uniform sampler (0.9.0 / 0.9.1 checkpoints)")
        return ltx_shifted(steps, tokens, terminal=terminal)
    return uniform(steps) if sampler == "Uniform" else linear_quadratic(steps)
