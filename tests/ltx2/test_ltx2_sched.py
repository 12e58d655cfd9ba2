"""ltx.ltx2.sched and the LTX-2 side of ltx.core (sampling steps, guidance arithmetic) vs ltx-core /
ltx-pipelines 1.0.0: schedules, steppers, guider, noiser, res_2s, the loops (bitwise)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep, Res2sDiffusionStep
from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.schedulers import LTX2Scheduler
from ltx_core.types import LatentState
from ltx_core.utils import to_denoised as ref_to_denoised
from ltx_core.utils import to_velocity as ref_to_velocity
from ltx_pipelines.utils import constants as C
from ltx_pipelines.utils import samplers as ref_samplers
from ltx_pipelines.utils.helpers import post_process_latent
from ltx_pipelines.utils.res2s import get_res2s_coefficients
from ltx_pipelines.utils.res2s import phi as ref_phi

from ltx.core import sampling
from ltx.core.guidance import combine_multimodal
from ltx.ltx2 import sched

DTYPES = (torch.float32, torch.bfloat16)


def _ref_sigmas(steps: int, grid: tuple[int, int, int] | None, **kw) -> torch.Tensor:
    latent = None if grid is None else torch.empty(1, 4, *grid)
    return LTX2Scheduler().execute(steps=steps, latent=latent, **kw)


# ---------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("steps", [2, 3, 8, 15, 30, 40])
@pytest.mark.parametrize("grid", [None, (16, 17, 30), (1, 4, 6), (4, 16, 16), (16, 34, 60)])
def test_sigmas_match_reference(steps, grid):
    ours = sched.ltx2_sigmas(steps, None if grid is None else math.prod(grid))
    ref = _ref_sigmas(steps, grid)
    assert ours.dtype == torch.float32 and ours.shape == (steps + 1,)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("kw", [dict(stretch=False), dict(terminal=0.05), dict(max_shift=1.5, base_shift=0.5)])
def test_sigmas_options_match_reference(kw):
    for steps, grid in [(8, None), (30, (4, 16, 16)), (40, (16, 17, 30))]:
        ours = sched.ltx2_sigmas(steps, None if grid is None else math.prod(grid), **kw)
        assert torch.equal(ours, _ref_sigmas(steps, grid, **kw))


def test_sigmas_digest_values():
    s40 = sched.ltx2_sigmas(40)
    assert s40[:3].tolist() == pytest.approx([1.0, 0.996449, 0.992737], abs=1e-6)
    assert s40[-7:].tolist() == pytest.approx([0.544771, 0.48843, 0.420719, 0.337809, 0.233936, 0.1, 0.0], abs=1e-6)
    s30 = sched.ltx2_sigmas(30)
    assert s30[1].item() == pytest.approx(0.994957, abs=1e-6)
    assert s30[-5:].tolist() == pytest.approx([0.480164, 0.387541, 0.26612, 0.1, 0.0], abs=1e-6)
    hq = [1.0, 0.993491, 0.986015, 0.97734, 0.967151, 0.955015, 0.940314, 0.92214, 0.899096, 0.868923, 0.827707,
          0.768028, 0.673897, 0.503378, 0.1, 0.0]
    assert sched.ltx2_sigmas(15, 16 * 17 * 30).tolist() == pytest.approx(hq, abs=1e-6)


def test_sigmas_single_step():
    # the stretch sends the only non-zero sigma to `terminal`
    assert torch.equal(sched.ltx2_sigmas(1), _ref_sigmas(1, None))
    assert sched.ltx2_sigmas(1).tolist() == pytest.approx([0.1, 0.0])
    assert torch.equal(sched.ltx2_sigmas(1, stretch=False), _ref_sigmas(1, None, stretch=False))


def test_sigmas_overflowing_shift_raises():
    assert torch.isnan(_ref_sigmas(8, (31, 34, 60))).any()  # every sigma rounds to 1: the reference gives NaN
    with pytest.raises(ValueError, match="shifts every sigma to 1.0"):
        sched.ltx2_sigmas(8, 31 * 34 * 60)
    assert torch.equal(sched.ltx2_sigmas(8, 31 * 34 * 60, stretch=False), _ref_sigmas(8, (31, 34, 60), stretch=False))


def test_distilled_constants():
    assert list(sched.DISTILLED_SIGMAS) == C.DISTILLED_SIGMA_VALUES
    assert list(sched.STAGE2_DISTILLED_SIGMAS) == C.STAGE_2_DISTILLED_SIGMA_VALUES
    assert torch.equal(sched.distilled_sigmas(1), torch.Tensor(C.DISTILLED_SIGMA_VALUES))
    assert torch.equal(sched.distilled_sigmas(2), torch.Tensor(C.STAGE_2_DISTILLED_SIGMA_VALUES))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_sigmas_bad_steps(bad):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        sched.ltx2_sigmas(bad)


def test_sigmas_bad_args():
    with pytest.raises(ValueError, match="num_tokens"):
        sched.ltx2_sigmas(8, 0)
    with pytest.raises(ValueError, match="terminal"):
        sched.ltx2_sigmas(8, terminal=1.5)
    with pytest.raises(ValueError, match="stage"):
        sched.distilled_sigmas(3)


# ---------------------------------------------------------------------------------------------- steppers


def _pair(dtype, shape=(2, 37, 16)):
    x = torch.randn(shape).to(dtype)
    x0 = (0.7 * torch.randn(shape)).to(dtype)
    return x, x0


@pytest.mark.parametrize("dtype", DTYPES)
def test_euler_step_bitwise(dtype):
    x, x0 = _pair(dtype)
    for sigmas in (sched.ltx2_sigmas(30), sched.distilled_sigmas(1), sched.ltx2_sigmas(15, 8160)):
        for i in range(len(sigmas) - 1):
            ref = EulerDiffusionStep().step(x, x0, sigmas, i)
            ours = sampling.euler_step_x0(x, x0, sigmas[i], sigmas[i + 1])
            assert ours.dtype == dtype and torch.equal(ours, ref)
            # plain floats (the float32 values) give the same result
            assert torch.equal(sampling.euler_step_x0(x, x0, sigmas[i].item(), sigmas[i + 1].item()), ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_velocity_and_denoised_bitwise(dtype):
    x, v = _pair(dtype)
    mask = (torch.rand(2, 37, 1) > 0.3).float() * torch.rand(2, 37, 1)
    sigma = torch.tensor(0.725)
    ts = mask * sigma  # per-token timesteps (B, T, 1), as modality_from_latent_state
    assert torch.equal(sampling.to_denoised(x, v, ts), ref_to_denoised(x, v, ts))
    assert torch.equal(sampling.to_denoised(x, v, sigma), ref_to_denoised(x, v, sigma))
    assert torch.equal(sampling.to_denoised(x, v, 0.725), ref_to_denoised(x, v, 0.725))
    assert torch.equal(sampling.to_velocity(x, v, sigma), ref_to_velocity(x, sigma, v))


@pytest.mark.parametrize("dtype", DTYPES)
def test_post_process_bitwise(dtype):
    x0, clean = _pair(dtype)
    mask = torch.rand(2, 37, 1)
    mask[0, :5] = 0.0
    mask[1, -3:] = 1.0
    out = sampling.keep_clean(x0, mask, clean)
    assert out.dtype == dtype and torch.equal(out, post_process_latent(x0, mask, clean))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("noise_scale", [1.0, 0.909375])
def test_noiser_bitwise(dtype, noise_scale):
    x = torch.randn(2, 21, 8).to(dtype)
    mask = torch.ones(2, 21, 1)
    mask[:, :4] = 0.0
    mask[1, 6] = 0.35
    state = LatentState(latent=x, denoise_mask=mask, positions=torch.zeros(2, 3, 21, 2), clean_latent=x.clone())
    ref = GaussianNoiser(torch.Generator().manual_seed(7))(state, noise_scale).latent
    noise = sched.noise_like(x, torch.Generator().manual_seed(7))
    ours = sched.add_noise(x, noise, mask, noise_scale)
    assert ours.dtype == dtype and torch.equal(ours, ref)


def test_step_errors():
    x, x0 = _pair(torch.float32)
    with pytest.raises(ValueError, match="sigma must be non-zero"):
        sampling.euler_step_x0(x, x0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        sampling.euler_step_x0(x, x0[:, :5], 0.5, 0.2)
    with pytest.raises(ValueError, match="differ in shape"):
        sampling.keep_clean(x, torch.ones(2, 37, 1), x0[:1])
    with pytest.raises(ValueError, match="noise_scale"):
        sched.add_noise(x, x0, torch.ones(2, 37, 1), 1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        sched.add_noise(x, x0[:1], torch.ones(2, 37, 1))


# ---------------------------------------------------------------------------------------------- guidance


def _preds(dtype, shape=(1, 33, 24)):
    base = torch.randn(shape)
    return [(base + 0.3 * torch.randn(shape)).to(dtype) for _ in range(4)]  # cond, uncond, perturbed, isolated


@pytest.mark.parametrize("dtype", DTYPES)
def test_guidance_bitwise_all_combinations(dtype):
    cond, uncond, ptb, iso = _preds(dtype)
    for cfg, stg, mod, rescale in itertools.product((1.0, 3.0, 7.0), (0.0, 1.0), (1.0, 3.0), (0.0, 0.45, 0.7, 1.0)):
        ref_params = MultiModalGuiderParams(cfg_scale=cfg, stg_scale=stg, rescale_scale=rescale, modality_scale=mod)
        ref_guider = MultiModalGuider(params=ref_params)
        params = sched.GuiderParams(cfg=cfg, stg=stg, rescale=rescale, modality=mod)
        # the reference loop passes 0.0 for passes that did not run; ours takes None
        u = uncond if ref_guider.do_unconditional_generation() else None
        p = ptb if ref_guider.do_perturbed_generation() else None
        i = iso if ref_guider.do_isolated_modality_generation() else None
        ref = ref_guider.calculate(cond, 0.0 if u is None else u, 0.0 if p is None else p, 0.0 if i is None else i)
        ours = combine_multimodal(cond, u, p, i, cfg=cfg, stg=stg, modality=mod, rescale=rescale)
        assert ours.dtype == dtype and torch.equal(ours, ref), (cfg, stg, mod, rescale)
        assert torch.equal(sched.guide(params, cond, u, p, i), ref)
        # all passes given (e.g. the other modality needed them): still the reference value
        all_passes = combine_multimodal(cond, uncond, ptb, iso, cfg=cfg, stg=stg, modality=mod, rescale=rescale)
        assert torch.equal(all_passes, ref_guider.calculate(cond, uncond, ptb, iso))


def test_guidance_passes_and_skip_steps():
    for cfg, stg, mod, skip in itertools.product((1.0, 1.0 + 1e-12, 3.0), (0.0, 1.0), (1.0, 3.0), (0, 1, 3)):
        ref = MultiModalGuider(params=MultiModalGuiderParams(cfg_scale=cfg, stg_scale=stg, modality_scale=mod,
                                                             skip_step=skip, stg_blocks=[5]))
        ours = sched.GuiderParams(cfg=cfg, stg=stg, modality=mod, skip_step=skip, stg_blocks=(5,))
        assert ours.needs_uncond == ref.do_unconditional_generation()
        assert ours.needs_perturbed == ref.do_perturbed_generation()
        assert ours.needs_isolated == ref.do_isolated_modality_generation()
        assert [ours.skips(k) for k in range(9)] == [ref.should_skip_step(k) for k in range(9)]
    video = sched.GuiderParams(cfg=3.0, stg=1.0, stg_blocks=(29,))
    audio = sched.GuiderParams(cfg=1.0, stg=0.0, modality=3.0)
    assert sched.guidance_passes(video, audio) == sched.GuidancePasses(
        uncond=True, perturbed=True, isolated=True, stg_video_blocks=(29,), stg_audio_blocks=None)
    no_passes = sched.GuidancePasses(False, False, False, None, None)
    assert sched.guidance_passes(sched.GuiderParams(), sched.GuiderParams()) == no_passes


def _same(ours: sched.GuiderParams, ref: MultiModalGuiderParams) -> bool:
    return (ours.cfg, ours.stg, list(ours.stg_blocks), ours.rescale, ours.modality, ours.skip_step) == (
        ref.cfg_scale, ref.stg_scale, list(ref.stg_blocks), ref.rescale_scale, ref.modality_scale, ref.skip_step)


def test_presets_match_constants():
    presets = [(sched.LTX_2, C.LTX_2_PARAMS), (sched.LTX_2_3, C.LTX_2_3_PARAMS),
               (sched.LTX_2_3_HQ, C.LTX_2_3_HQ_PARAMS)]
    for ours, ref in presets:
        assert ours.steps == ref.num_inference_steps
        assert _same(ours.video, ref.video_guider_params) and _same(ours.audio, ref.audio_guider_params)
    assert sched.preset_for_version("2.3.0") is sched.LTX_2_3 and sched.preset_for_version("") is sched.LTX_2
    # the HQ passes: no STG pass, uncond and isolated on
    hq_passes = sched.guidance_passes(sched.LTX_2_3_HQ.video, sched.LTX_2_3_HQ.audio)
    assert hq_passes == sched.GuidancePasses(True, False, True, None, None)


def test_guidance_errors():
    for kw in (dict(cfg=-1.0), dict(stg=-0.5), dict(modality=float("nan")), dict(rescale=1.5), dict(rescale=-0.1),
               dict(skip_step=-1), dict(stg_blocks=(-1,))):
        with pytest.raises(ValueError):
            sched.GuiderParams(**kw)
    cond, uncond, ptb, _ = _preds(torch.float32)
    with pytest.raises(ValueError, match="uncond prediction is required"):
        combine_multimodal(cond, None, ptb, None, cfg=3.0, stg=1.0)
    with pytest.raises(ValueError, match="isolated prediction is required"):
        combine_multimodal(cond, uncond, None, None, cfg=3.0, modality=3.0)
    with pytest.raises(ValueError, match="differs in shape"):
        combine_multimodal(cond, uncond[:, :4], None, None, cfg=3.0)


# ---------------------------------------------------------------------------------------------- res_2s


def test_res2s_coefficients():
    for h in (0.00653, 0.05, 0.3, 1.2, 4.5, 1e-12):
        assert sched.res2s_coefficients(h) == get_res2s_coefficients(h, {}, 0.5)
        assert sched.res2s_coefficients(h, 0.3) == get_res2s_coefficients(h, {}, 0.3)
        for j in (1, 2, 3):
            assert sched.phi(j, -h) == ref_phi(j, -h)
    a21, b1, b2 = sched.res2s_coefficients(0.00653)
    assert (a21, b1, b2) == pytest.approx((0.49918, -0.00108, 0.99783), abs=1e-5)  # digest §4.2, HQ step 0
    with pytest.raises(ValueError, match="c2"):
        sched.res2s_coefficients(0.1, 0.0)


def test_res2s_schedule():
    sig = sched.res2s_sigmas(sched.ltx2_sigmas(15, 8160))
    assert sig[-2:].tolist() == pytest.approx([0.0011, 0.0]) and len(sig) == 17
    assert torch.equal(sched.res2s_sigmas(torch.tensor([0.9, 0.5])), torch.tensor([0.9, 0.5]))
    hs = sched.res2s_step_sizes(sig)
    assert hs.dtype == torch.float64 and hs[0].item() == pytest.approx(0.00653, abs=1e-5)
    with pytest.raises(ValueError):
        sched.res2s_sigmas(torch.tensor([1.0]))


@pytest.mark.parametrize("sig_dtype", [torch.float32, torch.float64])
def test_res2s_sde_step_bitwise(sig_dtype):
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    target = 0.8 * x + 0.1 * torch.randn(2, 13, 8, dtype=torch.float64)
    noise = torch.randn(2, 13, 8, dtype=torch.float64)
    sigmas = sched.res2s_sigmas(sched.ltx2_sigmas(6)).to(sig_dtype)
    for i in range(len(sigmas) - 1):
        ref = Res2sDiffusionStep().step(x, target, sigmas, i, noise)
        ours = sched.res2s_sde_step(x, target, sigmas[i], sigmas[i + 1], noise)
        assert torch.equal(ours, ref)
    for s_next in (torch.tensor(0.5), torch.tensor(0.0011), torch.tensor(0.0)):
        ref = Res2sDiffusionStep.get_sde_coeff(s_next.clone(), sigma_up=s_next * 0.5)
        for a, b in zip(sched.sde_coefficients(s_next, s_next * 0.5), ref):
            assert torch.equal(a, b)


def test_res2s_noise_bitwise():
    for shape in [(1, 40, 16), (2, 7, 3, 5)]:
        ref = ref_samplers._get_new_noise(torch.empty(shape), torch.Generator().manual_seed(-1))
        assert torch.equal(sched.res2s_noise(shape, torch.Generator().manual_seed(-1)), ref)


# ---------------------------------------------------------------------------------------------- loops vs reference


def _toy_problem(dtype):
    video = torch.randn(1, 24, 8).to(dtype)
    audio = torch.randn(1, 10, 6).to(dtype)
    vmask = torch.ones(1, 24, 1)
    vmask[:, :6] = 0.0  # conditioned first frame
    vmask[:, 6:9] = 0.5
    amask = torch.ones(1, 10, 1)
    vclean, aclean = torch.randn(1, 24, 8).to(dtype), torch.zeros(1, 10, 6).to(dtype)
    wv, wa = torch.randn(8, 8) / 3, torch.randn(6, 6) / 3

    def x0_of(x, w, sigma):  # a smooth, sigma-dependent toy denoiser in the latent dtype
        return torch.tanh(x.float() @ w * (1.0 - 0.5 * sigma.float())).to(x.dtype)

    def ref_denoise(video_state, audio_state, sigmas, step_index):
        s = sigmas[step_index]
        return x0_of(video_state.latent, wv, s), x0_of(audio_state.latent, wa, s)

    def our_denoise(latents, sigma, step):
        return x0_of(latents[0], wv, sigma), x0_of(latents[1], wa, sigma)

    def state(x, m, c):
        return LatentState(latent=x, denoise_mask=m, positions=torch.zeros(1, 1, x.shape[1], 2), clean_latent=c)

    ref_states = (state(video, vmask, vclean), state(audio, amask, aclean))
    ours = ((video, audio), (vmask, amask), (vclean, aclean))
    return ref_denoise, our_denoise, ref_states, ours


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ge", [False, True])
def test_euler_loops_match_reference(dtype, ge):
    ref_denoise, our_denoise, (vs, as_), (xs, ms, cs) = _toy_problem(dtype)
    sigmas = sched.ltx2_sigmas(8)
    if ge:
        ref = ref_samplers.gradient_estimating_euler_denoising_loop(sigmas, vs, as_, EulerDiffusionStep(), ref_denoise)
    else:
        ref = ref_samplers.euler_denoising_loop(sigmas, vs, as_, EulerDiffusionStep(), ref_denoise)
    step = sampling.x0_gradient_euler(ms, cs, sampling.GE_GAMMA) if ge else sampling.x0_euler(ms, cs)
    ours = sampling.sample(our_denoise, xs, sigmas, step)
    for o, r in zip(ours, ref):
        assert o.dtype == dtype and torch.equal(o, r.latent)


@pytest.mark.parametrize("dtype", DTYPES)
def test_res2s_loop_matches_reference(dtype):
    ref_denoise, our_denoise, (vs, as_), (xs, ms, cs) = _toy_problem(dtype)
    sigmas = sched.ltx2_sigmas(4, 8160)  # h < 0.5 at the start: the bong iteration runs
    ref = ref_samplers.res2s_audio_video_denoising_loop(sigmas, vs, as_, Res2sDiffusionStep(), ref_denoise,
                                                        model_dtype=dtype)
    ours = sampling.sample(our_denoise, xs, sigmas, sched.res2s(ms, cs, model_dtype=dtype))
    for o, r in zip(ours, ref):
        assert o.dtype == dtype and torch.equal(o, r.latent)
