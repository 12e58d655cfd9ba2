"""What preprocessing shares between the families (train/preprocess.py for LTX-Video 0.9.x, train/preprocess_ltx2.py
for LTX-2): the app's config, the checks that need no weights, the clip and reference fitting, and `CacheWriter`,
the resumable per-item loop with its index, skipped list and caption pass. The cache format is in
ltx.data.latent_cache; the behaviour is described in train/preprocess.py's docstring.
"""


from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx.core.checkpoint import SafetensorsReader, TensorEntry, write_json, write_safetensors
from ltx.core.media import MediaError, is_image, read_image, read_video
from ltx.data.buckets import Bucket, choose_bucket, fit_to_bucket, no_bucket_reason, parse_buckets
from ltx.data.latent_cache import NULL_ID, read_index, text_file
from ltx.data.manifest import MediaItem, Skipped

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(kw_only=True)
class PreprocessConfig:
    data: str | None = None  # manifest (.csv / .json / .jsonl) or a folder of media with .txt captions
    out: str | None = None  # the cache folder
    checkpoint: str = "demo/ltx-demo.safetensors"  # any checkpoint holding the VAE (official, diffusers, ltx)
    text_encoder: str = "demo/text_encoder"  # local T5 folder (LTX-2: a local Gemma-3 folder)
    text_tokens: int = 256  # T5 sequence length; official models 256, the demo 96 (configs/preprocess.yaml)
    buckets: list[str] = field(default_factory=lambda: ["17x64x64"])  # FRAMESxHEIGHTxWIDTH each (or "a;b")
    max_upscale: float | None = 2.0  # skip clips that would need more upscaling to fill any bucket (None: any)
    device: str = "cpu"
    precision: str = "float32"  # VAE and T5 compute dtype (float32 | bfloat16); latents are stored float32
    overwrite: bool = False  # delete an incompatible existing cache in `out` and start again
    index_every: int = 50  # rewrite index.json every N items
    reference_downscale: int = 1  # references (manifest reference_path) encoded at 1/N of the bucket's height / width
    # LTX-2 only (an LTX-2 `checkpoint` runs train/preprocess_ltx2.py; text_encoder is then a local Gemma-3 folder)
    fps: float = 24.0  # every clip is resampled to this frame rate (nearest frame), its audio cut to F / fps seconds
    audio: bool = True  # encode each clip's sound (its own track, or the manifest's audio_path) with the audio VAE
    silence_peak: float = 0.001  # audio whose peak |sample| is below this (-60 dBFS) counts as silent: not encoded
    gemma_tokens: int = 1024  # Gemma sequence length (the official tokenizer's; a multiple of the 128 registers)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def item_id(rel_path: str, caption: str, buckets: list[Bucket], max_upscale: float | None,
            reference: tuple[str, int] | None = None, audio: str | None = None) -> str:
    """Stable id of an item: the same inputs and bucket options give the same id (and file names); an item with a
    reference also hashes the reference's path and downscale factor, one with a separate audio file its path."""
    key = [rel_path, caption, [list(b) for b in buckets], max_upscale] + ([list(reference)] if reference else [])
    key += [["audio", audio]] if audio else []
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def check_paths(cfg: PreprocessConfig) -> None:
    """The checks both families share on data, out, device and checkpoint; one-line errors."""
    if not cfg.data:
        raise ValueError("no data given: pass data=path/to/manifest.jsonl (or a folder of media + .txt captions)")
    if not Path(cfg.data).expanduser().exists():
        raise FileNotFoundError(f"data {cfg.data} does not exist")
    if not cfg.out:
        raise ValueError("no out given: pass out=path/to/cache (the folder the cache is written to)")
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={cfg.out} is a file; pass a folder for the cache")
    if any(p.is_file() for p in out.parents):
        raise ValueError(f"out={cfg.out}: {next(p for p in out.parents if p.is_file())} is a file, not a folder")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        raise ValueError(f"device={cfg.device!r} is invalid: must be cpu, cuda or cuda:N")
    if not Path(cfg.checkpoint).expanduser().exists():
        raise FileNotFoundError(f"checkpoint {cfg.checkpoint} does not exist; pass checkpoint=<file with the VAE>")


def check_numbers(cfg: PreprocessConfig, text_tokens: int) -> None:
    """precision, the text length, index_every and max_upscale; one-line errors."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision {cfg.precision!r} is not one of {sorted(PRECISIONS)}")
    if text_tokens < 1 or cfg.index_every < 1:
        raise ValueError(f"text_tokens and index_every must be >= 1, got {text_tokens}, {cfg.index_every}")
    if cfg.max_upscale is not None and not (math.isfinite(cfg.max_upscale) and cfg.max_upscale >= 1):
        raise ValueError(f"max_upscale must be >= 1 (or null for any), got {cfg.max_upscale}")


def check_buckets(cfg: PreprocessConfig, temporal_factor: int, spatial_factor: int) -> list[Bucket]:
    """The buckets, valid for the VAE's factors and for `reference_downscale` (nearest valid values in errors)."""
    buckets = parse_buckets(list(cfg.buckets), temporal_factor, spatial_factor)
    d, s = cfg.reference_downscale, spatial_factor
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise ValueError(f"reference_downscale={d!r} is invalid: give an integer >= 1 (1 = the target's size)")
    bad = [b for b in buckets if b.height % (s * d) or b.width % (s * d)]
    if bad:
        valid = [k for k in range(1, 9) if all(b.height % (s * k) == 0 and b.width % (s * k) == 0 for b in buckets)]
        raise ValueError(f"reference_downscale={d}: bucket {'x'.join(map(str, bad[0]))} / {d} is not a multiple of the "
                         f"VAE's {s} pixels; valid factors for these buckets: {valid}")
    return buckets


def check_existing(out: Path, new: dict, overwrite: bool) -> None:
    """Refuse to add to a cache made for another model family (0.9.x "ltxv" / "ltx2"), or with another latent
    space, text encoder, precision or (LTX-2) frame rate and audio settings; overwrite=true deletes it instead."""
    if not (out / "index.json").exists():
        return
    old = read_index(out)
    diffs = []
    families = old.get("family", "ltxv"), new.get("family", "ltxv")
    if families[0] != families[1]:
        names = {"ltxv": "LTX-Video 0.9.x", "ltx2": "LTX-2"}
        diffs.append(f"model family {names.get(families[0], families[0])} vs {names[families[1]]}")
    else:
        if old["vae"]["latent_space"] != new["vae"]["latent_space"]:
            diffs.append(f"VAE latent space {old['vae']['latent_space']} ({old['vae']['checkpoint']}) vs "
                         f"{new['vae']['latent_space']} ({new['vae']['checkpoint']})")
        if old["text_encoder"] != new["text_encoder"]:
            diffs.append(f"text encoder {old['text_encoder']} vs {new['text_encoder']}")
        if old.get("precision") != new["precision"]:
            diffs.append(f"precision {old.get('precision')} vs {new['precision']}")
        if old.get("fps") != new.get("fps"):
            diffs.append(f"fps {old.get('fps')} vs {new.get('fps')}")
        if audio_settings(old) != audio_settings(new):
            diffs.append(f"audio {audio_settings(old)} vs {audio_settings(new)}")
    if not diffs:
        return
    if not overwrite:
        raise ValueError(f"{out} holds a cache made differently: {'; '.join(diffs)}. Use another out folder, "
                         "or pass overwrite=true to delete this cache and start again")
    for name in ("latents", "text", "reference", "audio"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "index.json").unlink()


def audio_settings(index: dict) -> dict | None:
    """What of an index's "audio" entry decides the audio latents (not the per-bucket shapes, which follow the
    buckets); None for a cache without audio."""
    audio = index.get("audio")
    return None if audio is None else {k: v for k, v in audio.items() if k != "latent_shape_per_bucket"}


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a small safetensors file atomically (temporary file + rename)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    entries = [TensorEntry(k, v.dtype, tuple(v.shape), lambda v=v: v) for k, v in tensors.items()]
    write_safetensors(path, entries, metadata, overwrite=True)


def cached_record(path: Path, space: str, reference: Path | None = None) -> dict | None:
    """The item record of an existing latent file of this latent space (and, for an item with a reference, of its
    reference file), or None (absent or unusable: encoded again)."""
    if not path.is_file():
        return None
    try:
        reader = SafetensorsReader(path)
        if reader.metadata.get("latent_space") != space or "latents" not in reader.infos:
            return None
        record = json.loads(reader.metadata["item"])
        if reference is not None:
            if not reference.is_file():
                return None
            ref = SafetensorsReader(reference)
            if ref.metadata.get("latent_space") != space or "latents" not in ref.infos or \
                    list(ref.infos["latents"].shape) != record.get("reference_shape"):
                return None
        return record
    except (ValueError, KeyError):
        return None


def text_ok(path: Path, keys: tuple[str, ...] = ("context", "mask")) -> bool:
    """Whether a text-state file exists and is whole (its header reads and holds `keys`): a damaged one is
    written again."""
    if not path.is_file():
        return False
    try:
        infos = SafetensorsReader(path).infos
    except ValueError:
        print(f"[preprocess] {path} is damaged; encoding it again")
        return False
    return all(k in infos for k in keys)


def load_reference(item: MediaItem, bucket: Bucket, source_hw: tuple[int, int], downscale: int):
    """The item's reference clip fitted like the target (same frames and crop) at 1/downscale of the bucket's size,
    (3, F, H / d, W / d) in [0, 1]; MediaError with the reason to skip the item when it cannot line up."""
    path = item.reference_path
    try:
        ref = read_image(path)[:, None] if is_image(path) else read_video(path, max_frames=bucket.frames)[0]
    except MediaError as e:
        raise MediaError(item.media_path, f"reference {path.name}: {e.reason}") from None
    return fit_reference(item, ref, bucket, source_hw, downscale)


def fit_reference(item: MediaItem, ref: torch.Tensor, bucket: Bucket, source_hw: tuple[int, int], downscale: int):
    """A decoded reference (3, n, h, w) fitted as `load_reference` says, or MediaError (another aspect ratio, too
    few frames)."""
    path = item.reference_path
    _, n, h, w = ref.shape
    H, W = source_hw
    if abs((h / w) / (H / W) - 1) > 0.01:
        raise MediaError(item.media_path, f"reference {path.name} is {w}x{h}, the video {W}x{H}: another aspect ratio, "
                         "so the control would not line up with the frames")
    if n < bucket.frames:
        raise MediaError(item.media_path, f"reference {path.name} has {n} frames, the bucket {bucket.frames}")
    return fit_to_bucket(ref, Bucket(bucket.frames, bucket.height // downscale, bucket.width // downscale))


def fit_clip(path: Path, video: torch.Tensor, buckets: list[Bucket], max_upscale: float | None):
    """(3, F, H, W) -> (clip fitted to its bucket, the bucket, (H, W)), or MediaError saying why none fits."""
    _, frames, H, W = video.shape
    bucket = choose_bucket(frames, H, W, buckets, max_upscale=max_upscale)
    if bucket is None:
        raise MediaError(path, no_bucket_reason(frames, H, W, buckets, max_upscale=max_upscale))
    return fit_to_bucket(video, bucket), bucket, (H, W)


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 12s."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def print_summary(index: dict, root: Path, encoded: int, texts: int) -> None:
    items, skipped = index["items"], index["skipped"]
    per_bucket: dict[str, int] = {}
    for it in items:
        key = "x".join(map(str, it["bucket"]))
        per_bucket[key] = per_bucket.get(key, 0) + 1
    print(f"[preprocess] {len(items)} items cached ({encoded} clips and {texts} captions encoded this run), "
          f"{len(skipped)} skipped; per bucket: {per_bucket}")  # fmt: skip
    if skipped:
        rows = [(_rel(Path(s["path"]), root), s["reason"]) for s in skipped]
        width = max(len(p) for p, _ in rows)
        print(f"  {'skipped':<{width}}  reason")
        for p, reason in rows:
            print(f"  {p:<{width}}  {reason}")


class CacheWriter:
    """The resumable, bad-file-tolerant loop both model families share (the module docstring): items are encoded
    one at a time into atomic per-item files named by their id, files already written are kept, bad media are
    listed in `skips`, and index.json is rewritten every `index_every` items. A family supplies how an item is
    identified, found cached and encoded (`clips`), and how captions are encoded (`captions`)."""

    def __init__(self, out: Path, head: dict, skipped: list[Skipped], index_every: int, folders: tuple[str, ...]):
        self.out, self.head, self.index_every = out, head, index_every
        for d in folders:
            (out / d).mkdir(parents=True, exist_ok=True)
        self.skips = [{"path": str(s.path), "reason": s.reason} for s in skipped]
        self.records: list[dict] = []  # the items with latents, in dataset order
        self.encoded = 0  # clips encoded by this run

    def write_index(self, complete: bool) -> dict:
        """index.json: the settings, the items whose files are all written (text included), the skipped ones."""
        out = self.out
        done = [r for r in self.records if text_file(out, r["id"]).is_file()] if text_file(out, NULL_ID).is_file() \
            else []  # fmt: skip
        index = self.head | {"complete": complete, "items": done, "skipped": self.skips}
        write_json(out / "index.json", index, overwrite=True)
        return index

    def clips(self, items: list[MediaItem], key: Callable[[MediaItem], str],
              cached: Callable[[MediaItem, str], dict | None], encode: Callable[[MediaItem, str], dict]) -> None:
        """key(item) -> its id; cached(item, id) -> the record of files already written (None: encode it);
        encode(item, id) -> the record, after writing the item's files (its latent file last, so that a latent file
        implies the others), or MediaError with the reason to skip the item."""
        from tqdm import tqdm

        self.write_index(False)  # the settings are on disk before any item: a killed run is still checked on resume
        seen: set[str] = set()
        for n, item in enumerate(tqdm(items, desc="encoding clips", unit="clip"), start=1):
            iid = key(item)
            if iid in seen:
                self.skips.append({"path": str(item.media_path),
                                   "reason": "duplicate (same file and caption listed before)"})  # fmt: skip
                continue
            seen.add(iid)
            record = cached(item, iid)
            if record is None:
                started = time.perf_counter()
                try:
                    record = encode(item, iid)
                except MediaError as e:
                    self.skips.append({"path": str(item.media_path), "reason": e.reason})
                    continue
                self.encoded += 1
                if self.encoded == 1 and n < len(items):  # a time estimate that a log file keeps too
                    took, left = time.perf_counter() - started, len(items) - n
                    tqdm.write(f"[preprocess] the first clip took {took:.1f} s: about {duration(took * left)} for "
                               f"the {left} clips left (fewer if some are cached), then the captions")
            self.records.append(record | {"media_path": str(item.media_path)})  # where the file is now
            if n % self.index_every == 0:
                self.write_index(False)

    def captions(self, keys: tuple[str, ...], load: Callable[[], Any],
                 encode: Callable[[Any, str], dict[str, torch.Tensor]], source: str) -> int:
        """Encode the captions without a whole text file (and "" into text/_null) with the encoder `load()` gives,
        `encode(encoder, caption)` -> the tensors to store (`keys` among them). The encoder is loaded only when
        there is work; a stored "" that the encoder no longer reproduces (weights of `source` changed) is refused.
        Returns how many captions were encoded."""
        from tqdm import tqdm

        out = self.out
        todo = [r for r in self.records if not text_ok(text_file(out, r["id"]), keys)]
        null_path = text_file(out, NULL_ID)
        null_ok = text_ok(null_path, keys)
        if not todo and null_ok:
            return 0
        encoder = load()
        identity = json.dumps(self.head["text_encoder"])
        null = encode(encoder, "")
        if null_ok:
            from safetensors.torch import load_file

            old = load_file(str(null_path))
            for k, fresh in null.items():
                if not fresh.is_floating_point():
                    continue
                fresh = fresh.cpu().to(old[k].dtype)
                drift = (old[k] - fresh).abs().max() if old[k].shape == fresh.shape else float("inf")
                if drift > 1e-3 * fresh.abs().max():
                    raise ValueError(f"{source} embeds the empty caption differently from the one that made {out} "
                                     "(weights changed?); pass overwrite=true or use another out folder")
        else:
            save(null_path, null, {"caption": "", "text_encoder": identity})
        for n, r in enumerate(tqdm(todo, desc="encoding captions", unit="caption"), start=1):
            save(text_file(out, r["id"]), encode(encoder, r["caption"]),
                 {"caption": r["caption"], "text_encoder": identity})  # fmt: skip
            if n % self.index_every == 0:
                self.write_index(False)
        return len(todo)


