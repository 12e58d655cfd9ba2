"""Preprocess a fine-tuning dataset: media -> buckets -> cached VAE latents + text embeddings.

    python -m train.preprocess data=path/to/manifest.jsonl out=cache/mydata \
        checkpoint=demo/ltx-demo.safetensors text_encoder=demo/text_encoder 'buckets=["17x64x64", "9x64x96"]'

`data` is a manifest (CSV / JSON / JSONL with caption + media_path columns) or a folder of videos / images
with same-name .txt captions (ltx.data.manifest). Each clip is decoded (PyAV), fitted into the bucket with
the closest aspect ratio (ltx.data.buckets), encoded by the VAE of `checkpoint` (posterior mean, normalized
latents) and its caption by the T5 of `text_encoder`; the cache format is in ltx.data.latent_cache, which
also holds the training dataset (`LatentCache`) and the bucket sampler over it.

Order of work: the config is checked (data and weights exist, buckets valid for the VAE's factors, with the
nearest valid sizes in the message) and the manifest read before anything is written. Then the VAE pass
(one clip at a time), then the T5 is loaded once for the caption pass and freed.

Resuming: every per-item file is written atomically (temporary file + rename) and named by a stable id, a
hash of (media path relative to the dataset, caption, bucket list, max_upscale), so a rerun skips every item
whose files exist and a killed run picks up where it stopped (index.json is rewritten atomically every
`index_every` items and at the end). Items skipped for their media are tried again (a fixed file gets in).
A rerun into a cache made with another VAE latent space (train.train_vae.latent_space_id), another text
encoder (path, max_tokens) or another precision is refused; pass overwrite=true to delete that cache and
start again. A text encoder whose weights changed in place is caught when it is loaded (its embedding of ""
no longer matches text/_null.safetensors).

Bad items never stop the run: missing, empty, corrupt or unreadable files, videos shorter than every video bucket,
clips too small for any bucket within `max_upscale`, and missing or empty captions are listed in a table at
the end and in index.json["skipped"].

Reference videos (IC-LoRA control training): manifest items with a `reference_path` (a control or reference
clip paired with the target) get the reference encoded too, into OUT/reference/<id>.safetensors. The
reference is fitted to the target's bucket (same frames, same crop), at 1/`reference_downscale` of its height
and width; the target's aspect ratio must match the reference's within 1% and the reference must have the
bucket's frames, else the item is skipped (listed with the reason). Its record gains `reference_shape`.

Distributed training: preprocessing is a separate phase, run once (one process, `device=cuda` for speed),
not by every rank; the training ranks only read the finished cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ltx.core.checkpoint import SafetensorsReader, TensorEntry, write_json, write_safetensors
from ltx.core.media import MediaError, is_image, read_image, read_video
from ltx.data.buckets import Bucket, choose_bucket, fit_to_bucket, no_bucket_reason, parse_buckets
from ltx.data.latent_cache import INDEX_VERSION, NULL_ID, latent_file, read_index, reference_file, text_file
from ltx.data.manifest import MediaItem, read_dataset
from ltx.ltxv.checkpoint import load_component, read_checkpoint
from ltx.ltxv.text import T5TextEncoder

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(kw_only=True)
class PreprocessConfig:
    data: str | None = None  # manifest (.csv / .json / .jsonl) or a folder of media with .txt captions
    out: str | None = None  # the cache folder
    checkpoint: str = "demo/ltx-demo.safetensors"  # any checkpoint holding the VAE (official, diffusers, ltx)
    text_encoder: str = "demo/text_encoder"  # local T5 folder
    text_tokens: int = 256  # T5 sequence length; official models 256, the demo 96 (configs/preprocess.yaml)
    buckets: list[str] = field(default_factory=lambda: ["17x64x64"])  # FRAMESxHEIGHTxWIDTH each (or "a;b")
    max_upscale: float | None = 2.0  # skip clips that would need more upscaling to fill any bucket (None: any)
    device: str = "cpu"
    precision: str = "float32"  # VAE and T5 compute dtype (float32 | bfloat16); latents are stored float32
    overwrite: bool = False  # delete an incompatible existing cache in `out` and start again
    index_every: int = 50  # rewrite index.json every N items
    reference_downscale: int = 1  # references (manifest reference_path) encoded at 1/N of the bucket's height / width


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def item_id(rel_path: str, caption: str, buckets: list[Bucket], max_upscale: float | None,
            reference: tuple[str, int] | None = None) -> str:
    """Stable id of an item: the same inputs and bucket options give the same id (and file names); an item with a
    reference also hashes the reference's path and downscale factor."""
    key = [rel_path, caption, [list(b) for b in buckets], max_upscale] + ([list(reference)] if reference else [])
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def check_config(cfg: PreprocessConfig):
    """(VAE checkpoint (headers), buckets) after every check that needs no weights; one-line errors."""
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
    ckpt = read_checkpoint(Path(cfg.checkpoint).expanduser())
    if "vae" not in ckpt.components:
        raise ValueError(f"{ckpt.path} holds no VAE (it has {sorted(ckpt.components)})")
    t5 = Path(cfg.text_encoder).expanduser()
    if not t5.is_dir():
        raise FileNotFoundError(f"text encoder {t5} does not exist; pass text_encoder=<local T5 folder>")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision {cfg.precision!r} is not one of {sorted(PRECISIONS)}")
    if cfg.text_tokens < 1 or cfg.index_every < 1:
        raise ValueError(f"text_tokens and index_every must be >= 1, got {cfg.text_tokens}, {cfg.index_every}")
    if cfg.max_upscale is not None and not (math.isfinite(cfg.max_upscale) and cfg.max_upscale >= 1):
        raise ValueError(f"max_upscale must be >= 1 (or null for any), got {cfg.max_upscale}")
    vae_cfg = ckpt.components["vae"].config
    buckets = parse_buckets(list(cfg.buckets), vae_cfg.temporal_factor, vae_cfg.spatial_factor)
    d, s = cfg.reference_downscale, vae_cfg.spatial_factor
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise ValueError(f"reference_downscale={d!r} is invalid: give an integer >= 1 (1 = the target's size)")
    bad = [b for b in buckets if b.height % (s * d) or b.width % (s * d)]
    if bad:
        valid = [k for k in range(1, 9) if all(b.height % (s * k) == 0 and b.width % (s * k) == 0 for b in buckets)]
        raise ValueError(f"reference_downscale={d}: bucket {'x'.join(map(str, bad[0]))} / {d} is not a multiple of the "
                         f"VAE's {s} pixels; valid factors for these buckets: {valid}")
    return ckpt, buckets


def settings(cfg: PreprocessConfig, vae, space: str, buckets: list[Bucket]) -> dict:
    """The index's description of how the cache was made (everything but items and skipped)."""
    t, s = vae.cfg.temporal_factor, vae.cfg.spatial_factor
    return {
        "version": INDEX_VERSION,
        "vae": {"checkpoint": str(cfg.checkpoint), "latent_space": space, "scale": [t, s, s],
                "latent_channels": vae.cfg.latent_channels},
        "text_encoder": {"path": str(Path(cfg.text_encoder).expanduser().resolve()), "max_tokens": cfg.text_tokens},
        "precision": cfg.precision,
        "buckets": [list(b) for b in buckets],
        "max_upscale": cfg.max_upscale,
        "reference_downscale": cfg.reference_downscale,
    }  # fmt: skip


def check_existing(out: Path, new: dict, overwrite: bool) -> None:
    """Refuse to add to a cache made with another latent space, text encoder or precision (or delete it)."""
    if not (out / "index.json").exists():
        return
    old = read_index(out)
    diffs = []
    if old["vae"]["latent_space"] != new["vae"]["latent_space"]:
        diffs.append(f"VAE latent space {old['vae']['latent_space']} ({old['vae']['checkpoint']}) vs "
                     f"{new['vae']['latent_space']} ({new['vae']['checkpoint']})")
    if old["text_encoder"] != new["text_encoder"]:
        diffs.append(f"text encoder {old['text_encoder']} vs {new['text_encoder']}")
    if old.get("precision") != new["precision"]:
        diffs.append(f"precision {old.get('precision')} vs {new['precision']}")
    if not diffs:
        return
    if not overwrite:
        raise ValueError(f"{out} holds a cache made differently: {'; '.join(diffs)}. Use another out folder, "
                         "or pass overwrite=true to delete this cache and start again")
    for name in ("latents", "text", "reference"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "index.json").unlink()


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


def text_ok(path: Path) -> bool:
    """Whether a text-state file exists and is whole (its header reads and holds context and mask): a damaged
    one is written again."""
    if not path.is_file():
        return False
    try:
        infos = SafetensorsReader(path).infos
    except ValueError:
        print(f"[preprocess] {path} is damaged; encoding it again")
        return False
    return "context" in infos and "mask" in infos


def load_reference(item: MediaItem, bucket: Bucket, source_hw: tuple[int, int], downscale: int):
    """The item's reference clip fitted like the target (same frames and crop) at 1/downscale of the bucket's size,
    (3, F, H / d, W / d) in [0, 1]; MediaError with the reason to skip the item when it cannot line up."""
    path = item.reference_path
    try:
        ref = read_image(path)[:, None] if is_image(path) else read_video(path, max_frames=bucket.frames)[0]
    except MediaError as e:
        raise MediaError(item.media_path, f"reference {path.name}: {e.reason}") from None
    _, n, h, w = ref.shape
    H, W = source_hw
    if abs((h / w) / (H / W) - 1) > 0.01:
        raise MediaError(item.media_path, f"reference {path.name} is {w}x{h}, the video {W}x{H}: another aspect ratio, "
                         "so the control would not line up with the frames")
    if n < bucket.frames:
        raise MediaError(item.media_path, f"reference {path.name} has {n} frames, the bucket {bucket.frames}")
    return fit_to_bucket(ref, Bucket(bucket.frames, bucket.height // downscale, bucket.width // downscale))


def load_clip(item: MediaItem, buckets: list[Bucket], max_upscale: float | None):
    """(fitted clip (3, F, H, W) in [0, 1], bucket, fps) or raise MediaError with the reason to skip it."""
    if is_image(item.media_path):
        video, fps = read_image(item.media_path)[:, None], None  # (3, 1, H, W)
    else:
        video, fps = read_video(item.media_path, max_frames=max(b.frames for b in buckets))
    _, frames, H, W = video.shape
    bucket = choose_bucket(frames, H, W, buckets, max_upscale=max_upscale)
    if bucket is None:
        raise MediaError(item.media_path, no_bucket_reason(frames, H, W, buckets, max_upscale=max_upscale))
    return fit_to_bucket(video, bucket), bucket, fps, (H, W)


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


def run(cfg: PreprocessConfig) -> dict:
    """Build or resume the cache in `cfg.out`; returns the final index (see the module docstring)."""
    from tqdm import tqdm

    from train.train_vae import latent_space_id

    ckpt, buckets = check_config(cfg)
    source = Path(cfg.data).expanduser().resolve()
    root = source if source.is_dir() else source.parent
    items, skipped = read_dataset(source)
    device, dtype = torch.device(cfg.device), PRECISIONS[cfg.precision]
    vae = load_component(ckpt, "vae", dtype=torch.float32, device=device)
    space = latent_space_id(vae)  # of the float32 weights, as the training apps check it, whatever `precision`
    vae = vae.to(dtype)
    out = Path(cfg.out).expanduser()
    head = settings(cfg, vae, space, buckets)
    check_existing(out, head, cfg.overwrite)

    for d in ("latents", "text") + (("reference",) if any(it.reference_path for it in items) else ()):
        (out / d).mkdir(parents=True, exist_ok=True)
    skips = [{"path": str(s.path), "reason": s.reason} for s in skipped]
    records: list[dict] = []  # the items with latents, in dataset order

    def write_index(complete: bool) -> dict:
        done = [r for r in records if text_file(out, r["id"]).is_file()] if text_file(out, NULL_ID).is_file() else []
        index = head | {"complete": complete, "items": done, "skipped": skips}
        write_json(out / "index.json", index, overwrite=True)
        return index

    def encode(x: torch.Tensor) -> torch.Tensor:  # (3, F, H, W) in [0, 1] -> (C, f, h, w), the posterior mean
        with torch.no_grad():
            return vae.encode((x * 2 - 1)[None].to(device=device, dtype=dtype))[0].float()

    write_index(False)  # the settings are on disk before any item: a killed run is still checked on resume
    seen: set[str] = set()
    encoded = 0
    for n, item in enumerate(tqdm(items, desc="encoding clips", unit="clip"), start=1):
        rel = _rel(item.media_path, root)
        ref_key = (_rel(item.reference_path, root), cfg.reference_downscale) if item.reference_path else None
        iid = item_id(rel, item.caption, buckets, cfg.max_upscale, ref_key)
        if iid in seen:
            skips.append({"path": str(item.media_path), "reason": "duplicate (same file and caption listed before)"})
            continue
        seen.add(iid)
        ref_path = reference_file(out, iid) if item.reference_path else None
        record = cached_record(latent_file(out, iid), space, ref_path)
        if record is None:
            try:
                clip, bucket, fps, source_hw = load_clip(item, buckets, cfg.max_upscale)
                ref = load_reference(item, bucket, source_hw, cfg.reference_downscale) if ref_path else None
            except MediaError as e:
                skips.append({"path": str(item.media_path), "reason": e.reason})
                continue
            latents = encode(clip)
            record = {"id": iid, "media_path": str(item.media_path), "caption": item.caption,
                      "reference_path": str(item.reference_path) if item.reference_path else None,
                      "bucket": list(bucket), "latent_shape": list(latents.shape), "fps": fps}  # fmt: skip
            if ref is not None:  # the reference first: a latent file implies its reference is written
                ref_latents = encode(ref)
                record |= {"reference_shape": list(ref_latents.shape), "reference_downscale": cfg.reference_downscale}
                save(ref_path, {"latents": ref_latents}, {"item": json.dumps(record), "latent_space": space})
            save(latent_file(out, iid), {"latents": latents}, {"item": json.dumps(record), "latent_space": space})
            encoded += 1
        records.append(record | {"media_path": str(item.media_path)})  # where the file is now
        if n % cfg.index_every == 0:
            write_index(False)
    vae = None  # freed before the text encoder loads

    todo = [r for r in records if not text_ok(text_file(out, r["id"]))]
    null_path = text_file(out, NULL_ID)
    null_ok = text_ok(null_path)
    if todo or not null_ok:
        try:
            t5 = T5TextEncoder(cfg.text_encoder, device=device, dtype=dtype, max_tokens=cfg.text_tokens)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever transformers raises on a damaged folder
            raise ValueError(f"text_encoder={cfg.text_encoder} cannot be loaded ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); pass a whole local T5 "
                             "folder (text_encoder/ and tokenizer/)") from None
        identity = json.dumps(head["text_encoder"])
        context, mask = t5.encode([""])
        if null_ok:
            from safetensors.torch import load_file

            old = load_file(str(null_path))
            fresh = context[0].cpu().to(old["context"].dtype)
            drift = (old["context"] - fresh).abs().max() if old["context"].shape == fresh.shape else float("inf")
            if drift > 1e-3 * fresh.abs().max():
                raise ValueError(f"{cfg.text_encoder} embeds the empty caption differently from the one that made "
                                 f"{out} (weights changed?); pass overwrite=true or use another out folder")
        else:
            save(null_path, {"context": context[0], "mask": mask[0]}, {"caption": "", "text_encoder": identity})
        for n, r in enumerate(tqdm(todo, desc="encoding captions", unit="caption"), start=1):
            context, mask = t5.encode([r["caption"]])
            save(text_file(out, r["id"]), {"context": context[0], "mask": mask[0]},
                 {"caption": r["caption"], "text_encoder": identity})  # fmt: skip
            if n % cfg.index_every == 0:
                write_index(False)
        del t5
    index = write_index(True)
    print_summary(index, root, encoded, len(todo))
    return index


def to_config(raw) -> PreprocessConfig:
    """The one OmegaConf -> dataclass conversion (raw: the composed Hydra config)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PreprocessConfig), raw))


def _main() -> None:
    from infer.app import hydra_app

    hydra_app(PreprocessConfig, "preprocess", run)

if __name__ == "__main__":
    _main()
