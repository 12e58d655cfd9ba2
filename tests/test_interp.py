"""SLERP properties (STYLE 5.8): endpoints, unit norm, symmetry, constant angular speed, LERP fallback, batching."""

from __future__ import annotations

import math

import pytest
import torch

from ltx.core.interp import interpolate_keyframes, slerp


def unit(*shape, seed=0):
    v = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=-1, keepdim=True)


def test_endpoints_exact():
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6, rtol=0)


def test_unit_norm_and_constant_speed():
    a, b = unit(4, 32, seed=1), unit(4, 32, seed=2)
    omega = torch.arccos((a * b).sum(-1))
    for t in (0.1, 0.25, 0.5, 0.9):
        s = slerp(a, b, t)
        torch.testing.assert_close(s.norm(dim=-1), torch.ones(4), atol=1e-6, rtol=0)
        # angle from a grows linearly in t (bound: acos near 0/pi amplifies fp32 rounding; measured 1e-6)
        torch.testing.assert_close(torch.arccos((s * a).sum(-1).clamp(-1, 1)), t * omega, atol=1e-4, rtol=0)


def test_symmetry_and_batch_equals_loop():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(slerp(a, b, 0.3), slerp(b, a, 0.7), atol=1e-6, rtol=0)
    loop = torch.stack([slerp(a[i], b[i], 0.3) for i in range(5)])
    torch.testing.assert_close(slerp(a, b, 0.3), loop, atol=0, rtol=0)
    ts = torch.tensor([0.0, 0.5, 1.0])[:, None]  # several fractions of one arc
    many = slerp(a[:1], b[:1], ts)
    torch.testing.assert_close(many[1], slerp(a[0], b[0], 0.5), atol=1e-6, rtol=0)


def test_parallel_and_antiparallel_fall_back_to_lerp():
    a = unit(1, 8, seed=3)
    for b in (a * 2.0, a + 1e-9, -a):
        s = slerp(a, b, 0.25)
        assert torch.isfinite(s).all()
        torch.testing.assert_close(s, a + 0.25 * (b - a), atol=1e-6, rtol=0)


def test_dtype_and_tuple_dim():
    a, b = torch.randn(2, 4, 6).bfloat16(), torch.randn(2, 4, 6).bfloat16()
    assert slerp(a, b, 0.5).dtype == torch.bfloat16
    whole = slerp(a.float(), b.float(), 0.5, dim=(1, 2))
    flat = slerp(a.float().flatten(1), b.float().flatten(1), 0.5).view(2, 4, 6)
    torch.testing.assert_close(whole, flat, atol=1e-6, rtol=0)


def test_interpolate_keyframes():
    keys = unit(3, 16, seed=4)
    out = interpolate_keyframes(keys, [0, 4, 10], 11)
    assert out.shape == (11, 16)
    assert torch.equal(out[0], keys[0]) and torch.equal(out[4], keys[1])
    torch.testing.assert_close(out[10], keys[2], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(11), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="0 to num_frames - 1 = 10"):
        interpolate_keyframes(keys, [0, 4, 12], 11)
    assert math.isclose(float((out[1] * keys[0]).sum()), float((out[2] * out[1]).sum()), rel_tol=1e-4)
