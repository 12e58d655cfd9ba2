"""One LTX-2.5 text-to-video+audio run, ours against diffusers 0.42.1's `LTX2Pipeline`, step by step, fp32.

Both sides run the tiny 2.5 model of tests/ltx2/test_ltx2_25.py (its fixture builders): diffusers' pipeline is built
from the same weights, the transformer through ltx/ltx2/diffusers_layout.py and the text connectors, video VAE,
audio VAE and vocoder through ltx/ltx2/diffusers_components.py (strict loads); its tokenizer and text encoder are
the same tiny Gemma 4 folder. Compared, max abs difference <= 1e-5 unless said:

1. the key maps against diffusers' single-file converters where those cover the layout (audio VAE; video VAE
   encoder), and the components on one given input: our VAE decode / audio-VAE decode + vocoder against
   diffusers' (denormalize, unpack, decode, vocoder, as its `__call__` ends) and the video encoder, for the 2.5
   (= 2.3) layouts and for LTX-2.0's (residual decoder blocks, reflect padding, HiFi-GAN vocoder): 0.0;
2. one stage with every guidance term (CFG 3 / 7, STG on block 1, modality isolation 3, rescale 0.7), a fixed
   4-step Euler schedule (`sigmas=`, FlowMatchEulerDiscreteScheduler without shift): the connectors' video and
   audio contexts of both prompts, every step's video and audio latents, the decoded frames and the waveform;
3. the distilled 2.5 stage 1 alone (no guidance, the 8 distilled sigmas, Euler ancestral:
   `LTXEulerAncestralRFScheduler` against `pipelines.sample(..., ancestral=generator)`): every step's latents.

What differs between the two pipelines, and what the test does about it:
- Initial noise. Both draw video then audio from one generator, but in different shapes: ours draws the
  patchified tokens (B, T, C) (ltx-core's GaussianNoiser), diffusers (B, C, F, H, W) and (B, C, L, M) and packs
  them, so a seed gives different noise. The test injects our draw into diffusers: the video as packed tokens
  (`latents=` 3-D, which diffusers takes as is) and the audio as (B, 8, L, 16) de-normalized with the audio
  VAE's statistics, because diffusers normalizes `audio_latents` on the way in (it always does, 3-D or 4-D); the
  audio state our run starts from is set to what that normalization gives, so both start from identical tensors.
- Latent spaces. Inside the loop both hold the normalized latents (ours: the official convention, the VAE decoders
  de-normalize internally; diffusers: `_denormalize_*` before its decoders, which do not) and the same token order
  (frame, row, column; audio frame, then channel x mel): the per-step latents compare directly.
- The ancestral noise. diffusers' `LTX2Pipeline` calls `scheduler.step` without a generator, so
  `LTXEulerAncestralRFScheduler` draws `randn` from the global RNG: per step the video noise, then the audio
  noise, each in the packed (B, T, C) shape. Ours draws from `ancestral` in the same order and shapes
  (`ltx.core.sampling.x0_ancestral`: per step, per stream in order), so `torch.manual_seed(s)` before diffusers'
  call and `torch.Generator().manual_seed(s)` for ours give the same noise. (The official 2.5 distilled pipeline
  seeds that generator with seed + 10000: tests/ltx2/test_ltx2_25.py.) With explicit sigmas the ancestral
  scheduler keeps the terminal 0 in its timesteps, so diffusers' loop runs one more transformer pass at sigma 0
  whose step returns the latents unchanged: its last callback repeats the final latents.
- Text. diffusers' connectors get a padded batch [negative, positive] and return a context mask of ones (the
  registers fill the padding); ours passes no mask (the official pipelines attend to all): the same attention.
  The tiny tokenizer adds <bos> itself, so the README's Gemma 4 <bos> difference does not arise here.
- Summation order. diffusers runs cond and uncond as one batch of 2, ours as two calls; the scheduler
  computes x_next = x + (sigma_next - sigma) v with v = (x - x0) / sigma, ours the same Euler step in x0 form.
  The latents agree to a few float32 ulps and the gap grows slowly over the steps (printed with -s).
- The waveform. The audio VAE decoder and the vocoder magnify a latent difference (here 3.3e-6 on the final
  audio latent becomes 1.9e-5 on the waveform, our decoders alone on the two final latents), so the chained
  waveform is compared by its parts: diffusers' final latents through our decoders against diffusers' own
  output (<= 1e-5: measured 0.0) and the final latents themselves (<= 1e-5); the chained difference is printed,
  not held to 1e-5. The frames are held to 1e-5 directly.
- Guidance magnifies the per-pass rounding: with audio CFG 7 (six times the cond - uncond gap), modality 3 and
  rescale the audio gap grows from 2.4e-7 after step 1 to 3.3e-6 after step 4; unguided (the ancestral run) it
  stays <= 6e-7 over 8 steps.
"""

from __future__ import annotations

import dataclasses
import math

import ltx2_tiny
import pytest
import test_ltx2_25 as t25
import torch

import ltx
from ltx.ltx2 import checkpoint as ckpt_io
from ltx.ltx2 import diffusers_components as dc
from ltx.ltx2 import pipelines
from ltx.ltx2.diffusers_layout import diffusers_transformer_config, transformer_to_diffusers
from ltx.ltx2.duration import DurationHead, DurationHeadConfig
from ltx.ltx2.sched import DISTILLED_SIGMAS, GuiderParams
from ltx.ltx2.transformer import AVTransformer
from ltx.presets import load_preset

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5
H, W, NF, FPS = 128, 128, 9, 24.0
PROMPT, NEGATIVE = "a dog barks at the sea", "red ball"
GUIDED_SIGMAS = (1.0, 0.9, 0.7, 0.4, 0.0)
VIDEO_GUIDANCE = GuiderParams(cfg=3.0, stg=1.0, stg_blocks=(1,), rescale=0.7, modality=3.0)
AUDIO_GUIDANCE = GuiderParams(cfg=7.0, stg=1.0, stg_blocks=(1,), rescale=0.7, modality=3.0)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny 2.5 split files and Gemma 4 folder of test_ltx2_25.py (without its upsampler and media)."""
    root = tmp_path_factory.mktemp("ltx25e2e")
    base, _ = ltx2_tiny.official_file(root / "tiny-2.3.safetensors", "2.3")
    modules = ckpt_io.load(base)
    cfg = dataclasses.replace(modules["transformer"].cfg, use_prompt_adaln_single=False, ff_bias=False,
                              use_keyframes_abs_pos_embedding=True)
    transformer = ltx2_tiny.randomize(AVTransformer(cfg), seed=5)
    head = ltx2_tiny.randomize(DurationHead(DurationHeadConfig(video_dim=cfg.inner_dim, audio_dim=cfg.audio_inner_dim,
                                                                hidden=16, queries=2, heads=2, mlp_hidden=8)), seed=6)
    with torch.no_grad():
        head.mlp_out.weight.zero_()
        head.mlp_out.bias.fill_(math.log(t25.SECONDS))
    modules.update(transformer=transformer, duration_head=head)
    bundle = ckpt_io.write_modules(root / "tiny-2.5.safetensors", modules, model_version="2.5.0")
    t25._split(bundle, root / "split")
    return {"folder": root / "split", "gemma4": t25._gemma4_folder(root / "gemma4")}


def _strict(module, state_dict):
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


def diffusers_decoders(m: dict) -> dict:
    """diffusers' video VAE, audio VAE and vocoder from our loaded modules (ltx/ltx2/diffusers_components.py)."""
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video
    from diffusers.pipelines.ltx2 import vocoder as diffusers_vocoder

    config, sd = dc.video_vae_to_diffusers(m["vae"].cfg, m["vae"].state_dict())
    vae = _strict(AutoencoderKLLTX2Video(**config), sd)
    config, sd = dc.audio_vae_to_diffusers(m["audio_vae"].cfg, m["audio_vae"].state_dict())
    audio_vae = _strict(AutoencoderKLLTX2Audio(**config), sd)
    name, config, sd = dc.vocoder_to_diffusers(m["vocoder"].cfg, m["vocoder"].state_dict())
    return {"vae": vae, "audio_vae": audio_vae, "vocoder": _strict(getattr(diffusers_vocoder, name)(**config), sd)}


@pytest.fixture(scope="module")
def both(files):
    """(our loaded pipeline, diffusers' LTX2Pipeline on the same weights)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline
    from transformers import AutoTokenizer, Gemma4UnifiedForConditionalGeneration

    preset = load_preset("ltx-2.5-22b-distilled")
    preset.av.pipeline = pipelines.AVPipeline.one_stage  # one stage: no upsampler (diffusers' LTX2Pipeline is one)
    preset.av.video.stg_blocks = [1]
    preset.av.audio.stg_blocks = [1]
    ours = ltx.load_pipeline(files["folder"], model=preset, text_encoder=files["gemma4"], device="cpu",
                             dtype="float32")
    m = ours.modules
    transformer = _strict(LTX2VideoTransformer3DModel(**diffusers_transformer_config(m["transformer"].cfg)),
                          transformer_to_diffusers(m["transformer"].state_dict()))
    config, sd = dc.text_connectors_to_diffusers(m["text"].config, m["text"].state_dict())
    ref = LTX2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), connectors=_strict(LTX2TextConnectors(**config), sd),
        text_encoder=Gemma4UnifiedForConditionalGeneration.from_pretrained(
            files["gemma4"], local_files_only=True, dtype=torch.float32).eval(),
        tokenizer=AutoTokenizer.from_pretrained(files["gemma4"], local_files_only=True),
        transformer=transformer, **diffusers_decoders(m))
    ref.set_progress_bar_config(disable=True)
    ref._callback_tensor_inputs = [*ref._callback_tensor_inputs, "audio_latents"]  # record the audio too
    return ours, ref


def test_key_maps_agree_with_diffusers_converters(both):
    """Our audio-VAE names are diffusers' single-file converter's; for the video VAE that converter knows the
    LTX-2.0 decoder only (7 up blocks, no 2.3 layout), so its encoder names are compared."""
    from diffusers.loaders.single_file_utils import (
        convert_ltx2_audio_vae_to_diffusers,
        convert_ltx2_vae_to_diffusers,
    )

    ours, _ = both
    m = ours.modules
    own = m["audio_vae"].state_dict()
    _, sd = dc.audio_vae_to_diffusers(m["audio_vae"].cfg, own)
    ref = convert_ltx2_audio_vae_to_diffusers({f"audio_vae.{k}": v for k, v in own.items()})
    assert sd.keys() == ref.keys() and all(sd[k] is ref[k] for k in sd)
    own = m["vae"].state_dict()
    _, sd = dc.video_vae_to_diffusers(m["vae"].cfg, own)
    ref = convert_ltx2_vae_to_diffusers({f"vae.{k}": v for k, v in own.items() if not k.startswith("decoder.")})
    assert {k for k in sd if not k.startswith("decoder.")} == set(ref)
    assert all(sd[k] is ref[k] for k in ref)


def _diffusers_decode(ref, video_latent: torch.Tensor, audio_latent: torch.Tensor):
    """The end of diffusers' `__call__` on our (normalized, unpatchified) latents: frames in [0, 1], waveform.
    `ref`: its pipeline, or a namespace with its vae, audio_vae and vocoder."""
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline as P
    from diffusers.video_processor import VideoProcessor

    vae, audio_vae = ref.vae, ref.audio_vae
    with torch.no_grad():
        v = P._denormalize_latents(video_latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        frames = VideoProcessor().postprocess_video(vae.decode(v, None, return_dict=False)[0], output_type="pt")
        a = P._denormalize_audio_latents(P._pack_audio_latents(audio_latent), audio_vae.latents_mean,
                                         audio_vae.latents_std)
        a = P._unpack_audio_latents(a, audio_latent.shape[2], num_mel_bins=audio_latent.shape[3])
        wave = ref.vocoder(audio_vae.decode(a, return_dict=False)[0])
    return frames.permute(0, 2, 1, 3, 4), wave  # diffusers' "pt" video is (B, F, C, H, W)


def _our_decode(m: dict, video_latent: torch.Tensor, audio_latent: torch.Tensor):
    with torch.no_grad():
        video, wave = pipelines.decode(pipelines.AVModels(None, m["vae"], m["audio_vae"], m["vocoder"]),
                                       video_latent, audio_latent)
    return (video.clamp(-1, 1) + 1) / 2, wave


@pytest.mark.parametrize("layout", ["2.5", "19b"])
def test_vae_and_vocoder_match_diffusers_on_one_input(both, layout, tmp_path):
    """The decoders (and the video encoder) on one given input. 2.5 = the 2.3 VAE block list and the vocoder with
    bandwidth extension; 19b = LTX-2.0's residual decoder blocks, reflect padding and the HiFi-GAN vocoder."""
    from types import SimpleNamespace

    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline as P

    if layout == "2.5":
        m, ref = both[0].modules, both[1]
    else:
        path, _ = ltx2_tiny.official_file(tmp_path / "tiny-19b.safetensors", "19b")
        m = ckpt_io.load(path, ["vae", "audio_vae", "vocoder"])
        ref = SimpleNamespace(**diffusers_decoders(m))
    gen = torch.Generator().manual_seed(3)
    video_latent, audio_latent = torch.randn(1, 128, 2, 4, 4, generator=gen), torch.randn(1, 8, 9, 16, generator=gen)
    of, ow = _our_decode(m, video_latent, audio_latent)
    rf, rw = _diffusers_decode(ref, video_latent, audio_latent)
    pixels = torch.rand(1, 3, 9, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        vae = ref.vae
        z = P._normalize_latents(vae.encode(pixels).latent_dist.mode(), vae.latents_mean, vae.latents_std)
        dz = maxdiff(m["vae"].encode(pixels), z)
    df, dw = maxdiff(of, rf), maxdiff(ow, rw)
    print(f"{layout}: frames {df:.2e} (std {rf.std():.2f}), waveform {dw:.2e} (std {rw.std():.3f}, "
          f"{rw.shape[-1]} samples), encoder {dz:.2e} (max {z.abs().max():.2f})")
    assert df <= TOL and dw <= TOL and dz <= TOL
    assert rf.std() > 0.01 and rw.std() > 0.005  # not saturated or silent: the comparison sees real values


def _our_run(ours, request: pipelines.AVRequest, positive, negative, audio_start: torch.Tensor, monkeypatch):
    """`pipelines.one_stage` recording the initial states and every step; the audio starts from `audio_start`."""
    start, steps = {}, []
    conditioned_states = pipelines.conditioned_states

    def states(*args, **kwargs):
        video, audio = conditioned_states(*args, **kwargs)
        start["video"] = video.x
        return video, dataclasses.replace(audio, x=audio_start)

    monkeypatch.setattr(pipelines, "conditioned_states", states)
    request = dataclasses.replace(request, on_step=lambda stage, i, v, a: steps.append((v.x.clone(), a.x.clone())))
    m = ours.modules
    with torch.no_grad():
        result = pipelines.one_stage(pipelines.AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"]),
                                     positive, negative, request)
    monkeypatch.undo()
    return start["video"], steps, result


def _start(ours, ref, seed: int, height: int = H, width: int = W):
    """Our noise draw (video then audio tokens) and diffusers' `audio_latents=` input whose normalization is the
    audio state both runs start from."""
    from ltx.ltx2.conditioning import conditioned_states

    video, audio = conditioned_states(NF, height, width, FPS, [], batch=1, dtype=torch.float32, device="cpu",
                                      generator=torch.Generator().manual_seed(seed))
    stats = ref.audio_vae
    given = ref._unpack_audio_latents(ref._denormalize_audio_latents(audio.x, stats.latents_mean, stats.latents_std),
                                      audio.x.shape[1], num_mel_bins=16)
    start = ref._normalize_audio_latents(ref._pack_audio_latents(given), stats.latents_mean, stats.latents_std)
    assert maxdiff(start, audio.x) <= 1e-6  # the round trip moves it by float32 rounding only
    return video.x, given, start


def _diffusers_run(ref, video_start, audio_given, seed: int | None = None, output_type: str = "pt",
                   height: int = H, width: int = W, generator: torch.Generator | None = None, noise_scale: float = 0.0,
                   **kwargs):
    steps, contexts = [], []
    hook = ref.connectors.register_forward_hook(lambda mod, args, out: contexts.append(out))
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)  # the ancestral scheduler's randn (LTX2Pipeline passes it no generator)
            frames, wave = ref(
                prompt=PROMPT, height=height, width=width, num_frames=NF, frame_rate=FPS, noise_scale=noise_scale,
                latents=video_start, audio_latents=audio_given,
                generator=torch.Generator().manual_seed(0) if generator is None else generator,
                output_type=output_type, return_dict=False, max_sequence_length=1024,
                callback_on_step_end=lambda pipe, i, t, kw: steps.append(
                    (kw["latents"].clone(), kw["audio_latents"].clone())) or {},
                callback_on_step_end_tensor_inputs=["latents", "audio_latents"], **kwargs)
    finally:
        hook.remove()
    return steps, contexts, frames.permute(0, 2, 1, 3, 4) if output_type == "pt" else frames, wave


def test_guided_one_stage_matches_diffusers_step_by_step(both, monkeypatch):
    ours, ref = both
    assert ours.preset.generation.text_tokens == 1024
    text = ours.encode_prompts(PROMPT, NEGATIVE)
    with torch.no_grad():
        positive = pipelines.Prompt(*ours.modules["text"](*text.positive)[:2])
        negative = pipelines.Prompt(*ours.modules["text"](*text.negative)[:2])
    video_start, audio_given, audio_start = _start(ours, ref, seed=7)
    request = pipelines.AVRequest(height=H, width=W, num_frames=NF, fps=FPS, sigmas=torch.tensor(GUIDED_SIGMAS),
                                  video_guidance=VIDEO_GUIDANCE, audio_guidance=AUDIO_GUIDANCE,
                                  generator=torch.Generator().manual_seed(7))
    our_video_start, ours_steps, result = _our_run(ours, request, positive, negative, audio_start, monkeypatch)
    assert torch.equal(our_video_start, video_start)
    v, a = VIDEO_GUIDANCE, AUDIO_GUIDANCE
    steps, contexts, frames, wave = _diffusers_run(
        ref, video_start, audio_given, negative_prompt=NEGATIVE, sigmas=list(GUIDED_SIGMAS[:-1]),
        guidance_scale=v.cfg, stg_scale=v.stg, modality_scale=v.modality, guidance_rescale=v.rescale,
        audio_guidance_scale=a.cfg, audio_stg_scale=a.stg, audio_modality_scale=a.modality,
        audio_guidance_rescale=a.rescale, spatio_temporal_guidance_blocks=list(v.stg_blocks))

    # text: diffusers' connectors ran once on [negative, positive]
    (video_ctx, audio_ctx, mask), = contexts
    assert torch.equal(mask, torch.ones_like(mask))
    text_diffs = [maxdiff(ours_ctx, ref_ctx) for ours_ctx, ref_ctx in (
        (negative.video, video_ctx[:1]), (positive.video, video_ctx[1:]), (negative.audio, audio_ctx[:1]),
        (positive.audio, audio_ctx[1:]))]
    print(f"contexts (video -, +, audio -, +): {[f'{d:.1e}' for d in text_diffs]} "
          f"(scale {video_ctx.abs().max():.2f} / {audio_ctx.abs().max():.2f})")
    assert max(text_diffs) <= TOL

    assert len(steps) == len(ours_steps) == len(GUIDED_SIGMAS) - 1
    for i, ((ov, oa), (rv, ra)) in enumerate(zip(ours_steps, steps)):
        dv, da = maxdiff(ov, rv), maxdiff(oa, ra)
        print(f"step {i}: video {dv:.2e} (max {rv.abs().max():.2f}), audio {da:.2e} (max {ra.abs().max():.2f})")
        assert dv <= TOL and da <= TOL
    assert maxdiff(ours_steps[0][0], video_start) > 0.1  # the steps move the latents

    # decoded: the frames directly; the waveform by its parts (module docstring)
    our_frames, our_wave = (result.video.clamp(-1, 1) + 1) / 2, result.audio
    ref_video = ref._unpack_latents(steps[-1][0], 2, 4, 4)
    ref_audio = ref._unpack_audio_latents(steps[-1][1], audio_given.shape[2], num_mel_bins=16)
    ours_on_ref = _our_decode(ours.modules, ref_video, ref_audio)  # diffusers' final latents, our decoders
    df, decoded_frames = maxdiff(our_frames, frames), maxdiff(ours_on_ref[0], frames)
    decoders = maxdiff(ours_on_ref[1], wave)  # one latent through both sides' decoders
    propagated = maxdiff(our_wave, ours_on_ref[1])  # our decoders on the two runs' final latents
    print(f"frames {df:.2e} (same latent: {decoded_frames:.2e}); waveform {maxdiff(our_wave, wave):.2e}: same "
          f"latent {decoders:.2e}, our decoders on the two final latents {propagated:.2e} (their audio gap "
          f"{maxdiff(result.audio_latent, ref_audio):.2e}); waveform max {wave.abs().max():.2f}")
    assert df <= TOL and decoded_frames <= TOL and decoders <= TOL
    assert maxdiff(result.audio_latent, ref_audio) <= TOL and maxdiff(result.video_latent, ref_video) <= TOL


def test_distilled_stage_1_euler_ancestral_matches_diffusers(both, monkeypatch):
    from diffusers import LTXEulerAncestralRFScheduler

    ours, ref = both
    text = ours.encode_prompts(PROMPT)
    with torch.no_grad():
        positive = pipelines.Prompt(*ours.modules["text"](*text.positive)[:2])
    video_start, audio_given, audio_start = _start(ours, ref, seed=11)
    request = pipelines.AVRequest(height=H, width=W, num_frames=NF, fps=FPS, sigmas=torch.tensor(DISTILLED_SIGMAS),
                                  generator=torch.Generator().manual_seed(11),
                                  ancestral_generator=torch.Generator().manual_seed(5))
    _, ours_steps, _ = _our_run(ours, request, positive, None, audio_start, monkeypatch)
    euler = ref.scheduler
    ref.scheduler = LTXEulerAncestralRFScheduler()  # eta = s_noise = 1
    try:
        steps, _, _, _ = _diffusers_run(ref, video_start, audio_given, seed=5, sigmas=list(DISTILLED_SIGMAS),
                                        guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0,
                                        guidance_rescale=0.0, audio_guidance_scale=1.0, audio_stg_scale=0.0,
                                        audio_modality_scale=1.0, audio_guidance_rescale=0.0, output_type="latent")
    finally:
        ref.scheduler = euler
    n = len(DISTILLED_SIGMAS) - 1
    assert len(ours_steps) == n and len(steps) == n + 1  # its extra pass at the terminal sigma 0 ...
    assert torch.equal(steps[-1][0], steps[-2][0]) and torch.equal(steps[-1][1], steps[-2][1])  # ... changes nothing
    for i, ((ov, oa), (rv, ra)) in enumerate(zip(ours_steps, steps)):
        dv, da = maxdiff(ov, rv), maxdiff(oa, ra)
        print(f"ancestral step {i}: video {dv:.2e} (max {rv.abs().max():.2f}), audio {da:.2e} "
              f"(max {ra.abs().max():.2f})")
        assert dv <= TOL and da <= TOL
    # the noise matters: plain Euler from the same start ends elsewhere
    plain = dataclasses.replace(request, ancestral_generator=None)
    _, plain_steps, _ = _our_run(ours, plain, positive, None, audio_start, monkeypatch)
    assert maxdiff(plain_steps[-1][0], ours_steps[-1][0]) > 1e-2


def test_layouts_without_a_diffusers_counterpart_are_refused():
    from ltx.ltx2.text import TextConnectorConfig
    from ltx.ltx2.vae import VAEBlock, VideoVAEConfig

    with pytest.raises(ValueError, match=r"has connector MLP biases; this model has none"):
        dc.text_connectors_to_diffusers(dataclasses.replace(TextConnectorConfig.ltx2_3(), ff_bias=False), {})
    cfg = VideoVAEConfig(decoder_blocks=[VAEBlock(name="res_x"), VAEBlock(name="res_x")])
    with pytest.raises(ValueError, match=r"needs the decoder blocks as res_x, compress, res_x, \.\.\., res_x; "
                                         r"got \['res_x', 'res_x'\]"):
        dc.video_vae_to_diffusers(cfg, {})


UNGUIDED = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0,
                audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0)


def test_distilled_two_stages_match_diffusers_chain(both, monkeypatch):
    """The 2.5 DistilledPipeline, both stages (`pipelines.distilled`: stage 1 at half size with Euler ancestral over
    the 8 distilled sigmas, the x2 latent upsampler, stage 2 at full size from the upsampled latents and the stage-1
    audio renoised to 0.909375 by the run's generator, 3 Euler steps) against diffusers' chain of the same steps:
    `LTX2Pipeline` (stage 1, `LTXEulerAncestralRFScheduler`, output_type latent) -> `LTX2LatentUpsamplePipeline`
    (diffusers' `LTX2LatentUpsamplerModel` loaded strictly with the same upsampler weights) -> `LTX2Pipeline`
    (stage 2: `latents=` / `audio_latents=` the upsampled video and stage-1 audio, `noise_scale=` the first stage-2
    sigma, its generator in the state ours has after stage 1, so both renoise with the same draw). Every stage-2
    step's latents and the decoded frames, <= 1e-5. diffusers' public latents are de-normalized between the
    pipelines (the upsampler works on raw latents on both sides)."""
    from diffusers import LTXEulerAncestralRFScheduler
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.pipeline_ltx2_latent_upsample import LTX2LatentUpsamplePipeline

    from ltx.ltx2.sched import STAGE2_DISTILLED_SIGMAS
    from ltx.ltx2.upsampler import LatentUpsampler2, LatentUpsamplerConfig

    ours, ref = both
    up = ltx2_tiny.randomize(LatentUpsampler2(LatentUpsamplerConfig(mid_channels=32, num_blocks_per_stage=1)),
                             seed=13).eval()
    ref_up = _strict(LTX2LatentUpsamplerModel(in_channels=128, mid_channels=32, num_blocks_per_stage=1,
                                              use_rational_resampler=False), up.state_dict())
    upsample = LTX2LatentUpsamplePipeline(vae=ref.vae, latent_upsampler=ref_up)
    upsample.set_progress_bar_config(disable=True)
    text = ours.encode_prompts(PROMPT)
    with torch.no_grad():
        positive = pipelines.Prompt(*ours.modules["text"](*text.positive)[:2])
    video_start, audio_given, audio_start = _start(ours, ref, seed=17, height=H // 2, width=W // 2)

    calls, steps = [], []
    conditioned_states = pipelines.conditioned_states

    def states(*args, **kwargs):
        calls.append(kwargs["generator"].get_state())  # the generator as each stage starts drawing
        video, audio = conditioned_states(*args, **kwargs)
        return (video, dataclasses.replace(audio, x=audio_start)) if len(calls) == 1 else (video, audio)

    monkeypatch.setattr(pipelines, "conditioned_states", states)
    request = pipelines.AVRequest(height=H, width=W, num_frames=NF, fps=FPS, sigmas=torch.tensor(DISTILLED_SIGMAS),
                                  stage_2_sigmas=torch.tensor(STAGE2_DISTILLED_SIGMAS),
                                  generator=torch.Generator().manual_seed(17),
                                  ancestral_generator=torch.Generator().manual_seed(5),
                                  on_step=lambda stage, i, v, a: steps.append((stage, v.x.clone(), a.x.clone())))
    m = ours.modules
    with torch.no_grad():
        result = pipelines.distilled(pipelines.AVModels(m["transformer"], m["vae"], m["audio_vae"], m["vocoder"], up),
                                     positive, request)
    monkeypatch.undo()
    assert len(calls) == 2

    euler = ref.scheduler
    ref.scheduler = LTXEulerAncestralRFScheduler()
    try:
        one, _, video_1, audio_1 = _diffusers_run(ref, video_start, audio_given, seed=5, height=H // 2, width=W // 2,
                                                  sigmas=list(DISTILLED_SIGMAS), output_type="latent", **UNGUIDED)
    finally:
        ref.scheduler = euler
    with torch.no_grad():
        upsampled = upsample(latents=video_1, latents_normalized=False, height=H // 2, width=W // 2,
                             num_frames=NF, output_type="latent", return_dict=False)[0]
    after_stage_1 = torch.Generator()
    after_stage_1.set_state(calls[1])
    two, _, frames, _ = _diffusers_run(ref, upsampled, audio_1, generator=after_stage_1,
                                       noise_scale=STAGE2_DISTILLED_SIGMAS[0],
                                       sigmas=list(STAGE2_DISTILLED_SIGMAS[:-1]), **UNGUIDED)

    ours_1 = [(v, a) for stage, v, a in steps if stage == 1]
    ours_2 = [(v, a) for stage, v, a in steps if stage == 2]
    assert len(ours_1) == len(DISTILLED_SIGMAS) - 1 and len(ours_2) == len(two) == len(STAGE2_DISTILLED_SIGMAS) - 1
    diffs = {"stage 1 end": max(maxdiff(ours_1[-1][0], one[-1][0]), maxdiff(ours_1[-1][1], one[-1][1]))}
    for i, ((ov, oa), (rv, ra)) in enumerate(zip(ours_2, two, strict=True)):
        diffs[f"stage 2 step {i}"] = max(maxdiff(ov, rv), maxdiff(oa, ra))
    diffs["frames"] = maxdiff((result.video.clamp(-1, 1) + 1) / 2, frames)
    print("distilled two stages vs diffusers:", {k: f"{v:.2e}" for k, v in diffs.items()},
          f"frames std {frames.std():.3f}")
    assert all(v <= TOL for v in diffs.values()), diffs
    assert maxdiff(ours_2[-1][0], ours_2[0][0]) > 1e-3 and frames.std() > 0.01  # stage 2 moves the latents
