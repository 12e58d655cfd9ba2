"""Schedules and the sampler: shape / monotonicity / end-at-0 properties, closed forms, the x0 oracle."""

from __future__ import annotations

import pytest
import torch

from ltx.core import sigmas as S
from ltx.core.sampling import euler_step, next_sigma, sample, velocity_from_x0


@pytest.mark.parametrize("sig", [S.uniform(7), S.ltx_shifted(7, tokens=16), S.ltx_shifted(40, tokens=6144),
                                 S.linear_quadratic(8), S.linear_quadratic(30), S.from_list([1.0, 0.9, 0.3])])
def test_schedules_descend_to_zero(sig):
    assert sig.dtype == torch.float32 and sig[0] <= 1 and sig[-1] == 0
    assert (sig[1:] < sig[:-1]).all()


def test_closed_forms():
    # LQ(8) = the distilled timesteps; shifted 768x512x121 (6144 tokens) ends at the terminal 0.1
    assert torch.equal(S.linear_quadratic(8)[:-1],
                       torch.tensor([1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]))
    sig = S.ltx_shifted(40, tokens=6144)
    assert abs(sig[-2].item() - 0.1) < 1e-6 and sig[0] == 1
    mu = S.token_shift(6144)
    assert abs(mu - 2.7833333) < 1e-6  # slope (2.05 - 0.95) / 3072
    assert S.allowed_step_counts(S.linear_quadratic(8)[:-1].tolist()) == [1, 2, 4, 8]


def test_truncate_and_allowed():
    sig = S.linear_quadratic(30)
    t = S.truncate(sig, 17, 0)
    assert torch.equal(t[:-1], sig[17:-1]) and t[-1] == 0
    assert torch.equal(S.truncate(sig, 0, 3)[:-1], sig[:27])
    with pytest.raises(ValueError, match="less than the number of steps"):
        S.truncate(sig, 20, 10)
    allowed = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]
    S.check_allowed(S.linear_quadratic(4), allowed)
    with pytest.raises(ValueError, match=r"step counts .*: \[1, 2, 4, 8\]"):
        S.check_allowed(S.linear_quadratic(6), allowed)


def test_bad_inputs():
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            S.uniform(bad)
    with pytest.raises(ValueError, match="descending"):
        S.from_list([0.5, 0.9])
    with pytest.raises(ValueError, match="unknown sampler"):
        S.schedule(4, 10, sampler="Karras")


def test_next_sigma_per_token():
    sig = torch.tensor([1.0, 0.8, 0.5, 0.0])
    tok = torch.tensor([[1.0, 0.8, 0.6, 0.0]])
    assert torch.equal(next_sigma(sig, tok), torch.tensor([[0.8, 0.5, 0.5, 0.0]]))


@pytest.mark.parametrize("sig", [S.ltx_shifted(7, tokens=16), S.linear_quadratic(5), S.truncate(S.uniform(10), 0, 4)])
def test_oracle_recovers_x0(sig):
    """With the true x0 as denoiser, every Euler step contracts x - x0 by sigma_next / sigma: the result is x0
    exactly when the schedule ends at 0 and the signs are right (bound: fp32 rounding of O(1) values)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 12, 4, generator=g)
    noise = torch.randn(2, 12, 4, generator=g)
    x = sig[0] * noise + (1 - sig[0]) * x0
    out = sample(velocity_from_x0(lambda x, s: x0), x, sig)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_oracle_stochastic_and_conditioning():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 6, 3, generator=g)
    clean_cond = torch.randn(1, 6, 3, generator=g)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    x = torch.randn(1, 6, 3, generator=g)
    x[:, :2] = clean_cond[:, :2]
    sig = S.linear_quadratic(6)
    out = sample(velocity_from_x0(lambda x, s: x0), x, sig, cond_mask=mask, stochastic=True,
                 noise_generator=torch.Generator().manual_seed(3))
    assert torch.equal(out[:, :2], clean_cond[:, :2])  # strength-1 tokens never move
    torch.testing.assert_close(out[:, 2:], x0[:, 2:], atol=1e-5, rtol=0)


def test_euler_step_is_linear_flow():
    x0, noise = torch.randn(1, 5, 2), torch.randn(1, 5, 2)
    s, s2 = torch.full((1, 5), 0.7), torch.full((1, 5), 0.2)
    x = (1 - s[..., None]) * x0 + s[..., None] * noise
    torch.testing.assert_close(euler_step(x, noise - x0, s - s2), (1 - 0.2) * x0 + 0.2 * noise)
