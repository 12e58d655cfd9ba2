"""Schedules and the sampler: shape / monotonicity / end-at-0 properties, closed forms, the x0 oracle."""

from __future__ import annotations

import pytest
import torch

from ltx.core import sigmas
from ltx.core.sampling import (
    euler_step,
    next_sigma,
    sample,
    velocity_euler,
    velocity_from_x0,
    velocity_stochastic,
)


@pytest.mark.parametrize("sig", [sigmas.uniform(7), sigmas.ltx_shifted(7, tokens=16),
                                 sigmas.ltx_shifted(40, tokens=6144), sigmas.linear_quadratic(8),
                                 sigmas.linear_quadratic(30), sigmas.from_list([1.0, 0.9, 0.3])])
def test_schedules_descend_to_zero(sig):
    assert sig.dtype == torch.float32 and sig[0] <= 1 and sig[-1] == 0
    assert (sig[1:] < sig[:-1]).all()


def test_closed_forms():
    # LQ(8) = the distilled timesteps; shifted 768x512x121 (6144 tokens) ends at the terminal 0.1
    assert torch.equal(sigmas.linear_quadratic(8)[:-1],
                       torch.tensor([1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]))
    sig = sigmas.ltx_shifted(40, tokens=6144)
    assert abs(sig[-2].item() - 0.1) < 1e-6 and sig[0] == 1
    mu = sigmas.token_shift(6144)
    assert abs(mu - 2.7833333) < 1e-6  # slope (2.05 - 0.95) / 3072
    assert sigmas.allowed_step_counts(sigmas.linear_quadratic(8)[:-1].tolist()) == [1, 2, 4, 8]


def test_token_shift_pieces():
    """One token shift: mu through the two anchors; the shift raises sigmas and keeps 0 (1 up to float32
    rounding, as the references); the stretch sends the last non-zero sigma to the terminal and keeps zeros."""
    assert sigmas.token_shift(1024) == pytest.approx(0.95) and sigmas.token_shift(4096) == pytest.approx(2.05)
    t = torch.tensor([1.0, 0.5, 0.25, 0.0])
    shifted = sigmas.shift(t, sigmas.token_shift(4096))
    assert abs(shifted[0].item() - 1) < 1e-6 and shifted[-1] == 0 and (shifted[1:3] > t[1:3]).all()
    stretched = sigmas.stretch_to_terminal(shifted, 0.1)
    assert abs(stretched[0].item() - 1) < 1e-6 and stretched[-1] == 0 and abs(stretched[-2].item() - 0.1) < 1e-6
    assert torch.equal(sigmas.ltx_shifted(9, 2000)[:-1],
                       sigmas.stretch_to_terminal(sigmas.shift(torch.linspace(1, 1 / 9, 9), sigmas.token_shift(2000)),
                                                  0.1))
    with pytest.raises(ValueError, match="terminal"):
        sigmas.stretch_to_terminal(shifted, 1.0)


def test_truncate_and_allowed():
    sig = sigmas.linear_quadratic(30)
    t = sigmas.truncate(sig, 17, 0)
    assert torch.equal(t[:-1], sig[17:-1]) and t[-1] == 0
    assert torch.equal(sigmas.truncate(sig, 0, 3)[:-1], sig[:27])
    with pytest.raises(ValueError, match="less than the number of steps"):
        sigmas.truncate(sig, 20, 10)
    allowed = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]
    sigmas.check_allowed(sigmas.linear_quadratic(4), allowed)
    with pytest.raises(ValueError, match=r"step counts .*: \[1, 2, 4, 8\]"):
        sigmas.check_allowed(sigmas.linear_quadratic(6), allowed)


def test_bad_inputs():
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            sigmas.uniform(bad)
    with pytest.raises(ValueError, match="descending"):
        sigmas.from_list([0.5, 0.9])
    with pytest.raises(ValueError, match="unknown sampler"):
        sigmas.schedule(4, 10, sampler="Karras")


def test_next_sigma_per_token():
    sig = torch.tensor([1.0, 0.8, 0.5, 0.0])
    tok = torch.tensor([[1.0, 0.8, 0.6, 0.0]])
    assert torch.equal(next_sigma(sig, tok), torch.tensor([[0.8, 0.5, 0.5, 0.0]]))


@pytest.mark.parametrize("sig", [sigmas.ltx_shifted(7, tokens=16), sigmas.linear_quadratic(5),
                                 sigmas.truncate(sigmas.uniform(10), 0, 4)])
def test_oracle_recovers_x0(sig):
    """With the true x0 as denoiser, every Euler step contracts x - x0 by sigma_next / sigma: the result is x0
    exactly when the schedule ends at 0 and the signs are right (bound: fp32 rounding of O(1) values)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 12, 4, generator=g)
    noise = torch.randn(2, 12, 4, generator=g)
    x = sig[0] * noise + (1 - sig[0]) * x0
    (out,) = sample(velocity_from_x0(lambda x, s: x0), (x,), sig, velocity_euler())
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_oracle_stochastic_and_conditioning():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 6, 3, generator=g)
    clean_cond = torch.randn(1, 6, 3, generator=g)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    x = torch.randn(1, 6, 3, generator=g)
    x[:, :2] = clean_cond[:, :2]
    sig = sigmas.linear_quadratic(6)
    (out,) = sample(velocity_from_x0(lambda x, s: x0), (x,), sig,
                    velocity_stochastic((mask,), torch.Generator().manual_seed(3)))
    assert torch.equal(out[:, :2], clean_cond[:, :2])  # strength-1 tokens never move
    torch.testing.assert_close(out[:, 2:], x0[:, 2:], atol=1e-5, rtol=0)


def test_euler_step_is_linear_flow():
    x0, noise = torch.randn(1, 5, 2), torch.randn(1, 5, 2)
    s, s2 = torch.full((1, 5), 0.7), torch.full((1, 5), 0.2)
    x = (1 - s[..., None]) * x0 + s[..., None] * noise
    torch.testing.assert_close(euler_step(x, noise - x0, s - s2), (1 - 0.2) * x0 + 0.2 * noise)


def test_streams_are_sampled_independently():
    """Two streams in one loop == each alone (the velocity steps act per stream), bit for bit."""
    g = torch.Generator().manual_seed(2)
    xa, xb = torch.randn(1, 6, 3, generator=g), torch.randn(2, 4, 5, generator=g)
    mask = torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0, 0.0]])
    sig = sigmas.linear_quadratic(5)
    velocity = velocity_from_x0(lambda x, s: torch.tanh(x) * (1 - s[..., None]))
    both = sample(velocity, (xa, xb), sig, velocity_euler((mask, None)))
    assert torch.equal(both[0], sample(velocity, (xa,), sig, velocity_euler((mask,)))[0])
    assert torch.equal(both[1], sample(velocity, (xb,), sig, velocity_euler())[0])
    with pytest.raises(ValueError, match="ends at 0"):
        sample(velocity, (xa,), sig[:-1], velocity_euler())
