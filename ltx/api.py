"""`ltx.load_pipeline` / `ltx.open_pipeline` for every released model: the preset's family picks the API.

    import ltx

    pipe = ltx.load_pipeline()                                             # the 0.9.x demo (ltx.ltxv.api)
    pipe = ltx.load_pipeline("/w/ltx-2-19b-distilled.safetensors", model="ltx-2-19b-distilled",
                             text_encoder="/w/gemma-3-12b-it-qat-q4_0-unquantized",
                             upsampler="/w/ltx-2-spatial-upscaler-x2-1.0.safetensors")   # LTX-2 (ltx.ltx2.api)
    out = pipe("a dog barks at the sea", seed=42, height=512, width=768, num_frames=121, frame_rate=24)

LTX-Video 0.9.x presets open `ltx.ltxv.api.Pipeline` (frames), LTX-2 / 2.3 presets `ltx.ltx2.api.Pipeline`
(frames, waveform, sample rate); each takes its official pipeline's argument names. An argument the other family
owns is refused with its name. The family modules are imported on first use: `import ltx.api` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ltx.core.device import resolve_device
from ltx.core.requests import lora_specs
from ltx.presets import ModelPreset, load_preset

# LTX-2 API only
LTX2_ONLY = ("distilled_lora", "pipeline", "transformer", "temporal_upsampler", "detailing_lora", "hdr_lora")
LTXV_ONLY: tuple[str, ...] = ()  # and only the 0.9.x API (`vae` is LTX-2.5's diffusion-VAE file for LTX-2)



def preset_of(model: str | os.PathLike | ModelPreset | None) -> ModelPreset:
    """A preset by name, path or object; None = the bundled demo ("ltx-demo")."""
    if model is not None and not isinstance(model, str | os.PathLike | ModelPreset):
        raise ValueError(f"model must be a preset name (e.g. 'ltx-2-19b-distilled'), a preset .yaml path or a "
                         f"ModelPreset, got {model!r} ({type(model).__name__})")
    return model if isinstance(model, ModelPreset) else load_preset(model or "ltx-demo")


def check_arguments(**paths) -> None:
    """The file arguments of open/load_pipeline: each None or a path; `loras` as `ltx.core.requests.lora_specs`."""
    lora_specs(paths.pop("loras"))
    checkpoint = paths.get("checkpoint")
    if isinstance(checkpoint, list | tuple):  # LTX-2.5's split checkpoints: one file per component
        for i, value in enumerate(checkpoint):
            paths[f"checkpoint[{i}]"] = value
        paths.pop("checkpoint")
        if not checkpoint:
            raise ValueError("checkpoint is an empty list; give the component files (or one file, or a folder)")
    for name, value in paths.items():
        if value is not None and not isinstance(value, str | os.PathLike):
            raise ValueError(f"{name} must be a path (str or os.PathLike) or None, got {value!r} "
                             f"({type(value).__name__})")


def open_pipeline(checkpoint: str | os.PathLike | Sequence | None = None, *,
                  model: str | os.PathLike | ModelPreset | None = None,
                  vae: str | os.PathLike | None = None, upsampler: str | os.PathLike | None = None,
                  text_encoder: str | os.PathLike | None = None, loras: Sequence = (),
                  distilled_lora: str | os.PathLike | None = None, pipeline: str | None = None,
                  device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                  transformer: str | os.PathLike | None = None, temporal_upsampler: str | os.PathLike | None = None,
                  detailing_lora=None, hdr_lora=None):
    """The family's pipeline with its modules on `meta`, headers and LoRAs checked; `.check(...)` validates a
    request before any weights load, `.load()` loads them. See ltx.ltxv.api / ltx.ltx2.api for the arguments."""
    check_arguments(checkpoint=checkpoint, vae=vae, upsampler=upsampler, text_encoder=text_encoder,
                    distilled_lora=distilled_lora, loras=loras, transformer=transformer,
                    temporal_upsampler=temporal_upsampler)
    if detailing_lora is not None:  # a path or (path, strength)
        try:
            lora_specs([detailing_lora])
        except ValueError as e:  # its message names loras[0]
            raise ValueError(f"detailing_lora: {str(e).split(': ', 1)[-1]} (give a path or (path, strength))") from None
    preset = preset_of(model)
    _refuse_other_family(preset, vae=vae, distilled_lora=distilled_lora, pipeline=pipeline, transformer=transformer,
                         temporal_upsampler=temporal_upsampler, detailing_lora=detailing_lora, hdr_lora=hdr_lora)
    if preset.is_ltx2:
        from ltx.ltx2 import api as ltx2_api

        return ltx2_api.open_pipeline(checkpoint, model=preset, upsampler=upsampler, text_encoder=text_encoder,
                                      distilled_lora=distilled_lora, loras=loras, pipeline=pipeline, device=device,
                                      dtype=dtype, transformer=transformer, vae_decoder=vae,
                                      temporal_upsampler=temporal_upsampler, detailing_lora=detailing_lora,
                                      hdr_lora=hdr_lora)
    from ltx.ltxv import api as ltxv_api

    resolve_device(device, dtype)  # an unavailable device fails before anything is read (0.9.x: `.load(device)`)
    return ltxv_api.open_pipeline(checkpoint, model=preset, vae=vae, upsampler=upsampler, text_encoder=text_encoder,
                                  loras=loras)


def load_pipeline(checkpoint: str | os.PathLike | Sequence | None = None, *,
                  model: str | os.PathLike | ModelPreset | None = None,
                  vae: str | os.PathLike | None = None, upsampler: str | os.PathLike | None = None,
                  text_encoder: str | os.PathLike | None = None, loras: Sequence = (),
                  distilled_lora: str | os.PathLike | None = None, pipeline: str | None = None,
                  device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                  transformer: str | os.PathLike | None = None, temporal_upsampler: str | os.PathLike | None = None,
                  detailing_lora=None, hdr_lora=None):
    """`open_pipeline(...).load()`: the family's pipeline with its weights on `device`."""
    pipe = open_pipeline(checkpoint, model=model, vae=vae, upsampler=upsampler, text_encoder=text_encoder,
                         loras=loras, distilled_lora=distilled_lora, pipeline=pipeline, device=device, dtype=dtype,
                         transformer=transformer, temporal_upsampler=temporal_upsampler,
                         detailing_lora=detailing_lora, hdr_lora=hdr_lora)
    return pipe.load() if preset_of(model).is_ltx2 else pipe.load(device, dtype)  # LTX-2 takes the device at open


def _refuse_other_family(preset: ModelPreset, **given) -> None:
    other = LTXV_ONLY if preset.is_ltx2 else LTX2_ONLY
    named = [name for name in other if given.get(name) is not None]
    if named:
        family = "LTX-Video 0.9.x" if preset.is_ltx2 else "LTX-2"
        raise ValueError(f"{', '.join(named)}: only the {family} presets take it; model={preset.name} is "
                         f"{'LTX-2' if preset.is_ltx2 else 'LTX-Video 0.9.x'}")
