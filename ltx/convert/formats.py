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

`COMPONENTS` lists what each format holds. A component is added by adding an entry: "dit", "vae" and
"upsampler" (the spatial and the temporal latent upsampler; its config says which). The upsampler is a
*standalone* official file: unprefixed keys and a flat metadata config (`official_prefix=""`,
`official_config_key=None`); it is read when a file has no prefixed component, and is written alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ltx.checkpoint import (
    CheckpointError,
    SafetensorsReader,
    TensorEntry,
    TensorInfo,
    load_strict,
    write_json,
    write_safetensors,
)
from ltx.convert import diffusers as dif
from ltx.convert import official as off
from ltx.convert import vae_tables as vt
from ltx.convert.keymap import KeyMapError, Rule, invert, rename
from ltx.convert.official import ConfigError, config_diff
from ltx.models.dit import DiT, DiTConfig
from ltx.models.upsampler import LatentUpsampler, UpsamplerConfig
from ltx.models.vae import VAEConfig, VideoVAE

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


def _json_metadata(reader: SafetensorsReader, field_name: str) -> Any:
    raw = reader.metadata.get(field_name)
    if raw is None:
        raise CheckpointError(f"{reader.path}: metadata has no {field_name!r} entry (keys: {sorted(reader.metadata)})")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{reader.path}: metadata {field_name!r} is not valid JSON: {e}") from None


def detect_format(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        return "diffusers"
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    reader = SafetensorsReader(path)
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
    files = _Files([path])
    comps = {}
    unknown = sorted(set(configs) - set(COMPONENTS))
    if unknown:
        raise CheckpointError(f"{path}: components {unknown} are not known to this ltx ({sorted(COMPONENTS)})")
    for name, c in configs.items():
        comp = COMPONENTS[name]
        cfg = comp.config_cls(**c)
        keys = [k for k in reader.keys() if k.startswith(name + ".")]
        comps[name] = _component_weights(name, cfg, files, keys, (Rule(name + ".{rest}", "{rest}"),))
    stray = [k for k in reader.keys() if k.split(".", 1)[0] not in configs]
    if stray:
        raise CheckpointError(f"{path}: {len(stray)} keys belong to no component, e.g. {stray[:5]}")
    extra = json.loads(reader.metadata.get("official_extra", "{}"))
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
    cfg = comp.config_from_official(configs)
    cw = _component_weights(comp.name, cfg, _Files([path]), reader.keys(), comp.official_rules(cfg))
    return Checkpoint("official", path, {comp.name: cw})


def _read_official(path: Path) -> Checkpoint:
    reader = SafetensorsReader(path)
    configs = _json_metadata(reader, "config")
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
        cfg = comp.config_from_official(c)
        if comp.config_from_keys is not None:
            cfg = comp.config_from_keys(cfg, [k[len(comp.official_prefix) :] for k in keys])
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
        with open(index[0]) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [folder / s for s in shards]
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
                with open(index) as f:
                    causal_temporal_positioning = json.load(f).get("_class_name") in dif.CAUSAL_PIPELINES
                break
    comps = {}
    for name, folder in folders.items():
        with open(folder / "config.json") as f:
            c = json.load(f)
        if name is None:
            matches = [n for n, comp in COMPONENTS.items() if _diffusers_class(comp) == c.get("_class_name")]
            if not matches:
                raise CheckpointError(f"{folder}: diffusers class {c.get('_class_name')!r} is not supported")
            name = matches[0]
        comp = COMPONENTS[name]
        cfg = comp.config_from_diffusers(c, causal_temporal_positioning=causal_temporal_positioning)
        files = _Files([path] if path.is_file() else _diffusers_files(folder))
        if comp.config_from_keys is not None:
            cfg = comp.config_from_keys(cfg, list(files.where))
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
    return _read_diffusers(path, causal_temporal_positioning)


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
    with torch.device("meta"):
        module = cw.component.build(cw.config)
    sd = {}
    for k in cw.infos:
        t = cw.fetch(k)
        if dtype is not None and t.is_floating_point():
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


def write_diffusers(ckpt: Checkpoint, path: str | os.PathLike, *, dtype=None, overwrite=False, progress=None) -> Path:
    """Write a diffusers pipeline-style folder: one subfolder per component (built aside, then renamed in)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for cw in ckpt.components.values():
            comp = cw.component
            sub = tmp / comp.diffusers_subfolder
            write_json(sub / "config.json", comp.config_to_diffusers(cw.config))
            out = comp.diffusers_rules_out or (lambda cfg, c=comp: invert(c.diffusers_rules(cfg)))
            entries = _entries(cw, out(cw.config), dtype)
            write_safetensors(sub / "diffusion_pytorch_model.safetensors", entries, {"format": "pt"}, progress=progress)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
