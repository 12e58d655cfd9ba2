"""LoRA files for either family's transformer: four layouts, auto-detected on read, written atomically.

Canonical form (`LoRAWeights.tensors`): `<module>.lora_A.weight` (rank, in) and `<module>.lora_B.weight`
(out, rank), with our module names, which are the official checkpoint's (`transformer_blocks.3.attn1.to_q`).
An adapter adds strength * alpha / rank * B @ A to its module's weight (LoRA paper, PEFT, ComfyUI).

What differs between the families is a `LoRAPolicy` the family passes in (ltx/ltxv/lora.py, ltx/ltx2/lora.py):
the module names of diffusers' layout (0.9.x: `proj_in` = `patchify_proj`, `time_embed` = `adaln_single`), and
whether alpha applies at all (LTX-2, as ltx-core: no, every module's alpha is its rank, so the delta is exactly
strength * B @ A). This module imports no family; `GENERIC` (same names, alpha applies) is the default.

Layouts (`format`):
- "comfy" (ComfyUI): `diffusion_model.<module>.lora_A.weight` / `.lora_B.weight` and `diffusion_model.<module>.alpha`,
  a 0-dim float32 tensor (ComfyUI reads it with `.item()`; a module without one gets alpha = rank).
- "diffusers" (PEFT through diffusers' LTXVideoLoraLoaderMixin): a folder with `pytorch_lora_weights.safetensors`,
  keys `transformer.<module>.lora_A.weight` in diffusers' module names (ours, except `proj_in` = `patchify_proj` and
  `time_embed` = `adaln_single`; every `transformer_blocks.*` Linear, ff included, has our name), and
  `adapter_config.json` (peft `LoraConfig` fields: r, lora_alpha, target_modules, rank_pattern, alpha_pattern, ...).
  No alpha tensors: alpha is the header's `lora_adapter_metadata` (what diffusers' `save_lora_weights` writes),
  else adapter_config.json, else rank. Read from the folder or the file; peft's own `adapter_model.safetensors`
  (`base_model.model.` prefix) reads the same way.
- "trainer" (LTX-Video-Trainer, LTX-2 trainer, the official LTX-2 LoRAs): `diffusion_model.` prefix (also read:
  `model.diffusion_model.`; a `transformer.` one reads as "diffusers"), no alpha tensors: alpha = rank unless the
  header says otherwise.
- "ltx": canonical names, no prefix.

diffusers' loader takes "comfy" and "trainer" files too: it swaps `diffusion_model.` for `transformer.` and renames
nothing, so only modules whose names agree (all of `transformer_blocks.*`, `caption_projection`, `proj_out`) land;
it ignores `.alpha` tensors (and its `load_lora_weights` refuses keys without "lora" in them: call `lora_state_dict`
+ `load_lora_into_transformer`) but applies the `lora_adapter_metadata` header entry. So every file written here carries
in its safetensors header: `format=ltx-lora`, `layout` (the layout name), `rank` and `alpha` (the most common values),
`alpha_pattern` (JSON {module: alpha} for modules that differ), `targets` (JSON list), `base_model` (free text), and
`lora_adapter_metadata` (`transformer.r`, `transformer.lora_alpha`, `transformer.target_modules`, patterns), so every
reader that looks applies the same alpha. Reading also accepts kohya's names `lora_down` / `lora_up` for A / B.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ltx.core.checkpoint import (
    CheckpointError,
    SafetensorsReader,
    TensorEntry,
    atomic_dir,
    check_output_path,
    write_json,
    write_safetensors,
)

FORMATS = ("comfy", "diffusers", "trainer", "ltx")
LORA_FORMAT = "ltx-lora"  # metadata["format"] of every file written here
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PEFT_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_METADATA = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
PREFIXES = {"comfy": "diffusion_model.", "trainer": "diffusion_model.", "diffusers": "transformer.", "ltx": ""}
_DIFFUSERS_PREFIXES = ("transformer.", "base_model.model.")
_COMFY_PREFIXES = ("diffusion_model.", "model.diffusion_model.")  # the second: a full ComfyUI state dict's
_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_down.weight": "A", ".lora_up.weight": "B",
             ".alpha": "alpha"}
RESERVED = ("format", "layout", "rank", "alpha", "alpha_pattern", "targets", "base_model", PEFT_METADATA)


class LoRAError(CheckpointError):
    """A LoRA file that cannot be read, or that does not fit the model; the message names what and where."""


def _same_name(module: str) -> str:
    return module


@dataclass(frozen=True)
class LoRAPolicy:
    """What a model family decides about its LoRA files (see the module docstring).

    from_diffusers / to_diffusers: a module name in diffusers' layout (the "diffusers" format, peft folders,
    `transformer.`-prefixed keys) -> ours, and back. use_alpha: apply the file's alpha (its alpha tensors, our
    header, or a peft config; else alpha = rank); False: alpha = rank for every module whatever the file says."""

    from_diffusers: Callable[[str], str] = _same_name
    to_diffusers: Callable[[str], str] = _same_name
    use_alpha: bool = True


GENERIC = LoRAPolicy()


@dataclass
class LoRAWeights:
    """One LoRA in canonical form: tensors named `<module>.lora_{A,B}.weight`, per-module rank and alpha."""

    tensors: dict[str, Tensor]
    rank: dict[str, int]
    alpha: dict[str, float]
    metadata: dict[str, str] = field(default_factory=dict)  # the file's safetensors header metadata
    format: str = "ltx"
    path: Path | None = None

    @property
    def modules(self) -> list[str]:
        return list(self.rank)

    @property
    def source(self) -> str:
        return self.path.name if self.path is not None else "<memory>"

    def summary(self) -> str:
        """One line: 'comfy, 24 modules, rank 16, alpha 16'."""
        return f"{self.format}, {len(self.rank)} modules, rank {span(self.rank)}, alpha {span(self.alpha)}"

    @property
    def reference_downscale_factor(self) -> int | None:
        """An IC-LoRA's `reference_downscale_factor` metadata (LTX-2 trainer, ComfyUI, train/finetune.py): its
        reference video runs at 1/d of the output's height and width. None when the file has none."""
        value = self.metadata.get("reference_downscale_factor")
        if value is None:
            return None
        try:
            factor = round(float(value))
        except (TypeError, ValueError, OverflowError):
            factor = 0
        if factor < 1:
            raise LoRAError(f"LoRA {self.source}: metadata reference_downscale_factor={value!r} is not a factor >= 1")
        return factor


def span(values: Mapping[str, float]) -> str:
    """'16' when all values agree, else 'min..max'."""
    lo, hi = min(values.values(), default=0), max(values.values(), default=0)
    return f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"


def most_common(values: Mapping[str, float]):
    return Counter(values.values()).most_common(1)[0][0]


def split_key(key: str) -> tuple[str, str] | tuple[None, None]:
    """'m.lora_A.weight' -> ('m', 'A'); 'm.lora_up.weight' -> ('m', 'B'); 'm.alpha' -> ('m', 'alpha')."""
    for suffix, kind in _SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return None, None


# ---------------------------------------------------------------------------------------------------- reading


def _lora_file(path: Path) -> Path:
    if path.is_dir():
        for name in (DIFFUSERS_FILE, PEFT_FILE):
            if (path / name).is_file():
                return path / name
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise LoRAError(f"{path}: a LoRA folder holds {DIFFUSERS_FILE} or {PEFT_FILE} "
                            f"(found {[f.name for f in files]})")
        return files[0]
    if not path.exists():
        raise LoRAError(f"{path}: no such LoRA file or folder")
    return path


def is_lora(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a LoRA (header only): our metadata, or every key a LoRA tensor."""
    path = Path(path)
    if path.is_dir() and ((path / "config.json").is_file() or (path / "model_index.json").is_file()):
        return False  # a diffusers model folder
    try:
        reader = SafetensorsReader(_lora_file(path))
    except CheckpointError:
        return False
    keys = reader.keys()
    return reader.metadata.get("format") == LORA_FORMAT or (bool(keys) and all(split_key(k)[0] for k in keys))


def _detect(keys: list[str], meta: Mapping[str, str], folder: bool) -> tuple[str, str]:
    """(format, key prefix)."""
    prefixes = [p for p in (*_COMFY_PREFIXES, *_DIFFUSERS_PREFIXES) if any(k.startswith(p) for k in keys)]
    prefix = prefixes[0] if prefixes else ""
    stray = [k for k in keys if not k.startswith(prefix)]
    if stray:
        raise LoRAError(f"{len(stray)} keys lack the prefix {prefix!r} the others have, e.g. {stray[:5]}")
    if meta.get("format") == LORA_FORMAT and meta.get("layout") in FORMATS:
        fmt = meta["layout"]
        if PREFIXES[fmt] != prefix and not (fmt == "diffusers" and prefix in _DIFFUSERS_PREFIXES):
            raise LoRAError(f"the header says layout {fmt!r} (key prefix {PREFIXES[fmt]!r}) but the keys have "
                            f"{prefix!r}")
        return fmt, prefix
    if folder or prefix in _DIFFUSERS_PREFIXES:
        return "diffusers", prefix
    if prefix in _COMFY_PREFIXES:
        return ("comfy" if any(k.endswith(".alpha") for k in keys) else "trainer"), prefix
    return "ltx", prefix


def _peft_alpha(cfg: Mapping, module: str, rank: int) -> float | None:
    """Alpha of `module` (in the config's own naming) under a peft LoraConfig dict, as peft resolves it."""
    alpha = cfg.get("lora_alpha")
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):  # peft's get_pattern_key rule
            alpha = value
            break
    if alpha is None:
        return None
    if cfg.get("use_dora"):
        raise LoRAError("DoRA adapters (use_dora) are not supported")
    return float(alpha) * (math.sqrt(rank) if cfg.get("use_rslora") else 1.0)  # rsLoRA: alpha / sqrt(r) = alpha' / r


def _json(meta: Mapping[str, str], key: str, where: Path):
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, TypeError) as e:
        raise LoRAError(f"{where}: metadata {key!r} is not valid JSON: {e}") from None


def read_lora(path: str | os.PathLike, policy: LoRAPolicy = GENERIC) -> LoRAWeights:
    """Read a LoRA of any layout (auto-detected) into canonical form, names and alpha as `policy` says. A folder
    or the file inside it."""
    path = Path(path)
    file = _lora_file(path)
    reader = SafetensorsReader(file)
    meta, keys = reader.metadata, reader.keys()
    if not keys:
        raise LoRAError(f"{file}: no tensors")
    fmt, prefix = _detect(keys, meta, path.is_dir())
    parts: dict[str, dict[str, str]] = {}  # their module name -> {"A": key, "B": key, "alpha": key}
    unknown = []
    for k in keys:
        module, kind = split_key(k[len(prefix):])
        if module is None:
            unknown.append(k)
        else:
            parts.setdefault(module, {})[kind] = k
    if unknown:
        none = "; no LoRA tensors at all (a model checkpoint?)" if not parts else ""
        raise LoRAError(f"{file}: {len(unknown)} keys are not LoRA tensors (lora_A / lora_B / alpha): "
                        f"{unknown[:10]}{none}")
    incomplete = [m for m, p in parts.items() if not {"A", "B"} <= set(p)]
    if incomplete:
        raise LoRAError(f"{file}: {len(incomplete)} modules lack lora_A or lora_B: {incomplete[:10]}")

    ours = {m: policy.from_diffusers(m) if prefix in _DIFFUSERS_PREFIXES else m for m in parts}
    sources = _alpha_sources(file, meta, fmt, list(ours.values())) if policy.use_alpha else None
    try:
        return _read_parts(path, file, reader, fmt, parts, ours, sources)
    except (ValueError, TypeError, re.error, RuntimeError) as e:
        if isinstance(e, LoRAError):
            raise
        raise LoRAError(f"{file}: alpha or rank entries are not valid: {e}") from None


def _alpha_sources(file: Path, meta: Mapping[str, str], fmt: str, modules: list[str]):
    """Where alphas can come from besides alpha tensors: (our header's {module: alpha}, the header's peft
    config, a diffusers folder's adapter_config.json), each None when absent."""
    header = None
    if meta.get("format") == LORA_FORMAT and "alpha" in meta:
        pattern = _json(meta, "alpha_pattern", file) if "alpha_pattern" in meta else {}
        try:
            header = {m: float(pattern.get(m, _json(meta, "alpha", file))) for m in modules}
        except (TypeError, ValueError, AttributeError) as e:
            raise LoRAError(f"{file}: metadata 'alpha' / 'alpha_pattern' is not a number / an object of numbers: "
                            f"{e}") from None
    peft = _json(meta, PEFT_METADATA, file) if PEFT_METADATA in meta else None
    config_file = file.parent / ADAPTER_CONFIG
    adapter_config = None
    if fmt == "diffusers" and config_file.is_file():
        try:
            adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LoRAError(f"{config_file}: not valid JSON ({e})") from None
    for where, cfg in ((f"{file} metadata {PEFT_METADATA!r}", peft), (str(config_file), adapter_config)):
        if cfg is not None and not isinstance(cfg, dict):
            kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(cfg))
            raise LoRAError(f"{where}: a JSON {kind}, not a peft LoraConfig object")
    if peft is not None:
        peft = {k.removeprefix("transformer."): v for k, v in peft.items()}
    return header, peft, adapter_config


def _read_parts(path, file, reader, fmt, parts, ours, sources) -> LoRAWeights:
    """The tensors, and each module's alpha from `sources` (None: alpha = rank everywhere)."""
    header, peft, adapter_config = sources or (None, None, None)
    tensors, rank, alpha = {}, {}, {}
    for module, p in parts.items():
        name = ours[module]
        a, b = reader.get(p["A"]), reader.get(p["B"])
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoRAError(f"{file}: {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} are not "
                            f"(rank, in) and (out, rank)")
        for part, t in (("lora_A", a), ("lora_B", b)):
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise LoRAError(f"{file}: {module}.{part} holds NaN or inf values: the LoRA is damaged (or its "
                                "training diverged); retrain it or use an earlier checkpoint of the run")
        r = a.shape[0]
        value = None
        if "alpha" in p and sources is not None:
            t = reader.get(p["alpha"])
            value = float(t)
            if header is not None and float(torch.tensor(header[name], dtype=t.dtype)) == value:
                value = header[name]  # the exact value behind the rounded tensor
        elif header is not None:
            value = header[name]
        for cfg in (peft, adapter_config):
            if value is None and cfg is not None:
                value = _peft_alpha(cfg, module, r)
        tensors[f"{name}.lora_A.weight"], tensors[f"{name}.lora_B.weight"] = a, b
        rank[name], alpha[name] = r, float(r) if value is None else value
    return LoRAWeights(tensors, rank, alpha, dict(reader.metadata), fmt, path)


# ---------------------------------------------------------------------------------------------------- writing


def derive_targets(modules: list[str]) -> list[str]:
    """The distinct module-name tails inside `transformer_blocks.N.` (others whole): ['attn1.to_q', ...]."""
    tails = [re.sub(r"^transformer_blocks\.\d+\.", "", m) for m in modules]
    return sorted(set(tails))


def write_lora(
    path: str | os.PathLike,
    weights: LoRAWeights,
    format: str,
    *,
    policy: LoRAPolicy = GENERIC,
    targets: list[str] | tuple[str, ...] | None = None,
    base_model: str = "",
    extra_metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `weights` in `format` (a .safetensors file; for "diffusers" a folder, module names as `policy` says).
    Atomic; refuses to overwrite unless `overwrite`. Overwriting a diffusers folder replaces only its weights file
    and adapter_config.json: other files in the folder (a README, other adapters) are kept."""
    if format not in FORMATS:
        raise ValueError(f"unknown LoRA format {format!r}; formats: {FORMATS}")
    clash = sorted(set(extra_metadata or {}) & set(RESERVED))
    if clash:
        raise ValueError(f"extra_metadata may not set {clash} (written from the weights)")
    path = Path(path)
    check_output_path(path, folder=format == "diffusers", overwrite=overwrite)
    modules = weights.modules
    rank, alpha = most_common(weights.rank), most_common(weights.alpha)
    names = {m: policy.to_diffusers(m) if format == "diffusers" else m for m in modules}
    prefix = PREFIXES[format]
    entries = []
    for m in modules:
        for kind in ("A", "B"):
            t = weights.tensors[f"{m}.lora_{kind}.weight"]
            entries.append(TensorEntry(f"{prefix}{names[m]}.lora_{kind}.weight", t.dtype, tuple(t.shape),
                                       lambda t=t: t.detach().cpu().contiguous()))
        if format == "comfy":
            entries.append(TensorEntry(f"{prefix}{m}.alpha", torch.float32, (),
                                       lambda a=weights.alpha[m]: torch.tensor(a, dtype=torch.float32)))
    peft = {  # module names as in the file: diffusers' loader only swaps the prefix of the other layouts
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": sorted(names.values()),
        "rank_pattern": {re.escape(names[m]): r for m, r in weights.rank.items() if r != rank},
        "alpha_pattern": {re.escape(names[m]): a for m, a in weights.alpha.items() if a != alpha},
    }
    meta = {
        "format": LORA_FORMAT,
        "layout": format,
        "rank": str(rank),
        "alpha": json.dumps(alpha),
        "targets": json.dumps(list(targets) if targets is not None else derive_targets(modules)),
        "base_model": base_model,
        PEFT_METADATA: json.dumps({f"transformer.{k}": v for k, v in peft.items()}, sort_keys=True),
        **{str(k): str(v) for k, v in (extra_metadata or {}).items()},
    }
    pattern = {m: a for m, a in weights.alpha.items() if a != alpha}
    if pattern:
        meta["alpha_pattern"] = json.dumps(pattern)
    if format != "diffusers":
        return write_safetensors(path, entries, meta, overwrite=overwrite)
    adapter_config = {"peft_type": "LORA", **peft, "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
                      "use_dora": False, "init_lora_weights": True, "task_type": None,
                      "base_model_name_or_path": base_model or None}
    if path.is_dir():  # overwrite: replace the two files written here (each atomically), keep everything else
        write_safetensors(path / DIFFUSERS_FILE, entries, meta, overwrite=True)
        write_json(path / ADAPTER_CONFIG, adapter_config, overwrite=True)
        return path
    with atomic_dir(path, overwrite=False) as tmp:
        write_safetensors(tmp / DIFFUSERS_FILE, entries, meta)
        write_json(tmp / ADAPTER_CONFIG, adapter_config)
    return path
