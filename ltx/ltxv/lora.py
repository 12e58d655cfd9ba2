"""LTX-Video 0.9.x LoRAs: the shared engine (ltx/core/lora.py) under 0.9.x's policy.

The policy: alpha applies (strength * alpha / rank * B @ A; ComfyUI's `.alpha` tensors, our header, a peft config,
else alpha = rank), and diffusers' module names are the DiT's except `proj_in` = `patchify_proj` and `time_embed` =
`adaln_single` (ltx/ltxv/keys_diffusers.py; every `transformer_blocks.*` Linear has our name); kohya's flattened
names (`lora_unet_transformer_blocks_0_attn1_to_q`) map back through the DiT's Linear names. The functions that
read or write files are bound to it here; everything else is the engine's, re-exported so that the 0.9.x apps
import their LoRA API from one place.

Which tool loads which format (tests/test_lora_interop.py): "comfy" and "kohya" -> ComfyUI; "diffusers" ->
diffusers' `LTXPipeline.load_lora_weights(folder)` (every module, alpha included); "trainer" -> LTX-Video-Trainer,
and diffusers' `load_lora_weights(file)` for the `transformer_blocks.*`, `caption_projection.*` and `proj_out`
adapters only (diffusers renames no `diffusion_model.` name, so `patchify_proj` / `adaln_single.*` adapters are
dropped there); diffusers refuses "comfy" files (their `.alpha` keys) and finds nothing in "kohya" ones: convert
them with `tools/convert_weights.py FILE OUT --to diffusers`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ltx.core import lora as engine
from ltx.core.keymap import invert, rename
from ltx.core.lora import (  # noqa: F401  (re-exported: the 0.9.x LoRA API)
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
from ltx.ltxv.keys_diffusers import DIT_FROM_DIFFUSERS
from ltx.ltxv.transformer import DiT, DiTConfig


def from_diffusers_name(module: str) -> str:
    """diffusers' LTX transformer module name -> ours (the official checkpoint's)."""
    return next(iter(rename([module + ".weight"], DIT_FROM_DIFFUSERS)))[: -len(".weight")]


def to_diffusers_name(module: str) -> str:
    return next(iter(rename([module + ".weight"], invert(DIT_FROM_DIFFUSERS))))[: -len(".weight")]


@functools.cache
def _kohya_names():
    with torch.device("meta"):
        dit = DiT(DiTConfig(num_layers=1))  # one block: the resolver generalises its index
    return kohya_resolver(n for n, m in dit.named_modules() if isinstance(m, nn.Linear))


def from_kohya_name(flat: str) -> str | None:
    """kohya's 'transformer_blocks_0_attn1_to_out_0' -> 'transformer_blocks.0.attn1.to_out.0'; None if unknown."""
    return _kohya_names()(flat)


POLICY = LoRAPolicy(from_diffusers=from_diffusers_name, to_diffusers=to_diffusers_name, from_kohya=from_kohya_name,
                    use_alpha=True)


def read_lora(path: str | os.PathLike) -> LoRAWeights:
    """Read a 0.9.x LoRA file or folder of any layout (ltx/core/lora_formats.py) into canonical form."""
    return engine.read_lora(path, POLICY)


load_lora_file = read_lora  # the name the 0.9.x apps use


def load_loras(model: nn.Module, loras: list[tuple[str | os.PathLike, float]], *,
               merge: bool = False) -> list[LoRAReport]:
    """`ltx.core.lora.load_loras` with 0.9.x's names."""
    return engine.load_loras(model, loras, merge=merge, policy=POLICY)


def save_lora(path: str | os.PathLike, source: nn.Module | LoRAWeights | Mapping[str, Tensor], **options) -> Path:
    """`ltx.core.lora.save_lora` with 0.9.x's names (options: format, name, rank, alpha, targets, base_model,
    extra_metadata, overwrite)."""
    return engine.save_lora(path, source, policy=POLICY, **options)


def write_lora(path: str | os.PathLike, weights: LoRAWeights, format: str, **options) -> Path:
    """`ltx.core.lora_formats.write_lora` with 0.9.x's names."""
    return _write_any(path, weights, format, policy=POLICY, **options)
