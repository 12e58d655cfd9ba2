"""The rectified-flow Euler ancestral step (ltx.core.sampling.ancestral_step_x0, LTX-2.5's distilled sampler):
against diffusers 0.42.1's LTXEulerAncestralRFScheduler over a whole schedule with the same noise, eta = 0 against
the plain x0 Euler step, and the closed form it must keep: x = (1 - s) x0 + s eps stays so in law."""

from __future__ import annotations

import pytest
import torch

from ltx.core.sampling import ancestral_step_x0, euler_step_x0

SIGMAS = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]  # the distilled stage-1 list


@pytest.mark.parametrize("eta,s_noise", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.7)])
def test_matches_diffusers_over_a_schedule(eta, s_noise):
    from diffusers.schedulers.scheduling_ltx_euler_ancestral_rf import LTXEulerAncestralRFScheduler

    sched = LTXEulerAncestralRFScheduler(eta=eta, s_noise=s_noise)
    sched.set_timesteps(sigmas=SIGMAS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 16, generator=g)
    ours, theirs = x.clone(), x.clone()
    worst = 0.0
    assert len(sched.sigmas) == len(SIGMAS)
    for i in range(len(SIGMAS) - 1):
        t = sched.timesteps[i]
        v = torch.tanh(ours * 0.7 + i)  # a stand-in velocity model: any function of the sample
        theirs = sched.step(torch.tanh(theirs * 0.7 + i), t, theirs, generator=torch.Generator().manual_seed(i),
                            return_dict=False)[0]
        sigma = sched.sigmas[i]
        noise = torch.randn(ours.shape, generator=torch.Generator().manual_seed(i))  # the draw diffusers makes
        ours = ancestral_step_x0(ours, ours - sigma * v, sigma, sched.sigmas[i + 1], noise, eta, s_noise)
        worst = max(worst, (ours - theirs).abs().max().item())
    # the same float32 formula; diffusers adds 1e-12 to alpha_down (invisible in fp32 unless alpha_down < ~1e-5)
    assert worst <= 1e-6, worst


def test_eta_zero_is_the_plain_euler_step():
    g = torch.Generator().manual_seed(1)
    x, x0 = torch.randn(3, 40, generator=g), torch.randn(3, 40, generator=g)
    for s, s_next in zip(SIGMAS[:-2], SIGMAS[1:-1]):
        a = ancestral_step_x0(x, x0, s, s_next, None, eta=0.0)
        assert (a - euler_step_x0(x, x0, s, s_next)).abs().max() <= 1e-6
    assert torch.equal(ancestral_step_x0(x, x0, 0.4, 0.0, None), x0)
    with pytest.raises(ValueError, match="needs a noise tensor"):
        ancestral_step_x0(x, x0, 0.9, 0.5, None)


def test_it_keeps_the_rectified_flow_marginal():
    """With the exact x0, x = (1 - s) x0 + s eps must leave as (1 - s') x0 + s' eps': the residual
    x' - (1 - s') x0 has mean 0 and standard deviation s' (n = 400k values: the std is measured to ~0.1%)."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(400_000, generator=g)
    for s, s_next in [(1.0, 0.99375), (0.975, 0.909375), (0.725, 0.421875), (0.6, 0.1)]:
        x = (1 - s) * x0 + s * torch.randn(x0.shape, generator=g)
        out = ancestral_step_x0(x, x0, s, s_next, torch.randn(x0.shape, generator=g))
        residual = out - (1 - s_next) * x0
        assert abs(residual.mean().item()) < 0.005 and abs(residual.std().item() / s_next - 1) < 0.005, (s, s_next)
