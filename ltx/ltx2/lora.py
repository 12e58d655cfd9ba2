"""LTX-2 LoRAs: read the official / trainer files and fuse them into a loaded AVTransformer.

Files (ltx-trainer, ComfyUI): `diffusion_model.<module>.lora_A.weight` (r, in) and `.lora_B.weight` (out, r),
where <module> is an AVTransformer key (`transformer_blocks.3.attn1.to_q`, `audio_ff.net.2`, ...); the
`transformer.` prefix (diffusers) and bare keys are read too. IC-LoRAs carry `reference_downscale_factor` in
the safetensors metadata.

Fusion as ltx-core's `apply_loras` (ltx_core/loader/fuse_loras.py): W' = W + sum_i (B_i * s_i) @ A_i, each
product rounded to the weight's dtype before the sum, **no alpha / rank scaling** (the trainer uses alpha =
rank). Unlike ltx-core, which fuses only bf16 / fp8 weights and silently skips LoRA keys that match no
weight, every pair here must name a Linear of the model with matching shapes, and fp32 weights are fused
too (in fp32).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ltx.core.checkpoint import CheckpointError, SafetensorsReader

_PREFIXES = ("diffusion_model.", "transformer.", "model.diffusion_model.")


@dataclass
class LoRA:
    """One LoRA file: per target module (our key, without `.weight`), its A (r, in) and B (out, r)."""

    path: Path
    pairs: dict[str, tuple[Tensor, Tensor]]
    metadata: dict[str, str]

    @property
    def rank(self) -> int:
        return max(a.shape[0] for a, _ in self.pairs.values())

    @property
    def reference_downscale_factor(self) -> int | None:
        raw = self.metadata.get("reference_downscale_factor")
        return None if raw is None else int(float(raw))


def read_lora(path: str | os.PathLike) -> LoRA:
    """Read a LoRA file; clear errors for files that are not LoRAs or whose pairs are incomplete."""
    reader = SafetensorsReader(path)
    pairs: dict[str, dict[str, Tensor]] = {}
    stray = []
    for key in reader.keys():
        name = key
        for p in _PREFIXES:
            if name.startswith(p):
                name = name[len(p):]
                break
        for part in ("lora_A", "lora_B"):
            suffix = f".{part}.weight"
            if name.endswith(suffix):
                pairs.setdefault(name[: -len(suffix)], {})[part] = reader.get(key)
                break
        else:
            if not key.endswith(".alpha"):
                stray.append(key)
    if not pairs:
        raise CheckpointError(f"{reader.path}: no LoRA tensors (`<module>.lora_A.weight` / `.lora_B.weight`); "
                              f"first keys: {reader.keys()[:5]}")
    if stray:
        raise CheckpointError(f"{reader.path}: {len(stray)} keys are not LoRA weights, e.g. {stray[:3]}")
    out = {}
    for name, ab in pairs.items():
        if set(ab) != {"lora_A", "lora_B"}:
            raise CheckpointError(f"{reader.path}: {name} has only {sorted(ab)}")
        a, b = ab["lora_A"], ab["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{reader.path}: {name}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                                  "do not form a (out, r) @ (r, in) pair")
        out[name] = (a, b)
    return LoRA(reader.path, out, dict(reader.metadata))


def check_lora(model: nn.Module, lora: LoRA) -> None:
    """Every pair targets a Linear of `model` with its shape (works on `meta` modules)."""
    modules = dict(model.named_modules())
    missing = [n for n in lora.pairs if not isinstance(modules.get(n), nn.Linear)]
    if missing:
        raise CheckpointError(f"{lora.path}: {len(missing)} LoRA targets are not Linear layers of this "
                              f"{type(model).__name__}, e.g. {missing[:3]} (a LoRA for another model?)")
    bad = []
    for n, (a, b) in lora.pairs.items():
        w = modules[n].weight
        if (b.shape[0], a.shape[1]) != tuple(w.shape):
            bad.append(f"{n}: LoRA {(b.shape[0], a.shape[1])} vs weight {tuple(w.shape)}")
    if bad:
        raise CheckpointError(f"{lora.path}: shapes do not fit: {'; '.join(bad[:3])}")


@torch.no_grad()
def fuse_loras(model: nn.Module, loras: list[tuple[LoRA, float]]) -> int:
    """Add the LoRAs' deltas to the model's weights in place (W' = W + sum_i s_i B_i A_i, as ltx-core);
    returns how many weights changed."""
    for lora, _ in loras:
        check_lora(model, lora)
    modules = dict(model.named_modules())
    targets = sorted({n for lora, _ in loras for n in lora.pairs})
    for name in targets:
        w = modules[name].weight
        deltas = []
        for lora, strength in loras:
            if name in lora.pairs:
                a, b = (t.to(w.device) for t in lora.pairs[name])
                deltas.append(torch.matmul(b * strength, a).to(w.dtype))
        delta = deltas[0] if len(deltas) == 1 else torch.stack(deltas).sum(0)
        w.copy_(delta.add_(w))
    return len(targets)
