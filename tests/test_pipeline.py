"""Pipeline input validation (clear errors before heavy work) and the small latent functions' closed forms."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from ltx.ltxv.conditioning import ConditioningItem, check_items
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.pipelines import SchedulerSpec, adain, check_size, denoise_pass, multiscale_sizes, pass_sigmas, tone_map
from ltx.ltxv.transformer import DiT
from ltx.presets import PassConfig


def test_sizes_name_nearest_valid_values():
    check_size(64, 96, 17)
    with pytest.raises(ValueError, match=r"height 70 .*nearest: 64 or 96.*num_frames 20 .*nearest: 17 or 25"):
        check_size(70, 96, 20)
    with pytest.raises(ValueError, match=r"width 16 .*nearest: 32"):
        check_size(64, 16, 9)
    assert multiscale_sizes(704, 1216, 0.6666666) == (448, 800)  # the official example


def test_keyframe_outside_video_and_bad_clip():
    img = torch.zeros(1, 3, 1, 64, 64)
    with pytest.raises(ValueError, match=r"valid start frames: 0..16"):
        check_items([ConditioningItem(img, 17)], 17)
    with pytest.raises(ValueError, match=r"8k \+ 1 frames \(nearest: 9\)"):
        check_items([ConditioningItem(torch.zeros(1, 3, 10, 64, 64), 0)], 17)
    with pytest.raises(ValueError, match="multiple of 8"):
        check_items([ConditioningItem(torch.zeros(1, 3, 9, 64, 64), 4)], 33)


def test_distilled_step_count_rejected():
    allowed = (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219)
    spec = SchedulerSpec(sampler="LinearQuadratic", allowed_sigmas=allowed)
    assert len(pass_sigmas(PassConfig(num_inference_steps=4), 10, spec)) == 5
    with pytest.raises(ValueError, match=r"\[1, 2, 4, 8\]"):
        pass_sigmas(PassConfig(num_inference_steps=5), 10, spec)


def test_errors_come_before_the_model_runs():
    class Exploding(DiT):
        def forward(self, *a, **k):
            raise AssertionError("the model ran")

    model = Exploding(TINY["w32"])
    text = TextConditioning(torch.zeros(1, 3, 24), torch.ones(1, 3))
    p = PassConfig(num_inference_steps=2)
    with pytest.raises(ValueError, match="height 65"):
        denoise_pass(model, None, text, p, SchedulerSpec(), height=65, width=64, num_frames=9, fps=25, generator=None)
    with pytest.raises(ValueError, match="need a VAE"):
        denoise_pass(model, None, text, p, SchedulerSpec(), height=64, width=64, num_frames=9, fps=25, generator=None,
                     items=[ConditioningItem(torch.zeros(1, 3, 1, 64, 64), 0)])


def test_tone_map_and_adain():
    x = torch.linspace(-4, 4, 81)
    assert torch.equal(tone_map(x, 0.0), x)
    y = tone_map(x, 1.0)  # s = 0.75: at |x| = 1 the scale is 1 - 0.8 * 0.75 * 0.5 = 0.7
    torch.testing.assert_close(y[50], torch.tensor(0.7))
    assert (y.abs() <= x.abs()).all() and torch.equal(y.sign(), x.sign())
    with pytest.raises(ValueError):
        tone_map(x, 1.5)
    g = torch.Generator().manual_seed(0)
    a, ref = torch.randn(2, 3, 2, 4, 4, generator=g), 3 + 2 * torch.randn(2, 3, 2, 4, 4, generator=g)
    out = adain(a, ref)
    std, mean = torch.std_mean(out, dim=(2, 3, 4))
    r_std, r_mean = torch.std_mean(ref, dim=(2, 3, 4))
    torch.testing.assert_close(mean, r_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(std, r_std, atol=1e-5, rtol=0)
    assert torch.equal(adain(a, ref, 0.0), a)


def test_sizes_follow_the_vae_factors():
    """The demo VAE (8x space and time) takes multiples of 8; the grid and multi-scale sizes use its factors."""
    from ltx.ltxv.pipelines import latent_grid, vae_scale
    from ltx.ltxv.vae import VAE_PRESETS

    assert vae_scale(VAE_PRESETS["0.9.5"]) == (8, 32, 32) and vae_scale(VAE_PRESETS["0.9.0"]) == (8, 32, 32)
    demo = (8, 8, 8)
    check_size(72, 40, 9, demo)
    with pytest.raises(ValueError, match=r"height 70 is not a positive multiple of 8 \(nearest: 64 or 72\)"):
        check_size(70, 40, 9, demo)
    assert latent_grid(72, 40, 17, demo) == (3, 9, 5)
    assert latent_grid(704, 1216, 121) == (16, 22, 38)  # the official example
    assert multiscale_sizes(64, 64, 0.6666666, spatial=8) == (40, 40)  # int(42.7) = 42 -> 40, not 32
