"""`infer.generate` for the LTX-2 presets (model=ltx-2-19b-dev, ltx-2.3-22b-distilled, ...): video + sound.

    python -m infer.generate model=ltx-2-19b-dev checkpoint=/w/ltx-2-19b-dev.safetensors \
        upsampler_checkpoint=/w/ltx-2-spatial-upscaler-x2-1.0.safetensors \
        distilled_lora=/w/ltx-2-19b-distilled-lora-384.safetensors \
        text_encoder=/w/gemma-3-12b-it-qat-q4_0-unquantized 'prompts=["a dog barks at the sea"]'

Parse the options, run the preset's official pipeline (`model.av.pipeline`: one_stage, two_stage, hq, keyframes,
distilled) through ltx.ltx2.api, and write per prompt into <output_dir>/<run>/: `NN_<prompt>.mp4` (H.264 + AAC
audio), `.wav` (16-bit PCM at the vocoder's rate), `.png` (a contact sheet: frames above the waveform and a
log-mel spectrogram on the same time axis) and `.yaml` (the resolved config, the prompt, the seed, the sigmas).

Order of work, as for 0.9.x: every check that can fail on bad input reads headers and small files only
(`open_pipeline` + `check`: the bundle's components on `meta`, the model version, the upsampler, LoRA targets and
shapes, sizes, images, the control clips, the soundtrack; here: the paths the options name and the output
folder); then Gemma encodes the prompts and is freed; then the models load (ltx.ltx2.api stages the LoRAs).

Overrides on top of the preset: steps, timesteps, guidance_scale / stg_scale / rescaling_scale / stg_blocks
(video), audio_guidance_scale, modality_scale (both modalities), conditioning (images: frame 0 = image-to-video,
later frames = keyframes), control (IC-LoRA clips, distilled presets), loras (fused into both stages),
distilled_lora, seed, size, fps; and `audio=FILE` (`audio_start`): audio-to-video, as A2VidPipelineTwoStage (the
soundtrack's latent fixed in every stage, audio guidance off, the input sound written to the outputs, cut to the
video's duration); `video=FILE`: video-to-audio with a one-stage preset (the clip's latent fixed, video guidance
off, the input frames written to the outputs with the generated sound).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from infer.output import (
    InputError,
    check_output,
    existing,
    existing_file,
    output_folder,
    resolve_device,
    write_text,
)
from infer.weights import load_weights, text_device
from ltx.core.audio_io import aac_sample_rates, write_audio_contact_sheet, write_video_with_audio, write_wav
from ltx.core.media import slug
from ltx.core.offload import tensors_to
from ltx.core.parallel import Dist
from ltx.core.sequence_parallel import start_parallel
from ltx.ltx2 import api
from ltx.ltx2.audio import resample
from ltx.ltx2.diffusion_decoder import DiffusionDecodeTiling


def guider_overrides(cfg) -> tuple[dict | None, dict | None]:
    """The command line's guidance options as `video_guider_params` / `audio_guider_params` field changes (None:
    the preset's). With a soundtrack only audio_guidance_scale reaches the audio guider (which is off)."""
    video = {name: value for name, value in (
        ("cfg_scale", cfg.guidance_scale), ("stg_scale", cfg.stg_scale), ("rescale_scale", cfg.rescaling_scale),
        ("stg_blocks", cfg.stg_blocks), ("modality_scale", cfg.modality_scale)) if value is not None}
    if cfg.audio is not None:
        audio = {"cfg_scale": cfg.audio_guidance_scale} if cfg.audio_guidance_scale is not None else {}
    else:
        audio = {name: value for name, value in (
            ("cfg_scale", cfg.audio_guidance_scale), ("stg_blocks", cfg.stg_blocks),
            ("modality_scale", cfg.modality_scale)) if value is not None}
    return video or None, audio or None


def open_request(cfg) -> tuple[api.Pipeline, api.Request, dict]:
    """The opened pipeline (weights not loaded), the validated request and its arguments but num_frames (to check
    again with the duration head's length), or InputError naming the option."""
    av = cfg.model.av
    if cfg.embeddings is not None or cfg.negative_embeddings is not None:
        raise InputError("embeddings=... is for the 0.9.x (T5) presets; LTX-2 encodes prompts with Gemma 3: pass "
                         "text_encoder=/path/to/gemma-3-12b-it-qat-q4_0-unquantized")
    if cfg.segments != 1:
        raise InputError("segments > 1 (chained long videos) is not supported with the LTX-2 presets")
    if not cfg.prompts:
        raise InputError("no prompts given; pass 'prompts=[\"a dog barks at the sea\"]'")
    device, dtype = resolve_device(cfg)
    checkpoint = existing(cfg.checkpoint, "checkpoint", f"pass checkpoint=/path/to/{cfg.model.checkpoint} (a bundled "
                          "file, or a folder of LTX-2.5 component files)")
    vae_decoder = None if not cfg.vae_checkpoint else existing_file(
        cfg.vae_checkpoint, "vae_checkpoint", "LTX-2.5: the diffusion-VAE file (ltx-2.5-video-vae-bf16.safetensors)")
    transformer = None if cfg.transformer is None else existing_file(
        cfg.transformer, "transformer", "give the transformer's own file (.gguf, or a quantized .safetensors)")
    upsampler = distilled_lora = None
    if av.pipeline.two_stages:
        upsampler = existing_file(cfg.upsampler_checkpoint, "upsampler_checkpoint",
                                  f"the {av.pipeline.value} pipeline upsamples x2: pass upsampler_checkpoint=/path/to/"
                                  f"{av.spatial_upscaler}")
    if av.pipeline.uses_distilled_lora:
        distilled_lora = existing_file(cfg.distilled_lora, "distilled_lora",
                                       f"stage 2 of the two-stage pipeline uses the distilled LoRA: pass "
                                       f"distilled_lora=/path/to/{av.distilled_lora} (or model.av.pipeline=one_stage)")
    temporal = None if cfg.temporal_upsampler_checkpoint is None else existing_file(
        cfg.temporal_upsampler_checkpoint, "temporal_upsampler_checkpoint",
        f"LTX-2.5 DFR: the temporal x2 upscaler ({av.temporal_upscaler or 'ltx-2.5-latent-temporal-upscaler-x2'})")
    detailing = None if cfg.detailing_lora is None else (existing_file(
        cfg.detailing_lora, "detailing_lora", "LTX-2.5 DFR: the x2 detailing IC-LoRA file"),
        cfg.detailing_lora_strength)
    hdr_lora = None if cfg.hdr_lora is None else existing_file(
        cfg.hdr_lora, "hdr_lora", "the HDR IC-LoRA file (ltx-2.3-22b-ic-lora-hdr-*.safetensors)")
    loras = [(existing_file(spec.path, f"loras[{i}].path", "give a LoRA .safetensors file"), spec.strength)
             for i, spec in enumerate(cfg.loras)]
    images = [(existing(c.path, f"conditioning[{i}]", "give an image file"), c.frame, c.strength)
              for i, c in enumerate(cfg.conditioning)]
    control = []
    if cfg.control and cfg.quantize is not None:
        raise InputError(f"quantize={cfg.quantize} with control videos: the IC-LoRA pipeline reloads the transformer's "
                         "file weights for stage 2; use a quantized checkpoint instead (tools/convert_weights.py --to)")
    for i, c in enumerate(cfg.control):
        if c.frame != 0:
            raise InputError(f"control[{i}].frame={c.frame}: the LTX-2 IC-LoRA pipeline aligns the control with frame "
                             "0; cut the control clip instead")
        control.append((existing(c.path, f"control[{i}]", "give a control video"), c.strength, c.downscale))
    if cfg.audio is not None:
        existing_file(cfg.audio, "audio", "give a file with an audio stream (wav, mp3, m4a, an mp4, ...)")
    if cfg.video is not None:
        existing_file(cfg.video, "video", "give a video file (mp4, webm, ...) whose soundtrack to generate")
    text_encoder = existing(cfg.text_encoder, "text_encoder", "pass text_encoder=/path/to/gemma-3-12b-it-qat-q4_0-"
                            "unquantized (a local folder with the model and its tokenizer; LTX-2.5: the packed "
                            "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors)")
    video_guidance, audio_guidance = guider_overrides(cfg)
    try:
        pipe = api.open_pipeline(checkpoint, model=cfg.model, text_encoder=text_encoder, upsampler=upsampler,
                                 distilled_lora=distilled_lora, loras=loras, device=device, dtype=dtype,
                                 transformer=transformer, vae_decoder=vae_decoder,
                                 # vae_tiling: the diffusion decoder decodes in ltx-core's default tiles
                                 **({"vae_decoder_tiling": DiffusionDecodeTiling()}
                                    if cfg.vae_tiling and vae_decoder is not None else {}),
                                 **({"temporal_upsampler": temporal} if temporal is not None else {}),
                                 **({"detailing_lora": detailing} if detailing is not None else {}),
                                 **({"hdr_lora": hdr_lora} if hdr_lora is not None else {}))
        args = dict(height=cfg.height, width=cfg.width, frame_rate=cfg.fps, num_inference_steps=cfg.steps,
                    sigmas=cfg.timesteps, video_guider_params=video_guidance, audio_guider_params=audio_guidance,
                    images=images, video_conditioning=control, audio_path=cfg.audio, audio_start_time=cfg.audio_start,
                    video_path=cfg.video, negative_prompt=cfg.negative_prompt, hdr=cfg.hdr,
                    **({"temporal_rounds": cfg.temporal_rounds} if cfg.temporal_rounds else {}),
                    **({"spatial_epilogue": True} if cfg.spatial_epilogue else {}),
                    **({"hdr_high_quality": True} if cfg.hdr_high_quality else {}))
        request = pipe.check(num_frames=cfg.num_frames, **args)
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError
        raise InputError(str(e)) from None
    return pipe, request, args


def enhance_prompts(cfg, pipe: api.Pipeline) -> list[str]:
    """enhance_prompt=true: each prompt rewritten by a local instruct Gemma (greedy), printed; InputError naming
    the option when there is none to use."""
    from ltx.ltx2.enhance import PromptEnhancer

    folder = cfg.prompt_enhancer
    if folder is None:
        if api.family(pipe.model_version) == "2.5":
            raise InputError("enhance_prompt=true with LTX-2.5: its Gemma 4 text encoder is not trained for "
                             "enhancement; give prompt_enhancer=/path/to/a Gemma 4 instruct folder (gemma-4-*-it)")
        folder = cfg.text_encoder  # LTX-2 / 2.3: the Gemma 3 text encoder doubles as the enhancer
    folder = existing(folder, "prompt_enhancer", "give a local instruct Gemma folder (config.json, weights, tokenizer)")
    try:
        enhancer = PromptEnhancer.from_folder(folder, dtype=pipe.dtype, device=pipe.device)
        out = [enhancer.enhance(p) for p in cfg.prompts]
    except (OSError, ValueError) as e:
        raise InputError(f"prompt_enhancer: {e}") from None
    del enhancer
    for before, after in zip(cfg.prompts, out):
        print(f"enhanced prompt: {before!r} -> {after!r}")
    return out


def run(cfg, frames_given: bool = True) -> list[Path]:
    """Generate one video with sound per prompt (see the module docstring for the order of work)."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    pipe, request, request_args = open_request(cfg)
    check_output(cfg)
    hdr = None
    if cfg.hdr is not None or pipe.hdr_lora is not None:  # the HDR IC-LoRA: linear Rec.709 EXR frames by default
        from ltx.ltx2.hdr import HDRColorSpace, write_hdr_outputs

        try:
            hdr = HDRColorSpace.parse(cfg.hdr or "srgb_linear")
        except ValueError as e:
            raise InputError(f"hdr={cfg.hdr!r}: {e} (lower case: srgb_linear, acescg, acescct)") from None
        if cfg.height % 2 or cfg.width % 2 or min(cfg.height, cfg.width) < 16:
            raise InputError(f"hdr: the HLG master needs even sizes of at least 16 pixels, got "
                             f"{cfg.width}x{cfg.height}")
    originals = list(cfg.prompts)
    device, pipe.device = pipe.device, text_device(cfg, pipe.device)  # Gemma's device (text_encoder_device=cpu)
    try:
        if cfg.enhance_prompt:  # the enhancer is loaded, run and freed before Gemma encodes
            cfg = dataclasses.replace(cfg, prompts=enhance_prompts(cfg, pipe))
        text = tensors_to(pipe.encode_prompts(list(cfg.prompts), request.negative_prompt), device)
    except ValueError as e:
        raise InputError(str(e)) from None
    finally:
        pipe.device = device
    load_weights(pipe, cfg, pipe.device)  # offload / quantize: loaded in CPU memory first
    if not frames_given and pipe.has_duration_head:  # LTX-2.5: the clip length the prompt describes
        if len(cfg.prompts) != 1:
            raise InputError(f"{len(cfg.prompts)} prompts: the duration head predicts one length per prompt; give "
                             "num_frames=N (8k + 1) for several prompts")
        try:
            request = pipe.check(num_frames=pipe.predict_num_frames(text, cfg.fps), **request_args)
            cfg = dataclasses.replace(cfg, num_frames=request.num_frames)  # recorded in the yaml as used
        except ValueError as e:
            raise InputError(str(e)) from None
    # parallel=sp: the transformer sharded (the pipelines decode untiled: every rank decodes); parallel_cfg splits
    # the guidance passes, which must then be rows of one batch
    pipe.batch_passes = cfg.parallel == "sp" and cfg.parallel_cfg
    world = Dist() if cfg.parallel == "none" else start_parallel(
        pipe.modules["transformer"], mode=cfg.parallel_mode, cfg=cfg.parallel_cfg)
    with tqdm(total=request.num_evaluations, desc=f"{request.pipeline.value} ({len(cfg.prompts)} prompt(s))",
              unit="step", disable=not world.is_main) as bar:
        try:
            out = pipe.generate(text, request, seed=cfg.seed, progress=lambda: bar.update(1), cache=cfg.cache)
        except api.NonFiniteError as e:
            raise InputError(f"{e}; nothing was written") from None

    if not world.is_main:  # every rank holds the result; rank 0 writes it
        world.destroy()
        return []

    # --- outputs
    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    frames = out.frames.cpu()  # (B, 3, F, H, W) in [0, 1]
    audio, rate = out.waveform.cpu(), out.sample_rate
    if rate not in aac_sample_rates():  # a soundtrack at a rate AAC does not take
        audio, rate = resample(audio, rate, 48000), 48000
    sigmas = [request.sigmas] + ([request.stage_2_sigmas] if request.stage_2_sigmas is not None else [])
    fps = cfg.fps if out.fps is None else out.fps  # DFR's temporal rounds double it
    names = []
    with output_folder(cfg) as folder:  # staged, renamed into place when every file is written
        for k, prompt in enumerate(cfg.prompts):
            stem = folder.path / f"{k:02d}_{slug(originals[k])}"
            video_u8 = (frames[k].permute(1, 2, 3, 0) * 255).round().to(torch.uint8)  # (F, H, W, 3)
            write_video_with_audio(stem.with_suffix(".mp4"), video_u8, fps, audio[k], rate)
            write_wav(stem.with_suffix(".wav"), audio[k], rate)
            write_audio_contact_sheet(stem.with_suffix(".png"), video_u8, fps, audio[k], rate,
                                      count=cfg.contact_sheet_frames, caption=prompt)
            if out.hdr_video is not None:  # the HDR IC-LoRA's decoded LogC3 codes: EXR frames + the HLG master
                write_hdr_outputs(stem.with_name(stem.name + "_hdr.mp4"), out.hdr_video[k].cpu(), fps, hdr,
                                  transfer=out.hdr_transfer)
            elif hdr is not None:  # the decoded pixels in [-1, 1] as ACEScct codes: EXR frames + the HLG master
                write_hdr_outputs(stem.with_name(stem.name + "_hdr.mp4"), frames[k] * 2 - 1, fps, hdr)
            record = {"prompt": prompt, "index": k, "seed": cfg.seed, "pipeline": request.pipeline.value,
                      **({"original_prompt": originals[k]} if cfg.enhance_prompt else {}),
                      "model_version": pipe.model_version, "sample_rate": rate, "soundtrack": cfg.audio,
                      "video_input": cfg.video,
                      "audio_seconds": round(audio.shape[-1] / rate, 4), "frames": int(frames.shape[2]),
                      "fps": fps,
                      "sigmas": [[round(float(s), 6) for s in stage] for stage in sigmas], "config": resolved,
                      "cache_stats": out.cache_stats}  # forwards computed / skipped (config.cache: the policy)
            write_text(stem.with_suffix(".yaml"), OmegaConf.to_yaml(OmegaConf.create(record)))
            names.append(stem.with_suffix(".mp4").name)
        write_text(folder.path / "prompts.json", json.dumps(dict(zip(names, cfg.prompts)), indent=2) + "\n")
    paths = [folder.final / n for n in names]
    print(f"wrote {len(paths)} video(s) with sound to {folder.final}:")
    for p in paths:
        print(f"  {p}  (+ {p.with_suffix('.wav').name}, {p.with_suffix('.png').name}, {p.with_suffix('.yaml').name})")
    world.destroy()
    return paths
