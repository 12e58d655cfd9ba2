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

LTX-2 / 2.3: an LTX-2 `checkpoint` (ltx.ltx2.checkpoint.detect) is preprocessed by train/preprocess_ltx2.py with
the same machinery (`CacheWriter`, the checks and helpers of train/preprocess_common.py): clips resampled to `fps`,
audio latents of each clip's sound (`audio`, `silence_peak`, manifest `audio_path`), Gemma text features
(`text_encoder` a local Gemma-3 folder, `gemma_tokens`). A cache made for the other family is refused like any
cache made differently.

Distributed training: preprocessing is a separate phase, run once (one process, `device=cuda` for speed),
not by every rank; the training ranks only read the finished cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ltx.core.media import MediaError, is_image, read_image, read_video
from ltx.data.buckets import Bucket
from ltx.data.latent_cache import INDEX_VERSION, latent_file, reference_file
from ltx.data.manifest import MediaItem, read_dataset
from ltx.ltx2.checkpoint import detect
from ltx.ltxv.checkpoint import load_component, read_checkpoint
from ltx.ltxv.text import T5TextEncoder, truncation_summary
from train.preprocess_common import (  # noqa: F401 - re-exported: the app's schema and helpers live there
    PRECISIONS,
    CacheWriter,
    PreprocessConfig,
    _rel,
    audio_settings,
    cached_record,
    check_buckets,
    check_existing,
    check_numbers,
    check_paths,
    fit_clip,
    fit_reference,
    item_id,
    load_reference,
    print_summary,
    save,
    text_ok,
)
from train.preprocess_ltx2 import run as run_ltx2


def check_config(cfg: PreprocessConfig):
    """(VAE checkpoint (headers), buckets) after every check that needs no weights; one-line errors."""
    check_paths(cfg)
    ckpt = read_checkpoint(Path(cfg.checkpoint).expanduser())
    if "vae" not in ckpt.components:
        raise ValueError(f"{ckpt.path} holds no VAE (it has {sorted(ckpt.components)})")
    t5 = Path(cfg.text_encoder).expanduser()
    if not t5.is_dir():
        raise FileNotFoundError(f"text encoder {t5} does not exist; pass text_encoder=<local T5 folder>")
    check_numbers(cfg, cfg.text_tokens)
    vae_cfg = ckpt.components["vae"].config
    return ckpt, check_buckets(cfg, vae_cfg.temporal_factor, vae_cfg.spatial_factor)


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


def load_clip(item: MediaItem, buckets: list[Bucket], max_upscale: float | None):
    """(fitted clip (3, F, H, W) in [0, 1], bucket, fps, (H, W) of the source) or raise MediaError with the reason
    to skip it."""
    if is_image(item.media_path):
        video, fps = read_image(item.media_path)[:, None], None  # (3, 1, H, W)
    else:
        video, fps = read_video(item.media_path, max_frames=max(b.frames for b in buckets))
    clip, bucket, source_hw = fit_clip(item.media_path, video, buckets, max_upscale)
    return clip, bucket, fps, source_hw


def run(cfg: PreprocessConfig) -> dict:
    """Build or resume the cache in `cfg.out`; returns the final index (see the module docstring). An LTX-2
    `checkpoint` is preprocessed by train/preprocess_ltx2.py."""
    if cfg.checkpoint and detect(Path(cfg.checkpoint).expanduser()) == "bundled":
        return run_ltx2(cfg)

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
    folders = ("latents", "text") + (("reference",) if any(it.reference_path for it in items) else ())
    writer = CacheWriter(out, head, skipped, cfg.index_every, folders)

    def encode(x: torch.Tensor) -> torch.Tensor:  # (3, F, H, W) in [0, 1] -> (C, f, h, w), the posterior mean
        with torch.no_grad():
            return vae.encode((x * 2 - 1)[None].to(device=device, dtype=dtype))[0].float()

    def key(item: MediaItem) -> str:
        ref_key = (_rel(item.reference_path, root), cfg.reference_downscale) if item.reference_path else None
        return item_id(_rel(item.media_path, root), item.caption, buckets, cfg.max_upscale, ref_key)

    def cached(item: MediaItem, iid: str) -> dict | None:
        return cached_record(latent_file(out, iid), space, reference_file(out, iid) if item.reference_path else None)

    def encode_item(item: MediaItem, iid: str) -> dict:
        clip, bucket, fps, source_hw = load_clip(item, buckets, cfg.max_upscale)
        ref = load_reference(item, bucket, source_hw, cfg.reference_downscale) if item.reference_path else None
        latents = encode(clip)
        if not bool(torch.isfinite(latents).all()):  # never cached: training would stop on it much later
            raise MediaError(item.media_path, "the VAE's latents are not finite (NaN / inf): a damaged clip, or "
                             "precision=bfloat16 overflowing (try precision=float32)")
        record = {"id": iid, "media_path": str(item.media_path), "caption": item.caption,
                  "reference_path": str(item.reference_path) if item.reference_path else None,
                  "bucket": list(bucket), "latent_shape": list(latents.shape), "fps": fps}  # fmt: skip
        if ref is not None:  # the reference first: a latent file implies its reference is written
            ref_latents = encode(ref)
            record |= {"reference_shape": list(ref_latents.shape), "reference_downscale": cfg.reference_downscale}
            meta = {"item": json.dumps(record), "latent_space": space}
            save(reference_file(out, iid), {"latents": ref_latents}, meta)
        save(latent_file(out, iid), {"latents": latents}, {"item": json.dumps(record), "latent_space": space})
        return record

    writer.clips(items, key, cached, encode_item)
    vae = None  # freed before the text encoder loads

    def load_t5() -> T5TextEncoder:
        try:
            return T5TextEncoder(cfg.text_encoder, device=device, dtype=dtype, max_tokens=cfg.text_tokens)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever transformers raises on a damaged folder
            raise ValueError(f"text_encoder={cfg.text_encoder} cannot be loaded ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); pass a whole local T5 "
                             "folder (text_encoder/ and tokenizer/)") from None

    views = []  # what the text encoder read of each caption encoded: some may be cut to text_tokens

    def encode_caption(t5: T5TextEncoder, caption: str) -> dict[str, torch.Tensor]:
        if caption:
            views.extend(t5.seen([caption]))
        context, mask = t5.encode([caption])
        return {"context": context[0], "mask": mask[0]}

    texts = writer.captions(("context", "mask"), load_t5, encode_caption, cfg.text_encoder)
    index = writer.write_index(True)
    print_summary(index, root, writer.encoded, texts)
    cut = truncation_summary(views, cfg.text_tokens, "captions")
    if cut:  # one line for the run: the model trains on what it reads, as generate reads prompts
        print(f"[preprocess] warning: {cut}; shorten those captions to train on their ends")
    print(f"[preprocess] the cache is in {out.resolve()} (train on it: python -m train.finetune data={cfg.out})")
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
