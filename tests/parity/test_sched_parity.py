"""Schedules and scheduler steps vs ltx_video.schedulers.rf.RectifiedFlowScheduler (exact equality)."""

from __future__ import annotations

import pytest
import torch

ltx_video = pytest.importorskip("ltx_video")
from ltx_video.schedulers.rf import RectifiedFlowScheduler, linear_quadratic_schedule  # noqa: E402

from ltx.core import sigmas  # noqa: E402
from ltx.core.sampling import SIGMA_EPS, euler_step, next_sigma, stochastic_step  # noqa: E402

pytestmark = pytest.mark.parity


def test_linear_quadratic_exact():
    for n in range(1, 101):
        assert torch.equal(sigmas.linear_quadratic(n)[:-1], linear_quadratic_schedule(n)), n


@pytest.mark.parametrize("tokens", [1, 18, 96, 1024, 2000, 4096, 6144, 13376, 22400])
def test_sd3_shift_exact(tokens):
    # steps >= 2: for one step the reference's terminal stretch is 0/0 (NaN); ours returns [1, 0]
    for n in (2, 3, 7, 20, 40, 50):
        ref = RectifiedFlowScheduler(shifting="SD3", target_shift_terminal=0.1)
        ref.set_timesteps(n, samples_shape=(1, 128, tokens, 1, 1))
        assert torch.equal(sigmas.ltx_shifted(n, tokens)[:-1], ref.timesteps), (n, tokens)
    ref = RectifiedFlowScheduler(sampler="Uniform")
    ref.set_timesteps(9, samples_shape=(1, 128, tokens, 1, 1))
    assert torch.equal(sigmas.uniform(9)[:-1], ref.timesteps)


@pytest.mark.parametrize("stochastic", [False, True])
def test_step_matches_reference_per_token(stochastic):
    """Per-token timesteps with a conditioning mask, including tokens between schedule values."""
    ref = RectifiedFlowScheduler(sampler="LinearQuadratic")
    ref.set_timesteps(8, samples_shape=(1, 16, 2, 2, 2))
    sig = sigmas.linear_quadratic(8)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 8, 16, generator=g), torch.randn(1, 8, 16, generator=g)
    for i in range(8):
        t = sig[i]
        mask = torch.tensor([[0.0, 0.0, 0.3, 0.5, 0.9, 1.0, 0.0, 0.02]])
        tok = torch.minimum(t.expand(1, 8), 1 - mask)
        torch.manual_seed(5)
        expected = ref.step(v, tok, x, return_dict=False, stochastic_sampling=stochastic)[0]
        dt = tok - next_sigma(sig, tok)
        if stochastic:
            torch.manual_seed(5)
            ours = stochastic_step(x, v, tok, tok - dt, torch.randn_like(x))
        else:
            ours = euler_step(x, v, dt)
        assert torch.equal(ours, expected), i
    assert SIGMA_EPS == 1e-6
