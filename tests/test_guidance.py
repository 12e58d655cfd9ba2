"""Guidance: invariants (cfg 1 = plain forward), batched forward == separate passes (batch > 1 with STG),
per-step schedule lookup, and the combination arithmetic (ltx.core.guidance) against closed forms."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, dit_inputs, randomize_

from ltx.core.guidance import cfg_star_scale, combine_ltxv, combine_multimodal, rescale_to_cond_std
from ltx.ltxv.guidance import GuidanceSchedule, GuidanceStep, TextConditioning, combine, guided_velocity
from ltx.ltxv.transformer import DiT, STGMode

CFG = TINY["w32"]  # 3 layers


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = randomize_(DiT(CFG), seed=1).eval()
    x, ctx, mask, pos = dit_inputs(CFG, batch=2)
    g = torch.Generator().manual_seed(9)
    neg = torch.randn(ctx.shape, generator=g)
    neg_mask = torch.ones_like(mask)
    neg_mask[:, 3:] = 0
    sigma = torch.tensor([[0.7], [0.3]]).expand(2, x.shape[1]).contiguous()
    return model, x, sigma, pos, TextConditioning(ctx, mask, neg, neg_mask)


@torch.no_grad()
def test_cfg_one_is_plain_forward(setup):
    model, x, sigma, pos, text = setup
    v, rows = guided_velocity(model, x, sigma, pos, text, GuidanceStep(cfg=1.0))
    assert rows == 2
    torch.testing.assert_close(v, model(x, sigma, text.context, text.mask, pos), atol=0, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("mode", [STGMode.attention_values, STGMode.attention_skip, STGMode.transformer_block])
def test_batched_equals_separate_passes(setup, mode):
    """Batch 2, CFG + CFG-star + STG + rescale in one forward == three separate forwards combined by hand.
    Bound 1e-5: fp32 matmuls over different batch sizes (measured ~1e-6)."""
    model, x, sigma, pos, text = setup
    step = GuidanceStep(cfg=3.0, stg=1.5, rescale=0.7, stg_blocks=(0, 2), cfg_star=True)
    v, rows = guided_velocity(model, x, sigma, pos, text, step, mode)
    assert rows == 6
    v_c = model(x, sigma, text.context, text.mask, pos)
    v_u = model(x, sigma, text.neg_context, text.neg_mask, pos)
    skip = torch.ones(CFG.num_layers, 2)
    skip[[0, 2]] = 0
    v_p = model(x, sigma, text.context, text.mask, pos, skip_mask=skip, stg_mode=mode)
    assert (v_p - v_c).abs().max() > 1e-2  # the perturbation does something
    # by hand (file docstring of ltx/ltxv/guidance.py)
    u, c = v_u.flatten(1), v_c.flatten(1)
    alpha = (u * c).sum(1) / (u * u).sum(1)
    v_u2 = alpha[:, None, None] * v_u
    ref = v_u2 + 3.0 * (v_c - v_u2) + 1.5 * (v_c - v_p)
    f = v_c.flatten(1).std(1) / ref.flatten(1).std(1)
    ref = ref * (0.7 * f + 0.3)[:, None, None]
    torch.testing.assert_close(v, ref, atol=1e-5, rtol=0)


@torch.no_grad()
def test_stg_without_blocks_or_residual_is_plain(setup):
    model, x, sigma, pos, text = setup
    plain = model(x, sigma, text.context, text.mask, pos)
    for step, mode in [(GuidanceStep(stg=2.0), STGMode.attention_values),
                       (GuidanceStep(stg=2.0, stg_blocks=(1,)), STGMode.residual)]:
        v, rows = guided_velocity(model, x, sigma, pos, text, step, mode)
        assert rows == 2  # no rows spent on a perturbation that is a no-op
        torch.testing.assert_close(v, plain, atol=0, rtol=0)


def test_combine_closed_forms():
    g = torch.Generator().manual_seed(0)
    c, u, p = (torch.randn(2, 4, 3, generator=g) for _ in range(3))
    torch.testing.assert_close(combine(c, u, p, GuidanceStep(cfg=2.5)), u + 2.5 * (c - u))
    torch.testing.assert_close(combine(c, u, p, GuidanceStep(stg=2.0)), c + 2.0 * (c - p))
    # rescale 0 => no rescale; rescale 1 => "off" by convention; rescale r => std pulled toward std(v_c)
    out = combine(c, None, p, GuidanceStep(stg=2.0, rescale=0.0))
    torch.testing.assert_close(out, c + 2.0 * (c - p))
    full = combine(c, None, p, GuidanceStep(stg=2.0, rescale=1e-12 + 1.0 - 1e-12))
    torch.testing.assert_close(full, c + 2.0 * (c - p))
    v = combine(c, None, p, GuidanceStep(stg=2.0, rescale=0.999999))
    torch.testing.assert_close(v.flatten(1).std(1), c.flatten(1).std(1), atol=1e-4, rtol=0)
    # CFG-star with u parallel to c: alpha makes the uncond equal to c, so guidance vanishes
    torch.testing.assert_close(combine(c, 3 * c, None, GuidanceStep(cfg=7.0, cfg_star=True)), c, atol=1e-5, rtol=0)


def test_core_pieces_and_the_two_orders():
    g = torch.Generator().manual_seed(1)
    c, u, p = (torch.randn(3, 5, 2, generator=g) for _ in range(3))
    # the 0.9.x adapter is the core arithmetic, bit for bit
    step = GuidanceStep(cfg=4.0, stg=1.5, rescale=0.6, stg_blocks=(1,), cfg_star=True)
    assert torch.equal(combine(c, u, p, step), combine_ltxv(c, u, p, cfg=4.0, stg=1.5, rescale=0.6, cfg_star=True))
    # CFG-star's alpha, per sample
    alpha = cfg_star_scale(c, 2 * c)
    assert alpha.shape == (3, 1, 1)
    torch.testing.assert_close(alpha, torch.full((3, 1, 1), 0.5))
    # rescale 1 matches cond's std, per sample or over all elements
    torch.testing.assert_close(rescale_to_cond_std(3 * c, c, 1.0, per_sample=True), c)
    torch.testing.assert_close(rescale_to_cond_std(3 * c, c, 1.0, per_sample=False), c)
    # the two references' CFG forms agree in value (not in rounding): u + s (c - u) = c + (s - 1)(c - u)
    torch.testing.assert_close(combine_ltxv(c, u, None, cfg=3.0), combine_multimodal(c, u, None, None, cfg=3.0))
    with pytest.raises(ValueError, match="uncond prediction is required"):
        combine_ltxv(c, None, None, cfg=3.0)


def test_schedule_lookup_and_validation():
    sch = GuidanceSchedule.from_lists([1, 1, 6, 8], [0, 0, 4, 4], [1, 1, 0.5, 0.5], [[], [11], [22, 35], [28]],
                                      [1.0, 0.996, 0.9933, 0.985], cfg_star=True)
    assert sch.at(1.0).cfg == 1 and sch.at(0.9983).stg_blocks == (11,)  # first breakpoint <= t
    assert sch.at(0.995).stg_blocks == (22, 35)
    assert sch.at(0.5).stg_blocks == (28,) and sch.at(0.99).cfg == 8
    with pytest.raises(ValueError, match="guidance_timesteps"):
        GuidanceSchedule.from_lists([1, 2], [0, 0], [1, 1], [[], []], None)
    with pytest.raises(ValueError, match=">= 1"):
        GuidanceStep(cfg=0.5)


@torch.no_grad()
def test_bad_stg_block_and_missing_negative(setup):
    model, x, sigma, pos, text = setup
    with pytest.raises(ValueError, match=r"blocks 0..2"):
        guided_velocity(model, x, sigma, pos, text, GuidanceStep(stg=1.0, stg_blocks=(5,)))
    with pytest.raises(ValueError, match="negative"):
        guided_velocity(model, x, sigma, pos, TextConditioning(text.context, text.mask), GuidanceStep(cfg=2.0))
