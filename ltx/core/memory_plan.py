"""The memory planner's engine, for both families: what each stage of a run holds on the device, and the cheapest
settings that fit a budget. The family adapters (modules built on `meta`, token counts, stages) are in
`ltx.plan` (the core imports no family); `ltx.plan_memory` is the entry point.

Weights: parameter counts of the modules built on `meta`, times the bytes per parameter of the chosen format
(`WEIGHT_FORMATS`; a quantized format applies to the 2-D weights of the Linears in the transformer blocks, the rest
stays in the compute dtype, and the dequantizing forward adds one dequantized Linear at a time).

Activations: not constants but a trace. The stage's real module (transformer forward, VAE decode, upsampler,
vocoder) runs on the `meta` device at the real sizes under `PeakTracker`, which adds up the bytes of every tensor
storage created and frees them when their last reference dies (weak references on the storages), so its peak is
the peak of live activation bytes of that code path, exactly, for any config. Attention is counted as a fused
kernel (only its output), as PyTorch's flash / memory-efficient SDPA on a GPU and its flash kernel on the CPU;
on `meta` SDPA would otherwise decompose into the T x T math path. LoRA training traces forward + backward
(adapters injected on `meta`), with or without activation checkpointing.

Not counted (hence `reserve`, 2 GB by default, added before a verdict): the CUDA context, allocator fragmentation
and workspaces (cuBLAS / cuDNN, oneDNN reorders on the CPU), the text encoders' activations (short prompts).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

GB = 1e9
# bytes per parameter of a transformer-block Linear weight stored in each format (block scales included:
# NVFP4 one E4M3 byte per 16 values, GGUF Q8_0 34 bytes per 32 values, Q4_K 144 bytes per 256 values)
WEIGHT_FORMATS = {"fp32": 4.0, "bf16": 2.0, "fp8": 1.0, "gguf-q8_0": 34 / 32, "nvfp4": 0.5 + 1 / 16,
                  "gguf-q4_k": 144 / 256}
COMPUTE_BYTES = {"fp32": 4, "bf16": 2}
OFFLOADS = ("none", "model", "blocks")
_UNITS = {"": GB, "b": 1, "kb": 1e3, "mb": 1e6, "gb": GB, "tb": 1e12, "k": 1e3, "m": 1e6, "g": GB, "t": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_budget(value: str | int | float) -> int:
    """Bytes of a budget: "24GB", "24 GB", "24G" (10^9), "22.5GiB" (2^30), "800MB", a bare number = GB."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"budget {value!r} is not a memory size (valid: a number with GB, GiB, MB, MiB, TB or "
                             f"no unit = GB, e.g. 24GB or 22.5GiB)")
        number, unit = float(m.group(1)), m.group(2).lower()
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"budget {value!r} must be a positive memory size, e.g. 24GB")
    return int(number * _UNITS[unit])


# ------------------------------------------------------------------------------------------- the trace


class PeakTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created inside (`meta` or real tensors)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None for r in func._schema.returns):
            return out  # a view or an in-place result: the storage exists already (e.g. a weight's transpose)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._sizes:
                    self._sizes[key] = storage.nbytes()
                    self.live += self._sizes[key]
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out


class FusedAttention(TorchFunctionMode):
    """SDPA as a fused kernel: only its output is allocated (the math path's T x T scores are not)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
            return q.new_empty(*q.shape[:-1], v.shape[-1])
        return func(*args, **kwargs)


def traced_peak(run: Callable[[], object], *, grad: bool = False) -> int:
    """Peak live bytes of the tensors `run()` creates (build its inputs inside `run`, on `meta`); inference runs
    without autograd (`grad=False`), a training step with it."""
    tracker = PeakTracker()
    with FusedAttention(), tracker, torch.set_grad_enabled(grad):
        result = run()
        del result
    return tracker.peak


# ------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Settings:
    """What the planner chooses. weights: a `WEIGHT_FORMATS` name for the transformer blocks' Linears; offload:
    none | model | blocks (ltx.core.offload); text_encoder_device: "device" or "cpu"."""

    weights: str = "bf16"
    offload: str = "none"
    vae_tiling: bool = False
    checkpointing: bool = False
    text_encoder_device: str = "device"
    prefetch: int = 1

    def label(self) -> str:
        parts = [f"weights {self.weights}", f"offload {self.offload}", f"vae_tiling {str(self.vae_tiling).lower()}",
                 f"text encoder on {'the GPU' if self.text_encoder_device == 'device' else 'the CPU'}"]
        if self.checkpointing:
            parts.append("activation checkpointing")
        return ", ".join(parts)


@dataclass
class Stage:
    """One stage of a run: bytes on the device while it runs (weights resident + peak activations)."""

    name: str
    weights: float
    activations: float
    tokens: str = ""

    @property
    def total(self) -> float:
        return self.weights + self.activations


@dataclass
class Plan:
    model: str
    mode: str
    size: str
    budget: int
    reserve: int
    settings: Settings
    stages: list[Stage]
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(s.total for s in self.stages)

    @property
    def fits(self) -> bool:
        return self.peak + self.reserve <= self.budget

    def table(self) -> str:
        width = max(len(s.name) for s in self.stages)
        lines = [f"memory plan: {self.model}, {self.mode}, {self.size}; budget {self.budget / GB:.1f} GB "
                 f"(reserve {self.reserve / GB:.1f} GB for the CUDA context and fragmentation)",
                 f"settings: {self.settings.label()}",
                 f"  {'stage':<{width}}  {'weights GB':>10}  {'activations GB':>14}  {'total GB':>8}  tokens"]
        for s in self.stages:
            lines.append(f"  {s.name:<{width}}  {s.weights / GB:>10.2f}  {s.activations / GB:>14.2f}  "
                         f"{s.total / GB:>8.2f}  {s.tokens}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"peak {self.peak / GB:.2f} GB + reserve {self.reserve / GB:.1f} GB = "
                     f"{(self.peak + self.reserve) / GB:.2f} GB: {verdict} in {self.budget / GB:.1f} GB")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def inference_candidates(weights: Iterable[str] = ("bf16", "fp8", "gguf-q4_k")) -> list[Settings]:
    """Inference settings from the most exact / fastest to the least: the weight format first (bf16 is the
    reference; quantization changes the output), then VAE tiling (differs near seams), then offload (exact, but
    slower: none, model, blocks); the text encoder moves to the CPU only where nothing else fits."""
    return [Settings(weights=w, offload=o, vae_tiling=t, text_encoder_device=te)
            for te in ("device", "cpu") for w in weights for t in (False, True) for o in OFFLOADS]


def lora_candidates(weights: Iterable[str] = ("bf16", "fp8", "gguf-q4_k")) -> list[Settings]:
    """LoRA training settings: bf16 base first, then checkpointing (slower, exact), then block streaming."""
    return [Settings(weights=w, offload=o, checkpointing=c) for w in weights for c in (False, True)
            for o in ("none", "blocks")]


def choose(evaluate: Callable[[Settings], tuple[list[Stage], list[str]]], candidates: list[Settings], *, model: str,
           mode: str, size: str, budget: int, reserve: int, fixed: dict | None = None) -> Plan:
    """The first candidate (in the given order) whose peak + reserve fits; none fits: the one with the smallest
    peak, with a note. `fixed` pins settings (e.g. {"offload": "blocks"}): only candidates with them are tried."""
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    tried = [c for c in candidates if all(getattr(c, k) == v for k, v in fixed.items())]
    if not tried:
        tried = [replace(candidates[0], **fixed)]
    plans = []
    for settings in tried:
        stages, notes = evaluate(settings)
        plan = Plan(model, mode, size, budget, reserve, settings, stages, notes)
        if plan.fits:
            return plan
        plans.append(plan)
    best = min(plans, key=lambda p: p.peak)
    best.notes.append(f"no setting fits {budget / GB:.1f} GB; this is the smallest peak found (lower the size or "
                      f"the frame count, or use a bigger card)")
    return best
