"""Fine-tuning losses: the bounded shifted logit-normal sigma sampler against its closed form, first-frame
conditioning masks, and the masked per-sample velocity loss."""

from __future__ import annotations

import math

import pytest
import torch

from ltx.core.losses import (
    SigmaSampler,
    first_frame_mask,
    masked_flow_matching_loss,
    sigma_bucket_means,
    sigma_bucket_sums,
)
from ltx.core.sigmas import token_shift


@pytest.mark.parametrize("sampler,tokens", [
    (SigmaSampler(), 192),  # the demo's 3x8x8 latents: mu below the LVT base
    (SigmaSampler(), 12_288),  # 768x512x241: the unbounded line would put mu at 4.98
    (SigmaSampler(kind="logit_normal", std=0.7), 4096),
    (SigmaSampler(uniform_fraction=0.25), 6144),
    (SigmaSampler(kind="uniform"), 1000),
])
def test_sigma_sampler_matches_its_closed_form(sampler, tokens):
    g = torch.Generator().manual_seed(0)
    n = 4000
    xs = sorted(sampler.sample(tokens, g) for _ in range(n))
    # Kolmogorov-Smirnov distance to the closed-form CDF; the 99.9% critical value is 1.95 / sqrt(n) = 0.031
    ks = max(max(abs((i + 1) / n - sampler.cdf(x, tokens)), abs(i / n - sampler.cdf(x, tokens)))
             for i, x in enumerate(xs))
    assert ks < 1.95 / math.sqrt(n), ks
    # and it is not a distribution that passes against anything: a wrong location fails
    wrong = SigmaSampler(kind=sampler.kind, std=sampler.std, max_mu=sampler.max_mu + 1,
                         uniform_fraction=sampler.uniform_fraction)
    if sampler.kind == "shifted_logit_normal" and sampler.mu(tokens) == sampler.max_mu:
        ks_wrong = max(abs((i + 1) / n - wrong.cdf(x, tokens)) for i, x in enumerate(xs))
        assert ks_wrong > 0.1


def test_shift_is_bounded_at_high_token_counts():
    s = SigmaSampler()
    assert token_shift(12_288) == pytest.approx(4.983, abs=1e-3)  # the trainer's unbounded line
    assert s.mu(12_288) == 2.05 and s.mu(4096) == pytest.approx(2.05) and s.mu(1024) == pytest.approx(0.95)
    median = 1 / (1 + math.exp(-s.mu(12_288)))
    assert median == pytest.approx(0.886, abs=1e-3)
    assert s.cdf(median, 12_288) == pytest.approx(0.5)


def test_sampler_is_a_function_of_its_generator():
    s = SigmaSampler(uniform_fraction=0.5)
    a = [s.sample(500, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


@pytest.mark.parametrize("bad", [dict(kind="lognormal"), dict(std=0.0), dict(std=float("nan")),
                                 dict(uniform_fraction=1.5), dict(max_mu=float("inf"))])
def test_sampler_rejects_nonsense(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SigmaSampler(**bad)


def test_first_frame_mask_covers_the_first_latent_frame_of_chosen_rows():
    m = first_frame_mask(torch.tensor([True, False, True]), 3, 2, 4)
    assert m.shape == (3, 24)
    assert m[0, :8].all() and not m[0, 8:].any()
    assert not m[1].any()
    assert torch.equal(m[2], m[0])
    assert not first_frame_mask(torch.tensor([True]), 1, 2, 4).any()  # an image has nothing left to learn


def test_masked_loss_excludes_conditioning_tokens_and_renormalises_per_sample():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    v = noise - x0
    v[0, :2] += 5.0  # huge error on row 0's conditioning tokens only
    v[1, 4, 0] += 1.0  # error 1 on one channel of one token of row 1
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    loss = masked_flow_matching_loss(v, x0, noise, mask)
    assert loss[0].item() == pytest.approx(0.0, abs=1e-12)
    assert loss[1].item() == pytest.approx(1.0 / (6 * 3))
    unmasked = masked_flow_matching_loss(v, x0, noise)
    assert unmasked[0].item() == pytest.approx(2 * 3 * 25 / 18)


def test_sigma_buckets_add_up_across_processes():
    sig = torch.tensor([0.1, 0.3, 0.9, 0.95])
    loss = torch.tensor([1.0, 2.0, 3.0, 5.0])
    total = sigma_bucket_sums(sig[:2], loss[:2]) + sigma_bucket_sums(sig[2:], loss[2:])
    assert torch.equal(total, sigma_bucket_sums(sig, loss))
    assert sigma_bucket_means(total) == {"loss_sigma_0.00-0.25": 1.0, "loss_sigma_0.25-0.50": 2.0,
                                         "loss_sigma_0.75-1.00": 4.0}
