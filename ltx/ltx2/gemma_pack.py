"""LTX-2.5's packed text-encoder file (`gemma4-12b-with-proj-ltx-2.5-bf16.safetensors`): the LTX Gemma 4, its
tokenizer and processor files, and the text projection, in one .safetensors file.

The layout (read from ltx-core's `gemma_assets.py` at Lightricks/LTX-2 400fd31; the released file was not seen):
- metadata `gemma_config`: the Hugging Face config.json as JSON (with its `gemma_version`);
- tensor `tokenizer_json`: tokenizer.json's bytes (uint8; int8 in some ComfyUI packs);
- tensors `hf_asset__<name>`: the other sidecar files' bytes (tokenizer_config.json, processor_config.json,
  chat_template.jinja, ...); older packs keep the small ones as metadata strings of the same name;
- the Gemma weights, either in Hugging Face names (`model.language_model.*`) or in ComfyUI's flat layout (the
  official packer's default): the language model under `model.*`, the vision embedder under `vision_model.*`, its
  projection under `multi_modal_projector.*`, the audio projection under `audio_projector.*`; no `lm_head` (tied to
  the token embedding);
- `text_embedding_projection.*`: the LTX feature extractor, under the same names as in a bundled checkpoint (the
  split 2.5 transformer file has the connectors but not this projection).

`read_packed` indexes it (headers only), `PackedGemma.load_model` builds the Hugging Face model from the config and
fills it strictly, `PackedGemma.tokenizer` rebuilds the tokenizer from the bytes, `projection_reader` shows only the
projection tensors (so that `ltx.ltx2.checkpoint.read` takes them as part of the checkpoint), and `write_packed` packs
a Hugging Face Gemma folder and a projection into such a file (ComfyUI's flat names, as the official packer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ltx.core.checkpoint import CheckpointError, SafetensorsReader, TensorEntry, metadata_object, write_safetensors

GEMMA_CONFIG_KEY = "gemma_config"
TOKENIZER_KEY = "tokenizer_json"
ASSET_PREFIX = "hf_asset__"
PROJECTION_PREFIX = "text_embedding_projection."
METADATA_SIDECARS = ("tokenizer_config.json", "processor_config.json", "chat_template.jinja", "generation_config.json")
# tokenizer_config.json entries that are not PreTrainedTokenizerFast keyword arguments
_TOKENIZER_SKIP = frozenset({"tokenizer_class", "auto_map", "model_max_length", "backend", "is_local",
                             "local_files_only", "processor_class", "added_tokens_decoder"})
# file prefix -> Hugging Face module prefix, first match wins (ltx-core's GEMMA4_UNIFIED_LLM_KEY_OPS, both layouts)
_UNPACK = (
    ("model.language_model.", "model.language_model."),
    ("model.embed_vision.embedding_projection.", "model.embed_vision.multimodal_embedder.embedding_projection."),
    ("model.embed_vision.", "model.embed_vision."),
    ("model.vision_embedder.", "model.embed_vision."),
    ("model.embed_audio.", "model.embed_audio."),
    ("model.", "model.language_model."),  # ComfyUI's flat language model
    ("multi_modal_projector.embedding_projection.", "model.embed_vision.multimodal_embedder.embedding_projection."),
    ("multi_modal_projector.", "model.embed_vision."),
    ("vision_model.", "model.embed_vision."),
    ("audio_projector.", "model.embed_audio."),
)
# Hugging Face module prefix -> ComfyUI's flat name (what `write_packed` writes)
_PACK = (
    ("model.language_model.", "model."),
    ("model.embed_vision.multimodal_embedder.embedding_projection.", "multi_modal_projector.embedding_projection."),
    ("model.embed_vision.", "vision_model."),
    ("model.embed_audio.", "audio_projector."),
)


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def is_packed(path: str | os.PathLike) -> bool:
    """A .safetensors file whose metadata carries a `gemma_config` (cheap: the header only)."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".safetensors"):
        return False
    try:
        return GEMMA_CONFIG_KEY in SafetensorsReader(p).metadata
    except CheckpointError:
        return False


def _bytes(t: Tensor) -> bytes:
    return t.to(torch.uint8).numpy().tobytes()  # int8 packs: the same bytes


@dataclass(frozen=True)
class PackedGemma:
    """An indexed packed text-encoder file: `config` the Hugging Face config dict, `reader` its tensors."""

    path: Path
    config: dict
    reader: SafetensorsReader

    @property
    def weight_keys(self) -> list[str]:
        """The Gemma model's tensors (file names)."""
        return [k for k in self.reader.keys() if not (k == TOKENIZER_KEY or k.startswith((ASSET_PREFIX,
                                                                                           PROJECTION_PREFIX)))]

    @property
    def projection_keys(self) -> list[str]:
        return [k for k in self.reader.keys() if k.startswith(PROJECTION_PREFIX)]

    def sidecars(self) -> dict[str, bytes]:
        """The packed tokenizer / processor files by name (tensors first, metadata strings for the rest)."""
        out = {k[len(ASSET_PREFIX):]: _bytes(self.reader.get(k)) for k in self.reader.keys()
               if k.startswith(ASSET_PREFIX)}
        for name in METADATA_SIDECARS:
            if name not in out and name in self.reader.metadata:
                out[name] = self.reader.metadata[name].encode()
        return out

    def hf_config(self):
        """The transformers config object of `config`; ValueError (one line) for a model_type transformers lacks."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        model_type = self.config.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"{self.path}: gemma_config model_type {model_type!r} is not one transformers knows")
        return CONFIG_MAPPING[model_type].from_dict(dict(self.config))

    def tokenizer(self, max_length: int):
        """The tokenizer, rebuilt from the packed tokenizer.json and tokenizer_config.json (chat template too)."""
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        sidecars = self.sidecars()
        kwargs = {k: v for k, v in json.loads(sidecars.get("tokenizer_config.json", b"{}")).items()
                  if k not in _TOKENIZER_SKIP}
        if "chat_template.jinja" in sidecars:
            kwargs.setdefault("chat_template", sidecars["chat_template.jinja"].decode())
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_bytes(self.reader.get(TOKENIZER_KEY))
                                                                           .decode()),
                                       model_max_length=max_length, **kwargs)

    def load_model(self, cls: type, *, dtype: torch.dtype, device: str | torch.device = "cpu") -> torch.nn.Module:
        """`cls` (a transformers Gemma class) built from the config on `meta` and filled strictly from the file's
        weights under their Hugging Face names (`lm_head` from the tied token embedding); CheckpointError (one
        line) for tensors that do not fit."""
        with torch.device("meta"):
            model = cls(self.hf_config())
        want = model.state_dict()
        sd, unknown = {}, []
        for key in self.weight_keys:
            name = _rename(key, _UNPACK)
            if name is None or name not in want:
                unknown.append(key)
                continue
            t = self.reader.get(key)
            sd[name] = (t.to(dtype) if t.is_floating_point() else t).to(device)
        if "lm_head.weight" in want and "lm_head.weight" not in sd:
            sd["lm_head.weight"] = sd.get("model.language_model.embed_tokens.weight")
        missing = sorted(k for k in want if sd.get(k) is None)
        wrong = sorted(k for k, t in sd.items() if t is not None and tuple(t.shape) != tuple(want[k].shape))
        if unknown or missing or wrong:
            raise CheckpointError(f"{self.path}: the Gemma weights do not fit its gemma_config ("
                                  + "; ".join(f"{what}: {names[:3]}" for what, names in (
                                      ("unknown", unknown), ("missing", missing), ("wrong shape", wrong)) if names)
                                  + ")")
        sd.pop("lm_head.weight", None)  # transformers ties it again
        # transformers' own loader from the state dict: it materializes the computed (non-persistent) buffers
        model = cls.from_pretrained(None, config=self.hf_config(), state_dict=sd, dtype=dtype)
        return model.to(device).eval()


def read_packed(path: str | os.PathLike) -> PackedGemma:
    """Index a packed text-encoder file; CheckpointError (one line) for a file that is not one."""
    p = Path(path)
    reader = SafetensorsReader(p)
    raw = reader.metadata.get(GEMMA_CONFIG_KEY)
    if raw is None:
        raise CheckpointError(f"{p}: no '{GEMMA_CONFIG_KEY}' in the metadata: not a packed text-encoder file (give "
                              "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors, or a Hugging Face Gemma folder)")
    config = metadata_object(p, raw, GEMMA_CONFIG_KEY)
    if TOKENIZER_KEY not in reader.infos:
        raise CheckpointError(f"{p}: no '{TOKENIZER_KEY}' tensor: the packed tokenizer is missing")
    return PackedGemma(p, config, reader)


class ProjectionReader:
    """The text projection tensors of a packed text-encoder file, read as a checkpoint file of their own (the
    `SafetensorsReader` interface; no metadata), for `ltx.ltx2.checkpoint.read`."""

    def __init__(self, path: str | os.PathLike):
        self._reader = SafetensorsReader(path)
        self.path = self._reader.path
        self.metadata: dict[str, str] = {}
        self.infos = {k: v for k, v in self._reader.infos.items() if k.startswith(PROJECTION_PREFIX)}

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, key: str) -> Tensor:
        return self._reader.get(key)


def _u8(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def write_packed(gemma_folder: str | os.PathLike, projection: Mapping[str, Tensor], dst: str | os.PathLike, *,
                 overwrite: bool = False) -> Path:
    """Pack a Hugging Face Gemma folder (config.json, model*.safetensors, tokenizer.json and its sidecar files) and
    the text projection (`text_embedding_projection.*` tensors) into one file, atomically, in the official layout with
    ComfyUI's flat weight names. The folder's `gemma_version` is kept as it is."""
    root = Path(gemma_folder)
    for need in ("config.json", "tokenizer.json"):
        if not (root / need).is_file():
            raise CheckpointError(f"{root}: no {need}; pack a Hugging Face Gemma folder")
    bad = [k for k in projection if not k.startswith(PROJECTION_PREFIX)]
    if bad:
        raise CheckpointError(f"projection keys must start with {PROJECTION_PREFIX!r}, got {bad[:3]}")
    entries = []
    for f in sorted(root.glob("model*.safetensors")):
        reader = SafetensorsReader(f)
        for key, info in reader.infos.items():
            if key == "lm_head.weight":
                continue  # tied to the token embedding
            name = _rename(key, _PACK)
            if name is None:
                raise CheckpointError(f"{f}: {key!r} is not a Gemma 4 unified weight this packer knows")
            entries.append(TensorEntry(name, info.dtype, info.shape, lambda r=reader, k=key: r.get(k)))
    if not entries:
        raise CheckpointError(f"{root}: no model*.safetensors weights")
    for key, t in projection.items():
        entries.append(TensorEntry(key, t.dtype, tuple(t.shape), lambda t=t: t))
    blobs = {TOKENIZER_KEY: (root / "tokenizer.json").read_bytes()}
    for f in sorted([*root.glob("*.json"), *root.glob("*.jinja")]):
        if f.name not in ("config.json", "tokenizer.json"):
            blobs[ASSET_PREFIX + f.name] = f.read_bytes()
    for key, data in blobs.items():
        entries.append(TensorEntry(key, torch.uint8, (len(data),), lambda d=data: _u8(d)))
    config = (root / "config.json").read_text()
    return write_safetensors(dst, entries, {"format": "pt", GEMMA_CONFIG_KEY: json.dumps(json.loads(config))},
                             overwrite=overwrite)
