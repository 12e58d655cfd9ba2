"""LTX-2 checkpoints: the official bundled single file, our ltx2 file, and the components inside them.

The official file (`ltx-2-19b-dev.safetensors`, `ltx-2.3-22b-dev.safetensors`, ...) holds five components
under fixed key prefixes, and a JSON `config` in its metadata with one sub-dict per component, plus a
`model_version` ("2.3..." selects the LTX-2.3 defaults). Prefixes, as ltx-core 1.0.0's SDOps read them:

| component   | file prefix                                                          | our module          |
|-------------|----------------------------------------------------------------------|---------------------|
| transformer | `model.diffusion_model.` (minus the two connectors below)            | `AVTransformer`     |
| text        | `text_embedding_projection.` -> `feature_extractor.`,                | `EmbeddingsProcessor` |
|             | `model.diffusion_model.{video,audio}_embeddings_connector.` -> `{video,audio}_connector.` |  |
| vae         | `vae.`                                                               | `VideoVAE`          |
| audio_vae   | `audio_vae.`                                                         | `AudioVAE`          |
| vocoder     | `vocoder.` (stripped once: BWE files keep `vocoder.vocoder.*`)       | `Vocoder(WithBWE)`  |
| duration_head | `duration_head.` (LTX-2.5)                                         | `DurationHead`      |

LTX-2.5 also ships split, one file per component (ltx-pipelines 1.2.0 `--transformer-path`, `--video-vae-path`,
`--audio-vae-path`, `--duration-head-path`; ComfyUI's layout): the same prefixes, each file's metadata `config`
holding its components' sub-dicts. `read` takes such files as a list or a folder and indexes them as one checkpoint
(`SplitReader`): a key held by two files, or two files whose configs or model versions disagree, is an error naming
both. In a folder, `.safetensors` files that hold no LTX-2 component (Gemma shards, upsamplers) are left out.

The latent upsamplers are separate files (unprefixed keys, a flat metadata config): `read_upsampler` /
`load_upsampler` / `write_upsampler`. They have one layout (ltx loads them as they are); writing one again only
casts (`dtype`). An LTX-2 upsampler is told from an LTX-Video 0.9.x one by its metadata: ltx-core 1.0.0's
configurator reads `spatial_scale` and `rational_resampler`, which the 0.9.x configs do not have, and the
rational resamplers' keys (`upsampler.conv.*`, `upsampler.blur_down.kernel`) exist only in LTX-2. A pixel-shuffle
x2 or temporal x2 file without those metadata keys is the 0.9.x layout exactly (same network, same keys):
`read_upsampler` accepts it, but `detect` leaves it to the 0.9.x reader (ltx.ltxv.checkpoint), so the
converter treats it as a 0.9.x `upsampler`, losslessly either way.

Our ltx2 file keeps every tensor bitwise and names it `<component>.<our key>`; its metadata holds
`format=ltx2`, the official `config` JSON verbatim and `model_version`, so official -> ltx2 -> official is a
bitwise round trip of tensors and metadata. Unlike ltx-core's loader (strict=False, silently returning meta
tensors), every load here is strict: a missing, unexpected or misshapen key is an error naming it, and the
check runs on the headers before any tensor is read (`check`), naming the file's keys.

Two things are built to fit the file rather than assumed:
- the video VAE's `per_channel_statistics.channel` / `mean-of-stds` (held by the released files, never read by
  ltx-core): the VAE is built with `extra_statistics` set to whether the file has them, so both kinds load
  strictly;
- buffers registered with `persistent=False` (the 2.3 vocoder's `resampler.filter`) are not in the file:
  their modules compute them on the CPU even inside a `meta` build; `load` moves them to the target device and
  refuses a module that would be left with a buffer on `meta`.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltx.core.checkpoint import (
    CheckpointError,
    SafetensorsReader,
    TensorEntry,
    TensorInfo,
    fit_problems,
    load_strict,
    metadata_object,
    write_safetensors,
)
from ltx.core.quant import QuantError, fixed_dtype_keys, prepare_for_file
from ltx.ltx2.audio_vae import AudioVAE, AudioVAEConfig
from ltx.ltx2.duration import DurationHead, DurationHeadConfig
from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig
from ltx.ltx2.upsampler import LatentUpsampler2, LatentUpsamplerConfig
from ltx.ltx2.vae import EXTRA_STATISTICS, VideoVAE, VideoVAEConfig
from ltx.ltx2.vocoder import VocoderConfig, build_vocoder

LTX2_FORMAT = "ltx2"
LTX2_FORMAT_VERSION = "1"
_CONNECTORS = ("model.diffusion_model.video_embeddings_connector.", "model.diffusion_model.audio_embeddings_connector.")


@dataclass(frozen=True)
class Component:
    """One model inside the bundled file: where its tensors live and how to build it from the metadata."""

    name: str
    config_key: str | None  # sub-dict of metadata["config"] its config is read from; None: the whole config
    renames: tuple[tuple[str, str], ...]  # (file prefix, our prefix), first match wins
    exclude: tuple[str, ...] = ()  # file prefixes under `renames` that belong to another component
    # (metadata config sub-dict, our keys the file holds or None) -> module, built on the caller's device
    make: Callable[[dict, Collection[str] | None], nn.Module] | None = None

    def ours(self, file_key: str) -> str | None:
        """Our key for a file key, or None when the key is not this component's."""
        if any(file_key.startswith(p) for p in self.exclude):
            return None
        for src, dst in self.renames:
            if file_key.startswith(src):
                return dst + file_key[len(src):]
        return None

    def official(self, our_key: str) -> str:
        for src, dst in self.renames:
            if our_key.startswith(dst):
                return src + our_key[len(dst):]
        raise CheckpointError(f"{self.name}: key {our_key!r} has no place in the official layout")


def _make_transformer(c: dict, keys: Collection[str] | None = None) -> nn.Module:
    return AVTransformer(AVTransformerConfig.from_metadata(c))


def _make_text(c: dict, keys: Collection[str] | None = None) -> nn.Module:
    return EmbeddingsProcessor(TextConnectorConfig.from_metadata(c))


def _make_vae(c: dict, keys: Collection[str] | None = None) -> nn.Module:
    if c.get("_class_name", "CausalVideoAutoencoder") != "CausalVideoAutoencoder":
        raise CheckpointError(f"vae: a {c['_class_name']} (LTX-2.5's diffusion VAE) file: give the convolutional VAE "
                              "(ltx-2.5-video-vae-conv) as the checkpoint's vae, and this file as the video decoder "
                              "(vae= / vae_checkpoint=: ltx.ltx2.diffusion_decoder.load_decoder)")
    cfg = VideoVAEConfig.from_metadata(c)
    if keys is not None:  # hold the two unused statistics when the file does (one alone: the check names the other)
        cfg = replace(cfg, extra_statistics=any(f"per_channel_statistics.{n}" in keys for n in EXTRA_STATISTICS))
    return VideoVAE(cfg)


def _make_audio_vae(c: dict, keys: Collection[str] | None = None) -> nn.Module:
    return AudioVAE(AudioVAEConfig.from_metadata(c))


def _make_vocoder(c: dict, keys: Collection[str] | None = None) -> nn.Module:
    return build_vocoder(VocoderConfig.from_metadata(c))


def _make_duration_head(c: dict, keys: Collection[str] | None = None) -> nn.Module:
    return DurationHead(DurationHeadConfig.from_metadata(c))  # widths from `transformer`, the rest `duration_head`


COMPONENTS: dict[str, Component] = {
    "transformer": Component("transformer", "transformer", (("model.diffusion_model.", ""),), _CONNECTORS,
                             _make_transformer),
    "text": Component("text", "transformer", (
        ("text_embedding_projection.", "feature_extractor."),
        (_CONNECTORS[0], "video_connector."),
        (_CONNECTORS[1], "audio_connector."),
    ), (), _make_text),
    "vae": Component("vae", "vae", (("vae.", ""),), (), _make_vae),
    "audio_vae": Component("audio_vae", "audio_vae", (("audio_vae.", ""),), (), _make_audio_vae),
    "vocoder": Component("vocoder", "vocoder", (("vocoder.", ""),), (), _make_vocoder),
    "duration_head": Component("duration_head", None, (("duration_head.", ""),), (), _make_duration_head),
}


class SplitReader:
    """Several .safetensors files read as one (`SafetensorsReader`'s interface): LTX-2.5's split checkpoints.

    Keys must be unique across the files. The metadata is the files' merged: their `config` objects merged per
    component sub-dict (a key given twice must have one value), one `model_version`; other entries the first
    file's. `infos` offsets count through the files in order, so sorting by them keeps each file's data order."""

    def __init__(self, paths: Sequence[str | os.PathLike | Any]):
        # a path, or a reader already made (ltx.ltx2.gemma_pack.ProjectionReader: a packed text encoder's projection)
        self.readers = [p if hasattr(p, "infos") else SafetensorsReader(p) for p in paths]
        self.paths = [r.path for r in self.readers]
        self.path = self.paths[0]
        self.infos: dict[str, TensorInfo] = {}
        self._owner: dict[str, SafetensorsReader] = {}
        base = 0
        for r in self.readers:
            for k, info in r.infos.items():
                if k in self._owner:
                    raise CheckpointError(f"{k!r} is in both {self._owner[k].path} and {r.path}: give each "
                                          "component once")
                self._owner[k] = r
                self.infos[k] = TensorInfo(info.dtype, info.shape, (base + info.offsets[0], base + info.offsets[1]))
            base += max((i.offsets[1] for i in r.infos.values()), default=0)
        self.metadata = self._merged_metadata()

    def _merged_metadata(self) -> dict[str, str]:
        metadata: dict[str, str] = {}
        config: dict[str, Any] = {}
        origin: dict[tuple[str, str], Path] = {}
        versions: dict[str, Path] = {}
        for r in self.readers:
            for k, v in r.metadata.items():
                metadata.setdefault(k, v)
            if "model_version" in r.metadata:
                versions.setdefault(str(r.metadata["model_version"]), r.path)
            raw = r.metadata.get("config")
            if raw is None:
                continue
            for sub, values in metadata_object(r.path, raw).items():
                if not isinstance(values, dict):
                    config.setdefault(sub, values)
                    continue
                merged = config.setdefault(sub, {})
                for key, value in values.items():
                    if key in merged and merged[key] != value:
                        raise CheckpointError(f"config {sub}.{key} is {merged[key]!r} in {origin[sub, key]} but "
                                              f"{value!r} in {r.path}: these files are not one model")
                    merged[key] = value
                    origin.setdefault((sub, key), r.path)
        if len(versions) > 1:
            raise CheckpointError("the files are of different model versions: " + ", ".join(
                f"{p.name} {v!r}" for v, p in versions.items()) + " (give one model's components)")
        if config:
            metadata["config"] = json.dumps(config)
        return metadata

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, key: str) -> torch.Tensor:
        return self._owner[key].get(key)


def component_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files of a split checkpoint: a list as given, or a folder's `.safetensors` files (sorted) that hold an
    LTX-2 component; one file stays one file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_dir():
            return [path]
        files = []
        for f in sorted(path.glob("*.safetensors")):
            try:
                reader = SafetensorsReader(f)
            except CheckpointError:
                continue
            keys = reader.keys()
            packed_text_encoder = "gemma_config" in reader.metadata  # its text projection (ltx.ltx2.gemma_pack)
            if packed_text_encoder or keys and not _is_upsampler_keys(keys) and any(
                    c.ours(k) is not None for c in COMPONENTS.values() for k in keys[:64]):
                files.append(f)
        if not files:
            raise CheckpointError(f"{path}: a folder with no .safetensors file holding an LTX-2 component (give a "
                                  "bundled LTX-2 file, or a folder or list of LTX-2.5 component files)")
        return files
    files = [Path(p).expanduser() for p in source]
    if not files:
        raise CheckpointError("no checkpoint files given")
    return files


_OTHER_NAMES = {"dit": "transformer", "upsampler": None}  # LTX-Video 0.9.x component names


def parse_components(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """`None`/"all" -> every component; "transformer,vae" or a list -> those (order kept, repeats dropped)."""
    if spec is None or spec == "all":
        return tuple(COMPONENTS)
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    bad = [n for n in names if n not in COMPONENTS]
    if bad or not names:
        hint = ""
        if any(n in _OTHER_NAMES for n in bad):
            hint = (" ('dit' and 'upsampler' are LTX-Video 0.9.x components: the LTX-2 transformer is 'transformer', "
                    "its upsamplers are separate files)")
        raise CheckpointError(f"unknown components {bad or names}: choose from {', '.join(COMPONENTS)} "
                              f"(or 'all'){hint}")
    return tuple(dict.fromkeys(names))


@dataclass
class LTX2Checkpoint:
    """What a file holds: per component, our key -> the file key, plus the official config and version."""

    path: Path
    format: str  # "official" or "ltx2"
    config: dict  # the official metadata `config` (sub-dicts per component)
    model_version: str | None
    keys: dict[str, dict[str, str]]  # component -> {our key: key in the file}
    reader: SafetensorsReader
    # the text encoder's config (ltx.ltx2.text.GemmaInfo), when known: it sizes the text component's feature
    # extractor (LTX-2.5's Gemma 4 widths are not in the checkpoint metadata), as ltx-core 1.2.0
    gemma: Any = None

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.keys)

    @property
    def is_2_3(self) -> bool:
        return bool(self.model_version) and str(self.model_version).startswith("2.3")

    def file_key(self, name: str, ours: str) -> str:
        """The key `ours` of component `name` has (or would have) in this file."""
        if ours in self.keys.get(name, {}):
            return self.keys[name][ours]
        return f"{name}.{ours}" if self.format == LTX2_FORMAT else COMPONENTS[name].official(ours)


def _audio_keys(keys: Iterable[str]) -> bool:
    return any(k.startswith(("audio_vae.", "vocoder.")) or ".audio_attn1." in k for k in keys)


def _metadata_json(reader: SafetensorsReader) -> Any:
    try:
        return json.loads(reader.metadata["config"])
    except (KeyError, json.JSONDecodeError):
        return None


def _looks_like_0_9(reader: SafetensorsReader, config: Any) -> bool:
    if isinstance(config, dict) and ("audio_vae" in config or "vocoder" in config):
        return False
    if str(reader.metadata.get("model_version", "")).startswith("2"):
        return False
    keys = reader.keys()
    return not _audio_keys(keys) and any(k.startswith(("model.diffusion_model.", "vae.")) for k in keys)


_VERSION = re.compile(r"2(\.\d+)*([-+][0-9A-Za-z.+-]+)?")  # "2", "2.0.0", "2.3.0", "2.3.0-rc1"
_UPSAMPLER_TOP = ("initial_conv.", "initial_norm.", "res_blocks.", "upsampler.", "post_upsample_res_blocks.",
                  "final_conv.")
_LTX2_UPSAMPLER_CONFIG = ("spatial_scale", "rational_resampler")  # read by ltx-core 1.0.0, unknown to 0.9.x
_LTX2_UPSAMPLER_KEYS = ("upsampler.conv.", "upsampler.blur_down.")  # the rational resamplers


def _is_upsampler_keys(keys: Sequence[str]) -> bool:
    return bool(keys) and all(k.startswith(_UPSAMPLER_TOP) for k in keys)


def _is_upsampler(reader: SafetensorsReader) -> bool:
    return _is_upsampler_keys(reader.keys())


def detect(path: str | os.PathLike) -> str | None:
    """What an LTX-2 reader should make of `path`: "bundled" (official bundled or ltx2 file: `read`),
    "upsampler" (an LTX-2 latent upsampler file: `read_upsampler`), or None (not recognisably LTX-2: a 0.9.x
    checkpoint, a LoRA, an unreadable file, a folder; the 0.9.x reader says what it is). Headers only."""
    path = Path(path)
    if path.is_dir():  # LTX-2.5's split component files, read as one (a 0.9.x diffusers folder holds none at its top)
        try:
            files = component_files(path)
        except CheckpointError:
            return None
        return "bundled" if all(detect(f) == "bundled" for f in files) else None
    if not path.is_file():
        return None
    try:
        reader = SafetensorsReader(path)
    except CheckpointError:
        return None
    config = _metadata_json(reader)
    if reader.metadata.get("format") == LTX2_FORMAT or _audio_keys(reader.keys()):
        return "bundled"
    if isinstance(config, dict) and ("audio_vae" in config or "vocoder" in config):
        return "bundled"
    if reader.metadata.get("format") is None and _is_upsampler(reader):
        if isinstance(config, dict) and any(k in config for k in _LTX2_UPSAMPLER_CONFIG):
            return "upsampler"
        if any(k.startswith(_LTX2_UPSAMPLER_KEYS) for k in reader.keys()):
            return "upsampler"
        return None  # the 0.9.x layout exactly: the 0.9.x reader takes it (see the module docstring)
    if str(reader.metadata.get("model_version", "")).startswith("2") and reader.metadata.get("format") != "ltx":
        return "bundled"
    return None


def read(path: str | os.PathLike | Sequence[str | os.PathLike],
         components: str | Iterable[str] | None = None) -> LTX2Checkpoint:
    """Index an official bundled file or an ltx2 file (headers only), for the chosen components. `path` may also
    be several component files (a list, or a folder holding them: LTX-2.5's split checkpoints).

    Errors name the file and what is wrong: not an LTX-2 file (an LTX-Video 0.9.x file, an upsampler file),
    metadata without a config, a requested component the file does not hold, keys that belong to no
    component."""
    from ltx.ltx2.gemma_pack import ProjectionReader, is_packed

    files = component_files(path)
    wanted = parse_components(components)
    # LTX-2.5's packed text encoder among the files gives its text projection, nothing else
    reader = SafetensorsReader(files[0]) if len(files) == 1 else SplitReader(
        [ProjectionReader(f) if is_packed(f) else f for f in files])
    path = files[0] if len(files) == 1 else Path(path) if isinstance(path, (str, os.PathLike)) else files[0].parent
    explicit = components is not None and components != "all"
    fmt = "ltx2" if reader.metadata.get("format") == LTX2_FORMAT else "official"
    if reader.metadata.get("format") == "ltx":
        raise CheckpointError(f"{path}: an ltx file of LTX-Video 0.9.x (format=ltx), not LTX-2: load it with "
                              "ltx.ltxv.checkpoint.read_checkpoint / the 0.9.x presets")
    if fmt == "ltx2" and reader.metadata.get("format_version") != LTX2_FORMAT_VERSION:
        raise CheckpointError(f"{path}: ltx2 format version {reader.metadata.get('format_version')!r}; this ltx "
                              f"reads {LTX2_FORMAT_VERSION!r}")
    if fmt == "official" and _is_upsampler(reader):
        raise CheckpointError(f"{path}: a latent upsampler file, not a bundled LTX-2 model: read it with "
                              "ltx.ltx2.checkpoint.read_upsampler")
    raw = reader.metadata.get("config")
    if raw is None:
        if fmt == "official" and _looks_like_0_9(reader, None):
            raise CheckpointError(f"{path}: no 'config' in the metadata and no audio components: an LTX-Video 0.9.x "
                                  "checkpoint? (LTX-2 files carry their architecture in the metadata `config`)")
        raise CheckpointError(f"{path}: no 'config' in the safetensors metadata; an official LTX-2 file carries "
                              "its architecture there (keys: transformer, vae, audio_vae, vocoder)")
    config = metadata_object(path, raw)
    if fmt == "official" and _looks_like_0_9(reader, config):
        raise CheckpointError(f"{path}: an LTX-Video 0.9.x checkpoint (no audio components), not LTX-2: use it with "
                              "the 0.9.x presets (model=ltxv-...) or ltx.ltxv.checkpoint.read_checkpoint")
    keys: dict[str, dict[str, str]] = {}
    claimed: set[str] = set()
    present: list[str] = []
    for name, comp in COMPONENTS.items():
        found = {}
        for k in reader.keys():
            if fmt == "ltx2":
                ours = k[len(name) + 1:] if k.startswith(name + ".") else None
            else:
                ours = comp.ours(k)
            if ours is not None:
                found[ours] = k
        claimed.update(found.values())
        present += [name] if found else []
        if found and name in wanted:
            if comp.config_key is not None and not isinstance(config.get(comp.config_key), dict):
                raise CheckpointError(f"{path}: has {name} tensors but metadata config has no "
                                      f"{comp.config_key!r} object")
            keys[name] = found
    stray = [k for k in reader.keys() if k not in claimed]
    if stray:
        raise CheckpointError(f"{path}: {len(stray)} keys belong to no LTX-2 component, e.g. {stray[:5]}")
    missing = [n for n in wanted if n not in keys]
    if explicit and missing:
        raise CheckpointError(f"{path}: holds no {', '.join(missing)} (it holds: {', '.join(present) or 'nothing'})")
    if not keys:
        raise CheckpointError(f"{path}: no LTX-2 component found")
    version = reader.metadata.get("model_version")
    if version is not None and not _VERSION.fullmatch(str(version)):
        raise CheckpointError(f"{path}: metadata model_version {version!r} is not an LTX-2 version (2.x, e.g. '2.0.0' "
                              "or '2.3.0'); the file's metadata is damaged or it is another model's")
    return LTX2Checkpoint(path, fmt, config, version, keys, reader)


def build_component(name: str, config: dict, keys: Collection[str] | None = None,
                    device: str | torch.device = "meta", gemma: Any = None) -> nn.Module:
    """Component `name` from the official metadata `config` (the whole dict, sub-dicts per component), built on
    `device`. `keys`: our keys the file holds, where the module follows the file (the VAE's extra statistics);
    None builds the released layout."""
    comp = COMPONENTS[name]
    sub = config if comp.config_key is None else config.get(comp.config_key) if isinstance(config, dict) else None
    if not isinstance(sub, dict):
        raise CheckpointError(f"{name}: metadata config has no {comp.config_key!r} object")
    with torch.device(device):
        if name == "text" and gemma is not None:
            return EmbeddingsProcessor(TextConnectorConfig.from_metadata(sub, gemma=gemma))
        return comp.make(sub, keys)


def build(ckpt: LTX2Checkpoint, name: str, device: str | torch.device = "meta") -> nn.Module:
    try:
        module = build_component(name, ckpt.config, set(ckpt.keys.get(name, ())), device, ckpt.gemma)
        infos = {ours: ckpt.reader.infos[k] for ours, k in ckpt.keys.get(name, {}).items()}
        return prepare_for_file(module, infos, where=f"{ckpt.path} [{name}]")  # quantized Linears (ltx.core.quant)
    except QuantError:
        raise  # names the file already
    except CheckpointError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path}: {name} config: {e}") from None


def _names(ckpt: LTX2Checkpoint, names: str | Iterable[str] | None) -> tuple[str, ...]:
    chosen = ckpt.components if names in (None, "all") else parse_components(names)
    missing = [n for n in chosen if n not in ckpt.keys]
    if missing:
        raise CheckpointError(f"{ckpt.path}: holds no {', '.join(missing)} (it holds: {', '.join(ckpt.components)})")
    return chosen


def check(ckpt: LTX2Checkpoint, names: str | Iterable[str] | None = None) -> dict[str, nn.Module]:
    """Build each component on `meta` and compare its state dict with the file's headers (keys, shapes,
    dtype kinds). Returns the meta modules; raises naming the first problems, in the file's key names."""
    out = {}
    for name in _names(ckpt, names):
        module = build(ckpt, name)
        expected = {ckpt.file_key(name, k): (tuple(v.shape), v.dtype)
                    for k, v in module.state_dict(keep_vars=True).items()}
        found = {k: (ckpt.reader.infos[k].shape, ckpt.reader.infos[k].dtype) for k in ckpt.keys[name].values()}
        problems = fit_problems(expected, found)
        if problems:
            raise CheckpointError(f"{ckpt.path}: {name} does not fit its metadata config: " + " | ".join(problems))
        out[name] = module
    return out


def _fill(module: nn.Module, sd: dict[str, torch.Tensor], device: str | torch.device, what: str) -> nn.Module:
    load_strict(module, sd, what=what)
    place_nonpersistent(module, device, what)
    return module.eval()


def load(
    path: str | os.PathLike | LTX2Checkpoint,
    components: str | Iterable[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, nn.Module]:
    """Load components as modules in eval mode: built on `meta`, checked against the headers, then filled
    strictly tensor by tensor (optionally cast to a floating `dtype`; integer buffers keep theirs). The
    non-persistent buffers (computed at build, fp32) are moved to `device` and keep their dtype."""
    ckpt = path if isinstance(path, LTX2Checkpoint) else read(path, components)
    metas = check(ckpt, components if isinstance(path, LTX2Checkpoint) else None)
    out = {}
    for name, module in metas.items():
        sd = {}
        keep = fixed_dtype_keys(module)  # quantized weights and their scales keep the file's dtypes
        for ours, k in ckpt.keys[name].items():
            t = ckpt.reader.get(k)
            if dtype is not None and t.is_floating_point() and ours not in keep:
                t = t.to(dtype)
            sd[ours] = t.to(device)
        out[name] = _fill(module, sd, device, f"{ckpt.path} [{name}]")
    return out


@torch.no_grad()
def reload_weights(ckpt: LTX2Checkpoint, name: str, module: nn.Module) -> nn.Module:
    """Copy the file's tensors back into a loaded `module` in place, one at a time (e.g. to drop fused LoRAs
    without a second copy of the model in memory); dtypes and devices stay the module's."""
    params = module.state_dict(keep_vars=True)
    for ours, k in ckpt.keys[name].items():
        target = params[ours]
        target.copy_(ckpt.reader.get(k).to(device=target.device, dtype=target.dtype))
    return module


def place_nonpersistent(module: nn.Module, device: str | torch.device, what: str) -> None:
    """Buffers registered with persistent=False are not in the file. Our modules compute them on the CPU even
    inside a `meta` build (e.g. vocoder.hann_sinc_upsample); move them to `device`. A module may instead expose
    `init_nonpersistent_buffers(device)`; a buffer still on `meta` afterwards is an error, never a silent
    placeholder."""
    for m in module.modules():
        init = getattr(m, "init_nonpersistent_buffers", None)
        if callable(init):
            init(device)
        for n in m._non_persistent_buffers_set:
            b = m._buffers.get(n)
            if b is not None and not b.is_meta:
                m._buffers[n] = b.to(device)
    leftover = [n for n, b in module.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointError(f"{what}: {type(module).__name__} buffers {leftover[:5]} were neither in the file nor "
                              "computed at build (still on meta)")


def write(
    ckpt: LTX2Checkpoint,
    dst: str | os.PathLike,
    *,
    layout: str = "ltx2",
    components: str | Iterable[str] | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    progress: Callable[[TensorEntry], None] | None = None,
    overrides: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Stream the chosen components into `dst` in the "ltx2" or "official" layout (atomically), after `check`.
    Tensors are copied bitwise unless `dtype` casts the floating ones; the metadata is kept verbatim (plus or
    minus `format` / `format_version`) and the tensors' data keeps the source's order, so official -> ltx2 ->
    official gives the same tensors, metadata and data bytes; only the header's JSON may be ordered differently
    (ltx.core.checkpoint.write_safetensors puts `__metadata__` last; the safetensors library puts it first).
    `overrides` {component: {our key: tensor}} replaces those tensors (a fine-tune's trained weights): each keeps
    its key's shape and is written in the file's dtype (or `dtype`)."""
    overrides = overrides or {}
    for name, tensors in overrides.items():
        keys = ckpt.keys.get(name, {})
        unknown = [k for k in tensors if k not in keys]
        if unknown:
            raise CheckpointError(f"overrides for {name!r} name keys the checkpoint does not hold, e.g. {unknown[0]!r}")
        for k, t in tensors.items():
            shape = tuple(ckpt.reader.infos[keys[k]].shape)
            if tuple(t.shape) != shape:
                raise CheckpointError(f"override {name}.{k} has shape {tuple(t.shape)}; the checkpoint's is {shape}")
    if layout not in ("ltx2", "official"):
        raise CheckpointError(f"layout {layout!r}: choose 'ltx2' or 'official'")
    names = _names(ckpt, components)
    check(ckpt, names)
    entries = []
    for name in names:
        comp = COMPONENTS[name]
        for ours, k in ckpt.keys[name].items():
            info = ckpt.reader.infos[k]
            out_dtype = dtype if dtype is not None and info.dtype.is_floating_point else info.dtype
            out_name = f"{name}.{ours}" if layout == "ltx2" else comp.official(ours)

            replaced = overrides.get(name, {}).get(ours)

            def load_one(k=k, out_dtype=out_dtype, replaced=replaced):
                return (ckpt.reader.get(k) if replaced is None else replaced.detach().cpu()).to(out_dtype)

            entries.append((info.offsets[0], TensorEntry(out_name, out_dtype, info.shape, load_one)))
    entries = [e for _, e in sorted(entries, key=lambda pair: pair[0])]  # the source's data order
    metadata = {k: v for k, v in ckpt.reader.metadata.items() if k not in ("format", "format_version")}
    if layout == "ltx2":
        metadata.update(format=LTX2_FORMAT, format_version=LTX2_FORMAT_VERSION)
    return write_safetensors(dst, entries, metadata, overwrite=overwrite, progress=progress)


def component_config(name: str, module: nn.Module) -> dict:
    """The metadata `config` sub-dict a built component is described by (the inverse of its `make`)."""
    if name == "text":
        return module.config.to_metadata()
    if name == "vocoder" and not isinstance(module.cfg, VocoderConfig):  # a HiFi-GAN alone holds its generator's
        return VocoderConfig(vocoder=module.cfg).to_metadata()
    return module.cfg.to_metadata()


def write_modules(dst: str | os.PathLike, modules: dict[str, nn.Module], *, model_version: str = "2.0.0",
                  overwrite: bool = False, dtype: torch.dtype | None = None) -> Path:
    """Write built components (transformer, text, vae, audio_vae, vocoder: any subset) as one official bundled
    file: the official key prefixes and a metadata `config` made from the modules' own configs (the text
    connector's keys merged into `config["transformer"]`), atomically. `read` + `load` give the same modules back
    bitwise (tested); a model trained here (the demo) is shared in the same layout as the released ones."""
    unknown = sorted(set(modules) - set(COMPONENTS))
    if unknown:
        raise CheckpointError(f"unknown components {unknown} (known: {sorted(COMPONENTS)})")
    config: dict[str, dict] = {}
    for name, module in modules.items():
        if name == "duration_head":  # its own sub-dict; the widths it reads from `transformer` must agree
            for key, values in module.cfg.to_metadata().items():
                for k, v in values.items():
                    if config.setdefault(key, {}).setdefault(k, v) != v:
                        raise CheckpointError(f"duration_head {key}.{k}={v!r} but the transformer's is "
                                              f"{config[key][k]!r}")
            continue
        key = COMPONENTS[name].config_key
        config.setdefault(key, {}).update(component_config(name, module))
    entries = []
    for name, module in modules.items():
        comp = COMPONENTS[name]
        for ours, t in module.state_dict().items():
            out_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
            entries.append(TensorEntry(comp.official(ours), out_dtype, tuple(t.shape),
                                       lambda t=t, d=out_dtype: t.detach().cpu().to(d).contiguous()))
    metadata = {"config": json.dumps(config), "model_version": model_version}
    return write_safetensors(dst, entries, metadata, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------ summaries


def describe(name: str, module: nn.Module) -> str:
    """One line of config highlights of a built component (for summaries: the converter's --dry-run)."""
    if name == "transformer":
        c = module.cfg
        v23 = [f for f in ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector")
               if getattr(c, f)]
        return (f"{c.num_layers} layers, video {c.num_attention_heads} x {c.attention_head_dim} heads "
                f"({c.num_attention_heads * c.attention_head_dim} wide), audio {c.audio_num_attention_heads} x "
                f"{c.audio_attention_head_dim}, latent channels {c.in_channels}/{c.audio_in_channels}, "
                f"caption {c.caption_channels}" + (f", 2.3 flags: {', '.join(v23)}" if v23 else ""))
    if name == "text":
        c = module.config
        return (f"feature extractor {c.feature_extractor} ({c.num_hidden_states} x {c.text_dim} text states), video "
                f"connector {c.video_layers} layers {c.video_heads} x {c.video_head_dim}, audio connector "
                f"{c.audio_layers} layers {c.audio_heads} x {c.audio_head_dim}, {c.num_registers} registers"
                + (", gated attention" if c.gated_attention else ""))
    if name == "vae":
        c = module.cfg
        enc = sum(b.name != "res_x" for b in c.encoder_blocks)
        dec = sum(b.name != "res_x" for b in c.decoder_blocks)
        return (f"latent {c.latent_channels} channels, patch {c.patch_size}, {len(c.encoder_blocks)} encoder blocks "
                f"({enc} downsamplers), {len(c.decoder_blocks)} decoder blocks ({dec} upsamplers), decoder base "
                f"{c.decoder_base_channels}, padding {c.encoder_spatial_padding_mode}/{c.decoder_spatial_padding_mode}"
                + (", extra statistics" if c.extra_statistics else ""))
    if name == "audio_vae":
        c = module.cfg
        return (f"ch {c.ch} x {list(c.ch_mult)}, {c.num_res_blocks} res blocks, z {c.z_channels}, {c.mel_bins} mel "
                f"bins, {c.sample_rate} Hz hop {c.hop_length}")
    if name == "vocoder":
        c = module.cfg
        if getattr(c, "bwe", None) is not None:
            g, b = c.vocoder, c.bwe
            return (f"BigVGAN-v2 {g.output_sampling_rate} Hz (width {g.upsample_initial_channel}) + bandwidth "
                    f"extension -> {b.output_sampling_rate} Hz (width {b.generator.upsample_initial_channel}), "
                    f"hop {c.hop}")
        return f"HiFi-GAN {c.output_sampling_rate} Hz (width {c.upsample_initial_channel}), hop {c.hop}"
    return type(module).__name__


def summary(ckpt: LTX2Checkpoint, names: str | Iterable[str] | None = None) -> str:
    """A per-component summary: tensor count, parameters, bytes, dtypes, config highlights (headers only)."""
    version = ckpt.model_version or "absent"
    family = "LTX-2.5" if str(ckpt.model_version or "").startswith("2.5") else "LTX-2.3" if ckpt.is_2_3 else "LTX-2"
    split = isinstance(ckpt.reader, SplitReader)
    layout = "ltx2 file" if ckpt.format == LTX2_FORMAT else "official split files" if split else "official bundled file"
    lines = [f"{ckpt.path}: {family} {layout} (model_version {version})"]
    metas = check(ckpt, names)
    for name, module in metas.items():
        lines.append(f"  {name}: {_tensor_line(ckpt.reader, ckpt.keys[name].values())}")
        lines.append(f"    {describe(name, module)}")
    return "\n".join(lines)


def _tensor_line(reader: SafetensorsReader, keys: Iterable[str]) -> str:
    infos = [reader.infos[k] for k in keys]
    dtypes = Counter(str(i.dtype).replace("torch.", "") for i in infos)
    values = sum(torch.Size(i.shape).numel() for i in infos)
    nbytes = sum(i.dtype.itemsize * torch.Size(i.shape).numel() for i in infos)
    return f"{len(infos)} tensors, {values / 1e6:.2f} M parameters, {nbytes / 2**30:.3f} GiB, dtypes {dict(dtypes)}"


# ------------------------------------------------------------------------------------------------ upsamplers


@dataclass
class UpsamplerFile:
    """An LTX-2 latent upsampler file: its config and the tensors' headers (keys are the module's)."""

    path: Path
    config: Any  # ltx.ltx2.upsampler.LatentUpsamplerConfig
    raw_config: dict  # the flat metadata `config`, verbatim
    reader: SafetensorsReader


def read_upsampler(path: str | os.PathLike) -> UpsamplerFile:
    """Index an upsampler file and check its keys, shapes and dtypes against its metadata config (headers
    only). Errors name the file: a bundled model, no or invalid config, a config ltx does not implement, keys
    that do not fit (named)."""
    path = Path(path)
    reader = SafetensorsReader(path)
    if reader.metadata.get("format") in (LTX2_FORMAT, "ltx") or (reader.keys() and not _is_upsampler(reader)):
        raise CheckpointError(f"{path}: not a latent upsampler file (keys such as {reader.keys()[:3]}): a bundled "
                              "model is read with ltx.ltx2.checkpoint.read")
    if not reader.keys():
        raise CheckpointError(f"{path}: holds no tensors")
    raw = reader.metadata.get("config")
    if raw is None:
        raise CheckpointError(f"{path}: no 'config' in the safetensors metadata; an upsampler file carries a flat "
                              "config there (in_channels, mid_channels, spatial_upsample, ...)")
    config = metadata_object(path, raw)
    try:
        cfg = LatentUpsamplerConfig.from_metadata(config)
        with torch.device("meta"):
            module = LatentUpsampler2(cfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: upsampler config: {e}") from None
    expected = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict(keep_vars=True).items()}
    found = {k: (i.shape, i.dtype) for k, i in reader.infos.items()}
    problems = fit_problems(expected, found)
    if problems:
        raise CheckpointError(f"{path}: the upsampler does not fit its metadata config ({cfg.kind}): "
                              + " | ".join(problems))
    return UpsamplerFile(path, cfg, config, reader)


def load_upsampler(path: str | os.PathLike | UpsamplerFile, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> nn.Module:
    """A `LatentUpsampler2` in eval mode, loaded strictly (floating tensors optionally cast to `dtype`)."""
    up = path if isinstance(path, UpsamplerFile) else read_upsampler(path)
    with torch.device("meta"):
        module = LatentUpsampler2(up.config)
    sd = {}
    for k in up.reader.keys():
        t = up.reader.get(k)
        sd[k] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).to(device)
    return _fill(module, sd, device, str(up.path))


def write_upsampler(up: UpsamplerFile, dst: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    overwrite: bool = False, progress: Callable[[TensorEntry], None] | None = None) -> Path:
    """Copy an upsampler file (its only layout), optionally casting floating tensors; metadata verbatim."""
    entries = []
    for k, info in up.reader.infos.items():
        out_dtype = dtype if dtype is not None and info.dtype.is_floating_point else info.dtype
        entries.append(TensorEntry(k, out_dtype, info.shape, lambda k=k, d=out_dtype: up.reader.get(k).to(d)))
    return write_safetensors(dst, entries, dict(up.reader.metadata), overwrite=overwrite, progress=progress)


def upsampler_summary(up: UpsamplerFile) -> str:
    c = up.config
    what = {"pixel_shuffle": "spatial x2 (pixel shuffle)", "rational": f"spatial x{c.spatial_scale:g} (rational)",
            "temporal": "temporal x2"}[c.kind]
    return "\n".join([f"{up.path}: LTX-2 latent upsampler, {what}",
                      f"  upsampler: {_tensor_line(up.reader, up.reader.keys())}",
                      f"    in {c.in_channels} channels, mid {c.mid_channels}, "
                      f"{c.num_blocks_per_stage} blocks per stage"])
