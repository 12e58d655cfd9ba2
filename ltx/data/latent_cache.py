"""The training dataset over a preprocessed cache (train/preprocess.py), and its deterministic bucket sampler.

Cache format (folder OUT, written by `python -m train.preprocess`, version 1):
- OUT/latents/<id>.safetensors: `latents` (C, f, h, w) float32, the VAE's normalized posterior mean of the
  clip fitted to its bucket; metadata "item" (the item's JSON record) and "latent_space".
- OUT/text/<id>.safetensors: `context` (S, D) and `mask` (S,) int64 (1 = real token) of the caption, from
  `T5TextEncoder.encode`; OUT/text/_null.safetensors holds the empty caption "" (caption dropout / CFG).
- OUT/index.json: {"version": 1, "complete": bool, "vae": {"checkpoint", "latent_space", "scale": [t, s, s],
  "latent_channels"}, "text_encoder": {"path", "max_tokens"}, "precision", "buckets": [[F, H, W], ...],
  "max_upscale", "items": [{"id", "media_path", "caption", "reference_path", "bucket": [F, H, W],
  "latent_shape": [C, f, h, w], "fps"}], "skipped": [{"path", "reason"}]}. `fps` is the source's (None
  for images or when the container does not say). Only complete items (both files written) are listed.
- Items with a reference video (IC-LoRA control training): OUT/reference/<id>.safetensors holds `latents`
  (C, f, h / d, w / d), the reference fitted to the same bucket at 1/d of its size; the item's record adds
  "reference_shape" and "reference_downscale" (d), and the dataset item adds `reference`.

LTX-2 / 2.3 caches (train/preprocess_ltx2.py; index "family": "ltx2", where 0.9.x caches have no "family" or
"ltxv") differ as follows:
- every clip is resampled to one frame rate, index "fps" (nearest source frame for each frame i / fps), so a clip
  of bucket (F, H, W) lasts F / fps seconds; latents/<id> holds the LTX-2 video VAE's (128, f, h, w);
- OUT/audio/<id>.safetensors: `latents` (8, T, 16) float32, the audio VAE's normalized latents of the clip's
  sound over exactly [0, F / fps) seconds, T = ltx.ltx2.patchify.audio_latent_frames_for_video(F, fps) (fixed per
  bucket); metadata "item" and "latent_space" (of the audio VAE). Index "audio": {"sample_rate" (the audio VAE's
  input rate), "latent_space", "latent_channels", "mel_bins", "latents_per_second", "silence_peak",
  "latent_shape_per_bucket": {"FxHxW": [8, T, 16]}} (null when made with audio=false). Each record has "audio"
  (the file the sound came from, or null), "audio_shape" ([8, T, 16] or null), "audio_missing" (null, or why
  there is none: "no audio track", "silent", "image"), "audio_path" (the manifest's separate audio file or
  null), "fps" (the cache's) and "source_fps";
- OUT/text/<id>.safetensors: `video` (S, Dv') and, for feature extractor v2 (LTX-2.3) only, `audio` (S, Da'): the
  text features (ltx.ltx2.text.EmbeddingsProcessor.features of the caption's Gemma hidden states) of the S real
  tokens only (the left padding dropped); index "text_encoder": {"path", "max_tokens", "feature_extractor"}.
  The dataset item has "video_context" and "audio_context" (max_tokens, D) zero-padded on the LEFT back to
  max_tokens (the same tensor twice for v1), "mask" (max_tokens,) int64 (1 = real token, left padded), and
  "audio" (the audio latents or None); `null_text()` gives the (video_context, audio_context, mask) of "".
- OUT/reference_audio/<id>.safetensors (LTX-2, items whose reference clip has sound): `latents` (8, T, 16) of the
  reference's own track; the record adds "reference_audio_shape" and the dataset item "reference_audio".

Sampler (`BucketBatchSampler`): every batch comes from one bucket (one latent shape), and `batch(step)` is a
pure function of (seed, step), so a resumed or re-sharded run sees exactly the same data:
- epoch e permutes each bucket's items with a generator seeded by (seed, e, bucket number + 1) and cuts the
  permutation into ceil(n / global_batch) batches, the last one filled up by wrapping around to the start of
  that bucket's permutation (a bucket smaller than global_batch repeats items within its batch);
- the batches of all buckets are put in an order shuffled by (seed, e, 0);
- step k is batch k % batches_per_epoch of epoch k // batches_per_epoch.
`shard(indices, rank, world)` then gives each rank its contiguous slice of the global batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ltx.core.checkpoint import SafetensorsReader

INDEX_VERSION = 1
NULL_ID = "_null"  # text/_null.safetensors: the empty caption


def latent_file(folder: str | os.PathLike, item_id: str) -> Path:
    return Path(folder) / "latents" / f"{item_id}.safetensors"


def text_file(folder: str | os.PathLike, item_id: str) -> Path:
    return Path(folder) / "text" / f"{item_id}.safetensors"


def reference_file(folder: str | os.PathLike, item_id: str) -> Path:
    return Path(folder) / "reference" / f"{item_id}.safetensors"


def reference_audio_file(folder: str | os.PathLike, item_id: str) -> Path:
    """LTX-2: the audio latents of the item's reference clip (audio IC-LoRA modes)."""
    return Path(folder) / "reference_audio" / f"{item_id}.safetensors"


def audio_file(folder: str | os.PathLike, item_id: str) -> Path:
    """LTX-2: the item's audio latents."""
    return Path(folder) / "audio" / f"{item_id}.safetensors"


def text_keys(index: Mapping[str, Any]) -> tuple[str, ...]:
    """The tensors every text file of a cache holds, its width-giving one first: ("context", "mask") for 0.9.x,
    ("video",) for LTX-2 with feature extractor v1, ("video", "audio") for v2."""
    if index.get("family", "ltxv") != "ltx2":
        return ("context", "mask")
    return ("video", "audio") if index["text_encoder"].get("feature_extractor") == "v2" else ("video",)


def left_padded_text(text: Mapping[str, Tensor], max_tokens: int) -> tuple[Tensor, Tensor, Tensor]:
    """An LTX-2 text file's tensors (`video` (S, Dv), optional `audio` (S, Da)) -> (video_context (max_tokens, Dv),
    audio_context (max_tokens, Da), mask (max_tokens,) int64): zeros first, then the S real tokens, as the Gemma
    tokenizer pads. Without `audio` (feature extractor v1) the audio context is the video context."""
    video = text["video"]
    S = video.shape[0]
    if S > max_tokens:
        raise ValueError(f"{S} text tokens stored, more than the cache's max_tokens {max_tokens}")

    def pad(x: Tensor) -> Tensor:
        return torch.cat([x.new_zeros(max_tokens - S, x.shape[1]), x])

    video_context = pad(video)
    audio_context = pad(text["audio"]) if "audio" in text else video_context
    mask = torch.cat([torch.zeros(max_tokens - S, dtype=torch.int64), torch.ones(S, dtype=torch.int64)])
    return video_context, audio_context, mask


def read_index(folder: str | os.PathLike) -> dict:
    """OUT/index.json, checked for the version and the top-level keys."""
    path = Path(folder) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no index.json: not a latent cache (make one with "
                                "python -m train.preprocess data=... out=...)")  # fmt: skip
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
        got = index.get("version") if isinstance(index, dict) else None
        raise ValueError(f"{path}: cache format version {got!r}; this code reads version {INDEX_VERSION}")
    missing = [k for k in ("complete", "vae", "text_encoder", "items", "skipped") if k not in index]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return index


class LatentCache:
    """Map-style dataset over a complete cache: item i -> dict(latents (C, f, h, w), context (S, D), mask (S,),
    caption, bucket (F, H, W), fps); an LTX-2 cache's items have video_context, audio_context, mask and audio
    instead of context and mask (the module docstring)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        if not self.index["complete"]:
            raise ValueError(f"{self.folder}: preprocessing did not finish (index.json complete=false); rerun "
                             "python -m train.preprocess with the same options to resume it")  # fmt: skip
        self.items: list[dict] = self.index["items"]
        if not self.items:
            raise ValueError(f"{self.folder}: the cache holds no items ({len(self.index['skipped'])} were skipped)")
        if self.family not in ("ltxv", "ltx2"):
            raise ValueError(f"{self.folder}/index.json: unknown model family {self.family!r} (known: ltxv, ltx2)")
        files = [text_file(self.folder, NULL_ID)]
        for it in self.items:
            files += [latent_file(self.folder, it["id"]), text_file(self.folder, it["id"])]
            if it.get("reference_shape") is not None:
                files.append(reference_file(self.folder, it["id"]))
            if it.get("audio_shape") is not None:
                files.append(audio_file(self.folder, it["id"]))
            if it.get("reference_audio_shape") is not None:
                files.append(reference_audio_file(self.folder, it["id"]))
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{self.folder}: {len(missing)} cache files are missing, e.g. {missing[0]}; "
                                    "rerun python -m train.preprocess to write them")  # fmt: skip
        self._check_files()

    def _check_files(self) -> None:
        """Every file's header (cheap: no tensor data is read) holds the tensors of the right shapes: a damaged,
        truncated or foreign file is refused here, by name, rather than mid-training."""
        redo = "rerun python -m train.preprocess with the same options (it writes damaged files again)"
        vae = self.index["vae"]
        if not isinstance(vae, dict) or not all(k in vae for k in ("latent_space", "scale", "latent_channels")):
            raise ValueError(f"{self.folder}/index.json: 'vae' lacks latent_space, scale or latent_channels; {redo}")
        width = None
        audio = self.index.get("audio") or {}
        keys = text_keys(self.index)
        for it in [{"id": NULL_ID}, *self.items]:
            paths = [text_file(self.folder, it["id"])]
            if it["id"] != NULL_ID:
                paths.insert(0, latent_file(self.folder, it["id"]))
            if it.get("reference_shape") is not None:
                paths.append(reference_file(self.folder, it["id"]))
            if it.get("audio_shape") is not None:
                paths.append(audio_file(self.folder, it["id"]))
            for path in paths:
                try:
                    reader = SafetensorsReader(path)
                except ValueError as e:
                    raise ValueError(f"{path}: damaged cache file ({e}); {redo}") from None
                infos = reader.infos
                if path.parent.name == "audio":
                    got = infos["latents"].shape if "latents" in infos else None
                    want = tuple(it["audio_shape"])
                    if got != want or want[0] != audio.get("latent_channels"):
                        raise ValueError(f"{path}: audio latents {got}, the index says {want} with "
                                         f"{audio.get('latent_channels')} channels; {redo}")
                    space = reader.metadata.get("latent_space")
                    if space is not None and space != audio.get("latent_space"):
                        raise ValueError(f"{path}: encoded in audio latent space {space}, the cache is "
                                         f"{audio.get('latent_space')} (made by another audio VAE); {redo}")
                elif path.parent.name in ("latents", "reference"):
                    key = "latent_shape" if path.parent.name == "latents" else "reference_shape"
                    want = tuple(it.get(key) or ())
                    got = infos["latents"].shape if "latents" in infos else None
                    if got is None or got != want or want[0] != vae["latent_channels"]:
                        raise ValueError(f"{path}: latents {got}, the index says {want} with "
                                         f"{vae['latent_channels']} channels (a cache file of another VAE or "
                                         f"bucket?); {redo}")
                    space = reader.metadata.get("latent_space")
                    if space is not None and space != vae["latent_space"]:
                        raise ValueError(f"{path}: encoded in latent space {space}, the cache is "
                                         f"{vae['latent_space']} (made by another VAE); {redo}")
                else:
                    if not all(k in infos for k in keys) or len(infos[keys[0]].shape) != 2:
                        raise ValueError(f"{path}: not a text-state file (it holds {sorted(infos)}, expected "
                                         f"{list(keys)}); {redo}")
                    d = infos[keys[0]].shape[-1]
                    if width is not None and d != width:
                        raise ValueError(f"{path}: {d}-wide text states, the others are {width}-wide (another text "
                                         f"encoder?); {redo}")
                    width = d

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        iid = item["id"]
        latents, text = self._read(latent_file, iid, "")["latents"], self._read(text_file, iid, "")
        if self.family == "ltx2":
            video_context, audio_context, mask = left_padded_text(text, self.index["text_encoder"]["max_tokens"])
            out = {"latents": latents, "audio": None, "video_context": video_context, "audio_context": audio_context,
                   "mask": mask, "caption": item["caption"], "bucket": tuple(item["bucket"]), "fps": item["fps"]}
            if item.get("audio_shape") is not None:
                out["audio"] = self._read(audio_file, iid, "the audio of ")["latents"]
        else:
            out = {"latents": latents, "context": text["context"], "mask": text["mask"], "caption": item["caption"],
                   "bucket": tuple(item["bucket"]), "fps": item["fps"]}  # fmt: skip
        if item.get("reference_shape") is not None:
            out["reference"] = self._read(reference_file, iid, "the reference of ")["latents"]
            out["reference_downscale"] = int(item.get("reference_downscale", 1))
        if item.get("reference_audio_shape") is not None:
            out["reference_audio"] = self._read(reference_audio_file, iid, "the reference audio of ")["latents"]
        self._check_finite(item, out)
        return out

    def _read(self, file: Callable[[Path, str], Path], item_id: str, what: str) -> dict[str, Tensor]:
        """One of an item's files; a file damaged after the cache was opened is one line naming the item."""
        from safetensors.torch import load_file

        try:
            return load_file(str(file(self.folder, item_id)))
        except Exception as e:  # noqa: BLE001 - whatever safetensors raises on a damaged file
            raise ValueError(f"{self.folder}: {what}item {item_id} cannot be read ({type(e).__name__}: {e}); rerun "
                             "python -m train.preprocess with the same options") from None

    def _check_finite(self, item: dict, tensors: Mapping[str, Any]) -> None:
        """Refuse an item holding NaN / inf (a clip the VAE could not encode, a damaged file) by name, when it is
        read: training would otherwise stop later on a non-finite loss that points at the learning rate."""
        files = {"latents": latent_file, "reference": reference_file, "audio": audio_file,
                 "reference_audio": reference_audio_file}
        bad = [k for k, t in tensors.items() if isinstance(t, Tensor) and t.is_floating_point()
               and not bool(torch.isfinite(t).all())]
        if bad:
            paths = sorted({str(files.get(k, text_file)(self.folder, item["id"])) for k in bad})
            raise ValueError(f"{self.folder}: item {item['id']} ({item.get('media_path', 'the empty caption')}) holds "
                             f"NaN / inf in its {', '.join(bad)}; delete {', '.join(paths)} and rerun python -m "
                             "train.preprocess with the same options to encode it again (or drop the clip from the "
                             "data)")

    @property
    def references(self) -> tuple[int, set[int]]:
        """(how many items have a reference, the set of their downscale factors)."""
        with_ref = [it for it in self.items if it.get("reference_shape") is not None]
        return len(with_ref), {int(it.get("reference_downscale", 1)) for it in with_ref}

    def null_text(self) -> tuple[Tensor, ...]:
        """(context (S, D), mask (S,)) of the empty caption; LTX-2: (video_context, audio_context, mask)."""
        from safetensors.torch import load_file

        text = load_file(str(text_file(self.folder, NULL_ID)))
        self._check_finite({"id": NULL_ID}, text)
        if self.family == "ltx2":
            return left_padded_text(text, self.index["text_encoder"]["max_tokens"])
        return text["context"], text["mask"]

    @property
    def family(self) -> str:
        """The model family the cache was made for: "ltxv" (LTX-Video 0.9.x) or "ltx2" (LTX-2 / 2.3)."""
        return self.index.get("family", "ltxv")

    @property
    def audio_items(self) -> int:
        """How many items have audio latents (0 for a 0.9.x cache)."""
        return sum(it.get("audio_shape") is not None for it in self.items)

    @property
    def buckets(self) -> dict[tuple[int, int, int], list[int]]:
        """Item indices per bucket (F, H, W), buckets in order of first appearance."""
        out: dict[tuple[int, int, int], list[int]] = {}
        for i, item in enumerate(self.items):
            out.setdefault(tuple(item["bucket"]), []).append(i)
        return out

    @property
    def latent_space(self) -> str:
        """The VAE's latent-space fingerprint (train.train_vae.latent_space_id) the latents live in."""
        return self.index["vae"]["latent_space"]

    @property
    def buckets_list(self) -> list[tuple[int, int, int]]:
        """The buckets that hold items, in the order preprocessing was given them."""
        held = self.buckets
        return [b for b in map(tuple, self.index["buckets"]) if b in held]

    @property
    def scale(self) -> tuple[int, int, int]:
        """(temporal, spatial, spatial) compression of the VAE: pixels per latent voxel."""
        return tuple(self.index["vae"]["scale"])

    @property
    def latent_channels(self) -> int:
        return self.index["vae"]["latent_channels"]

    @property
    def text_channels(self) -> int:
        """D of the cached text states (the text encoder's width; LTX-2: of the video text features)."""
        key = "video" if self.family == "ltx2" else "context"
        return SafetensorsReader(text_file(self.folder, NULL_ID)).infos[key].shape[-1]

    def latent_shape(self, bucket: tuple[int, int, int]) -> tuple[int, int, int, int]:
        """(C, f, h, w) of the latents of a (frames, height, width) bucket."""
        (F, H, W), (t, s, _) = bucket, self.scale
        return self.latent_channels, (F - 1) // t + 1, H // s, W // s


class BucketBatchSampler:
    """Global batches of item indices, each from one bucket, as a pure function of (seed, step).

    `buckets`: a LatentCache, a mapping bucket -> item indices, or a list of bucket sizes (bucket k holds the
    next sizes[k] consecutive indices). Semantics in the module docstring.
    """

    def __init__(self, buckets: LatentCache | Mapping[Any, Sequence[int]] | Sequence[int], global_batch: int,
                 seed: int):  # fmt: skip
        if isinstance(buckets, LatentCache):
            groups = list(buckets.buckets.values())
        elif isinstance(buckets, Mapping):
            groups = [list(v) for v in buckets.values()]
        else:
            starts = np.cumsum([0, *buckets])
            groups = [list(range(a, b)) for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]
        self.groups = [g for g in groups if g]
        if not self.groups:
            raise ValueError("BucketBatchSampler needs at least one non-empty bucket")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.global_batch, self.seed = global_batch, seed
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return sum(-(-len(g) // self.global_batch) for g in self.groups)

    def epoch(self, e: int) -> list[list[int]]:
        """All batches of epoch `e`, in order."""
        if self._epoch_cache is not None and self._epoch_cache[0] == e:
            return self._epoch_cache[1]
        G = self.global_batch
        batches = []
        for k, group in enumerate(self.groups):
            perm = np.random.default_rng([self.seed, e, k + 1]).permutation(len(group))
            order = [group[j] for j in perm.tolist()]
            n = len(order)
            batches += [[order[(start + i) % n] for i in range(G)] for start in range(0, n, G)]
        shuffle = np.random.default_rng([self.seed, e, 0]).permutation(len(batches))
        out = [batches[j] for j in shuffle.tolist()]
        self._epoch_cache = (e, out)
        return out

    def batch(self, step: int) -> list[int]:
        """The `global_batch` item indices of training step `step` (all from one bucket)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        e, position = divmod(step, self.batches_per_epoch)
        return list(self.epoch(e)[position])


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank `rank`'s contiguous slice of a global batch split over `world` ranks."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    if len(indices) % world:
        raise ValueError(f"global batch {len(indices)} is not divisible by world size {world}")
    per = len(indices) // world
    return list(indices[rank * per : (rank + 1) * per])
