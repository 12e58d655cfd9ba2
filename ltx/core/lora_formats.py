"""LoRA files for either family's transformer: five layouts, auto-detected on read, written atomically.

Canonical form (`LoRAWeights.tensors`): `<module>.lora_A.weight` (rank, in) and `<module>.lora_B.weight`
(out, rank), with our module names, which are the official checkpoint's (`transformer_blocks.3.attn1.to_q`).
An adapter adds strength * alpha / rank * B @ A to its module's weight (LoRA paper, PEFT, ComfyUI).

What differs between the families is a `LoRAPolicy` the family passes in (ltx/ltxv/lora.py, ltx/ltx2/lora.py):
the module names of diffusers' layout (0.9.x: `proj_in` = `patchify_proj`, `time_embed` = `adaln_single`), the
family's module names for kohya's flattened ones, and whether alpha applies at all (LTX-2, as ltx-core: no, every
module's alpha is its rank, so the delta is exactly strength * B @ A). This module imports no family; `GENERIC`
(same names, alpha applies, no kohya names) is the default.

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
- "trainer" (LTX-Video-Trainer, the official LTX-2 trainer `ltx-trainer`, the official LTX-2 LoRAs):
  `diffusion_model.` prefix (also read: `model.diffusion_model.`; a `transformer.` one reads as "diffusers"), no
  alpha tensors: alpha = rank unless the header says otherwise.
- "kohya" (kohya-ss / musubi-tuner, loaded by ComfyUI): `lora_unet_<module with every '.' as '_'>.lora_down.weight`
  (= A), `.lora_up.weight` (= B) and `.alpha` (0-dim float32). Flattening loses where the dots were, so reading
  maps the names back through the family's module names (`LoRAPolicy.from_kohya`, built with `kohya_resolver`
  from the family's Linear names, as ComfyUI maps them from the model's keys).
- "ltx": canonical names, no prefix.
Reading also accepts kohya's `lora_down` / `lora_up` for A / B under the other prefixes.

Which tool loads which file (tests/test_lora_interop.py, tests/ltx2/test_ltx2_lora_files.py):
- diffusers (0.9.x): "diffusers" folders through the standard `LTXPipeline.load_lora_weights(folder)`, every module
  with its alpha. Its LTX key conversion (`_convert_non_diffusers_ltxv_lora_to_diffusers`) only swaps a
  `diffusion_model.` prefix for `transformer.` and renames nothing, so from "trainer" files it loads the modules
  whose names agree (all of `transformer_blocks.*`, `caption_projection.*`, `proj_out`) and drops `patchify_proj`
  and `adaln_single.*` adapters (they name no module of diffusers' model, a logged "unexpected keys"); "comfy" files
  it refuses (`load_lora_weights` wants "lora" in every key; `.alpha` keys have none; its two lower calls
  `LTXPipeline.lora_state_dict(file, return_lora_metadata=True)` + `load_lora_into_transformer(sd, transformer,
  metadata=meta)` take them, with the trainer files' drop: tests/test_lora.py), in "kohya" files it finds no keys
  of its own (it loads nothing). Convert those with `tools/convert_weights.py FILE OUT --to diffusers`.
- diffusers (LTX-2): `LTX2Pipeline.load_lora_weights` renames `diffusion_model.` names itself (patchify_proj ->
  proj_in, adaln_single -> time_embed, ...): "trainer" files load whole.
- ltx-core / ltx-pipelines (LTX-2): "trainer" and "comfy" files (it strips `diffusion_model.` and ignores `.alpha`).
Every file written here carries in its safetensors header: `format=ltx-lora`, `layout` (the layout name), `rank`
and `alpha` (the most common values), `alpha_pattern` (JSON {module: alpha} for modules that differ), `targets`
(JSON list), `base_model` (free text), and `lora_adapter_metadata` (`transformer.r`, `transformer.lora_alpha`,
`transformer.target_modules`, patterns: diffusers applies it), so every reader that looks applies the same alpha.
A family that ignores alpha (LTX-2) writes alpha = rank: an adapter trained with alpha != rank gets its scale
alpha / rank multiplied into B (see `write_lora`), so ltx-core, ComfyUI and we all add the delta it trained.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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

FORMATS = ("comfy", "diffusers", "trainer", "ltx", "kohya")
LORA_FORMAT = "ltx-lora"  # metadata["format"] of every file written here
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PEFT_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_METADATA = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
PREFIXES = {"comfy": "diffusion_model.", "trainer": "diffusion_model.", "diffusers": "transformer.", "ltx": "",
            "kohya": "lora_unet_"}
KOHYA_PREFIX = PREFIXES["kohya"]
_DIFFUSERS_PREFIXES = ("transformer.", "base_model.model.")
_COMFY_PREFIXES = ("diffusion_model.", "model.diffusion_model.")  # the second: a full ComfyUI state dict's
_BLOCK_NAME = re.compile(r"transformer_blocks\.\d+\.(.+)")
_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_down.weight": "A", ".lora_up.weight": "B",
             ".alpha": "alpha"}
RESERVED = ("format", "layout", "rank", "alpha", "alpha_pattern", "targets", "base_model", PEFT_METADATA)


class LoRAError(CheckpointError):
    """A LoRA file that cannot be read, or that does not fit the model; the message names what and where."""


def _same_name(module: str) -> str:
    return module


def _no_kohya_names(flat: str) -> None:
    return None


def kohya_name(module: str) -> str:
    """Our module name -> kohya's flattened one (ComfyUI's rule): 'transformer_blocks.0.attn1.to_q' ->
    'transformer_blocks_0_attn1_to_q' (without the `lora_unet_` prefix)."""
    return module.replace(".", "_")


def kohya_resolver(linear_names: Iterable[str]) -> Callable[[str], str | None]:
    """A `LoRAPolicy.from_kohya` from a family's Linear module names (one block's are enough: the index of
    `transformer_blocks.N.` is generalised). Returns our name for a flattened one, None for an unknown one."""
    blocks, others = {}, {}
    for name in linear_names:
        m = _BLOCK_NAME.fullmatch(name)
        table, key, value = (blocks, kohya_name(m[1]), m[1]) if m else (others, kohya_name(name), name)
        if table.get(key, value) != value:
            raise ValueError(f"two module names flatten to the same kohya name {key!r}: {table[key]!r}, {value!r}")
        table[key] = value

    def resolve(flat: str) -> str | None:
        m = re.fullmatch(r"transformer_blocks_(\d+)_(.+)", flat)
        if m and m[2] in blocks:
            return f"transformer_blocks.{m[1]}.{blocks[m[2]]}"
        return others.get(flat)

    return resolve


@dataclass(frozen=True)
class LoRAPolicy:
    """What a model family decides about its LoRA files (see the module docstring).

    from_diffusers / to_diffusers: a module name in diffusers' layout (the "diffusers" format, peft folders,
    `transformer.`-prefixed keys) -> ours, and back. from_kohya: kohya's flattened name (no `lora_unet_`) -> ours,
    None when it names no module of the family (`kohya_resolver`). use_alpha: apply the file's alpha (its alpha
    tensors, our header, or a peft config; else alpha = rank); False: alpha = rank for every module whatever the
    file says, and files are written with alpha = rank (the scale baked into B)."""

    from_diffusers: Callable[[str], str] = _same_name
    to_diffusers: Callable[[str], str] = _same_name
    from_kohya: Callable[[str], str | None] = _no_kohya_names
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
    prefixes = [p for p in (*_COMFY_PREFIXES, *_DIFFUSERS_PREFIXES, KOHYA_PREFIX) if any(k.startswith(p) for k in keys)]
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
    if prefix == KOHYA_PREFIX:
        return "kohya", prefix
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

    ours = _our_names(file, list(parts), prefix, policy)
    sources = _alpha_sources(file, meta, fmt, list(ours.values())) if policy.use_alpha else None
    try:
        return _read_parts(path, file, reader, fmt, parts, ours, sources)
    except (ValueError, TypeError, re.error, RuntimeError) as e:
        if isinstance(e, LoRAError):
            raise
        raise LoRAError(f"{file}: alpha or rank entries are not valid: {e}") from None


def _our_names(file: Path, modules: list[str], prefix: str, policy: LoRAPolicy) -> dict[str, str]:
    """{the file's module name: ours} under `policy` (diffusers' names renamed, kohya's unflattened)."""
    if prefix in _DIFFUSERS_PREFIXES:
        return {m: policy.from_diffusers(m) for m in modules}
    if prefix != KOHYA_PREFIX:
        return {m: m for m in modules}
    ours = {m: policy.from_kohya(m) for m in modules}
    unknown = [KOHYA_PREFIX + m for m, o in ours.items() if o is None]
    if unknown:
        hint = ("; read it with the family's reader (ltx.ltxv.lora.read_lora / ltx.ltx2.lora.read_lora), which "
                "knows its module names") if policy.from_kohya is _no_kohya_names else ""
        raise LoRAError(f"{file}: {len(unknown)} kohya names match no Linear module of this model family: "
                        f"{unknown[:5]}{hint}")
    return ours


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


def bake_alpha(weights: LoRAWeights) -> LoRAWeights:
    """The same deltas with alpha = rank: B * (alpha / rank) (computed in float32, stored in B's dtype) for every
    module whose alpha differs from its rank. What a family that ignores alpha (LTX-2, as ltx-core) must write:
    a reader that reads alpha = rank then adds what the adapter trained (up to one rounding of B in its dtype;
    none when alpha / rank is a power of two)."""
    tensors, alpha = dict(weights.tensors), dict(weights.alpha)
    for m, r in weights.rank.items():
        if alpha[m] != r:
            b = tensors[f"{m}.lora_B.weight"]
            tensors[f"{m}.lora_B.weight"] = (b.float() * (alpha[m] / r)).to(b.dtype)
            alpha[m] = float(r)
    return LoRAWeights(tensors, dict(weights.rank), alpha, dict(weights.metadata), weights.format, weights.path)


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
    Under a policy without alpha (LTX-2) modules with alpha != rank are written `bake_alpha`ed.
    Atomic; refuses to overwrite unless `overwrite`. Overwriting a diffusers folder replaces only its weights file
    and adapter_config.json: other files in the folder (a README, other adapters) are kept."""
    if format not in FORMATS:
        raise ValueError(f"unknown LoRA format {format!r}; formats: {FORMATS}")
    clash = sorted(set(extra_metadata or {}) & set(RESERVED))
    if clash:
        raise ValueError(f"extra_metadata may not set {clash} (written from the weights)")
    path = Path(path)
    check_output_path(path, folder=format == "diffusers", overwrite=overwrite)
    if not policy.use_alpha:
        weights = bake_alpha(weights)
    modules = weights.modules
    rank, alpha = most_common(weights.rank), most_common(weights.alpha)
    names = {m: policy.to_diffusers(m) if format == "diffusers" else kohya_name(m) if format == "kohya" else m
             for m in modules}
    prefix = PREFIXES[format]
    entries = []
    for m in modules:
        for kind, part in (("A", "lora_down" if format == "kohya" else "lora_A"),
                           ("B", "lora_up" if format == "kohya" else "lora_B")):
            t = weights.tensors[f"{m}.lora_{kind}.weight"]
            entries.append(TensorEntry(f"{prefix}{names[m]}.{part}.weight", t.dtype, tuple(t.shape),
                                       lambda t=t: t.detach().cpu().contiguous()))
        if format in ("comfy", "kohya"):
            entries.append(TensorEntry(f"{prefix}{names[m]}.alpha", torch.float32, (),
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
