"""Read any supported checkpoint into native modules, and write it back in any format.

Formats:
- "official": LTX-Video single file (`model.diffusion_model.*`, `vae.*`, JSON config in the metadata).
- "diffusers": a folder per component (`transformer/config.json` + `diffusion_pytorch_model*.safetensors`),
  given as the pipeline root or as the component folder itself.
- "ltx": our single file: keys `<component>.<official name>`, metadata `format=ltx` and
  `config = {"dit": asdict(DiTConfig), ...}`.

Every path goes: read headers -> config from metadata (unsupported knobs asserted) -> key table (unknown
keys are errors) -> tensors fetched one at a time. Nothing holds two copies of a checkpoint: loading builds
the module on `meta` and assigns tensors as they are read; writing streams them to disk.

Before anything is loaded or written, `validate(ckpt)` (per component `check_component`) builds each component
on `meta` from its config and compares key sets, shapes and dtypes with the checkpoint's headers, so a file
whose tensors do not fit its own config is refused by the loader and the converter alike, with the first few
missing / unexpected keys, the shape mismatches, and what config the tensors would fit.

`COMPONENTS` lists what each format holds. A component is added by adding an entry: "dit", "vae" and
"upsampler" (the spatial and the temporal latent upsampler; its config says which). The upsampler is a
*standalone* official file: unprefixed keys and a flat metadata config (`official_prefix=""`,
`official_config_key=None`); it is read when a file has no prefixed component, and is written alone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ltx.core.checkpoint import (
    CheckpointError,
    SafetensorsReader,
    TensorEntry,
    TensorInfo,
    atomic_dir,
    check_output_path,
    fit_problems,
    load_strict,
    write_json,
    write_safetensors,
)
from ltx.core.keymap import KeyMapError, Rule, invert, rename
from ltx.core.quant import fixed_dtype_keys, prepare_for_file
from ltx.core.quant.gguf_io import is_gguf, read_gguf
from ltx.ltxv import keys_diffusers as dif
from ltx.ltxv import keys_official as off
from ltx.ltxv import keys_vae as vt
from ltx.ltxv.keys_official import ConfigError, config_diff
from ltx.ltxv.transformer import DiT, DiTConfig
from ltx.ltxv.upsampler import LatentUpsampler, UpsamplerConfig
from ltx.ltxv.vae import VAEConfig, VideoVAE

FORMATS = ("ltx", "official", "diffusers")
LTX_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class Component:
    """How one model (transformer, VAE, ...) appears in each format."""

    name: str  # our name, also the key prefix in the ltx format
    config_cls: type
    build: Callable[[Any], nn.Module]
    official_prefix: str  # key prefix in the official single file
    official_config_key: str | None  # entry of metadata["config"]; None: the metadata config is flat
    config_from_official: Callable[[dict], Any]
    config_to_official: Callable[[Any], dict]
    official_rules: Callable[[Any], tuple[Rule, ...]]  # official keys (with prefix) -> ours
    diffusers_subfolder: str
    config_from_diffusers: Callable[..., Any]
    config_to_diffusers: Callable[[Any], dict]
    diffusers_rules: Callable[[Any], tuple[Rule, ...]]  # diffusers keys -> ours
    # config facts the metadata does not hold, read from the source's key names (official: prefix stripped)
    config_from_keys: Callable[[Any, list[str]], Any] | None = None
    # ours -> diffusers when it is more than invert(diffusers_rules) (keys diffusers has no place for)
    diffusers_rules_out: Callable[[Any], tuple[Rule, ...]] | None = None
    # the config the tensors' shapes imply (for error messages: "this looks like a <other> config"), or None
    config_from_shapes: Callable[[Any, dict[str, TensorInfo]], Any] | None = None


def _block_count(infos: Iterable[str], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in infos if k.startswith(prefix)})


def _dit_config_from_shapes(cfg: DiTConfig, infos: dict[str, TensorInfo]) -> DiTConfig:
    dim, cin = infos["patchify_proj.weight"].shape
    # the shapes hold only num_heads * head_dim: keep the config's split if it fits, else the releases' head_dim 64
    head_dim = next(h for h in (cfg.head_dim if dim == cfg.dim else 64, 64, 128, 32, 16, 8, 1) if dim % h == 0)
    return replace(cfg, num_layers=_block_count(infos, "transformer_blocks."), num_heads=dim // head_dim,
                   head_dim=head_dim, in_channels=cin, out_channels=infos["proj_out.weight"].shape[0],
                   caption_channels=infos["caption_projection.linear_1.weight"].shape[1])


def _upsampler_config_from_shapes(cfg: UpsamplerConfig, infos: dict[str, TensorInfo]) -> UpsamplerConfig:
    mid, cin = infos["initial_conv.weight"].shape[:2]
    spatial = len(infos["upsampler.0.weight"].shape) == 4  # Conv2d: spatial x2; Conv3d: temporal x2
    return replace(cfg, in_channels=cin, mid_channels=mid, num_blocks_per_stage=_block_count(infos, "res_blocks."),
                   spatial=spatial, temporal=not spatial)


COMPONENTS: dict[str, Component] = {
    "dit": Component(
        name="dit",
        config_cls=DiTConfig,
        build=DiT,
        official_prefix=off.DIT_PREFIX,
        official_config_key="transformer",
        config_from_official=off.dit_config_from_official,
        config_to_official=off.dit_config_to_official,
        official_rules=lambda cfg: off.DIT_FROM_OFFICIAL,
        diffusers_subfolder="transformer",
        config_from_diffusers=dif.dit_config_from_diffusers,
        config_to_diffusers=dif.dit_config_to_diffusers,
        diffusers_rules=lambda cfg: dif.DIT_FROM_DIFFUSERS,
        config_from_shapes=_dit_config_from_shapes,
    ),
    "vae": Component(
        name="vae",
        config_cls=VAEConfig,
        build=VideoVAE,
        official_prefix=vt.VAE_PREFIX,
        official_config_key="vae",
        config_from_official=vt.vae_config_from_official,
        config_to_official=vt.vae_config_to_official,
        official_rules=lambda cfg: vt.VAE_FROM_OFFICIAL,
        diffusers_subfolder="vae",
        config_from_diffusers=vt.vae_config_from_diffusers,
        config_to_diffusers=vt.vae_config_to_diffusers,
        diffusers_rules=vt.vae_diffusers_rules,
        config_from_keys=vt.vae_config_from_keys,
        diffusers_rules_out=vt.vae_to_diffusers_rules,
    ),
    "upsampler": Component(
        name="upsampler",
        config_cls=UpsamplerConfig,
        build=LatentUpsampler,
        official_prefix="",  # a standalone file
        official_config_key=None,  # flat metadata config
        config_from_official=vt.upsampler_config_from_official,
        config_to_official=vt.upsampler_config_to_official,
        official_rules=lambda cfg: vt.UPSAMPLER_RULES,
        diffusers_subfolder="latent_upsampler",
        config_from_diffusers=vt.upsampler_config_from_official,
        config_to_diffusers=vt.upsampler_config_to_diffusers,
        diffusers_rules=lambda cfg: vt.UPSAMPLER_RULES,
        config_from_shapes=_upsampler_config_from_shapes,
    ),
}


@dataclass
class ComponentWeights:
    """One component of a checkpoint, in our key names, with tensors still on disk."""

    name: str
    config: Any
    infos: dict[str, TensorInfo]  # our key -> dtype/shape
    fetch: Callable[[str], Tensor]  # our key -> tensor (read on demand)

    @property
    def component(self) -> Component:
        return COMPONENTS[self.name]


@dataclass
class Checkpoint:
    format: str
    path: Path
    components: dict[str, ComponentWeights]
    # official top-level config entries that belong to no component (scheduler, allowed_inference_steps)
    extra: dict[str, Any] = field(default_factory=dict)


class _Files:
    """Several safetensors files (diffusers shards) seen as one key space."""

    def __init__(self, paths: list[Path]):
        self.readers = [SafetensorsReader(p) for p in paths]
        self.where: dict[str, SafetensorsReader] = {}
        for r in self.readers:
            for k in r.keys():
                if k in self.where:
                    raise CheckpointError(f"key {k!r} is in both {self.where[k].path} and {r.path}")
                self.where[k] = r

    def info(self, key: str) -> TensorInfo:
        return self.where[key].infos[key]

    def get(self, key: str) -> Tensor:
        return self.where[key].get(key)


def _component_weights(
    name: str, cfg: Any, files: _Files, keys: list[str], rules: tuple[Rule, ...]
) -> ComponentWeights:
    try:
        mapping = rename(keys, rules)  # ours -> source key
    except KeyMapError as e:
        raise CheckpointError(f"{name}: {e}") from None
    return ComponentWeights(
        name=name,
        config=cfg,
        infos={k: files.info(src) for k, src in mapping.items()},
        fetch=lambda k, m=mapping: files.get(m[k]),
    )


def _config(where: object, what: str, make: Callable[[], Any]) -> Any:
    """Run a config translation; its errors (a knob ltx does not implement, a missing or mistyped field) become
    one-line ConfigErrors that name the file."""
    try:
        return make()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except CheckpointError:
        raise
    except KeyError as e:
        raise ConfigError(f"{where}: {what} config has no {e} field") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{where}: {what} config is not valid: {e}") from None


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _read_json(path: Path, *, obj: bool = True) -> Any:
    """A JSON file, with errors that name it; `obj`: it must hold a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if obj and not isinstance(value, dict):
        raise CheckpointError(f"{path}: holds a JSON {_json_type(value)}, not an object")
    return value


def _json_metadata(reader: SafetensorsReader, field_name: str) -> Any:
    raw = reader.metadata.get(field_name)
    if raw is None:
        raise CheckpointError(f"{reader.path}: metadata has no {field_name!r} entry (keys: {sorted(reader.metadata)})")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{reader.path}: metadata {field_name!r} is not valid JSON: {e}") from None


def _refuse_ltx2(reader: SafetensorsReader) -> None:
    """LTX-2 files (official bundled or ltx2) are read by ltx.ltx2.checkpoint, not by this 0.9.x reader."""
    audio = any(k.startswith(("audio_vae.", "vocoder.", "audio.")) or ".audio_attn1." in k for k in reader.keys())
    if reader.metadata.get("format") == "ltx2" or audio:
        raise CheckpointError(f"{reader.path}: an LTX-2 checkpoint (audio + video), not LTX-Video 0.9.x: use it with "
                              "the LTX-2 presets (model=ltx-2-19b-dev, ltx-2.3-22b-dev, ...) or ltx.ltx2.checkpoint")


def detect_format(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        return "diffusers"
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if is_gguf(path):
        return "gguf"
    reader = SafetensorsReader(path)
    _refuse_ltx2(reader)
    if reader.metadata.get("format") == "ltx":
        return "ltx"
    prefixes = [c.official_prefix for c in COMPONENTS.values() if c.official_prefix]
    if any(k.startswith(p) for k in reader.keys() for p in prefixes) or "config" in reader.metadata:
        return "official"
    if (path.parent / "config.json").is_file():
        return "diffusers"
    raise CheckpointError(
        f"{path}: cannot tell the format: no ltx metadata, no official prefixes ({prefixes}) and no diffusers "
        f"config.json beside it; first keys: {reader.keys()[:5]}"
    )


def _read_ltx(path: Path) -> Checkpoint:
    reader = SafetensorsReader(path)
    version = reader.metadata.get("format_version")
    if version != LTX_FORMAT_VERSION:
        raise CheckpointError(f"{path}: ltx format version {version!r}; this ltx reads {LTX_FORMAT_VERSION!r}")
    configs = _json_metadata(reader, "config")
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        raise CheckpointError(f"{path}: metadata 'config' is not a JSON object of component configs")
    files = _Files([path])
    comps = {}
    unknown = sorted(set(configs) - set(COMPONENTS))
    if unknown:
        raise CheckpointError(f"{path}: components {unknown} are not known to this ltx ({sorted(COMPONENTS)})")
    for name, c in configs.items():
        comp = COMPONENTS[name]
        cfg = _config(path, name, lambda comp=comp, c=c: comp.config_cls(**c))
        keys = [k for k in reader.keys() if k.startswith(name + ".")]
        comps[name] = _component_weights(name, cfg, files, keys, (Rule(name + ".{rest}", "{rest}"),))
    stray = [k for k in reader.keys() if k.split(".", 1)[0] not in configs]
    if stray:
        raise CheckpointError(f"{path}: {len(stray)} keys belong to no component, e.g. {stray[:5]}")
    extra = _json_metadata(reader, "official_extra") if "official_extra" in reader.metadata else {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: metadata 'official_extra' is not a JSON object")
    return Checkpoint("ltx", path, comps, extra)


def _read_official_standalone(path: Path, reader: SafetensorsReader, configs: Any) -> Checkpoint | None:
    """A file of one standalone component (flat config, unprefixed keys), or None if this is not one."""
    prefixed = [c for c in COMPONENTS.values() if c.official_prefix]
    standalone = [c for c in COMPONENTS.values() if not c.official_prefix]
    if not standalone or not isinstance(configs, dict) or any(c.official_config_key in configs for c in prefixed):
        return None
    if any(k.startswith(c.official_prefix) for c in prefixed for k in reader.keys()):
        return None
    (comp,) = standalone
    cfg = _config(path, comp.name, lambda: comp.config_from_official(configs))
    cw = _component_weights(comp.name, cfg, _Files([path]), reader.keys(), comp.official_rules(cfg))
    return Checkpoint("official", path, {comp.name: cw})


def _read_official(path: Path) -> Checkpoint:
    reader = SafetensorsReader(path)
    _refuse_ltx2(reader)
    configs = _json_metadata(reader, "config")
    if not isinstance(configs, dict):
        raise CheckpointError(f"{path}: metadata 'config' is a JSON {_json_type(configs)}, not an object")
    standalone = _read_official_standalone(path, reader, configs)
    if standalone is not None:
        return standalone
    files = _Files([path])
    comps = {}
    claimed: set[str] = set()
    for name, comp in COMPONENTS.items():
        if not comp.official_prefix:
            continue  # standalone files are handled above
        keys = [k for k in reader.keys() if k.startswith(comp.official_prefix)]
        if not keys:
            continue
        if comp.official_config_key is None:
            c = configs
        elif comp.official_config_key in configs:
            c = configs[comp.official_config_key]
        else:
            raise CheckpointError(f"{path}: has {name} tensors but metadata config has no {comp.official_config_key!r}")
        if not isinstance(c, dict):
            raise CheckpointError(f"{path}: metadata config {comp.official_config_key!r} is a JSON "
                                  f"{_json_type(c)}, not an object")
        cfg = _config(path, comp.official_config_key or name, lambda comp=comp, c=c: comp.config_from_official(c))
        if comp.config_from_keys is not None:
            stripped = [k[len(comp.official_prefix) :] for k in keys]
            cfg = _config(path, name, lambda comp=comp, cfg=cfg, k=stripped: comp.config_from_keys(cfg, k))
        comps[name] = _component_weights(name, cfg, files, keys, comp.official_rules(cfg))
        claimed.update(keys)
    stray = [k for k in reader.keys() if k not in claimed]
    if stray:
        raise CheckpointError(
            f"{path}: {len(stray)} keys belong to no component this ltx converts "
            f"(prefixes {[c.official_prefix for c in COMPONENTS.values() if c.official_prefix]}), e.g. {stray[:5]}"
        )
    if not comps:
        raise CheckpointError(f"{path}: no component found (empty checkpoint?)")
    used = {c.official_config_key for c in COMPONENTS.values() if c.name in comps}
    extra = {k: v for k, v in configs.items() if k not in used} if isinstance(configs, dict) else {}
    return Checkpoint("official", path, comps, extra)


def _diffusers_files(folder: Path) -> list[Path]:
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        weight_map = _read_json(index[0]).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index[0]}: no 'weight_map' object of key -> shard file name")
        return [folder / s for s in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("diffusion_pytorch_model*.safetensors")) or sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors weights in this diffusers folder")
    return files


def _read_diffusers(path: Path, causal_temporal_positioning: bool | None) -> Checkpoint:
    root = path if path.is_dir() else path.parent
    if (root / "config.json").is_file():  # a component folder
        folders = {None: root}
    else:  # a pipeline root
        folders = {c.name: root / c.diffusers_subfolder for c in COMPONENTS.values()}
        folders = {k: v for k, v in folders.items() if (v / "config.json").is_file()}
        if not folders:
            raise CheckpointError(f"{root}: not a diffusers folder (no config.json, no component subfolders)")
    if causal_temporal_positioning is None:
        causal_temporal_positioning = False
        for index in (root / "model_index.json", root.parent / "model_index.json"):
            if index.is_file():
                causal_temporal_positioning = _read_json(index).get("_class_name") in dif.CAUSAL_PIPELINES
                break
    comps = {}
    for name, folder in folders.items():
        c = _read_json(folder / "config.json")
        if name is None:
            matches = [n for n, comp in COMPONENTS.items() if _diffusers_class(comp) == c.get("_class_name")]
            if not matches:
                raise CheckpointError(f"{folder}: diffusers class {c.get('_class_name')!r} is not supported")
            name = matches[0]
        comp = COMPONENTS[name]
        where = folder / "config.json"
        cfg = _config(where, name, lambda comp=comp, c=c: comp.config_from_diffusers(
            c, causal_temporal_positioning=causal_temporal_positioning))
        files = _Files([path] if path.is_file() else _diffusers_files(folder))
        if comp.config_from_keys is not None:
            cfg = _config(where, name, lambda comp=comp, cfg=cfg, f=files: comp.config_from_keys(cfg, list(f.where)))
        comps[name] = _component_weights(name, cfg, files, list(files.where), comp.diffusers_rules(cfg))
    return Checkpoint("diffusers", path, comps)


def _diffusers_class(comp: Component) -> str:
    return comp.config_to_diffusers(comp.config_cls())["_class_name"]


def read_checkpoint(path: str | os.PathLike, *, causal_temporal_positioning: bool | None = None) -> Checkpoint:
    """Open a checkpoint of any supported format (auto-detected); tensors stay on disk until fetched.

    `causal_temporal_positioning` overrides the flag for diffusers checkpoints, whose configs do not store it.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "ltx":
        return _read_ltx(path)
    if fmt == "official":
        return _read_official(path)
    if fmt == "gguf":
        return _read_gguf(path)
    return _read_diffusers(path, causal_temporal_positioning)


def _read_gguf(path: Path) -> Checkpoint:
    """A GGUF transformer (ComfyUI-GGUF names, ltx.core.quant.gguf_io): the dit alone, its config from the file's
    `ltx.config` field (files written by ltx) or else from the tensor shapes (community files)."""
    f = read_gguf(path)
    if f.metadata.get("ltx.family") == "ltx2" or any(".audio_attn1." in k for k in f.keys()):
        raise CheckpointError(f"{path}: an LTX-2 transformer in GGUF, not LTX-Video 0.9.x: LTX-2 GGUF files load "
                              "with ltx.core.quant.load_quantized into a transformer built from the bundle's config")
    keys = {k.removeprefix(off.DIT_PREFIX): k for k in f.keys()}
    infos = {ours: f.infos[k] for ours, k in keys.items()}
    if "ltx.config" in f.metadata:
        cfg = _config(path, "transformer", lambda: off.dit_config_from_official(
            json.loads(f.metadata["ltx.config"])["transformer"]))
    else:
        shapes = {ours: TensorInfo(i.dtype, f.logical.get(k, i.shape)) for ours, k in keys.items()
                  for i in (f.infos[k],)}
        cfg = _config(path, "transformer", lambda: _dit_config_from_shapes(DiTConfig(), shapes))
        cfg = _preset_dit(cfg) or cfg  # the head split and flags are not in the shapes: a preset of these sizes
    comp = ComponentWeights("dit", cfg, infos, lambda k, m=keys: f.get(m[k]))
    return Checkpoint("gguf", path, {"dit": comp})


# ---------------------------------------------------------------------------------------------- validation

_CONFIG_SOURCE = {"official": "the metadata config", "ltx": "the metadata config", "diffusers": "config.json"}


def _expected(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict(keep_vars=True).items()}


def _build_meta(cw: ComponentWeights, where: str) -> nn.Module:
    try:
        with torch.device("meta"):
            module = cw.component.build(cw.config)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as e:
        raise ConfigError(f"{where}: cannot build {cw.component.build.__name__} from its config ({e})") from None
    return prepare_for_file(module, cw.infos, where=where)  # a quantized file's Linears (ltx.core.quant)


def _span(indices: set[int]) -> str:
    if not indices:
        return "none"
    lo, hi = min(indices), max(indices)
    if indices == set(range(lo, hi + 1)):
        return f"{lo}..{hi}" if hi > lo else f"{lo}"
    shown = sorted(indices)
    return ",".join(map(str, shown[:8])) + (",..." if len(shown) > 8 else "")


def _indexed(keys: Iterable[str]) -> dict[str, set[int]]:
    """{'transformer_blocks': {0, 1, ...}, 'encoder.down_blocks.0.res_blocks': {...}}: numbered module lists."""
    out: dict[str, set[int]] = {}
    for k in keys:
        for m in re.finditer(r"(?:^|\.)(\d+)(?=\.)", k):
            out.setdefault(k[: m.start()], set()).add(int(m.group(1)))
    return out


def _preset_names(cfg: DiTConfig) -> list[str]:
    """Names of the model presets (configs/model/*.yaml of this checkout) whose transformer has these sizes."""
    folder = Path(__file__).resolve().parents[2] / "configs" / "model"
    try:
        import yaml

        names = []
        for f in sorted(folder.glob("*.yaml")):
            preset = yaml.safe_load(f.read_text()) or {}
            if not preset.get("dit"):
                continue  # an LTX-2 preset
            dit = DiTConfig(**{k: v for k, v in preset["dit"].items()
                               if k in ("num_layers", "num_heads", "head_dim", "in_channels", "out_channels",
                                        "caption_channels")})
            if (dit.num_layers, dit.dim, dit.in_channels, dit.out_channels, dit.caption_channels) == (
                    cfg.num_layers, cfg.dim, cfg.in_channels, cfg.out_channels, cfg.caption_channels):
                names.append(f.stem)
        return names
    except Exception:  # noqa: BLE001 - a hint only; never let it hide the real error
        return []


def _preset_dit(cfg: DiTConfig) -> DiTConfig | None:
    """The full transformer config of the first preset (configs/model/*.yaml) with `cfg`'s sizes, or None."""
    names = _preset_names(cfg)
    if not names:
        return None
    import yaml

    folder = Path(__file__).resolve().parents[2] / "configs" / "model"
    dit = yaml.safe_load((folder / f"{names[0]}.yaml").read_text())["dit"]
    known = {f.name for f in fields(DiTConfig)}
    return DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in dit.items() if k in known})


def _hints(cw: ComponentWeights, expected: dict, source: str) -> list[str]:
    """What would be valid: numbered module lists whose ranges differ, and the config the shapes imply."""
    hints = []
    built, found = _indexed(expected), _indexed(cw.infos)
    for prefix in sorted(set(built) | set(found), key=lambda p: (p.count("."), p)):
        if built.get(prefix, set()) != found.get(prefix, set()) and not any(
                prefix.startswith(h + ".") for h in built.keys() | found.keys()
                if built.get(h, set()) != found.get(h, set())):  # report the outermost list only
            hints.append(f"{source} builds {prefix} {_span(built.get(prefix, set()))} but the file has "
                         f"{prefix} {_span(found.get(prefix, set()))}")
        if len(hints) == 3:
            break
    comp = cw.component
    if comp.config_from_shapes is not None:
        try:
            cand = comp.config_from_shapes(cw.config, cw.infos)
            with torch.device("meta"):
                built_cand = _expected(comp.build(cand))
            fits = not fit_problems(built_cand, {k: (i.shape, i.dtype) for k, i in cw.infos.items()})
        except Exception:  # noqa: BLE001 - the shapes imply no buildable config; no hint
            fits = False
        if fits and cand != cw.config:
            diff = config_diff(cw.config, cand)
            if isinstance(cand, DiTConfig) and cand.dim != cw.config.dim:  # only the product is in the shapes
                diff.pop("num_heads", None), diff.pop("head_dim", None)
                diff["width (num_heads*head_dim)"] = (cw.config.dim, cand.dim)
            says = ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items())
            has = ", ".join(f"{k}={b!r}" for k, (_, b) in diff.items())
            hint = f"{source} says {says} but the tensors fit {has}: this looks like another model's config"
            presets = _preset_names(cand) if isinstance(cand, DiTConfig) else []
            if presets:
                hint += f" (sizes of {', '.join(presets)})"
            hints.append(hint)
    return hints


def check_component(cw: ComponentWeights, *, where: object = "checkpoint", source: str = "its config") -> nn.Module:
    """Refuse a component whose tensors do not fit its config, from the headers alone; return the `meta` module.

    Builds the module on `meta` from `cw.config` and compares its state dict with `cw.infos` (keys already in our
    names, mapped by the reader's rules): key sets, shapes, floating-point dtypes. The CheckpointError names
    `where`, the first few missing / unexpected keys with counts, the shape mismatches (key, file shape, model
    shape), and what would be valid (numbered module lists whose ranges differ; the config the shapes imply).
    `source` names where the config came from ("the metadata config", "config.json")."""
    module = _build_meta(cw, str(where))
    expected = _expected(module)
    problems = fit_problems(expected, {k: (i.shape, i.dtype) for k, i in cw.infos.items()})
    if problems:
        problems += _hints(cw, expected, source)
        raise CheckpointError(f"{where} does not fit {type(module).__name__} as {source} describes it: "
                              + " | ".join(problems))
    return module


def validate(ckpt: Checkpoint) -> None:
    """`check_component` for every component of `ckpt`: what `load_component` checks, without reading tensors.
    The converter runs it before any writer (and in --dry-run)."""
    source = _CONFIG_SOURCE.get(ckpt.format, "its config") if str(ckpt.path) != "<memory>" else "the module config"
    for name, cw in ckpt.components.items():
        check_component(cw, where=f"{ckpt.path} ({name})", source=source)


def load_component(
    path: str | os.PathLike | Checkpoint,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    expected_config: Any = None,
) -> nn.Module:
    """Build component `name` on `meta` from the checkpoint's own config and load its weights strictly.

    The checkpoint's config is authoritative; if `expected_config` is given and differs, raise naming the fields.
    """
    ckpt = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    if name not in ckpt.components:
        raise CheckpointError(f"{ckpt.path}: has no {name!r} component (it has {sorted(ckpt.components)})")
    cw = ckpt.components[name]
    if expected_config is not None and expected_config != cw.config:
        diff = config_diff(cw.config, expected_config)
        shown = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{ckpt.path}: {name} config contradicts the expected config: {shown}")
    source = _CONFIG_SOURCE.get(ckpt.format, "its config")
    module = check_component(cw, where=f"{ckpt.path} ({name})", source=source)  # before reading any tensor
    sd = {}
    keep = fixed_dtype_keys(module)  # quantized weights and their scales keep the file's dtypes
    for k in cw.infos:
        t = cw.fetch(k)
        if dtype is not None and t.is_floating_point() and k not in keep:
            t = t.to(dtype)
        sd[k] = t.to(device)
    load_strict(module, sd, what=f"{ckpt.path} ({name})")
    return module.eval()


def load_dit(path: str | os.PathLike, **kwargs) -> DiT:
    """Load the transformer of any supported checkpoint (see `load_component` for the keyword arguments)."""
    return load_component(path, "dit", **kwargs)


def load_vae(path: str | os.PathLike, **kwargs) -> VideoVAE:
    """Load the VAE of any supported checkpoint (see `load_component` for the keyword arguments)."""
    return load_component(path, "vae", **kwargs)


def load_upsampler(path: str | os.PathLike, **kwargs) -> LatentUpsampler:
    """Load a latent upsampler (spatial or temporal) of any supported checkpoint."""
    return load_component(path, "upsampler", **kwargs)


# ---------------------------------------------------------------------------------------------------- writing


def _entries(cw: ComponentWeights, rules: tuple[Rule, ...], dtype: torch.dtype | None) -> list[TensorEntry]:
    """Entries in the target key names; `rules` map our keys to the target's."""
    def cast(info: TensorInfo) -> torch.dtype:
        return dtype if dtype is not None and info.dtype.is_floating_point else info.dtype

    out = []
    for new, ours in rename(cw.infos, rules).items():
        info = cw.infos[ours]
        target = cast(info)
        out.append(TensorEntry(new, target, info.shape, lambda k=ours, d=target: cw.fetch(k).to(d)))
    return out


def write_ltx(ckpt: Checkpoint, path: str | os.PathLike, *, dtype=None, overwrite=False, progress=None) -> Path:
    entries = []
    for name, cw in ckpt.components.items():
        entries += _entries(cw, (Rule("{rest}", name + ".{rest}"),), dtype)
    meta = {
        "format": "ltx",
        "format_version": LTX_FORMAT_VERSION,
        "config": json.dumps({n: asdict(cw.config) for n, cw in ckpt.components.items()}),
        "official_extra": json.dumps(ckpt.extra),
        "source": f"{ckpt.format}:{Path(ckpt.path).name}",
    }
    return write_safetensors(path, entries, meta, overwrite=overwrite, progress=progress)


def write_official(ckpt: Checkpoint, path: str | os.PathLike, *, dtype=None, overwrite=False, progress=None) -> Path:
    entries, config = [], dict(ckpt.extra)
    standalone = [n for n, cw in ckpt.components.items() if not cw.component.official_prefix]
    if standalone and len(ckpt.components) > 1:
        raise CheckpointError(
            f"official format: {standalone[0]} is a file of its own (unprefixed keys, flat config); write it "
            f"separately from {sorted(set(ckpt.components) - set(standalone))}"
        )
    for cw in ckpt.components.values():
        comp = cw.component
        entries += _entries(cw, invert(comp.official_rules(cw.config)), dtype)
        c = comp.config_to_official(cw.config)
        if comp.official_config_key is None:
            config.update(c)
        else:
            config[comp.official_config_key] = c
    return write_safetensors(path, entries, {"config": json.dumps(config)}, overwrite=overwrite, progress=progress)


DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_FILES = ("config.json", DIFFUSERS_WEIGHTS)  # what write_diffusers puts in each component folder


def diffusers_foreign_files(path: str | os.PathLike, components: Iterable[str]) -> list[str]:
    """Files in an existing diffusers folder that `write_diffusers` (of `components`) would replace but did not
    write: anything but config.json and the weights inside the component subfolders it writes (other shards, a
    README, an index), or a file where such a subfolder goes. Everything else in `path` is left alone anyway."""
    path, foreign = Path(path), []
    for name in components:
        sub = path / COMPONENTS[name].diffusers_subfolder
        if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
            foreign.append(sub.name)
        elif sub.is_dir():
            foreign += [f"{sub.name}/{p.name}" for p in sorted(sub.iterdir()) if p.name not in DIFFUSERS_FILES]
    return foreign


def write_diffusers(ckpt: Checkpoint, path: str | os.PathLike, *, dtype=None, overwrite=False, progress=None) -> Path:
    """Write a diffusers pipeline-style folder: one subfolder per component.

    A new folder is built aside and renamed in. Into an existing folder (`overwrite=True`) only the component
    subfolders written here are replaced (each built aside, all renamed in once every one is complete); other
    files and folders in it (other models, notes) are kept. A component subfolder that holds files this writer
    does not write is refused, naming them, rather than deleted."""
    path = Path(path)
    check_output_path(path, folder=True, overwrite=overwrite)
    if path.is_dir():
        foreign = diffusers_foreign_files(path, ckpt.components)
        if foreign:
            subs = sorted(f"{cw.component.diffusers_subfolder}/" for cw in ckpt.components.values())
            shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
            raise FileExistsError(
                f"{path}: overwriting replaces the component folders {', '.join(subs)}, and they hold files this "
                f"converter does not write: {shown}; move them away or write to another folder")
    plans = []  # every config and key table first: what diffusers cannot express is refused before any file
    for cw in ckpt.components.values():
        comp = cw.component
        out = comp.diffusers_rules_out or (lambda cfg, c=comp: invert(c.diffusers_rules(cfg)))
        entries = _entries(cw, out(cw.config), dtype)
        plans.append((comp.diffusers_subfolder, comp.config_to_diffusers(cw.config), entries))
    with ExitStack() as stack:
        if path.is_dir():
            folders = [stack.enter_context(atomic_dir(path / sub)) for sub, _, _ in plans]
        else:
            root = stack.enter_context(atomic_dir(path, overwrite=False))
            folders = [root / sub for sub, _, _ in plans]
        for folder, (_, config, entries) in zip(folders, plans):
            write_json(folder / "config.json", config)
            write_safetensors(folder / DIFFUSERS_WEIGHTS, entries, {"format": "pt"}, progress=progress)
    return path


WRITERS = {"ltx": write_ltx, "official": write_official, "diffusers": write_diffusers}


def checkpoint_from_modules(modules: dict[str, nn.Module], *, extra: dict | None = None) -> Checkpoint:
    """Wrap in-memory modules (each with a `.cfg` of its component's config class) as a Checkpoint, so that
    any writer can save them: `write_ltx(checkpoint_from_modules({"dit": dit, "vae": vae}), path)`."""
    comps = {}
    for name, module in modules.items():
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; known: {sorted(COMPONENTS)}")
        cfg = module.cfg
        if not isinstance(cfg, COMPONENTS[name].config_cls):
            want = COMPONENTS[name].config_cls.__name__
            raise TypeError(f"{name}: module config is a {type(cfg).__name__}, not {want}")
        sd = {k: v.detach() for k, v in module.state_dict().items()}
        comps[name] = ComponentWeights(name=name, config=cfg,
                                       infos={k: TensorInfo(v.dtype, tuple(v.shape)) for k, v in sd.items()},
                                       fetch=lambda k, sd=sd: sd[k].cpu())
    return Checkpoint("ltx", Path("<memory>"), comps, dict(extra or {}))
