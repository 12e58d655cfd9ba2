"""Guidance composed outside the model: the DiT's batched guided call, STG skip masks, per-step schedules.

Conventions: velocities v = noise - x0 (ltx/core/sampling.py), shape (B, T, C). Per step, with v_c the
prompt-conditioned prediction, v_u the negative-prompt one and v_p the prompt-conditioned one with the
STG blocks perturbed, the official `pipeline_ltx_video.py` denoising loop combines them as
`ltx.core.guidance.combine_ltxv` (the arithmetic, shared with LTX-2's guider, lives there):

    CFG-star (optional):  v_u <- a v_u with a = <v_c, v_u> / (|v_u|^2 + 1e-8), per sample
    CFG:                  v = v_u + cfg (v_c - v_u)          only when cfg > 1
    STG:                  v = v + stg (v_c - v_p)            only when stg > 0
        rescale r (only inside STG and only when r != 1):
                          v <- v (r std(v_c) / std(v) + 1 - r), std per sample, unbiased

All needed predictions come from ONE batched transformer call: rows [uncond (B)] [cond (B)] [perturbed (B)],
with a (num_layers, rows) skip mask that is 0 on the perturbed rows of the skipped blocks. (The official
`create_skip_layer_mask` strides rows as if the copies were interleaved, which is wrong for B > 1; here the
mask marks exactly the last B rows.) When STG perturbs nothing (no blocks, or the "residual" mode, a no-op
for this model) the perturbed prediction equals the conditioned one, so no rows are spent on it.

Per-step schedules (13B dev configs): `GuidanceSchedule` holds one `GuidanceStep` per breakpoint of
`guidance_timesteps`; the step at sigma t uses entry j = the first i with breakpoints[i] <= t (else the
last), as the official pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ltx.core.guidance import combine_ltxv
from ltx.ltxv.transformer import DiT, STGMode


@dataclass(frozen=True)
class GuidanceStep:
    """Guidance settings of one denoising step. cfg 1 = off, stg 0 = off, rescale 1 = off."""

    cfg: float = 1.0
    stg: float = 0.0
    rescale: float = 1.0
    stg_blocks: tuple[int, ...] = ()
    cfg_star: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stg_blocks", tuple(int(b) for b in self.stg_blocks))
        if self.cfg < 1:
            raise ValueError(f"guidance (cfg) scale must be >= 1 (1 = off), got {self.cfg}")
        if self.stg < 0:
            raise ValueError(f"stg scale must be >= 0 (0 = off), got {self.stg}")

    @property
    def use_cfg(self) -> bool:
        return self.cfg > 1.0

    @property
    def use_stg(self) -> bool:
        return self.stg > 0.0


@dataclass(frozen=True)
class GuidanceSchedule:
    """One GuidanceStep per breakpoint; `breakpoints` None means a single constant step."""

    steps: tuple[GuidanceStep, ...]
    breakpoints: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.steps:
            raise ValueError("a guidance schedule needs at least one step")
        if self.breakpoints is None and len(self.steps) != 1:
            raise ValueError("several guidance entries need guidance_timesteps (one per entry)")
        if self.breakpoints is not None and len(self.breakpoints) != len(self.steps):
            raise ValueError(f"{len(self.steps)} guidance entries but {len(self.breakpoints)} guidance_timesteps")

    @staticmethod
    def constant(**kwargs) -> GuidanceSchedule:
        return GuidanceSchedule((GuidanceStep(**kwargs),))

    @staticmethod
    def from_lists(
        cfg: Sequence[float], stg: Sequence[float], rescale: Sequence[float], stg_blocks: Sequence[Sequence[int]],
        breakpoints: Sequence[float] | None, cfg_star: bool = False,
    ) -> GuidanceSchedule:
        """From the official per-step lists (`guidance_scale`, `stg_scale`, `rescaling_scale`, `skip_block_list`,
        `guidance_timesteps`); all lists have one entry per breakpoint."""
        n = len(cfg)
        if not (len(stg) == len(rescale) == len(stg_blocks) == n):
            raise ValueError(
                f"guidance lists differ in length: cfg {len(cfg)}, stg {len(stg)}, rescale {len(rescale)}, "
                f"stg_blocks {len(stg_blocks)}"
            )
        steps = tuple(
            GuidanceStep(cfg=c, stg=s, rescale=r, stg_blocks=tuple(b), cfg_star=cfg_star)
            for c, s, r, b in zip(cfg, stg, rescale, stg_blocks)
        )
        return GuidanceSchedule(steps, None if breakpoints is None else tuple(float(b) for b in breakpoints))

    def at(self, sigma: float) -> GuidanceStep:
        if self.breakpoints is None:
            return self.steps[0]
        j = next((i for i, b in enumerate(self.breakpoints) if b <= sigma), len(self.breakpoints) - 1)
        return self.steps[j]


@dataclass(frozen=True)
class TextConditioning:
    """Prompt and negative-prompt states for the transformer. context: (B, S, caption_channels); mask (B, S)."""

    context: Tensor
    mask: Tensor
    neg_context: Tensor | None = None
    neg_mask: Tensor | None = None


def perturbs(step: GuidanceStep, stg_mode: STGMode) -> bool:
    """Whether the perturbed rows can differ from the conditioned ones (else they are not computed)."""
    return step.use_stg and bool(step.stg_blocks) and stg_mode is not STGMode.residual


def skip_mask_for(num_layers: int, rows: int, batch: int, blocks: Sequence[int], device=None) -> Tensor:
    """(num_layers, rows) ones, with 0 at the skipped blocks of the last `batch` rows (the perturbed copy)."""
    bad = [b for b in blocks if not 0 <= b < num_layers]
    if bad:
        raise ValueError(f"STG blocks {bad} do not exist; the model has blocks 0..{num_layers - 1}")
    mask = torch.ones(num_layers, rows, device=device)
    mask[list(blocks), rows - batch :] = 0
    return mask


def combine(v_cond: Tensor, v_uncond: Tensor | None, v_perturbed: Tensor | None, step: GuidanceStep) -> Tensor:
    """One step's guided velocity from its predictions (B, ...): `ltx.core.guidance.combine_ltxv`."""
    return combine_ltxv(v_cond, v_uncond, v_perturbed, cfg=step.cfg, stg=step.stg, rescale=step.rescale,
                        cfg_star=step.cfg_star)


def guided_velocity(
    model: DiT, x: Tensor, sigma: Tensor, positions: Tensor, text: TextConditioning, step: GuidanceStep,
    stg_mode: STGMode = STGMode.attention_values,
) -> tuple[Tensor, int]:
    """Guided velocity for x (B, T, C) at per-token sigma (B, T) from one batched forward.

    Returns (velocity (B, T, C), number of batch rows the transformer ran = B x {1, 2, 3}).
    """
    B = x.shape[0]
    if step.use_cfg and text.neg_context is None:
        raise ValueError("CFG (guidance scale > 1) needs negative-prompt embeddings")
    use_ptb = perturbs(step, stg_mode)
    parts_ctx, parts_mask = [], []
    if step.use_cfg:
        parts_ctx.append(text.neg_context)
        parts_mask.append(text.neg_mask)
    parts_ctx.append(text.context)
    parts_mask.append(text.mask)
    if use_ptb:
        parts_ctx.append(text.context)
        parts_mask.append(text.mask)
    k = len(parts_ctx)
    context = torch.cat(parts_ctx)  # (kB, S, C_text)
    mask = torch.cat(parts_mask)  # (kB, S)
    rep = (lambda t: t.repeat(k, *[1] * (t.ndim - 1))) if k > 1 else (lambda t: t)
    skip = None
    if use_ptb:
        skip = skip_mask_for(model.cfg.num_layers, k * B, B, step.stg_blocks, device=x.device)
    dtype = next(model.parameters()).dtype
    out = model(rep(x).to(dtype), rep(sigma), context.to(dtype), mask, rep(positions), skip_mask=skip,
                stg_mode=stg_mode)
    chunks = out.chunk(k)  # each (B, T, C)
    v_uncond = chunks[0] if step.use_cfg else None
    v_cond = chunks[1] if step.use_cfg else chunks[0]
    v_ptb = chunks[-1] if use_ptb else v_cond
    return combine(v_cond, v_uncond, v_ptb, step), k * B
