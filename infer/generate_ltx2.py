"""`infer.generate` for the LTX-2 presets (model=ltx-2-19b-dev, ltx-2.3-22b-distilled, ...): video + sound.

    python -m infer.generate model=ltx-2-19b-dev checkpoint=/w/ltx-2-19b-dev.safetensors \
        upsampler_checkpoint=/w/ltx-2-spatial-upscaler-x2-1.0.safetensors \
        distilled_lora=/w/ltx-2-19b-distilled-lora-384.safetensors \
        text_encoder=/w/gemma-3-12b-it-qat-q4_0-unquantized 'prompts=["a dog barks at the sea"]'

Runs the preset's official pipeline (`model.av.pipeline`: one_stage, two_stage, hq, distilled) through
ltx.ltx2.pipelines.generate_av, and writes per prompt into <output_dir>/<run>/: `NN_<prompt>.mp4` (H.264 + AAC
audio), `.wav` (16-bit PCM at the vocoder's rate), `.png` (a contact sheet: frames above the waveform and a
log-mel spectrogram on the same time axis) and `.yaml` (the resolved config, the prompt, the seed, the sigmas).

Order of work, as for 0.9.x: every check that can fail on bad input reads headers and small files only
(the bundled file's components built on `meta` against its headers, the preset's model version, the
upsampler, LoRA targets and shapes, sizes, images, the Gemma folder, the output folder); then Gemma encodes
the prompts and is freed; then the models load. Two-stage runs fuse the distilled LoRA into the transformer
in place once stage 1 is done (one transformer in memory; the official ledger builds a second one from the
file with every LoRA fused at once, which differs by the rounding of one more addition in bf16). hq fuses it
at 0.25 before stage 1 and adds 0.25 more before stage 2.

Overrides on top of the preset: steps, guidance_scale / stg_scale / rescaling_scale / stg_blocks (video),
audio_guidance_scale, modality_scale (both modalities), conditioning (images: frame 0 = image-to-video, later
frames = keyframes), loras (fused into both stages), distilled_lora, seed, size, fps; and `audio=FILE`
(`audio_start`): audio-to-video, as A2VidPipelineTwoStage (the soundtrack's latent fixed in every stage, audio
guidance off, the input sound written to the outputs, cut to the video's duration).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ltx.core.checkpoint import CheckpointError
from ltx.core.media import MediaError, crf_compress, read_image
from ltx.ltx2 import checkpoint as ck
from ltx.ltx2.lora import LoRA, check_lora, fuse_loras, read_lora
from ltx.ltx2.patchify import video_latent_shape
from ltx.ltx2.pipelines import AVModels, ImageInput, Prompt, ReferenceInput, check_size, generate_av
from ltx.ltx2.sched import GuiderParams, ltx2_sigmas
from ltx.presets import AVGuidance, AVPipeline


def _guider(g: AVGuidance) -> GuiderParams:
    return GuiderParams(cfg=g.cfg_scale, stg=g.stg_scale, stg_blocks=tuple(g.stg_blocks), rescale=g.rescale_scale,
                        modality=g.modality_scale, skip_step=g.skip_step)


def guidance(cfg) -> tuple[GuiderParams, GuiderParams]:
    """The preset's video / audio guidance with the command line's overrides."""
    av = cfg.model.av
    video, audio = dataclasses.replace(av.video), dataclasses.replace(av.audio)
    for name, value in (("cfg_scale", cfg.guidance_scale), ("stg_scale", cfg.stg_scale),
                        ("rescale_scale", None if cfg.rescaling_scale is None else cfg.rescaling_scale),
                        ("stg_blocks", cfg.stg_blocks)):
        if value is not None:
            video = dataclasses.replace(video, **{name: value})
    if cfg.audio_guidance_scale is not None:
        audio = dataclasses.replace(audio, cfg_scale=cfg.audio_guidance_scale)
    if cfg.stg_blocks is not None:
        audio = dataclasses.replace(audio, stg_blocks=cfg.stg_blocks)
    if cfg.modality_scale is not None:
        video = dataclasses.replace(video, modality_scale=cfg.modality_scale)
        audio = dataclasses.replace(audio, modality_scale=cfg.modality_scale)
    return _guider(video), _guider(audio)


def sigma_lists(cfg) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stage-1 sigmas (LTX2Scheduler without a latent, i.e. at 4096 tokens; hq: shifted for the stage-1 tokens;
    distilled: its list; or `timesteps`) and the stage-2 list."""
    av = cfg.model.av
    if cfg.timesteps is not None:
        first = torch.tensor([*cfg.timesteps, 0.0] if cfg.timesteps[-1] != 0 else cfg.timesteps)
    elif av.pipeline is AVPipeline.distilled and cfg.steps is None:
        first = torch.tensor(av.sigmas)
    elif av.pipeline is AVPipeline.hq:
        f, h, w = video_latent_shape(cfg.num_frames, cfg.height // 2, cfg.width // 2)
        first = ltx2_sigmas(cfg.steps if cfg.steps is not None else av.num_inference_steps, num_tokens=f * h * w)
    else:
        first = ltx2_sigmas(cfg.steps if cfg.steps is not None else av.num_inference_steps)
    second = torch.tensor(av.stage_2_sigmas) if av.stage_2_sigmas is not None else None
    return first.to(torch.float32), second


def _file(path: str | None, what: str, hint: str) -> Path:
    """generate's `_exists` (not given, missing), and a file, not a folder."""
    from infer.generate import InputError, _exists

    p = _exists(path, what, hint)
    if not p.is_file():
        raise InputError(f"{what} {p} is a folder, not a file; {hint}")
    return p


def _images(cfg, dtype) -> list[ImageInput]:
    """Conditioning images, read and put through the official H.264 round trip (CRF model.av.image_crf)."""
    from infer.generate import InputError

    out = []
    for i, c in enumerate(cfg.conditioning):
        if c.frame >= cfg.num_frames:
            raise InputError(f"conditioning[{i}] ({c.path}): frame {c.frame} is past the last frame "
                             f"({cfg.num_frames - 1})")
        try:
            x = read_image(c.path).permute(1, 2, 0)  # (H, W, 3) in [0, 1]
        except (MediaError, OSError) as e:
            raise InputError(f"conditioning[{i}]: {e}") from None
        if min(x.shape[:2]) < 2:
            raise InputError(f"conditioning[{i}] ({c.path}): a {x.shape[1]}x{x.shape[0]} image is too small")
        if cfg.model.av.image_crf:
            x = crf_compress(x, cfg.model.av.image_crf)
        out.append(ImageInput((x * 255.0).round(), c.frame, c.strength))
    return out


def _soundtrack(cfg) -> tuple[torch.Tensor, int] | None:
    """The `audio` file's waveform (2, N) from `audio_start`, cut to the video's duration (checked to be long
    enough), and its rate; mono is duplicated to stereo."""
    from infer.generate import InputError
    from ltx.core.audio_io import read_audio

    if cfg.audio is None:
        return None
    path = _file(cfg.audio, "audio", "give a file with an audio stream (wav, mp3, m4a, an mp4, ...)")
    try:
        wave, rate = read_audio(path)
    except (MediaError, OSError) as e:
        raise InputError(f"audio: {e}") from None
    if wave.shape[0] not in (1, 2):
        raise InputError(f"audio {cfg.audio}: {wave.shape[0]} channels; LTX-2 takes mono or stereo")
    need = cfg.num_frames / cfg.fps
    start = round(cfg.audio_start * rate)
    have = (wave.shape[1] - start) / rate
    if have + 1e-9 < need:
        fit = int(max(have, 0) * cfg.fps - 1) // 8 * 8 + 1
        raise InputError(f"audio {cfg.audio} has {max(have, 0):.2f} s from {cfg.audio_start:g} s; {cfg.num_frames} "
                         f"frames at {cfg.fps:g} fps need {need:.2f} s: give num_frames <= {fit} or a longer audio")
    wave = wave[:, start: start + round(need * rate)]
    return wave.expand(2, -1) if wave.shape[0] == 1 else wave, rate


def _references(cfg, loras: list[tuple[LoRA, float]]) -> list[ReferenceInput]:
    """IC-LoRA control clips (ICLoraPipeline): read, with `downscale` from the LoRAs' metadata by default."""
    from infer.generate import InputError
    from ltx.core.media import read_video

    if not cfg.control:
        return []
    if cfg.model.av.pipeline is not AVPipeline.distilled:
        raise InputError(f"control=... (IC-LoRA) runs the official ICLoraPipeline, on the distilled checkpoint: pick "
                         f"model=ltx-2-19b-distilled or ltx-2.3-22b-distilled (not {cfg.model.name})")
    if not loras:
        raise InputError("control=... needs its IC-LoRA: pass loras=[{path: ...ic-lora.safetensors}]")
    factors = {f for lora, _ in loras if (f := lora.reference_downscale_factor) is not None}
    if len(factors) > 1:
        raise InputError(f"the LoRAs disagree on reference_downscale_factor ({sorted(factors)}); give "
                         "control[i].downscale")
    default = next(iter(factors)) if factors else 1
    out = []
    for i, c in enumerate(cfg.control):
        if c.frame != 0:
            raise InputError(f"control[{i}].frame={c.frame}: the LTX-2 IC-LoRA pipeline aligns the control with frame "
                             "0; cut the control clip instead")
        downscale = c.downscale if c.downscale is not None else default
        if (cfg.height // 2) % downscale or (cfg.width // 2) % downscale:
            raise InputError(f"control[{i}]: downscale {downscale} must divide the stage-1 size "
                             f"{cfg.height // 2}x{cfg.width // 2}")
        try:
            frames, _ = read_video(c.path, max_frames=cfg.num_frames)
        except (MediaError, OSError) as e:
            raise InputError(f"control[{i}]: {e}") from None
        out.append(ReferenceInput((frames.permute(1, 2, 3, 0) * 255.0).round(), c.strength, downscale))
    return out


def _loras(cfg, meta_transformer) -> list[tuple[LoRA, float]]:
    from infer.generate import InputError

    out = []
    for i, spec in enumerate(cfg.loras):
        try:
            lora = read_lora(_file(spec.path, f"loras[{i}].path", "give a LoRA .safetensors file"))
            check_lora(meta_transformer, lora)
        except CheckpointError as e:
            raise InputError(f"loras[{i}]: {e}") from None
        out.append((lora, spec.strength))
    return out


def run(cfg) -> list[Path]:
    """Generate one video with sound per prompt (see the module docstring for the order of work)."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from infer.generate import InputError, resolve_device, run_folder, slug, write_text
    from ltx.core.audio_io import aac_sample_rates, write_audio_contact_sheet, write_video_with_audio, write_wav

    av = cfg.model.av
    if cfg.embeddings is not None or cfg.negative_embeddings is not None:
        raise InputError("embeddings=... is for the 0.9.x (T5) presets; LTX-2 encodes prompts with Gemma 3: pass "
                         "text_encoder=/path/to/gemma-3-12b-it-qat-q4_0-unquantized")
    if cfg.vae_checkpoint:
        raise InputError("vae_checkpoint=... is not supported with the LTX-2 presets (the bundled file holds the VAEs)")
    if cfg.segments != 1:
        raise InputError("segments > 1 (chained long videos) is not supported with the LTX-2 presets")
    if not cfg.prompts:
        raise InputError("no prompts given; pass 'prompts=[\"a dog barks at the sea\"]'")

    # --- checks on headers and small files only
    device, dtype = resolve_device(cfg)
    two = av.pipeline is not AVPipeline.one_stage
    try:
        check_size(cfg.height, cfg.width, cfg.num_frames, two)
    except ValueError as e:
        raise InputError(str(e)) from None
    path = _file(cfg.checkpoint, "checkpoint", f"pass checkpoint=/path/to/{cfg.model.checkpoint}")
    try:
        bundle = ck.read(path, ("transformer", "text", "vae", "audio_vae", "vocoder"))
        metas = ck.check(bundle)
    except CheckpointError as e:
        raise InputError(str(e)) from None
    version = str(bundle.model_version or "2")
    if version.startswith("2.3") != av.model_version.startswith("2.3"):
        raise InputError(f"checkpoint {path.name} is model_version {version!r}; the {cfg.model.name} preset is for "
                         f"LTX-{av.model_version} (pick model=ltx-2{'.3-22b' if version.startswith('2.3') else '-19b'}"
                         "-dev or -distilled)")
    upsampler = None
    if two:
        up_path = _file(cfg.upsampler_checkpoint, "upsampler_checkpoint",
                        f"the {av.pipeline.value} pipeline upsamples x2: pass upsampler_checkpoint=/path/to/"
                        f"{av.spatial_upscaler}")
        try:
            upsampler = ck.read_upsampler(up_path)
        except CheckpointError as e:
            raise InputError(str(e)) from None
    distilled = None
    if av.pipeline in (AVPipeline.two_stage, AVPipeline.hq, AVPipeline.keyframes):
        lora_path = _file(cfg.distilled_lora, "distilled_lora",
                          f"stage 2 of the two-stage pipeline uses the distilled LoRA: pass distilled_lora=/path/to/"
                          f"{av.distilled_lora} (or model.av.pipeline=one_stage)")
        try:
            distilled = read_lora(lora_path)
            check_lora(metas["transformer"], distilled)
        except CheckpointError as e:
            raise InputError(f"distilled_lora: {e}") from None
    loras = _loras(cfg, metas["transformer"])
    references = _references(cfg, loras)
    video_g, audio_g = guidance(cfg)
    soundtrack = _soundtrack(cfg)
    if soundtrack is not None:
        if cfg.audio_guidance_scale is not None:
            raise InputError("audio_guidance_scale with audio=...: the soundtrack is kept as given, nothing guides it")
        audio_g = GuiderParams()  # the official audio-to-video pipeline's audio guider is off
    guided = any(g.needs_uncond or g.needs_perturbed or g.needs_isolated for g in (video_g, audio_g))
    if av.pipeline is AVPipeline.distilled and guided:
        raise InputError("the distilled pipeline samples without guidance: leave guidance_scale, stg_scale, "
                         "audio_guidance_scale and modality_scale unset (or pick the -dev preset)")
    for g in (video_g, audio_g):
        bad = [b for b in g.stg_blocks if b >= metas["transformer"].cfg.num_layers] if g.needs_perturbed else []
        if bad:
            raise InputError(f"stg_blocks {bad} out of range: the transformer has "
                             f"{metas['transformer'].cfg.num_layers} blocks")
    if (video_g.needs_uncond or audio_g.needs_uncond) and not (cfg.negative_prompt or "").strip():
        raise InputError("CFG needs a negative prompt: give negative_prompt=... or guidance_scale=1 "
                         "audio_guidance_scale=1")
    sigmas, stage2 = sigma_lists(cfg)
    if soundtrack is not None and av.pipeline is AVPipeline.hq:
        raise InputError("audio=... runs with the one_stage, two_stage and distilled pipelines, not hq")
    images = _images(cfg, dtype)
    from ltx.ltx2.text import GemmaTextEncoder

    if not (cfg.text_encoder or "").strip():
        raise InputError("no text_encoder given; pass text_encoder=/path/to/gemma-3-12b-it-qat-q4_0-unquantized "
                         "(a local folder with the model and its tokenizer)")
    from infer.generate import check_output

    check_output(cfg)

    # --- heavy work: prompts, then models
    try:
        gemma = GemmaTextEncoder.from_folder(cfg.text_encoder, dtype=dtype, device=device)
    except (OSError, ValueError) as e:
        raise InputError(f"text_encoder: {e}") from None
    needs_neg = video_g.needs_uncond or audio_g.needs_uncond
    with torch.no_grad():
        hs, mask = gemma.encode(list(cfg.prompts))
        neg_hs = gemma.encode([cfg.negative_prompt] * len(cfg.prompts)) if needs_neg else None
    del gemma
    models = ck.load(bundle, device=device, dtype=dtype)
    with torch.no_grad():
        v, a, _ = models["text"](hs, mask)
        positive = Prompt(v, a)
        negative = Prompt(*models["text"](*neg_hs)[:2]) if neg_hs is not None else None
    del models["text"]
    transformer = models["transformer"]
    if loras:
        print(f"fused {fuse_loras(transformer, loras)} weights from {len(loras)} LoRA(s)")
    if distilled is not None and av.stage_1_lora_strength:
        n = fuse_loras(transformer, [(distilled, av.stage_1_lora_strength)])
        print(f"stage 1: fused the distilled LoRA ({n} weights, strength {av.stage_1_lora_strength})")

    def stage_2():  # in place, once stage 1 is done: W + s1 d, then + (s2 - s1) d (one transformer in memory)
        if references:  # ICLoraPipeline: stage 2 is the distilled model without the IC-LoRA (or any LoRA)
            ck.reload_weights(bundle, "transformer", transformer)
            print("stage 2: the transformer's own weights again (no LoRA), as the official IC-LoRA pipeline")
            return transformer
        extra = av.distilled_lora_strength - av.stage_1_lora_strength
        if distilled is not None and extra:
            n = fuse_loras(transformer, [(distilled, extra)])
            print(f"stage 2: fused the distilled LoRA ({n} weights, now at strength {av.distilled_lora_strength})")
        return transformer

    up_module = ck.load_upsampler(upsampler, device=device, dtype=dtype) if upsampler is not None else None
    sound_latent = None
    if soundtrack is not None:  # the soundtrack through our torch mel and the audio VAE encoder
        from ltx.ltx2.audio import waveform_to_mel

        with torch.no_grad():
            mel = waveform_to_mel(soundtrack[0][None].float().to(device), soundtrack[1]).to(dtype)
            sound_latent = models["audio_vae"].encode(mel)
    av_models = AVModels(transformer, models["vae"], models["audio_vae"], models["vocoder"], up_module,
                         stage_2 if two and (av.pipeline is not AVPipeline.distilled or references) else None)
    per_step = 2 if av.pipeline is AVPipeline.hq else 1  # res_2s: 2 evaluations a step + 1 at the end
    total = per_step * (len(sigmas) - 1) + (per_step * (len(stage2) - 1) if two else 0)
    if av.pipeline is AVPipeline.hq:
        total += 2
    generator = torch.Generator(device).manual_seed(cfg.seed)
    with tqdm(total=total, desc=f"{av.pipeline.value} ({len(cfg.prompts)} prompt(s))", unit="step") as bar, \
            torch.no_grad():
        result = generate_av(av_models, positive, negative, pipeline=av.pipeline.value, height=cfg.height,
                             width=cfg.width, num_frames=cfg.num_frames, fps=cfg.fps, sigmas=sigmas.to(device),
                             stage_2_sigmas=None if stage2 is None else stage2.to(device), video_guidance=video_g,
                             audio_guidance=audio_g, images=images, references=references, soundtrack=sound_latent,
                             generator=generator,
                             dtype=dtype,
                             on_step=lambda *_: bar.update(1))
    if not (torch.isfinite(result.video).all() and torch.isfinite(result.audio).all()):
        raise InputError("the generated video or audio is not finite; nothing was written (lower the guidance, or "
                         "use precision=float32)")

    # --- outputs
    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    out_dir = run_folder(cfg)
    frames = ((result.video.float().clamp(-1, 1) + 1) / 2).cpu()  # (B, 3, F, H, W) in [0, 1]
    audio = result.audio.float().clamp(-1, 1).cpu()
    rate = result.sample_rate
    if soundtrack is not None:  # written as given (the official pipeline returns the input, not its VAE decode)
        audio, rate = soundtrack[0][None].expand(len(cfg.prompts), -1, -1).float(), soundtrack[1]
        if rate not in aac_sample_rates():  # AAC takes only some rates
            from ltx.ltx2.audio import resample

            audio, rate = resample(audio, rate, 48000), 48000
    paths = []
    for k, prompt in enumerate(cfg.prompts):
        stem = out_dir / f"{k:02d}_{slug(prompt)}"
        video_u8 = (frames[k].permute(1, 2, 3, 0) * 255).round().to(torch.uint8)  # (F, H, W, 3)
        write_video_with_audio(stem.with_suffix(".mp4"), video_u8, cfg.fps, audio[k], rate)
        write_wav(stem.with_suffix(".wav"), audio[k], rate)
        write_audio_contact_sheet(stem.with_suffix(".png"), video_u8, cfg.fps, audio[k], rate,
                                  count=cfg.contact_sheet_frames, caption=prompt)
        record = {"prompt": prompt, "index": k, "seed": cfg.seed, "pipeline": av.pipeline.value,
                  "model_version": version, "sample_rate": rate, "soundtrack": cfg.audio,
                  "audio_seconds": round(audio.shape[-1] / rate, 4),
                  "sigmas": [[round(float(s), 6) for s in sigmas]] + ([[round(float(s), 6) for s in stage2]]
                                                                     if two else []),
                  "config": resolved}
        write_text(stem.with_suffix(".yaml"), OmegaConf.to_yaml(OmegaConf.create(record)))
        paths.append(stem.with_suffix(".mp4"))
    write_text(out_dir / "prompts.json", json.dumps({p.name: q for p, q in zip(paths, cfg.prompts)}, indent=2) + "\n")
    print(f"wrote {len(paths)} video(s) with sound to {out_dir}:")
    for p in paths:
        print(f"  {p}  (+ {p.with_suffix('.wav').name}, {p.with_suffix('.png').name}, {p.with_suffix('.yaml').name})")
    return paths
