"""LoRA for either family's transformer, applied from outside the model (the model files know nothing about it).

Convention (LoRA paper, PEFT, ComfyUI): an adapter on a Linear y = W x + b adds strength * (alpha / rank) *
B A dropout(x), A: (rank, in), kaiming-uniform (a = sqrt(5), as nn.Linear and PEFT), B: (out, rank), zero, so a
new adapter changes nothing. Several named adapters can sit on one module; their contributions add up. Whether a
file's alpha applies is the family's `LoRAPolicy` (ltx/core/lora_formats.py): LTX-2 files are read with alpha = rank,
so their factor is exactly the strength (ltx-core has no alpha).

Two ways to apply LoRAs:
- `fuse_loras(model, [(weights, strength), ...])`: W += sum_i strength_i * alpha_i / rank_i * B_i @ A_i in place,
  with ltx-core's arithmetic (`apply_loras`: each (B * factor) @ A in the LoRA's dtype, rounded to the weight's,
  summed, added), so LTX-2 stays bitwise with the reference. No adapters are left behind.
- Adapters (training, adjustable strengths): `inject_lora` swaps each targeted nn.Linear for a `LoRALinear`: an
  nn.Linear holding the *same* weight and bias Parameter objects, so the base keys
  (`transformer_blocks.0.attn1.to_q.weight`) are unchanged and full checkpoints, FSDP and optimizers over the base
  keep working. Adapters sit beside them, in the state dict as `<module>.lora_A.<name>.weight`. `merge_lora` folds
  them in with the same arithmetic as `fuse_loras` (one adapter merged = that LoRA fused, bit for bit);
  `unmerge_lora` subtracts the same delta (the inverse up to rounding). Merge on an unsharded model.
Module names are the model's = the official checkpoint's; LoRA tensors are exchanged as `<module>.lora_A.weight` /
`<module>.lora_B.weight` (`lora_state_dict`); file layouts (ComfyUI, diffusers, trainers, ltx) are
ltx/core/lora_formats.py. Each family passes its policy: ltx/ltxv/lora.py and ltx/ltx2/lora.py bind it.

Training: `inject_lora(model, LoRAConfig(rank=32))`, `freeze_base(model)`, an optimizer over
`lora_parameters(model)`, `save_lora(path, model, format="comfy", base_model=...)`.
Inference: `load_loras(model, [(path, 0.8), ...])` (unmerged: strengths stay adjustable with `set_strength`), then
`merge_lora(model)`; or `fuse_loras(model, [(read_lora(path), 0.8), ...])`.

Target patterns (`LoRAConfig.targets`, `lora_targets(model, patterns)`), the official trainers' and PEFT's language
for module names inside `transformer_blocks.N.` (the "tail"), plus globs and a regex escape:
- a plain pattern matches a tail equal to it or ending in "." + it: "to_q" is every stream's query (LTX-2: attn1,
  attn2, audio_attn1, audio_attn2, audio_to_video_attn, video_to_audio_attn); "attn1.to_q" is the video
  self-attention only ("audio_attn1.to_q" does not end in ".attn1.to_q"); "audio_attn1.to_q" the audio one;
  "ff.net.2" the video MLP, "audio_ff.net.2" the audio one.
- a pattern with `*`, `?` or `[...]` is a glob (fnmatch; `*` crosses dots) matched against the tail and each of its
  dot-separated endings: "audio_to_video_attn.*" is every Linear of the A->V cross-attention, "*_to_*_attn.to_q"
  both cross-modal queries, "audio_*" every audio-stream Linear in the blocks, "to_out.*" every output projection.
- "re:<regex>" must match the whole qualified name, outside the blocks too ("re:proj_out",
  "re:caption_projection.linear_[12]").
Modules outside the blocks are reached only by "re:". Every pattern must select at least one Linear: one that
selects none is an error naming it and valid names (a typo never trains nothing silently).
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.lora_formats import (
    GENERIC,
    LoRAError,
    LoRAPolicy,
    LoRAWeights,
    derive_targets,
    read_lora,
    span,
    write_lora,
)

_BLOCK = re.compile(r"transformer_blocks\.\d+\.(.+)")
_WRAPPERS = re.compile(r"(^|\.)(_orig_mod|_fsdp_wrapped_module|_checkpoint_wrapped_module)(?=\.|$)")


@dataclass(kw_only=True)
class LoRAConfig:
    """Which Linear modules get an adapter, and its size.

    `targets`: patterns in the language of the module docstring ("to_q", "attn1.to_q", "audio_to_video_attn.*",
    "re:<regex>"); each must select at least one Linear of the model `inject_lora` is given.
    """

    rank: int = 16
    alpha: float | None = None  # None: alpha = rank (scale 1)
    dropout: float = 0.0  # on the adapter's input, training only
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __post_init__(self):
        self.targets = tuple(self.targets)
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0 (or None for alpha = rank), got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets or not all(isinstance(t, str) and t.removeprefix("re:") for t in self.targets):
            raise ValueError(f"LoRA targets must be non-empty module-name patterns, e.g. ('to_q', 'to_v'), got "
                             f"{self.targets!r}")
        for t in self.targets:
            if t.startswith("re:"):
                try:
                    re.compile(t[3:])
                except re.error as e:
                    raise ValueError(f"LoRA target {t!r} is not a valid regex: {e}") from None

    @property
    def scale_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def matches(self, name: str) -> bool:
        return any(target_matches(t, name) for t in self.targets)


def target_matches(pattern: str, name: str) -> bool:
    """Whether target `pattern` selects the (clean, qualified) module `name` (the module docstring's language)."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    m = _BLOCK.fullmatch(name)
    if m is None:
        return False
    tail = m[1]
    if not any(c in pattern for c in "*?["):
        return tail == pattern or tail.endswith("." + pattern)
    parts = tail.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def lora_targets(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """The (clean) names of the Linear modules of `model` that `patterns` select, in module order.

    Raises one ValueError line when a pattern selects nothing, naming it and valid names (the block tails and the
    Linears outside the blocks). Adapters' own Linears are never targets."""
    patterns = LoRAConfig(targets=tuple(patterns)).targets  # validated: non-empty strings, valid regexes
    linears = list(_linears(model))
    unmatched = tuple(p for p in patterns if not any(target_matches(p, n) for n in linears))
    if unmatched:
        tails = list(dict.fromkeys(m[1] for n in linears if (m := _BLOCK.fullmatch(n))))
        outside = [n for n in linears if not _BLOCK.fullmatch(n)]
        more = f" and {len(outside) - 8} more" if len(outside) > 8 else ""
        raise ValueError(f"no nn.Linear matches LoRA targets {unmatched} (a plain pattern matches the end of a name "
                         f"inside transformer_blocks.N. at a dot, 'a.*' globs, 're:<regex>' the full name); Linear "
                         f"modules: {tails} in every block, {outside[:8]}{more} outside (via 're:')")
    return [n for n in linears if any(target_matches(p, n) for p in patterns)]


@torch.no_grad()
def add_deltas(weight: Tensor, terms: Sequence[tuple[Tensor, Tensor, float]]) -> None:
    """weight (out, in) += sum of factor * B @ A over `terms` of (A (rank, in), B (out, rank), factor), in place.

    ltx-core's `apply_loras` arithmetic: each (B * factor) @ A computed in the LoRA's dtype and rounded to the
    weight's, the deltas summed (one stacked sum), then added to the weight. Terms with factor 0 add nothing."""
    device = weight.device
    deltas = [torch.matmul(b.to(device) * factor, a.to(device)).to(weight.dtype) for a, b, factor in terms
              if factor != 0]
    if deltas:
        delta = deltas[0] if len(deltas) == 1 else torch.stack(deltas).sum(0)
        weight.copy_(delta.add_(weight))


def _linear(weight: Tensor) -> nn.Linear:
    """A bias-free nn.Linear around `weight` (out, in), built without touching the global RNG."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    lin.weight = nn.Parameter(weight)
    return lin


def fresh_adapter(rank: int, in_features: int, out_features: int, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, Tensor]:
    """A new adapter's (A (rank, in), B (out, rank)) on the CPU: A kaiming-uniform from `generator` (PEFT's
    init), B zero, so the adapter starts as the identity. `inject_lora` draws them module by module in module
    order; a model built on meta draws the same with this function (train/finetune_ltx2.py)."""
    a = torch.empty(rank, in_features)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    return a, torch.zeros(out_features, rank)


class LoRALinear(nn.Linear):
    """nn.Linear with named low-rank adapters; shares `weight` and `bias` with the Linear it replaces.

    Per adapter: `lora_A[name]` (in -> rank), `lora_B[name]` (rank -> out), `lora_dropout[name]`, and the floats
    `lora_alpha[name]` and `lora_strength[name]`; `lora_merged[name]` is the factor folded into `weight`, if merged.
    """

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.register_parameter("weight", base.weight)
        self.register_parameter("bias", base.bias)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_alpha: dict[str, float] = {}
        self.lora_strength: dict[str, float] = {}
        self.lora_merged: dict[str, float] = {}
        self.train(base.training)

    def add_adapter(self, name: str, rank: int, alpha: float, *, dropout: float = 0.0,
                    generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                    tensors: tuple[Tensor, Tensor] | None = None) -> None:
        """A fresh adapter (A kaiming-uniform from `generator` on CPU, B zero), or the given (A, B) tensors."""
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists on this module")
        device, dtype = self.weight.device, dtype or self.weight.dtype
        a, b = tensors if tensors is not None else fresh_adapter(rank, self.in_features, self.out_features, generator)
        self.lora_A[name] = _linear(a.detach().to(device, dtype, copy=True))
        self.lora_B[name] = _linear(b.detach().to(device, dtype, copy=True))
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_alpha[name] = float(alpha)
        self.lora_strength[name] = 1.0

    def factor(self, name: str) -> float:
        """strength * (alpha / rank): exactly the strength when alpha = rank."""
        return self.lora_strength[name] * (self.lora_alpha[name] / self.lora_A[name].out_features)

    def _fold(self, name: str, factor: float) -> None:
        add_deltas(self.weight, [(self.lora_A[name].weight, self.lora_B[name].weight, factor)])

    def merge(self, name: str) -> None:
        if name not in self.lora_merged:
            self.lora_merged[name] = self.factor(name)
            self._fold(name, self.lora_merged[name])

    def unmerge(self, name: str) -> None:
        if name in self.lora_merged:
            self._fold(name, -self.lora_merged.pop(name))

    def forward(self, x: Tensor) -> Tensor:
        return self.add_adapters(x, F.linear(x, self.weight, self.bias))

    def add_adapters(self, x: Tensor, out: Tensor) -> Tensor:
        """`out` (the base layer's output for `x`) plus every active, unmerged adapter's s * B(A(x))."""
        for name, a in self.lora_A.items():
            s = self.factor(name)
            if s == 0 or name in self.lora_merged:
                continue
            h = self.lora_dropout[name](x.to(a.weight.dtype))
            out = out + (s * self.lora_B[name](a(h))).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        shown = ", ".join(f"{n}: rank {a.out_features}, alpha {self.lora_alpha[n]:g}, strength "
                          f"{self.lora_strength[n]:g}{', merged' if n in self.lora_merged else ''}"
                          for n, a in self.lora_A.items())
        return f"{super().extra_repr()}, adapters {{{shown}}}"


# ------------------------------------------------------------------------------------------------ model surgery


def _clean(name: str) -> str:
    """Module name without torch.compile / FSDP / checkpoint wrapper components."""
    return _WRAPPERS.sub("", name).lstrip(".")


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    for n, m in model.named_modules():
        if isinstance(m, LoRALinear):
            yield _clean(n), m


def _linears(model: nn.Module) -> dict[str, tuple[str, nn.Linear]]:
    """{clean name: (real name, module)} of the model's Linear layers, adapters' own Linears excluded."""
    out = {}
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear) and not re.search(r"\.lora_[AB]\.[^.]+$", n):
            out[_clean(n)] = (n, m)
    return out


def _wrap(model: nn.Module, name: str, module: nn.Linear) -> LoRALinear:
    if isinstance(module, LoRALinear):
        return module
    parent, _, child = name.rpartition(".")
    lora = getattr(module, "lora_wrapper", LoRALinear)(module)  # a quantized Linear brings its own (ltx.core.quant)
    setattr(model.get_submodule(parent) if parent else model, child, lora)
    return lora


def _adapter_names(model: nn.Module) -> list[str]:
    return sorted({n for _, m in lora_modules(model) for n in m.lora_A})


def _require(model: nn.Module, name: str | None) -> list[tuple[str, LoRALinear]]:
    mods = [(n, m) for n, m in lora_modules(model) if name is None or name in m.lora_A]
    if name is not None and not mods:
        raise ValueError(f"no LoRA adapter {name!r} in the model (adapters: {_adapter_names(model)})")
    return mods


def _refuse_existing(model: nn.Module, name: str) -> None:
    if name in _adapter_names(model):
        raise ValueError(f"the model already has a LoRA adapter {name!r}; pick another name or remove_lora first")
    if "." in name or not name:
        raise ValueError(f"adapter names are non-empty and have no '.', got {name!r}")


def inject_lora(model: nn.Module, cfg: LoRAConfig, name: str = "default", generator: torch.Generator | None = None,
                *, dtype: torch.dtype | None = None) -> list[str]:
    """Add adapter `name` to every Linear `cfg.targets` selects; returns their names. `dtype`: the adapters'
    (default: each base weight's; fp32 adapters on a bf16 model compute in fp32 and add in bf16). Inject after the
    base is loaded or initialised (`DiT.init_weights` would treat the adapters' Linears as its own)."""
    _refuse_existing(model, name)
    hit = lora_targets(model, cfg.targets)
    linears = _linears(model)
    for n in hit:
        real, module = linears[n]
        _wrap(model, real, module).add_adapter(name, cfg.rank, cfg.scale_alpha, dropout=cfg.dropout,
                                               generator=generator, dtype=dtype)
    return hit


def lora_parameters(model: nn.Module, name: str | None = None) -> list[nn.Parameter]:
    """A and B weights of adapter `name` (all adapters if None), in module order."""
    return [p for _, m in _require(model, name) for n in m.lora_A if name in (None, n)
            for p in (m.lora_A[n].weight, m.lora_B[n].weight)]


def freeze_base(model: nn.Module) -> nn.Module:
    """requires_grad False on every parameter except the LoRA adapters'."""
    lora = {id(p) for p in lora_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in lora)
    return model


def lora_state_dict(model: nn.Module, name: str = "default") -> dict[str, Tensor]:
    """Adapter `name` as `<module>.lora_A.weight` (rank, in) / `<module>.lora_B.weight` (out, rank) (detached)."""
    out = {}
    for n, m in _require(model, name):
        out[f"{n}.lora_A.weight"] = m.lora_A[name].weight.detach()
        out[f"{n}.lora_B.weight"] = m.lora_B[name].weight.detach()
    return out


def lora_weights(model: nn.Module, name: str = "default") -> LoRAWeights:
    """Adapter `name` with its per-module rank and alpha (what `save_lora` writes)."""
    mods = _require(model, name)
    return LoRAWeights(lora_state_dict(model, name), {n: m.lora_A[name].out_features for n, m in mods},
                       {n: m.lora_alpha[name] for n, m in mods})


def set_strength(model: nn.Module, name: str, strength: float) -> None:
    if not math.isfinite(strength):
        raise ValueError(f"LoRA strength must be finite, got {strength}")
    for n, m in _require(model, name):
        if name in m.lora_merged:
            raise ValueError(f"adapter {name!r} is merged into {n}; unmerge_lora first to change its strength")
        m.lora_strength[name] = float(strength)


def merge_lora(model: nn.Module, name: str | None = None) -> None:
    """Fold adapter `name` (all if None) into the base weights at its current strength."""
    for _, m in _require(model, name):
        for n in list(m.lora_A):
            if name in (None, n):
                m.merge(n)


def unmerge_lora(model: nn.Module, name: str | None = None) -> None:
    """Subtract what `merge_lora` added (the same factor, in float32)."""
    for _, m in _require(model, name):
        for n in list(m.lora_A):
            if name in (None, n):
                m.unmerge(n)


def remove_lora(model: nn.Module, name: str | None = None) -> None:
    """Drop adapter `name` (all if None); modules left without adapters become plain nn.Linear again (same
    Parameters). A merged adapter's contribution stays in the weights (merge + remove = "merge and unload")."""
    for real, m in list(model.named_modules()):
        if not isinstance(m, LoRALinear):
            continue
        for n in [n for n in m.lora_A if name in (None, n)]:
            for d in (m.lora_A, m.lora_B, m.lora_dropout):
                del d[n]
            for d in (m.lora_alpha, m.lora_strength, m.lora_merged):
                d.pop(n, None)
        if not m.lora_A:
            if hasattr(m, "unwrapped"):  # a quantized Linear (ltx.core.quant) restores itself
                plain = m.unwrapped()
            else:
                plain = nn.Linear(m.in_features, m.out_features, device="meta")
                plain.register_parameter("weight", m.weight)
                plain.register_parameter("bias", m.bias)
            plain.train(m.training)
            parent, _, child = real.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, plain)


# ------------------------------------------------------------------------------------------------------- files


@dataclass
class LoRAReport:
    """What `apply_lora_weights` did; str() is the one-line report."""

    name: str
    source: str
    format: str
    modules: list[str]
    rank: dict[str, int]
    alpha: dict[str, float]
    strength: float

    def __str__(self) -> str:
        return (f"lora {self.source}: {len(self.modules)} modules, rank {span(self.rank)}, alpha {span(self.alpha)}, "
                f"strength {self.strength:g}")


load_lora_file = read_lora  # the name the 0.9.x apps use


def check_lora(model: nn.Module, weights: LoRAWeights) -> None:
    """Raise LoRAError unless every module `weights` names is a Linear of `model` with matching shapes.
    Works on a model built on `meta` (shapes only)."""
    linears = _linears(model)
    unmatched = [k for k in weights.tensors if k.rsplit(".", 2)[0] not in linears]
    if unmatched:
        raise LoRAError(f"{weights.source}: {len(unmatched)} LoRA keys name no Linear module of this model: "
                        f"{unmatched[:10]}{' ...' if len(unmatched) > 10 else ''} (its Linear modules look like "
                        f"{list(linears)[:4]})")
    bad = []
    for m, r in weights.rank.items():
        lin = linears[m][1]
        for kind, want in (("A", (r, lin.in_features)), ("B", (lin.out_features, r))):
            key = f"{m}.lora_{kind}.weight"
            if tuple(weights.tensors[key].shape) != want:
                bad.append(f"{key}: file {tuple(weights.tensors[key].shape)} vs model {want}")
    if bad:
        raise LoRAError(f"{weights.source}: {len(bad)} LoRA tensors do not fit this model (a LoRA for another base "
                        f"model?): " + "; ".join(bad[:5]))


def apply_lora_weights(model: nn.Module, weights: LoRAWeights, name: str = "default", strength: float = 1.0, *,
                       dtype: torch.dtype | None = None) -> LoRAReport:
    """Inject adapter `name` into exactly the modules `weights` names, with its rank and alpha, and load it
    (`dtype`: the adapters', default each base weight's). Everything is checked before the model is touched."""
    _refuse_existing(model, name)
    check_lora(model, weights)
    if not math.isfinite(strength):
        raise ValueError(f"LoRA strength must be finite, got {strength}")
    linears = _linears(model)
    for m in weights.modules:
        real, module = linears[m]
        t = (weights.tensors[f"{m}.lora_A.weight"], weights.tensors[f"{m}.lora_B.weight"])
        _wrap(model, real, module).add_adapter(name, weights.rank[m], weights.alpha[m], tensors=t, dtype=dtype)
    set_strength(model, name, strength)
    return LoRAReport(name, weights.source, weights.format, weights.modules, dict(weights.rank), dict(weights.alpha),
                      float(strength))


def load_loras(model: nn.Module, loras: list[tuple[str | os.PathLike, float]], *, merge: bool = False,
               policy: LoRAPolicy = GENERIC) -> list[LoRAReport]:
    """Apply LoRA files as adapters "lora<k>" (k counting on from the adapters already there) with their strengths,
    all checked before any is applied; `merge=True` folds them into the weights."""
    files = [read_lora(p, policy) for p, _ in loras]
    for w in files:
        check_lora(model, w)
    k = len(_adapter_names(model))
    reports = [apply_lora_weights(model, w, f"lora{k + i}", s) for i, (w, (_, s)) in enumerate(zip(files, loras))]
    if merge:
        for r in reports:
            merge_lora(model, r.name)
    return reports


@torch.no_grad()
def fuse_loras(model: nn.Module, loras: Sequence[tuple[LoRAWeights, float]]) -> int:
    """W += sum_i strength_i * alpha_i / rank_i * B_i @ A_i into every Linear the LoRAs name, in place, as
    ltx-core's `apply_loras` (see `add_deltas`; modules in sorted order, LoRAs in the given order). Every LoRA is
    checked before any weight changes; unlike ltx-core, which fuses only bf16 / fp8 weights and skips keys that
    match no weight, every module must be a Linear of `model` with matching shapes, and fp32 weights fuse too.
    Returns how many weights changed."""
    for weights, strength in loras:
        check_lora(model, weights)
        if not math.isfinite(strength):
            raise ValueError(f"LoRA {weights.source}: strength must be finite, got {strength}")
    linears = _linears(model)
    targets = sorted({m for weights, _ in loras for m in weights.modules})
    for m in targets:
        module = linears[m][1]  # a quantized Linear (ltx.core.quant) dequantizes, adds and requantizes itself
        fold = getattr(module, "add_deltas", None) or (lambda terms, w=module.weight: add_deltas(w, terms))
        fold([
            (weights.tensors[f"{m}.lora_A.weight"], weights.tensors[f"{m}.lora_B.weight"],
             strength * (weights.alpha[m] / weights.rank[m]))
            for weights, strength in loras if m in weights.rank])
    return len(targets)


def reference_downscale(loras: Sequence[LoRAWeights]) -> int | None:
    """The reference downscale factor the IC-LoRAs among `loras` declare (`reference_downscale_factor`), None when
    none does; LoRAs that disagree are refused."""
    found = {w.source: w.reference_downscale_factor for w in loras if w.reference_downscale_factor is not None}
    if len(set(found.values())) > 1:
        raise LoRAError(f"the LoRAs declare different reference downscale factors {found}; use one IC-LoRA")
    return next(iter(found.values()), None)


def save_lora(
    path: str | os.PathLike,
    source: nn.Module | LoRAWeights | Mapping[str, Tensor],
    *,
    format: str = "ltx",
    policy: LoRAPolicy = GENERIC,
    name: str = "default",
    rank: int | None = None,
    alpha: float | Mapping[str, float] | None = None,
    targets: list[str] | tuple[str, ...] | None = None,
    base_model: str = "",
    extra_metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a LoRA: adapter `name` of a model, a LoRAWeights, or canonical tensors (then `alpha` sets the alpha,
    default rank). `rank` / `alpha` given with a model are checked against its adapters. `base_model`: free text,
    e.g. `json.dumps({"checkpoint": "ltxv-2b-0.9.8-distilled.safetensors", "dit": asdict(dit.cfg)})`."""
    if isinstance(source, nn.Module):
        weights = lora_weights(source, name)
    elif isinstance(source, LoRAWeights):
        weights = source
    else:
        tensors = dict(source)
        ranks = {k.rsplit(".", 2)[0]: t.shape[0] for k, t in tensors.items() if k.endswith(".lora_A.weight")}
        missing = [m for m in ranks if f"{m}.lora_B.weight" not in tensors]
        stray = [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
        if missing or stray or not ranks:
            raise ValueError(f"canonical LoRA tensors are <module>.lora_A.weight / .lora_B.weight pairs; lacking B: "
                             f"{missing[:5]}, other keys: {stray[:5]}")
        if alpha is None:
            alpha = {m: float(r) for m, r in ranks.items()}
        elif not isinstance(alpha, Mapping):
            alpha = {m: float(alpha) for m in ranks}
        weights = LoRAWeights(tensors, ranks, {m: float(alpha[m]) for m in ranks})
        alpha = None
    if rank is not None and set(weights.rank.values()) != {rank}:
        raise ValueError(f"rank {rank} given, but the adapters have rank {span(weights.rank)}")
    if alpha is not None:
        given = alpha if isinstance(alpha, Mapping) else {m: float(alpha) for m in weights.alpha}
        if {m: float(given.get(m, math.nan)) for m in weights.alpha} != weights.alpha:
            raise ValueError(f"alpha {alpha} given, but the adapters have alpha {span(weights.alpha)}")
    return write_lora(path, weights, format, targets=targets if targets is not None else derive_targets(
        weights.modules), base_model=base_model, extra_metadata=extra_metadata, overwrite=overwrite, policy=policy)
