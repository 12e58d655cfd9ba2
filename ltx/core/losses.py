"""Training losses and training-sigma samplers for rectified-flow video models.

Convention (the one used everywhere in ltx): x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1],
sigma = 1 is pure noise, and the network predicts the velocity v = noise - x0, so x0 = x_sigma - sigma * v.

Training sigmas follow the LTX-Video trainer: a logit-normal distribution whose location is shifted with
the number of latent tokens (larger videos are trained noisier), the same linear-in-tokens shift the
official inference schedules use (`ltx.core.sigmas.token_shift`: 0.95 at 1024 tokens, 2.05 at 4096). References:
Esser et al. 2024 (SD3, "logit-normal sampling", sec. 3.1) and the LTX-Video-Trainer `timestep_sampling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ltx.core.sigmas import token_shift


def sample_sigmas(batch: int, tokens: int, *, kind: str = "shifted_logit_normal", std: float = 1.0,
                  generator: torch.Generator | None = None, device=None) -> Tensor:
    """(batch,) training sigmas in (0, 1).

    kind: "uniform" | "logit_normal" (location 0) | "shifted_logit_normal" (location `token_shift(tokens)`).
    """
    if kind == "uniform":
        return torch.rand(batch, generator=generator, device=device).clamp(1e-4, 1 - 1e-4)
    if kind not in ("logit_normal", "shifted_logit_normal"):
        raise ValueError(f"unknown sigma sampler {kind!r}; valid: uniform, logit_normal, shifted_logit_normal")
    mu = token_shift(tokens) if kind == "shifted_logit_normal" else 0.0
    z = torch.randn(batch, generator=generator, device=device) * std + mu
    return torch.sigmoid(z).clamp(1e-4, 1 - 1e-4)


def add_noise(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """x_sigma for sigma of shape (B,) (broadcast over the other dims) or already broadcastable."""
    s = sigma.reshape(sigma.shape + (1,) * (x0.ndim - sigma.ndim))
    return (1 - s) * x0 + s * noise


def flow_matching_loss(v_pred: Tensor, x0: Tensor, noise: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean squared error to the target velocity noise - x0; `weight` (B,) or broadcastable weighs samples
    (or tokens, e.g. 0 for conditioning tokens that are not being denoised)."""
    err = (v_pred.float() - (noise.float() - x0.float())).square()
    if weight is None:
        return err.mean()
    w = weight.float().reshape(weight.shape + (1,) * (err.ndim - weight.ndim)).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1e-12)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over all elements (the VAE's posterior regularizer)."""
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB for videos in [-1, 1] (data range 2)."""
    mse = (a.float() - b.float()).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


# ------------------------------------------------------------------------------------------------ fine-tuning

SIGMA_KINDS = ("uniform", "logit_normal", "shifted_logit_normal", "stretched_logit_normal")
# The LTX-2 trainer's stretch bounds: its roundings of the 0.5% and 99.9% standard-normal quantiles.
STRETCH_Z = (-2.5758, 3.0902)


@dataclass(kw_only=True)
class SigmaSampler:
    """Training sigmas for fine-tuning: a logit-normal whose location grows with the token count, bounded.

    sigma = sigmoid(z), z ~ N(mu(tokens), std^2), with probability 1 - uniform_fraction, else sigma ~ U(0, 1);
    then clamped to [eps, 1 - eps]. mu(tokens) = `token_shift(tokens)` (the LTX-Video-Trainer's line, 0.95 at
    1024 tokens, 2.05 at 4096) clamped to at most `max_mu`. Without the bound the line keeps growing: at
    12,288 tokens (768x512x241) mu = 4.98 and the median sigma is 0.993, so almost nothing is learned about
    the low-noise steps that set detail. With max_mu = 2.05 the median sigma stays at most sigmoid(2.05) = 0.886.
    `uniform_fraction` mixes in uniform draws (the LTX-2 trainer uses 10%) so every sigma keeps some weight.
    kind "logit_normal" uses mu = 0; "uniform" ignores std / mu.

    kind "stretched_logit_normal" is the LTX-2 trainer's distribution (`ltx.ltx2.training.sigma_sampler("ltx2")`
    sets its official values std 1, uniform_fraction 0.1, eps 1e-3): x = sigmoid(z) with z ~ N(mu, std^2) and mu
    = `token_shift(tokens)` unbounded (`max_mu` is not used), stretched linearly so that the 0.5% and 99.9%
    quantiles of sigmoid(z) land on 0 and 1, reflected at eps (x < eps -> 2 eps - x) and clipped to [0, 1]; with
    probability uniform_fraction sigma ~ U(eps, 1) instead. eps is thus the reflection point, not a clamp.
    """

    kind: str = "shifted_logit_normal"
    std: float = 1.0
    max_mu: float = 2.05
    uniform_fraction: float = 0.0
    eps: float = 1e-4

    def __post_init__(self):
        if self.kind not in SIGMA_KINDS:
            raise ValueError(f"sigma sampler kind {self.kind!r} is not one of {', '.join(SIGMA_KINDS)}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"sigma sampler std must be a finite number > 0, got {self.std}")
        if not math.isfinite(self.max_mu):
            raise ValueError(f"sigma sampler max_mu must be finite, got {self.max_mu}")
        if not 0.0 <= self.uniform_fraction <= 1.0:
            raise ValueError(f"sigma sampler uniform_fraction must be in [0, 1], got {self.uniform_fraction}")
        if not 0.0 <= self.eps < 0.5:
            raise ValueError(f"sigma sampler eps must be in [0, 0.5), got {self.eps}")

    def mu(self, tokens: int) -> float:
        if self.kind == "stretched_logit_normal":
            return token_shift(tokens)
        if self.kind == "uniform":
            return 0.0
        return min(token_shift(tokens), self.max_mu) if self.kind == "shifted_logit_normal" else 0.0

    def sample(self, tokens: int, generator: torch.Generator | None = None) -> float:
        """One sigma (a Python float) from `generator`: three draws, always, so the stream stays aligned."""
        u_mix, u, z = torch.rand(2, generator=generator).tolist() + torch.randn(1, generator=generator).tolist()
        if self.kind == "stretched_logit_normal":
            return self._stretched(u_mix, u, z, tokens)
        if self.kind == "uniform" or u_mix < self.uniform_fraction:
            s = u
        else:
            s = 1.0 / (1.0 + math.exp(-(z * self.std + self.mu(tokens))))
        return min(max(s, self.eps), 1.0 - self.eps)

    def cdf(self, s: float, tokens: int) -> float:
        """P(sigma <= s) for eps < s < 1 - eps, in closed form (for tests and plots)."""
        if self.kind == "stretched_logit_normal":
            return self._stretched_cdf(s, tokens)
        if self.kind == "uniform":
            return s
        z = (math.log(s / (1 - s)) - self.mu(tokens)) / self.std
        normal = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        return self.uniform_fraction * s + (1 - self.uniform_fraction) * normal

    def _stretch_bounds(self, tokens: int) -> tuple[float, float]:
        mu = self.mu(tokens)
        return _sigmoid(mu + STRETCH_Z[0] * self.std), _sigmoid(mu + STRETCH_Z[1] * self.std)

    def _stretched(self, u_mix: float, u: float, z: float, tokens: int) -> float:
        if u_mix < self.uniform_fraction:
            return (1 - self.eps) * u + self.eps
        lo, hi = self._stretch_bounds(tokens)
        x = (_sigmoid(z * self.std + self.mu(tokens)) - lo) / (hi - lo)
        if x < self.eps:
            x = 2 * self.eps - x
        return min(max(x, 0.0), 1.0)

    def _stretched_cdf(self, s: float, tokens: int) -> float:
        # Reflection folds x < eps onto 2 eps - x, so for eps <= s < 1: P(y <= s) = P(2 eps - s <= x <= s).
        lo, hi = self._stretch_bounds(tokens)

        def x_cdf(x: float) -> float:  # P(stretched x <= x)
            v = lo + x * (hi - lo)
            if v <= 0 or v >= 1:
                return float(v >= 1)
            return 0.5 * (1 + math.erf((math.log(v / (1 - v)) - self.mu(tokens)) / (self.std * math.sqrt(2))))

        stretched = max(x_cdf(s) - x_cdf(2 * self.eps - s), 0.0) if s >= self.eps else 0.0
        uniform = min(max((s - self.eps) / (1 - self.eps), 0.0), 1.0)
        return self.uniform_fraction * uniform + (1 - self.uniform_fraction) * stretched


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # no overflow for very negative x
    return e / (1.0 + e)


def first_frame_mask(conditioned: Tensor, frames: int, height: int, width: int) -> Tensor:
    """(B, F·H·W) bool: True on the first latent frame's H·W tokens of the rows where `conditioned` (B,) holds.

    Image-to-video conditioning as the official inference code does it (and the LTX-Video-Trainer trains
    it): those tokens stay clean (x = x0), get sigma 0, and are left out of the loss. A 1-frame latent (an
    image) is never conditioned, since nothing would be left to learn."""
    B = conditioned.shape[0]
    mask = torch.zeros(B, frames, height * width, dtype=torch.bool, device=conditioned.device)
    if frames > 1:
        mask[:, 0] = conditioned.bool()[:, None]
    return mask.flatten(1)


def masked_flow_matching_loss(v_pred: Tensor, x0: Tensor, noise: Tensor, cond_mask: Tensor | None = None) -> Tensor:
    """Per-sample loss (B,): mean squared error to v = noise - x0 over the tokens that are denoised.

    x0, noise, v_pred: (B, T, C) tokens; cond_mask (B, T) True = conditioning token (clean, excluded). Each
    sample is normalised by its own count of loss tokens, so a sample with a clean first frame weighs the same
    as one without (the LTX-Video-Trainer divides by the batch's mean mask instead; per sample keeps the loss
    independent of how a global batch is split over processes)."""
    err = (v_pred.float() - (noise.float() - x0.float())).square().mean(-1)  # (B, T)
    if cond_mask is None:
        return err.mean(-1)
    keep = (~cond_mask).float()
    return (err * keep).sum(-1) / keep.sum(-1).clamp_min(1.0)


SIGMA_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sigma_bucket_sums(sigma: Tensor, loss: Tensor, edges: tuple[float, ...] = SIGMA_BUCKETS) -> Tensor:
    """(2, K) = (sum of per-sample losses, count) in each of the K sigma buckets [edges[k], edges[k+1]); sums
    rather than means so that processes can add theirs before dividing (`sigma_bucket_means`)."""
    k = torch.bucketize(sigma.float().cpu(), torch.tensor(edges[1:-1]), right=True)
    sums = torch.zeros(len(edges) - 1).index_add_(0, k, loss.detach().float().cpu())
    counts = torch.zeros(len(edges) - 1).index_add_(0, k, torch.ones_like(sums[k]))
    return torch.stack([sums, counts])


def sigma_bucket_means(sums: Tensor, edges: tuple[float, ...] = SIGMA_BUCKETS) -> dict[str, float]:
    """{"loss_sigma_0.00-0.25": mean, ...} for the buckets that saw a sample."""
    return {f"loss_sigma_{lo:.2f}-{hi:.2f}": float(s / c)
            for lo, hi, s, c in zip(edges[:-1], edges[1:], sums[0], sums[1]) if c > 0}
