"""LTX-2 LoRAs: the shared engine (ltx/core/lora.py) under LTX-2's policy.

Module names are AVTransformer keys = the official checkpoint's (`transformer_blocks.3.attn1.to_q`,
`audio_attn1.to_v`, `audio_to_video_attn.to_out.0`, `video_to_audio_attn.to_k`, `audio_ff.net.2`, ...).
Target patterns (`LoRAConfig.targets`, `lora_targets`; the language is ltx/core/lora.py's, the official trainer's):
"to_q" selects every stream's query, "attn1.to_q" the video self-attention only, "audio_attn1.to_q" the audio one,
"audio_to_video_attn.*" / "video_to_audio_attn.*" the cross-modal attentions, "audio_*" every audio Linear of the
blocks; a pattern that selects nothing is an error listing valid names.

Files (`save_lora(path, model_or_tensors, format=...)`):
- "trainer" (default): the official ltx-trainer layout, `diffusion_model.<module>.lora_A.weight` (r, in) /
  `.lora_B.weight` (out, r), no alpha tensors; what ltx-core / ltx-pipelines and ComfyUI load.
- "comfy": the same plus `diffusion_model.<module>.alpha` = rank; "kohya": `lora_unet_<module_with_underscores>`
  (ComfyUI); "ltx": bare names. Not "diffusers": diffusers' LTX-2 loader reads "trainer" files itself.
IC-LoRAs carry `reference_downscale_factor` in the metadata (`extra_metadata=`; read back as
`LoRAWeights.reference_downscale_factor`, the official trainer's key and value style).

The policy: no alpha. ltx-core adds strength * B @ A whatever the file says, so every module's alpha is read as
its rank, and files are written with alpha = rank: an adapter trained with alpha != rank has alpha / rank multiplied
into B when written (`ltx.core.lora_formats.bake_alpha`), so ltx-core, ComfyUI and we add the delta it trained
(refusing would throw away a finished run; writing the true alpha would make ComfyUI and ltx-core disagree).
`fuse_loras` adds W' = W + sum_i (B_i * s_i) @ A_i, bitwise ltx-core's `apply_loras` (ltx_core/loader/fuse_loras.py).

    lora = read_lora(path)                    # LoRAWeights
    check_lora(transformer_on_meta, lora)     # names and shapes, before any weights load
    fuse_loras(transformer, [(lora, 0.8)])    # in place; returns how many weights changed
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ltx.core import lora as engine
from ltx.core.lora import (  # noqa: F401  (re-exported: the LTX-2 LoRA API)
    LoRAConfig,
    LoRAError,
    LoRALinear,
    LoRAPolicy,
    LoRAReport,
    LoRAWeights,
    apply_lora_weights,
    check_lora,
    freeze_base,
    fuse_loras,
    inject_lora,
    lora_modules,
    lora_parameters,
    lora_state_dict,
    lora_targets,
    lora_weights,
    merge_lora,
    reference_downscale,
    remove_lora,
    set_strength,
    unmerge_lora,
)
from ltx.core.lora_formats import kohya_resolver
from ltx.core.lora_formats import write_lora as _write_any
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig

FORMATS = ("trainer", "comfy", "kohya", "ltx")  # what LTX-2 LoRAs are written as


@functools.cache
def _kohya_names():
    """kohya name -> ours, from one block of both transformer layouts (19B and 2.3's gated attention and
    prompt AdaLN), built on meta."""
    names = []
    for cfg in (AVTransformerConfig(num_layers=1), AVTransformerConfig(
            num_layers=1, apply_gated_attention=True, cross_attention_adaln=True, caption_proj_before_connector=True)):
        with torch.device("meta"):
            model = AVTransformer(cfg)
        names += [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return kohya_resolver(dict.fromkeys(names))


def from_kohya_name(flat: str) -> str | None:
    """kohya's 'transformer_blocks_0_audio_attn1_to_q' -> 'transformer_blocks.0.audio_attn1.to_q'; None if unknown."""
    return _kohya_names()(flat)


POLICY = LoRAPolicy(from_kohya=from_kohya_name, use_alpha=False)


def read_lora(path: str | os.PathLike) -> LoRAWeights:
    """Read an LTX-2 LoRA file (or folder) into canonical form, alpha = rank everywhere."""
    return engine.read_lora(path, POLICY)


def load_loras(model: nn.Module, loras: list[tuple[str | os.PathLike, float]], *,
               merge: bool = False) -> list[LoRAReport]:
    """`ltx.core.lora.load_loras` under LTX-2's policy."""
    return engine.load_loras(model, loras, merge=merge, policy=POLICY)


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"LTX-2 LoRAs are written as {FORMATS} (trainer: the official ltx-trainer layout), not "
                         f"{format!r}" + ("; diffusers' LTX2 loader reads 'trainer' files" if format == "diffusers"
                                          else ""))


def save_lora(path: str | os.PathLike, source: nn.Module | LoRAWeights | Mapping[str, Tensor], *,
              format: str = "trainer", **options) -> Path:
    """`ltx.core.lora.save_lora` under LTX-2's policy (alpha baked into B, written alpha = rank). `source`: an
    AVTransformer with adapter `name`, a LoRAWeights, or canonical tensors `<module>.lora_{A,B}.weight` (`alpha`:
    the training alpha, default rank). Options: name, rank, alpha, targets, base_model, extra_metadata (e.g.
    {"reference_downscale_factor": "2"} for an IC-LoRA), overwrite."""
    _check_format(format)
    return engine.save_lora(path, source, format=format, policy=POLICY, **options)


def write_lora(path: str | os.PathLike, weights: LoRAWeights, format: str = "trainer", **options) -> Path:
    """`ltx.core.lora_formats.write_lora` under LTX-2's policy."""
    _check_format(format)
    return _write_any(path, weights, format, policy=POLICY, **options)
