"""LTX-2 LoRAs: the shared engine (ltx/core/lora.py) under LTX-2's policy.

Files (official LTX-2 LoRAs, ltx-trainer, ComfyUI): `diffusion_model.<module>.lora_A.weight` (r, in) and
`.lora_B.weight` (out, r), where <module> is an AVTransformer key (`transformer_blocks.3.attn1.to_q`,
`audio_ff.net.2`, ...); `model.diffusion_model.` and `transformer.` prefixes and bare keys read too (names kept as
they are). IC-LoRAs carry `reference_downscale_factor` in the safetensors metadata
(`LoRAWeights.reference_downscale_factor`).

The policy: no alpha. Every module's alpha is read as its rank, whatever the file says, so `fuse_loras` adds
W' = W + sum_i (B_i * s_i) @ A_i, bitwise ltx-core's `apply_loras` (ltx_core/loader/fuse_loras.py) in bf16.

    lora = read_lora(path)                    # LoRAWeights
    check_lora(transformer_on_meta, lora)     # names and shapes, before any weights load
    fuse_loras(transformer, [(lora, 0.8)])    # in place; returns how many weights changed
"""

from __future__ import annotations

import os

from ltx.core import lora as engine
from ltx.core.lora import (  # noqa: F401  (re-exported: the LTX-2 LoRA API)
    LoRAError,
    LoRAPolicy,
    LoRAWeights,
    check_lora,
    fuse_loras,
    reference_downscale,
)

POLICY = LoRAPolicy(use_alpha=False)


def read_lora(path: str | os.PathLike) -> LoRAWeights:
    """Read an LTX-2 LoRA file (or folder) into canonical form, alpha = rank everywhere."""
    return engine.read_lora(path, POLICY)

