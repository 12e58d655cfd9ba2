"""Chained long videos (ltx/ltxv/chain.py): SLERP noise closed forms, the carried-over conditioning and stitching
(with `generate` replaced by a recorder), and one real chained run of a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

import ltx.ltxv.chain as chain
from ltx.ltxv.chain import chain_noise, generate_chain, stitch
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.pipelines import SchedulerSpec
from ltx.ltxv.transformer import DiT, DiTConfig
from ltx.ltxv.vae import VAE_PRESETS, VideoVAE, tiny
from ltx.presets import PassConfig, SamplingDefaults

DIT = DiTConfig(num_layers=1, num_heads=2, head_dim=8, in_channels=16, out_channels=16, caption_channels=8,
                causal_temporal_positioning=True)
SAMPLING = SamplingDefaults(first_pass=PassConfig(num_inference_steps=1))


def test_chain_noise_is_a_great_circle_step():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    a, b = a / a.flatten(1).norm(dim=1)[:, None, None], b / b.flatten(1).norm(dim=1)[:, None, None]  # unit rows
    assert chain_noise(None, b, 0.3) is b  # the first segment: fresh noise as drawn
    torch.testing.assert_close(chain_noise(a, b, 0.0), a)
    torch.testing.assert_close(chain_noise(a, b, 1.0), b)
    out = chain_noise(a, b, 0.3)
    omega = torch.arccos((a * b).sum((1, 2)))  # per-sample angle
    torch.testing.assert_close(out.flatten(1).norm(dim=1), torch.ones(2))  # norm kept (LERP would give < 1)
    torch.testing.assert_close(torch.arccos((out * a).sum((1, 2)).clamp(-1, 1)), 0.3 * omega, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:], chain_noise(a[1:], b[1:], 0.3))  # per sample, not over the batch
    with pytest.raises(ValueError, match="noise_mix"):
        chain_noise(a, b, 1.5)


def test_independent_noise_gets_the_expected_correlation():
    """Gaussian noise of many tokens is nearly orthogonal, so consecutive segments correlate by cos(mix pi/2)."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 4096, 16, generator=g), torch.randn(1, 4096, 16, generator=g)
    out = chain_noise(a, b, 0.5)
    cos = (out * a).sum() / (out.norm() * a.norm())
    assert abs(cos.item() - math.cos(0.25 * math.pi)) < 0.01
    assert abs(out.std().item() - 1) < 0.01  # still unit-variance noise


def test_segments_condition_on_the_previous_tail_and_stitch(monkeypatch):
    calls = []

    def fake_generate(dit, vae, text, sampling, sched, *, num_frames, height, width, items, noise, **kw):
        k = len(calls)
        calls.append((items, noise))
        t = torch.arange(num_frames, dtype=torch.float32)
        return ((k * 100 + t) / 1000).view(1, 1, -1, 1, 1).expand(2, 3, -1, height, width)  # frame ids as values

    monkeypatch.setattr(chain, "generate", fake_generate)
    vae = VideoVAE(tiny(VAE_PRESETS["0.9.5"], width=8))  # 8x time, 32x space; only its config is read
    text = TextConditioning(torch.zeros(2, 3, 8), torch.ones(2, 3))
    first = [object()]
    out = generate_chain(DiT(DIT), vae, text, SAMPLING, SchedulerSpec(), num_segments=3, segment_frames=25,
                         overlap=9, height=64, width=32, fps=8.0, generator=torch.Generator().manual_seed(4),
                         noise_mix=0.4, strength=0.9, items=first)
    assert out.shape == (2, 3, 3 * 25 - 2 * 9, 64, 32)
    ids = (out[0, 0, :, 0, 0] * 1000).round().long().tolist()
    assert ids == list(range(25)) + [100 + f for f in range(9, 25)] + [200 + f for f in range(9, 25)]
    assert calls[0][0] is not first and list(calls[0][0]) == first  # user items: first segment only
    for k in (1, 2):
        (item,) = calls[k][0]
        assert item.frame == 0 and item.strength == 0.9
        expected = ((k - 1) * 100 + torch.arange(16, 25)) / 1000 * 2 - 1  # previous tail, back in [-1, 1]
        torch.testing.assert_close(item.pixels[0, 0, :, 0, 0], expected)
    g = torch.Generator().manual_seed(4)
    T = 4 * 2 * 1  # latent grid of 25 x 64 x 32 frames/pixels
    fresh = [torch.randn((2, T, 16), generator=g) for _ in range(3)]
    noise = fresh[0]
    for k in range(3):
        noise = chain_noise(noise, fresh[k], 0.4) if k else noise
        torch.testing.assert_close(calls[k][1], noise)
    with pytest.raises(ValueError, match=r"overlap must be 8k \+ 1"):
        generate_chain(DiT(DIT), vae, text, SAMPLING, SchedulerSpec(), num_segments=2, segment_frames=25, overlap=8,
                       height=64, width=32, fps=8.0, generator=None)


def test_real_chain_runs_end_to_end():
    torch.manual_seed(0)
    dit = DiT(DIT).init_weights().eval()
    vae = VideoVAE(tiny(VAE_PRESETS["0.9.5"], width=8)).init_weights().eval()
    text = TextConditioning(torch.randn(1, 3, 8), torch.ones(1, 3))
    with torch.no_grad():
        out = generate_chain(dit, vae, text, SAMPLING, SchedulerSpec(), num_segments=2, segment_frames=17, overlap=9,
                             height=32, width=32, fps=8.0, generator=torch.Generator().manual_seed(1))
    assert out.shape == (1, 3, 25, 32, 32) and torch.isfinite(out).all()
    assert stitch([out[:, :, :17], out[:, :, 8:]], 9).shape == out.shape
