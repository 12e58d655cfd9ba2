"""IC-LoRA guide items (ltx/ltxv/conditioning.py `GuideItem`): the training layout (prepend) and the inference layout
(append) give the same target outputs, strength-1 guides never change, downscaled references land on the target
grid, guides work with CFG / STG, image conditioning, multi-scale and chains, and bad guides are refused."""

from __future__ import annotations

import pytest
import torch

from ltx.ltxv.conditioning import ConditioningItem, GuideItem, apply_conditioning, check_guides, slice_guide
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.patchify import patchify, pixel_grid, pixels_to_positions
from ltx.ltxv.pipelines import PassOptions, SchedulerSpec, denoise_pass, encoder, generate_multiscale
from ltx.ltxv.transformer import DiT, DiTConfig
from ltx.ltxv.vae import VAE_PRESETS, VideoVAE, tiny
from ltx.presets import PassConfig
from tests.conftest import randomize_

DIT = DiTConfig(num_layers=2, num_heads=2, head_dim=8, in_channels=16, out_channels=16, caption_channels=8,
                causal_temporal_positioning=True)
H = W = 128  # a 4 x 4 latent grid with the 32x VAE
FRAMES = 17  # 3 latent frames


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    dit = randomize_(DiT(DIT), seed=1).eval()
    # 16 latent channels, 8x time, 32x space
    vae = VideoVAE(tiny(VAE_PRESETS["0.9.5"], width=8)).init_weights(torch.Generator().manual_seed(2)).eval()
    return dit, vae


def text(batch: int = 1, neg: bool = True) -> TextConditioning:
    g = torch.Generator().manual_seed(3)
    ctx, mask = torch.randn(batch, 5, 8, generator=g), torch.ones(batch, 5, dtype=torch.long)
    mask[:, 4] = 0
    return TextConditioning(ctx, mask, torch.randn(batch, 5, 8, generator=g) if neg else None,
                            mask.clone() if neg else None)


def control(frames: int = FRAMES, h: int = H, w: int = W, seed: int = 4) -> torch.Tensor:
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_one_forward_prepend_equals_append(models):
    """The same clean reference tokens with the same explicit positions, in front of or behind the noisy target
    tokens: the transformer's target outputs agree (full bidirectional attention, RoPE from positions)."""
    dit, _ = models
    g = torch.Generator().manual_seed(5)
    T = 3 * 4 * 4
    coords = pixel_grid(3, 4, 4, causal=True)
    pos = pixels_to_positions(coords, 25.0)
    target, ref = torch.randn(1, T, 16, generator=g), torch.randn(1, T, 16, generator=g)
    sigma = torch.tensor([0.7])
    t = text(neg=False)
    prepend = dit(torch.cat([ref, target], 1), torch.cat([torch.zeros(1, T), sigma.expand(1, T)], 1), t.context,
                  t.mask, torch.cat([pos, pos], 2))[:, T:]
    append = dit(torch.cat([target, ref], 1), torch.cat([sigma.expand(1, T), torch.zeros(1, T)], 1), t.context,
                 t.mask, torch.cat([pos, pos], 2))[:, :T]
    torch.testing.assert_close(prepend, append, atol=1e-5, rtol=0)
    alone = dit(target, sigma, t.context, t.mask, pos)
    assert (alone - append).abs().max() > 1e-2  # the reference does reach the target tokens


@torch.no_grad()
@pytest.mark.parametrize("with_image", [False, True])
def test_sampling_layouts_agree_with_cfg_stg_and_image(models, with_image):
    """A whole pass (CFG + STG, noise re-injection, optional first-frame image): prepend == append <= 1e-5, and
    the strength-1 guide tokens equal their clean latents at every step."""
    dit, vae = models
    p = PassConfig(num_inference_steps=4, guidance_scale=3.0, stg_scale=1.0, skip_block_list=[1])
    items = [ConditioningItem(control(1, seed=9), 0, 1.0)] if with_image else []
    guides = [GuideItem(control(), 1.0)]
    seen = {}

    def run(layout):
        steps = []
        opts = PassOptions(guide_layout=layout, image_cond_noise_scale=0.15, callback=lambda i, x: steps.append(x))
        torch.manual_seed(0)
        out = denoise_pass(dit, vae, text(), p, SchedulerSpec(), height=H, width=W, num_frames=FRAMES, fps=25.0,
                           generator=torch.Generator().manual_seed(1), items=items, guides=guides, opts=opts)
        seen[layout] = steps
        return out

    a, b = run("append"), run("prepend")
    assert not torch.equal(a, torch.zeros_like(a))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    clean = patchify(vae.encode(control(), sample=False))  # (1, 48, 16): the posterior mean
    for x in seen["append"]:
        assert torch.equal(x[:, -48:], clean)  # never moved, never re-noised
    for x in seen["prepend"]:
        assert torch.equal(x[:, :48], clean)


@torch.no_grad()
def test_guides_change_the_result_and_soft_guides_move(models):
    dit, vae = models
    p = PassConfig(num_inference_steps=3, guidance_scale=1.0)

    def run(guides, callback=None):
        torch.manual_seed(0)
        return denoise_pass(dit, vae, text(neg=False), p, SchedulerSpec(), height=H, width=W, num_frames=FRAMES,
                            fps=25.0, generator=torch.Generator().manual_seed(1), guides=guides,
                            opts=PassOptions(callback=callback))

    plain = run([])
    guided = run([GuideItem(control(), 1.0)])
    assert (plain - guided).abs().max() > 1e-3
    steps = []
    run([GuideItem(control(), 0.5)], lambda i, x: steps.append(x[:, -48:].clone()))
    assert not torch.equal(steps[0], steps[-1])  # strength 0.5: denoised from sigma 0.5 on


def test_downscaled_guide_lands_on_the_target_grid(models):
    """A reference at half the size: guide token (f, i, j) sits exactly at target voxel (f, 2i, 2j)."""
    _, vae = models
    init = torch.randn(1, 16, 3, 4, 4)
    enc = encoder(vae, sample=False)
    tok = apply_conditioning(init, [], None, num_frames=FRAMES, fps=25.0, causal=True, generator=None,
                             guides=[GuideItem(control(h=64, w=64), 1.0, downscale=2)], encode_guide=enc)
    assert tok.num_suffix == 3 * 2 * 2 and tok.num_prefix == 0
    target = tok.positions[:, :, :48].reshape(1, 3, 3, 4, 4)
    guide = tok.positions[:, :, 48:].reshape(1, 3, 3, 2, 2)
    torch.testing.assert_close(guide, target[:, :, :, ::2, ::2], atol=0, rtol=0)
    # the full-size control given with downscale 2 is resized to half size first: the same tokens
    tok2 = apply_conditioning(init, [], None, num_frames=FRAMES, fps=25.0, causal=True, generator=None,
                              guides=[GuideItem(control(h=128, w=128), 1.0, downscale=2)], encode_guide=enc)
    assert tok2.x.shape == tok.x.shape
    # a guide from frame 8 of a 25-frame video: positions of target latent frames 1..2
    init = torch.randn(1, 16, 4, 4, 4)
    tok = apply_conditioning(init, [], None, num_frames=25, fps=25.0, causal=True, generator=None,
                             guides=[GuideItem(control(9), 1.0, frame=8)], encode_guide=enc)
    target = tok.positions[:, :, :64].reshape(1, 3, 4, 4, 4)
    guide = tok.positions[:, :, 64:].reshape(1, 3, 2, 4, 4)
    # the guide's own causal first latent frame is one pixel frame: pixel frame 8; then 8 + 8 = target frame 2's 9
    torch.testing.assert_close(guide[:, 0, 0], torch.full((1, 4, 4), 8 / 25.0))
    torch.testing.assert_close(guide[:, :, 1], target[:, :, 2], atol=0, rtol=0)


def test_bad_guides_are_refused_with_the_valid_values():
    ok = control()
    with pytest.raises(ValueError, match=r"8k \+ 1 frames \(nearest below: 9\)"):
        check_guides([GuideItem(ok[:, :, :12])], FRAMES, H, W)
    with pytest.raises(ValueError, match=r"strength 1.5 is outside"):
        check_guides([GuideItem(ok, 1.5)], FRAMES, H, W)
    with pytest.raises(ValueError, match=r"valid start frames: 0..0"):
        check_guides([GuideItem(ok, frame=8)], FRAMES, H, W)
    with pytest.raises(ValueError, match=r"multiple of 8, got 4 \(nearest: 0 or 8\)"):
        check_guides([GuideItem(ok[:, :, :9], frame=4)], FRAMES, H, W)
    with pytest.raises(ValueError, match=r"downscale 3 .* valid here: \[1, 2, 4\]"):
        check_guides([GuideItem(ok, downscale=3)], FRAMES, H, W)
    with pytest.raises(ValueError, match=r"downscale 0"):
        check_guides([GuideItem(ok, downscale=0)], FRAMES, H, W)
    with pytest.raises(ValueError, match=r"\(B, 3, F, H, W\)"):
        check_guides([GuideItem(ok[0])], FRAMES, H, W)
    check_guides([GuideItem(ok[:, :, :1], frame=5)], FRAMES, H, W)  # a single control frame anywhere


def test_slice_guide_for_chained_segments():
    g = GuideItem(control(33, 32, 32), 0.9, frame=0, downscale=1)  # a 33-frame control for segments of 17, overlap 9
    first, second = slice_guide(g, 0, 17), slice_guide(g, 8, 17)
    assert first.frame == 0 and first.pixels.shape[2] == 17 and first.strength == 0.9
    assert torch.equal(second.pixels, g.pixels[:, :, 8:25]) and second.frame == 0
    late = GuideItem(control(9, 32, 32), 1.0, frame=16)
    assert slice_guide(late, 0, 17).pixels.shape[2] == 1  # only frame 16 falls into frames 0..16
    part = slice_guide(late, 8, 17)
    assert part.frame == 8 and part.pixels.shape[2] == 9
    assert slice_guide(late, 32, 17) is None


@torch.no_grad()
def test_multiscale_gives_each_pass_the_guide_at_its_size(models):
    dit, vae = models
    sizes = []

    def callback(i, x):
        sizes.append(x.shape[1])

    first = PassConfig(num_inference_steps=2, guidance_scale=1.0)
    second = PassConfig(num_inference_steps=2, guidance_scale=1.0, skip_initial_inference_steps=1)
    out = generate_multiscale(dit, vae, lambda z: z.repeat_interleave(2, -1).repeat_interleave(2, -2),
                              text(neg=False), first, second, SchedulerSpec(), height=256, width=256, num_frames=9,
                              fps=25.0, downscale_factor=0.5, generator=torch.Generator().manual_seed(0),
                              guides=[GuideItem(control(9, 256, 256), 1.0)], opts=PassOptions(callback=callback))
    assert out.shape == (1, 16, 2, 8, 8)
    assert sizes[:2] == [2 * 2 * 4 * 4] * 2 and sizes[2:] == [2 * 2 * 8 * 8]  # video + guide tokens per pass


def test_chained_segments_get_their_slice_of_the_control(monkeypatch):
    import ltx.ltxv.chain as chain
    from ltx.presets import SamplingDefaults

    seen = []

    def fake_generate(dit, vae, text, sampling, sched, *, num_frames, height, width, guides, **kw):
        seen.append(guides)
        return torch.zeros(1, 3, num_frames, height, width)

    monkeypatch.setattr(chain, "generate", fake_generate)
    vae = VideoVAE(tiny(VAE_PRESETS["0.9.5"], width=8))
    dit = DiT(DIT)
    full = control(33, 64, 64)  # 2 segments of 17 with overlap 1: frames 0..16 and 16..32
    sampling = SamplingDefaults(first_pass=PassConfig(num_inference_steps=1))
    out = chain.generate_chain(dit, vae, text(neg=False), sampling, SchedulerSpec(), num_segments=2,
                               segment_frames=17, overlap=1, height=64, width=64, fps=25.0, generator=None,
                               guides=[GuideItem(full, 1.0, 0, 1)])
    assert out.shape[2] == 33
    assert torch.equal(seen[0][0].pixels, full[:, :, :17]) and torch.equal(seen[1][0].pixels, full[:, :, 16:33])
