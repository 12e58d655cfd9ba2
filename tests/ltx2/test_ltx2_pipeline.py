"""End-to-end LTX-2 sampling vs ltx_pipelines 1.0.0, with the same tiny random models on both sides.

The reference side is the body of TI2VidOneStagePipeline / TI2VidTwoStagesPipeline /
TI2VidTwoStagesHQPipeline / DistilledPipeline `__call__` (ltx_pipelines/*.py) with the model ledger and Gemma
replaced by the modules and hidden states given here (the ledger only loads files, and the official text
encoder is 12B): the same helpers
(combined-image conditionings, noisers, denoise_audio_video, euler_denoising_loop, the multi-modal guider,
upsample_video, decode_video/decode_audio). Ours is ltx.ltx2.pipelines' function for the same pipeline
(one_stage, two_stage, hq, keyframes, distilled, audio_to_video, ic_lora) over modules loaded with
ltx.ltx2.checkpoint from the official file the reference modules were saved to.

Compared: the text contexts, the video and audio latents after EVERY step of every stage (res_2s: the final
outputs), the decoded frames and the waveform: bitwise in fp32 (the default, one transformer call per guidance
pass as the reference). With `batch_passes=True` (one call of batch 4) equality is up to matmul summation
order: latents and frames <= 1e-5, the waveform <= 1e-4 (see test_two_stage_pipelines).
"""

from __future__ import annotations

import ltx2_tiny
import pytest
import torch

from ltx.ltx2 import checkpoint as ltx2_checkpoint
from ltx.ltx2 import pipelines
from ltx.ltx2.pipelines import AVModels, AVRequest, ImageInput, Prompt, ReferenceInput
from ltx.ltx2.sched import DISTILLED_SIGMAS, STAGE2_DISTILLED_SIGMAS, GuiderParams, ltx2_sigmas

pytestmark = pytest.mark.usefixtures("one_thread")

VIDEO_G = dict(cfg=3.0, stg=1.0, stg_blocks=(1,), rescale=0.7, modality=3.0)
AUDIO_G = dict(cfg=7.0, stg=1.0, stg_blocks=(0,), rescale=0.7, modality=3.0)
TEXT_TOKENS = 128  # a multiple of the 128 registers


@pytest.fixture(scope="module", params=["19b", "2.3"])
def bundle(request, tmp_path_factory):
    path, ref = ltx2_tiny.official_file(tmp_path_factory.mktemp("ltx2") / "tiny.safetensors", request.param)
    ours = ltx2_checkpoint.load(path)
    return request.param, ref, ours


def _hidden_states(seed: int, valid: int):
    g = torch.Generator().manual_seed(seed)
    hs = tuple(torch.randn(1, TEXT_TOKENS, ltx2_tiny.TEXT_DIM, generator=g) * (1 + i / 10)
               for i in range(ltx2_tiny.NUM_HIDDEN_STATES))
    mask = (torch.arange(TEXT_TOKENS) >= TEXT_TOKENS - valid).long()[None]  # left padding
    return hs, mask


def _contexts(ref, ours):
    out = []
    for seed, valid in ((1, 9), (2, 30)):  # positive, negative
        hs, mask = _hidden_states(seed, valid)
        r = ref["text"].process_hidden_states(hs, mask)
        v, a, _ = ours["text"](hs, mask)
        assert (v - r.video_encoding).abs().max() <= 1e-6 and (a - r.audio_encoding).abs().max() <= 1e-6
        out.append(((r.video_encoding, r.audio_encoding), Prompt(v, a)))
    return out


def _image(seed: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(h, w, 3, generator=g) * 255).round()  # 0..255, as after the H.264 round trip


class _Recorder:
    """Wraps the reference Euler stepper to keep every new latent (video and audio alternate)."""

    def __init__(self):
        from ltx_core.components.diffusion_steps import EulerDiffusionStep

        self.inner = EulerDiffusionStep()
        self.latents: list[torch.Tensor] = []

    def step(self, *args, **kwargs):
        out = self.inner.step(*args, **kwargs)
        self.latents.append(out.clone())
        return out


def _reference_run(ref, contexts, images, *, pipeline, height, width, frames, fps, sigmas, stage2_sigmas,
                   vg, ag, seed, upsampler=None, stage2=None):
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_core.components.guiders import (
        MultiModalGuider,
        MultiModalGuiderParams,
        create_multimodal_guider_factory,
    )
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.conditioning import VideoConditionByKeyframeIndex, VideoConditionByLatentIndex
    from ltx_core.model.audio_vae import decode_audio
    from ltx_core.model.transformer.model import X0Model
    from ltx_core.model.upsampler.model import upsample_video
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.helpers import (
        denoise_audio_video,
        multi_modal_guider_denoising_func,
        multi_modal_guider_factory_denoising_func,
        simple_denoising_func,
    )
    from ltx_pipelines.utils.media_io import normalize_latent, resize_and_center_crop
    from ltx_pipelines.utils.samplers import euler_denoising_loop, res2s_audio_video_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    ((vp, ap), _), ((vn, an), _) = contexts
    dtype, device = torch.float32, torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    noiser = GaussianNoiser(generator=generator)
    components = PipelineComponents(dtype=dtype, device=device)

    def conditionings(h, w):
        out = []
        for px, frame, strength in images:
            enc = ref["vae_encoder"](normalize_latent(resize_and_center_crop(px, h, w), device, dtype))
            if frame == 0 and pipeline != "keyframes":  # combined_image_conditionings
                out.append(VideoConditionByLatentIndex(latent=enc, strength=strength, latent_idx=0))
            else:  # keyframes: image_conditionings_by_adding_guiding_latent
                out.append(VideoConditionByKeyframeIndex(keyframes=enc, frame_idx=frame, strength=strength))
        return out

    def guided(transformer):
        def params(g):
            return MultiModalGuiderParams(cfg_scale=g.cfg, stg_scale=g.stg, rescale_scale=g.rescale,
                                          modality_scale=g.modality, skip_step=g.skip_step,
                                          stg_blocks=list(g.stg_blocks))
        if pipeline == "hq":  # the HQ pipeline builds its guiders directly
            return multi_modal_guider_denoising_func(
                video_guider=MultiModalGuider(params=params(vg), negative_context=vn),
                audio_guider=MultiModalGuider(params=params(ag), negative_context=an),
                v_context=vp, a_context=ap, transformer=transformer)
        fn = multi_modal_guider_factory_denoising_func(
            video_guider_factory=create_multimodal_guider_factory(params=params(vg), negative_context=vn),
            audio_guider_factory=create_multimodal_guider_factory(params=params(ag), negative_context=an),
            v_context=vp, a_context=ap, transformer=transformer)
        return fn

    recorders = []

    def run(transformer_fn, h, w, sig, noise_scale=1.0, vlat=None, alat=None):
        if pipeline == "hq":  # res_2s keeps its latents in fp32 here (the reference default is bf16, its dtype)
            rec = Res2sDiffusionStep()

            def loop(s, video_state, audio_state, stepper):
                return res2s_audio_video_denoising_loop(sigmas=s, video_state=video_state, audio_state=audio_state,
                                                        stepper=stepper, denoise_fn=transformer_fn,
                                                        model_dtype=torch.float32)
        else:
            rec = _Recorder()
            recorders.append(rec)

            def loop(s, video_state, audio_state, stepper):
                return euler_denoising_loop(sigmas=s, video_state=video_state, audio_state=audio_state,
                                            stepper=stepper, denoise_fn=transformer_fn)

        return denoise_audio_video(
            output_shape=VideoPixelShape(batch=1, frames=frames, width=w, height=h, fps=fps),
            conditionings=conditionings(h, w), noiser=noiser, sigmas=sig, stepper=rec, denoising_loop_fn=loop,
            components=components, dtype=dtype, device=device, noise_scale=noise_scale,
            initial_video_latent=vlat, initial_audio_latent=alat)

    x0 = X0Model(ref["transformer"])
    two = pipeline != "one_stage"
    h1, w1 = (height // 2, width // 2) if two else (height, width)
    first = simple_denoising_func(vp, ap, x0) if pipeline == "distilled" else guided(x0)
    video_state, audio_state = run(first, h1, w1, sig=sigmas)
    if two:
        up = upsample_video(latent=video_state.latent[:1], video_encoder=ref["vae_encoder"], upsampler=upsampler)
        second = X0Model(stage2) if pipeline in ("two_stage", "hq", "keyframes") else x0
        video_state, audio_state = run(simple_denoising_func(vp, ap, second), height, width, stage2_sigmas,
                                       noise_scale=stage2_sigmas[0], vlat=up, alat=audio_state.latent)
    video = ref["vae_decoder"](video_state.latent)
    audio = decode_audio(audio_state.latent, ref["audio_decoder"], ref["vocoder"])
    return [r.latents for r in recorders], video, audio.waveform


def _ours_run(ours, contexts, images, *, pipeline, height, width, frames, fps, sigmas, stage2_sigmas, vg, ag,
              seed, upsampler=None, stage2=None, batch_passes=True):
    (_, pos), (_, neg) = contexts
    steps: dict[int, list[torch.Tensor]] = {}

    def on_step(stage, i, v, a):
        steps.setdefault(stage, [])
        if v is not None:  # hq reports transformer calls without states
            steps[stage].extend([v.x.clone(), a.x.clone()])

    models = AVModels(ours["transformer"], ours["vae"], ours["audio_vae"], ours["vocoder"], upsampler)
    request = AVRequest(height=height, width=width, num_frames=frames, fps=fps, sigmas=sigmas,
                        stage_2_sigmas=stage2_sigmas, video_guidance=vg, audio_guidance=ag,
                        images=[ImageInput(px, frame, strength) for px, frame, strength in images],
                        generator=torch.Generator().manual_seed(seed), batch_passes=batch_passes, on_step=on_step)
    if pipeline == "one_stage":
        result = pipelines.one_stage(models, pos, neg, request)
    elif pipeline == "distilled":
        result = pipelines.distilled(models, pos, request)
    else:  # two_stage, hq, keyframes
        result = getattr(pipelines, pipeline)(models, pos, neg, request, stage_2_transformer=stage2)
    return [steps[k] for k in sorted(steps)], result


def _compare(ref_out, our_out, tol, audio_tol=None):
    (ref_steps, ref_video, ref_audio), (our_steps, result) = ref_out, our_out
    if not ref_steps:  # res_2s: the final outputs only
        our_steps = []
    assert len(ref_steps) == len(our_steps)
    worst = 0.0
    for r_stage, o_stage in zip(ref_steps, our_steps):
        assert len(r_stage) == len(o_stage)
        for r, o in zip(r_stage, o_stage):
            assert r.shape == o.shape
            worst = max(worst, (r - o).abs().max().item())
    dv = (ref_video - result.video).abs().max().item()
    da = (ref_audio - result.audio[0]).abs().max().item()
    print(f"max diff: step latents {worst:.3g}, frames {dv:.3g}, waveform {da:.3g}")
    assert worst <= tol and dv <= tol and da <= (tol if audio_tol is None else audio_tol)
    assert ref_audio.abs().max() > 1e-3 and ref_video.std() > 1e-3  # something was generated
    return worst


def test_one_stage_guided_with_image_and_keyframe(bundle):
    style, ref, ours = bundle
    contexts = _contexts(ref, ours)
    images = [(_image(3, 50, 70), 0, 1.0), (_image(4, 64, 96), 16, 0.8)]
    kw = dict(pipeline="one_stage", height=64, width=96, frames=17, fps=24.0, sigmas=ltx2_sigmas(4),
              stage2_sigmas=None, seed=7)
    vg, ag = GuiderParams(**VIDEO_G), GuiderParams(**AUDIO_G)
    with torch.no_grad():
        ref_out = _reference_run(ref, contexts, images, vg=vg, ag=ag, **kw)
        batched = _ours_run(ours, contexts, images, vg=vg, ag=ag, **kw)
        one_by_one = _ours_run(ours, contexts, images, vg=vg, ag=ag, batch_passes=False, **kw)
    _compare(ref_out, batched, 1e-5, audio_tol=1e-4)  # see test_two_stage_pipelines
    assert _compare(ref_out, one_by_one, 0.0) == 0.0  # the reference's four calls: bitwise


def _upsampler():
    from ltx_core.model.upsampler.model_configurator import LatentUpsamplerConfigurator

    from ltx.ltx2.upsampler import LatentUpsampler2, LatentUpsamplerConfig

    meta = {"in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True,
            "temporal_upsample": False}
    ref = ltx2_tiny.randomize(LatentUpsamplerConfigurator.from_config(meta), seed=11)
    ours = LatentUpsampler2(LatentUpsamplerConfig.from_metadata(meta))
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours.eval()


@pytest.mark.parametrize("pipeline", ["two_stage", "hq", "distilled", "keyframes"])
def test_two_stage_pipelines(bundle, pipeline):
    style, ref, ours = bundle
    contexts = _contexts(ref, ours)
    images = [(_image(5, 100, 90), 0, 1.0)]
    if pipeline == "keyframes":  # KeyframeInterpolationPipeline: first and last frame, both appended
        images.append((_image(7, 80, 120), 8, 0.9))
    up_ref, up_ours = _upsampler()
    stage2_ref = stage2_ours = None
    if pipeline != "distilled":  # a second transformer stands in for the distilled-LoRA one
        stage2_ref = ltx2_tiny.randomize(ltx2_tiny.reference_models(style, seed=20)["transformer"], seed=21)
        from ltx.ltx2.transformer import AVTransformer

        stage2_ours = AVTransformer(ours["transformer"].cfg).eval()
        stage2_ours.load_state_dict(stage2_ref.state_dict(), strict=True)
    guided = pipeline != "distilled"
    vg = GuiderParams(**VIDEO_G) if guided else GuiderParams()
    ag = GuiderParams(**AUDIO_G) if guided else GuiderParams()
    sig = ltx2_sigmas(3) if guided else torch.tensor(DISTILLED_SIGMAS)
    if pipeline == "hq":  # shifted for the stage-1 tokens, as LTX2Scheduler().execute(latent=...)
        from ltx_core.components.schedulers import LTX2Scheduler

        sig = ltx2_sigmas(3, num_tokens=2 * 2 * 2)  # 9 frames, 64 x 64 -> (2, 2, 2)
        assert torch.equal(sig, LTX2Scheduler().execute(latent=torch.empty(1, 128, 2, 2, 2), steps=3))
    kw = dict(pipeline=pipeline, height=128, width=128, frames=9, fps=25.0, sigmas=sig,
              stage2_sigmas=torch.tensor(STAGE2_DISTILLED_SIGMAS), seed=3)
    with torch.no_grad():
        ref_out = _reference_run(ref, contexts, images, vg=vg, ag=ag, upsampler=up_ref, stage2=stage2_ref, **kw)
        our_out = _ours_run(ours, contexts, images, vg=vg, ag=ag, upsampler=up_ours, stage2=stage2_ours, **kw)
        one_by_one = _ours_run(ours, contexts, images, vg=vg, ag=ag, upsampler=up_ours, stage2=stage2_ours,
                               batch_passes=False, **kw)
    assert len(our_out[0]) == 2 and len(our_out[0][1]) == (0 if pipeline == "hq" else 2 * 3)  # 3 steps x (v, a)
    assert _compare(ref_out, one_by_one, 0.0) == 0.0  # guidance passes one by one: the reference, bit for bit
    # batched guidance passes: the same sums in another order. Step latents, final audio latents and frames stay
    # within 1e-5 (measured <= 5.3e-6). The waveform is not held to a fixed bound: the random audio decoder +
    # vocoder amplify a latent difference by a CPU-dependent factor (2.5e-4 from 4.6e-6 on AVX-512, 3.7e-5 on
    # AVX2); it is checked to be the decoders' output for those latents, which the one-by-one run above ties to
    # the reference bit for bit.
    _compare(ref_out, our_out, 1e-5, audio_tol=float("inf"))
    batched, single = our_out[1], one_by_one[1]
    assert (batched.audio_latent - single.audio_latent).abs().max() <= 1e-5
    with torch.no_grad():
        decoded = ours["vocoder"](ours["audio_vae"].decode(batched.audio_latent)).float()
    assert torch.equal(decoded, batched.audio)


def test_pipeline_input_errors(bundle):
    _, ref, ours = bundle
    (_, pos), _ = _contexts(ref, ours)
    models = AVModels(ours["transformer"], ours["vae"], ours["audio_vae"], ours["vocoder"])

    def request(**kw) -> AVRequest:
        return AVRequest(**(dict(height=64, width=64, num_frames=9, fps=24.0, sigmas=ltx2_sigmas(2)) | kw))

    with pytest.raises(ValueError, match="multiple of 64.*nearest valid: 64 or 128"):
        pipelines.two_stage(models, pos, None, request(height=96, width=128))
    with pytest.raises(ValueError, match="num_frames=10 must be 8k \\+ 1; nearest valid: 9 or 17"):
        pipelines.one_stage(models, pos, None, request(num_frames=10))
    with pytest.raises(ValueError, match="spatial upsampler"):
        pipelines.distilled(models, pos, request(height=128, width=128,
                                                 stage_2_sigmas=torch.tensor(STAGE2_DISTILLED_SIGMAS)))
    with pytest.raises(ValueError, match="negative prompt"):
        pipelines.one_stage(models, pos, None, request(video_guidance=GuiderParams(cfg=3.0)))
    with pytest.raises(ValueError, match="the distilled pipeline samples without guidance"):
        pipelines.distilled(models, pos, request(video_guidance=GuiderParams(cfg=3.0)))
    with pytest.raises(ValueError, match="needs request.soundtrack"):
        pipelines.audio_to_video(models, pos, None, request(height=128, width=128))
    with pytest.raises(ValueError, match="'three_stage' is not a valid AVPipeline"):
        pipelines.AVPipeline("three_stage")


def test_audio_to_video_two_stage(bundle):
    """A2VidPipelineTwoStage: the soundtrack's latent stays fixed (mask 0) in both stages and guides the video;
    the audio guider is off. The soundtrack is encoded from a waveform with our torch mel (checked against
    transformers' in test_ltx2_audio.py; the reference's needs torchaudio) and each side's audio encoder."""
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.conditioning import VideoConditionByLatentIndex
    from ltx_core.model.transformer.model import X0Model
    from ltx_core.model.upsampler.model import upsample_video
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.helpers import denoise_video_only, multi_modal_guider_denoising_func, simple_denoising_func
    from ltx_pipelines.utils.media_io import normalize_latent, resize_and_center_crop
    from ltx_pipelines.utils.samplers import euler_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    from ltx.ltx2.audio import waveform_to_mel
    from ltx.ltx2.transformer import AVTransformer

    style, ref, ours = bundle
    ((vp, ap), pos), ((vn, _), neg) = _contexts(ref, ours)
    t = torch.arange(48000) / 48000.0
    wave = torch.stack([torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 660 * t)])[None]  # 1 s
    mel = waveform_to_mel(wave, 48000)
    with torch.no_grad():
        ref_latent, our_latent = ref["audio_encoder"](mel), ours["audio_vae"].encode(mel)
    assert torch.equal(ref_latent, our_latent)
    frames, fps, height, width, seed = 17, 24.0, 128, 128, 5
    n_audio = round(frames / fps * 25)
    soundtrack = ref_latent[:, :, :n_audio]
    image = _image(6, 70, 80)
    up_ref, up_ours = _upsampler()
    stage2_ref = ltx2_tiny.randomize(ltx2_tiny.reference_models(style, seed=30)["transformer"], seed=31)
    stage2_ours = AVTransformer(ours["transformer"].cfg).eval()
    stage2_ours.load_state_dict(stage2_ref.state_dict(), strict=True)
    vg = GuiderParams(**VIDEO_G)
    sig, sig2 = ltx2_sigmas(3), torch.tensor(STAGE2_DISTILLED_SIGMAS)

    # the reference: the body of A2VidPipelineTwoStage.__call__
    dtype, device = torch.float32, torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    noiser = GaussianNoiser(generator=generator)
    components = PipelineComponents(dtype=dtype, device=device)
    recorders = []

    def conds(h, w):
        enc = ref["vae_encoder"](normalize_latent(resize_and_center_crop(image, h, w), device, dtype))
        return [VideoConditionByLatentIndex(latent=enc, strength=1.0, latent_idx=0)]

    def run(fn, h, w, s, noise_scale=1.0, vlat=None):
        rec = _Recorder()
        recorders.append(rec)
        return denoise_video_only(
            output_shape=VideoPixelShape(batch=1, frames=frames, width=w, height=h, fps=fps), conditionings=conds(h, w),
            noiser=noiser, sigmas=s, stepper=rec, components=components, dtype=dtype, device=device,
            denoising_loop_fn=lambda s_, v, a, st: euler_denoising_loop(sigmas=s_, video_state=v, audio_state=a,
                                                                       stepper=st, denoise_fn=fn),
            noise_scale=noise_scale, initial_video_latent=vlat, initial_audio_latent=soundtrack)

    with torch.no_grad():
        params = MultiModalGuiderParams(cfg_scale=vg.cfg, stg_scale=vg.stg, rescale_scale=vg.rescale,
                                        modality_scale=vg.modality, stg_blocks=list(vg.stg_blocks))
        first = multi_modal_guider_denoising_func(
            video_guider=MultiModalGuider(params=params, negative_context=vn),
            audio_guider=MultiModalGuider(params=MultiModalGuiderParams()), v_context=vp, a_context=ap,
            transformer=X0Model(ref["transformer"]))
        video_state = run(first, height // 2, width // 2, sig)
        up = upsample_video(latent=video_state.latent[:1], video_encoder=ref["vae_encoder"], upsampler=up_ref)
        video_state = run(simple_denoising_func(vp, ap, X0Model(stage2_ref)), height, width, sig2, sig2[0], up)
        ref_video = ref["vae_decoder"](video_state.latent)

        steps: dict[int, list[torch.Tensor]] = {}
        result = pipelines.audio_to_video(
            AVModels(ours["transformer"], ours["vae"], ours["audio_vae"], ours["vocoder"], up_ours), pos, neg,
            AVRequest(height=height, width=width, num_frames=frames, fps=fps, sigmas=sig, stage_2_sigmas=sig2,
                      video_guidance=vg, images=[ImageInput(image)], soundtrack=our_latent,
                      generator=torch.Generator().manual_seed(seed),
                      on_step=lambda k, i, v, a: steps.setdefault(k, []).extend([v.x.clone(), a.x.clone()])),
            stage_2_transformer=stage2_ours)
    ours_steps = [steps[1], steps[2]]
    for r, o in zip(recorders, ours_steps):
        assert len(r.latents) == len(o)
        for a, b in zip(r.latents, o):
            assert torch.equal(a, b)
    assert torch.equal(result.video, ref_video) and torch.equal(result.audio_latent, soundtrack)
    assert torch.equal(ours_steps[1][-1], ours_steps[0][1])  # the audio tokens never moved
    models = AVModels(ours["transformer"], ours["vae"], ours["audio_vae"], ours["vocoder"])
    with pytest.raises(ValueError, match="no audio guidance"):
        pipelines.one_stage(models, pos, neg, AVRequest(height=64, width=64, num_frames=9, fps=24.0, sigmas=sig,
                                                        audio_guidance=GuiderParams(cfg=7.0), soundtrack=our_latent))
    with pytest.raises(ValueError, match="need \\(1 or 1, 8, >= 38, 16\\)"):
        pipelines.one_stage(models, pos, neg, AVRequest(height=64, width=64, num_frames=33, fps=24.0 * 33 / 36,
                                                        sigmas=sig, soundtrack=our_latent[:, :, :10]))


@pytest.mark.parametrize("downscale", [1, 2])
def test_ic_lora_pipeline(bundle, downscale):
    """ICLoraPipeline: stage 1 (distilled sigmas, no guidance) with the reference clip appended at
    1/downscale of the stage's size, positions scaled back; stage 2 with a second transformer (the official:
    the distilled checkpoint without the IC-LoRA) and no reference."""
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.conditioning import VideoConditionByReferenceLatent
    from ltx_core.model.transformer.model import X0Model
    from ltx_core.model.upsampler.model import upsample_video
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.helpers import denoise_audio_video, simple_denoising_func
    from ltx_pipelines.utils.media_io import normalize_latent, resize_and_center_crop
    from ltx_pipelines.utils.samplers import euler_denoising_loop
    from ltx_pipelines.utils.types import PipelineComponents

    from ltx.ltx2.transformer import AVTransformer

    style, ref, ours = bundle
    ((vp, ap), pos), _ = _contexts(ref, ours)
    frames, fps, height, width, seed = 9, 24.0, 256, 256, 4
    g = torch.Generator().manual_seed(9)
    clip = (torch.rand(11, 90, 100, 3, generator=g) * 255).round()  # 11 frames: 9 are kept (8k + 1)
    up_ref, up_ours = _upsampler()
    stage2_ref = ltx2_tiny.randomize(ltx2_tiny.reference_models(style, seed=40)["transformer"], seed=41)
    stage2_ours = AVTransformer(ours["transformer"].cfg).eval()
    stage2_ours.load_state_dict(stage2_ref.state_dict(), strict=True)
    sig, sig2 = torch.tensor(DISTILLED_SIGMAS), torch.tensor(STAGE2_DISTILLED_SIGMAS)

    dtype, device = torch.float32, torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    noiser = GaussianNoiser(generator=generator)
    components = PipelineComponents(dtype=dtype, device=device)
    recorders = []

    def run(model, h, w, s, conds, noise_scale=1.0, vlat=None, alat=None):
        rec = _Recorder()
        recorders.append(rec)
        fn = simple_denoising_func(vp, ap, X0Model(model))
        return denoise_audio_video(
            output_shape=VideoPixelShape(batch=1, frames=frames, width=w, height=h, fps=fps), conditionings=conds,
            noiser=noiser, sigmas=s, stepper=rec, components=components, dtype=dtype, device=device,
            denoising_loop_fn=lambda s_, v, a, st: euler_denoising_loop(sigmas=s_, video_state=v, audio_state=a,
                                                                       stepper=st, denoise_fn=fn),
            noise_scale=noise_scale, initial_video_latent=vlat, initial_audio_latent=alat)

    with torch.no_grad():
        h1, w1 = height // 2, width // 2
        video = torch.cat([resize_and_center_crop(f, h1 // downscale, w1 // downscale) for f in clip[:9]], dim=2)
        enc = ref["vae_encoder"](normalize_latent(video, device, dtype))
        conds = [VideoConditionByReferenceLatent(latent=enc, downscale_factor=downscale, strength=1.0)]
        video_state, audio_state = run(ref["transformer"], h1, w1, sig, conds)
        up = upsample_video(latent=video_state.latent[:1], video_encoder=ref["vae_encoder"], upsampler=up_ref)
        video_state, audio_state = run(stage2_ref, height, width, sig2, [], sig2[0], up, audio_state.latent)
        ref_video = ref["vae_decoder"](video_state.latent)

        steps: dict[int, list[torch.Tensor]] = {}
        result = pipelines.ic_lora(
            AVModels(ours["transformer"], ours["vae"], ours["audio_vae"], ours["vocoder"], up_ours), pos,
            AVRequest(height=height, width=width, num_frames=frames, fps=fps, sigmas=sig, stage_2_sigmas=sig2,
                      generator=torch.Generator().manual_seed(seed),
                      on_step=lambda k, i, v, a: steps.setdefault(k, []).extend([v.x.clone(), a.x.clone()])),
            [ReferenceInput(clip, 1.0, downscale)], stage_2_transformer=stage2_ours)
    # stage 1 carries the reference tokens after the target's (2 latent frames x 4 x 4)
    n_ref = enc.shape[2] * enc.shape[3] * enc.shape[4]
    assert steps[1][0].shape[1] == 2 * (h1 // 32) * (w1 // 32) + n_ref
    for r, o in zip(recorders, [steps[1], steps[2]]):
        assert len(r.latents) == len(o) and all(torch.equal(a, b) for a, b in zip(r.latents, o))
    assert torch.equal(result.video, ref_video)
    with pytest.raises(ValueError, match="reference downscale 3: the stage-1 size 128x128 must be divisible"):
        pipelines.ic_lora(AVModels(ours["transformer"], ours["vae"], ours["audio_vae"], ours["vocoder"], up_ours),
                          pos, AVRequest(height=height, width=width, num_frames=frames, fps=fps, sigmas=sig,
                                         stage_2_sigmas=sig2), [ReferenceInput(clip, 1.0, 3)])
