"""Guidance arithmetic for both families: CFG, STG, modality guidance, rescale, CFG-star.

Each function combines predictions of the same latent made with different conditioning: cond (the prompt),
uncond (the negative prompt), perturbed (STG: self-attention skipped in some blocks) and, for LTX-2, isolated
(audio <-> video cross-attention skipped). Shapes (B, ...): velocities (0.9.x) or x0 (LTX-2), any layout.

The two official references order the operations differently, so no single formula is bitwise for both; the
two combinations stand side by side and share their pieces (`cfg_star_scale`, `rescale_to_cond_std`):

| | `combine_ltxv` (ltx_video `LTXVideoPipeline`) | `combine_multimodal` (ltx-core `MultiModalGuider.calculate`) |
|---|---|---|
| CFG | u + cfg (c - u), only when cfg > 1 | c + (cfg - 1)(c - u) |
| STG | + stg (c - p), only when stg > 0 | + stg (c - p) |
| modality | - | + (modality - 1)(c - i) |
| rescale | only with STG; 1 = off; std per sample | 0 = off; std over all elements |
| CFG-star | optional: u <- alpha u before CFG | - |

References: CFG, Ho & Salimans 2022; STG (spatio-temporal skip guidance), Hyung et al. 2024; CFG-star
("CFG-Zero*", optimized scale), Fan et al. 2025, official `cfg_star_rescale`; rescale (pull the guided
prediction's std toward the conditioned one's), Lin et al. 2024, official `rescaling_scale`.
"""

from __future__ import annotations

import math

from torch import Tensor

CFG_STAR_EPS = 1e-8  # official denominator guard


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """(B, 1) -> (B, 1, ..., 1) broadcastable against `like`."""
    return t.view(like.shape[0], *[1] * (like.ndim - 1))


def cfg_star_scale(cond: Tensor, uncond: Tensor) -> Tensor:
    """alpha = <cond, uncond> / (|uncond|^2 + 1e-8) per sample over all other dims, shaped (B, 1, ..., 1)."""
    B = cond.shape[0]
    c, u = cond.reshape(B, -1), uncond.reshape(B, -1)
    alpha = (c * u).sum(1, keepdim=True) / ((u * u).sum(1, keepdim=True) + CFG_STAR_EPS)
    return _per_sample(alpha, cond)


def rescale_to_cond_std(pred: Tensor, cond: Tensor, scale: float, *, per_sample: bool) -> Tensor:
    """pred * (scale std(cond) / std(pred) + 1 - scale): scale 1 gives pred cond's std, 0 leaves it.

    per_sample: unbiased std per sample over all other dims (0.9.x), else over all elements, a 0-dim factor
    in pred's dtype (LTX-2)."""
    if per_sample:
        B = pred.shape[0]
        factor = cond.reshape(B, -1).std(1, keepdim=True) / pred.reshape(B, -1).std(1, keepdim=True)
        return pred * _per_sample(scale * factor + (1 - scale), pred)
    factor = cond.std() / pred.std()
    return pred * (scale * factor + (1 - scale))


def _check(name: str, pred: Tensor | None, needed: bool, cond: Tensor, scales: str) -> None:
    if pred is None and needed:
        raise ValueError(f"the {name} prediction is required by the guidance scales ({scales})")
    if pred is not None and pred.shape != cond.shape:
        raise ValueError(f"{name} prediction {tuple(pred.shape)} differs in shape from cond {tuple(cond.shape)}")


def combine_ltxv(cond: Tensor, uncond: Tensor | None, perturbed: Tensor | None, *, cfg: float = 1.0,
                 stg: float = 0.0, rescale: float = 1.0, cfg_star: bool = False) -> Tensor:
    """LTX-Video 0.9.x guidance (the official `pipeline_ltx_video.py` denoising loop), in this order:
    CFG-star (if asked) and CFG when cfg > 1; STG when stg > 0, then, inside STG only, the per-sample rescale
    when rescale != 1. cfg 1 / stg 0 / rescale 1 = off."""
    scales = f"cfg={cfg}, stg={stg}"
    _check("uncond", uncond, cfg > 1, cond, scales)
    _check("perturbed", perturbed, stg > 0, cond, scales)
    pred = cond
    if cfg > 1:
        if cfg_star:
            uncond = cfg_star_scale(cond, uncond) * uncond
        pred = uncond + cfg * (cond - uncond)
    if stg > 0:
        pred = pred + stg * (cond - perturbed)
        if rescale != 1.0:
            pred = rescale_to_cond_std(pred, cond, rescale, per_sample=True)
    return pred


def combine_multimodal(cond: Tensor, uncond: Tensor | None, perturbed: Tensor | None, isolated: Tensor | None, *,
                       cfg: float = 1.0, stg: float = 0.0, modality: float = 1.0, rescale: float = 0.0) -> Tensor:
    """LTX-2 guidance of one modality (ltx-core `MultiModalGuider.calculate`), in cond's dtype:

        pred = cond + (cfg - 1)(cond - uncond) + stg (cond - perturbed) + (modality - 1)(cond - isolated)
        then `rescale_to_cond_std` over all elements when rescale != 0.

    Every term is computed, with 0.0 for a prediction whose pass did not run (None), as the reference; it is
    an error to omit one whose scale asks for it (math.isclose, as the reference decides which passes run).
    """
    scales = f"cfg={cfg}, stg={stg}, modality={modality}"
    _check("uncond", uncond, not math.isclose(cfg, 1.0), cond, scales)
    _check("perturbed", perturbed, not math.isclose(stg, 0.0), cond, scales)
    _check("isolated", isolated, not math.isclose(modality, 1.0), cond, scales)
    u = 0.0 if uncond is None else uncond
    p = 0.0 if perturbed is None else perturbed
    i = 0.0 if isolated is None else isolated
    pred = cond + (cfg - 1) * (cond - u) + stg * (cond - p) + (modality - 1) * (cond - i)
    if rescale != 0:
        pred = rescale_to_cond_std(pred, cond, rescale, per_sample=False)
    return pred
