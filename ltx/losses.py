"""Training losses and training-sigma samplers for rectified-flow video models.

Convention (the one used everywhere in ltx): x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1],
sigma = 1 is pure noise, and the network predicts the velocity v = noise - x0, so x0 = x_sigma - sigma * v.

Training sigmas follow the LTX-Video trainer: a logit-normal distribution whose location is shifted with
the number of latent tokens (larger videos are trained noisier), the same linear-in-tokens shift the
official inference schedule uses (`ltx_shift_mu`: 0.95 at 1024 tokens, 2.05 at 4096). References:
Esser et al. 2024 (SD3, "logit-normal sampling", sec. 3.1) and the LTX-Video-Trainer `timestep_sampling`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ltx_shift_mu(tokens: int, base: float = 0.95, max_shift: float = 2.05, lo: int = 1024, hi: int = 4096) -> float:
    """Location shift for `tokens` latent tokens: linear through (lo, base) and (hi, max_shift), not clamped."""
    return base + (max_shift - base) * (tokens - lo) / (hi - lo)


def sample_sigmas(batch: int, tokens: int, *, kind: str = "shifted_logit_normal", std: float = 1.0,
                  generator: torch.Generator | None = None, device=None) -> Tensor:
    """(batch,) training sigmas in (0, 1).

    kind: "uniform" | "logit_normal" (location 0) | "shifted_logit_normal" (location `ltx_shift_mu(tokens)`).
    """
    if kind == "uniform":
        return torch.rand(batch, generator=generator, device=device).clamp(1e-4, 1 - 1e-4)
    if kind not in ("logit_normal", "shifted_logit_normal"):
        raise ValueError(f"unknown sigma sampler {kind!r}; valid: uniform, logit_normal, shifted_logit_normal")
    mu = ltx_shift_mu(tokens) if kind == "shifted_logit_normal" else 0.0
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
