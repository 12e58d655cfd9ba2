"""Preprocess a fine-tuning dataset for LTX-2 / LTX-2.3: video latents, audio latents and Gemma text features.

    python -m train.preprocess checkpoint=ltx-2-19b-dev.safetensors text_encoder=gemma-3-12b-it \
        data=clips/manifest.jsonl out=cache/mine 'buckets=["121x512x768"]' fps=24 precision=bfloat16

`train.preprocess` hands an LTX-2 checkpoint (ltx.ltx2.checkpoint.detect: an official bundled file or our ltx2
file) to `run` here. Everything else is the 0.9.x machinery of train/preprocess.py (manifest, buckets, item ids,
atomic per-item files, resume, the skipped table, index_every, overwrite, refusal of a cache made differently,
including one made for LTX-Video 0.9.x); the cache layout is in ltx.data.latent_cache. Per item:

- Video: the clip is resampled to `fps` (frame i / fps shows the nearest source frame, floor(i * src / fps + 1/2)),
  so a clip of bucket (F, H, W) always lasts F / fps seconds; fitted to its bucket as 0.9.x and encoded by the
  LTX-2 video VAE (normalized means, (128, f, h, w)). Images go to 1-frame buckets and have no sound.
- Audio (`audio=true`): the clip's own audio track (ltx.core.audio_io.read_audio), or the manifest row's
  `audio_path` file, over exactly [0, F / fps) seconds: round(F / fps * rate) samples at the file's own rate (a
  track shorter than the clip is padded with zeros); more than two channels are averaged to mono, mono is
  duplicated to stereo; then ltx.ltx2.audio.waveform_to_mel (resampled in torch to the audio VAE's 16 kHz,
  log-mel (2, T_mel, 64)). The audio VAE turns T_mel mel frames into (T_mel - 1) // 4 + 1 latents and its
  last latent reads mel frames up to 4 (T - 1), so the mel is cut to its first 4 T - 3 frames, T =
  ltx.ltx2.patchify.audio_latent_frames_for_video(F, fps) = round(25 F / fps), the length generation uses. The
  cut only drops the mel frames of the last < 40 ms that no latent would read whole (a clip's sound always gives
  at least 4 T - 3 frames; were it ever short, the mel would be padded with digital silence, log(1e-5)).
  Clips without an audio stream ("no audio track"), whose sound peaks below `silence_peak` over the clip's span
  ("silent"), and images ("image") get no audio file: their record says "audio": null and why in
  "audio_missing", they are listed in a table at the end, and the trainer decides per mode. An audio track or
  file that cannot be decoded skips the item (listed with the reason).
- Text: the caption through Gemma 3 (`text_encoder`: a local folder; `gemma_tokens` tokens, left padded) and
  the checkpoint's feature extractor (ltx.ltx2.text.EmbeddingsProcessor.features: V1 for LTX-2, V2 with separate
  video and audio features for 2.3); only the real tokens' rows are stored. The connectors are not applied:
  they are part of the transformer that training may update, and Gemma never loads in training.
- Reference clips (IC-LoRA, manifest `reference_path`): resampled to `fps` like the target, then as 0.9.x; their
  own sound, when they have some, goes to reference_audio/<id> (the audio IC-LoRA modes a2a_ic_lora, av2av_ic_lora).

Precision: `precision` is the compute dtype of the VAEs, Gemma and the feature extractor (bfloat16 is what the
official code runs Gemma in; float32 doubles Gemma's memory); latents are stored float32, text features in
the compute dtype.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ltx.core.audio_io import read_audio
from ltx.core.checkpoint import SafetensorsReader
from ltx.core.media import MediaError, is_image, read_image, read_video
from ltx.data.buckets import Bucket
from ltx.data.latent_cache import (
    INDEX_VERSION,
    audio_file,
    latent_file,
    reference_audio_file,
    reference_file,
    text_keys,
)
from ltx.data.manifest import MediaItem, read_dataset
from ltx.ltx2 import checkpoint as ltx2_checkpoint
from ltx.ltx2.audio import LOG_FLOOR, N_FFT, as_stereo, waveform_to_mel
from ltx.ltx2.audio_vae import mel_frames_for_latents
from ltx.ltx2.patchify import audio_latent_frames_for_video
from train.preprocess_common import (
    PRECISIONS,
    CacheWriter,
    PreprocessConfig,
    _rel,
    cached_record,
    check_buckets,
    check_existing,
    check_numbers,
    check_paths,
    fit_clip,
    fit_reference,
    item_id,
    print_summary,
    save,
)

NO_TRACK, SILENT, IMAGE = "no audio track", "silent", "image"  # the values of a record's "audio_missing"


# ------------------------------------------------------------------------------------------------ checks


def check_gemma_folder(path: Path, text_dim: int, hidden_states: int) -> None:
    """A local Gemma-3 folder whose width and layer count fit the checkpoint's feature extractor (config.json only,
    no weights); one-line errors."""
    hint = "pass text_encoder=<local Gemma-3 folder> (LTX-2 encodes captions with google/gemma-3-12b-it)"
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder {path} does not exist; {hint}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder {path} has no config.json, so it is not a Hugging Face Gemma-3 "
                                f"folder; {hint}")  # fmt: skip
    try:
        config = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}/config.json is not valid JSON ({e}); {hint}") from None
    if config.get("model_type") not in ("gemma3", "gemma3_text"):
        raise ValueError(f"text encoder {path} is a {config.get('model_type')!r} model, not Gemma 3; {hint}")
    text = config.get("text_config", config)
    width, layers = text.get("hidden_size"), text.get("num_hidden_layers")
    if (width is not None and width != text_dim) or (layers is not None and layers + 1 != hidden_states):
        raise ValueError(f"text encoder {path}: Gemma with width {width} and {layers} layers, but the checkpoint's "
                         f"feature extractor reads {hidden_states} hidden states of width {text_dim}")


def check_config(cfg: PreprocessConfig):
    """(LTX-2 checkpoint (headers), meta modules, buckets) after every check that needs no weights."""
    check_paths(cfg)
    names = ["vae", "text"] + (["audio_vae"] if cfg.audio else [])
    ckpt = ltx2_checkpoint.read(Path(cfg.checkpoint).expanduser(), names)
    metas = ltx2_checkpoint.check(ckpt, names)  # the architecture fits the file, from headers
    text_cfg = metas["text"].config
    check_gemma_folder(Path(cfg.text_encoder).expanduser(), text_cfg.text_dim, text_cfg.num_hidden_states)
    check_numbers(cfg, cfg.gemma_tokens)
    if cfg.gemma_tokens % text_cfg.num_registers:
        raise ValueError(f"gemma_tokens={cfg.gemma_tokens} must be a multiple of the text connectors' "
                         f"{text_cfg.num_registers} registers (the official length is 1024)")
    if isinstance(cfg.fps, bool) or not (math.isfinite(cfg.fps) and cfg.fps > 0):
        raise ValueError(f"fps={cfg.fps!r} is invalid: give the frame rate clips are resampled to, e.g. 24")
    if not (math.isfinite(cfg.silence_peak) and 0 <= cfg.silence_peak < 1):
        raise ValueError(f"silence_peak={cfg.silence_peak!r} must be in [0, 1) (a peak amplitude; 0.001 = -60 dBFS)")
    vae_cfg = metas["vae"].cfg
    buckets = check_buckets(cfg, vae_cfg.temporal_factor, vae_cfg.spatial_factor)
    if cfg.audio:
        rate = metas["audio_vae"].cfg.sample_rate
        short = [b for b in buckets if b.frames > 1 and b.frames / cfg.fps * rate <= N_FFT // 2]
        if short:
            raise ValueError(f"bucket {short[0]} at fps={cfg.fps} lasts {short[0].frames / cfg.fps:.4f} s, too short "
                             f"for a mel spectrogram (more than {N_FFT // 2} samples at {rate} Hz); lower fps")
    return ckpt, metas, buckets


# ------------------------------------------------------------------------------------------------ media


def source_indices(count: int, source_fps: float, fps: float) -> list[int]:
    """The source frame shown by each of `count` frames at `fps`: the nearest one, floor(i * source_fps / fps + 1/2)
    (frames repeat when the source is slower, are dropped when it is faster)."""
    return [math.floor(i * source_fps / fps + 0.5) for i in range(count)]


def probe_fps(path: Path) -> float | None:
    """The video stream's frame rate from the container's header (None: unreadable or not stated)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return float(rate) if rate else None
    except (av.FFmpegError, IndexError, OSError):
        return None


def read_resampled(path: Path, frames: int, fps: float, fallback_fps: float | None = None):
    """The first `frames` frames of a video at `fps` (fewer when it is shorter) -> ((3, n, H, W) in [0, 1], source
    fps); only the source frames needed are decoded. MediaError for unreadable files or an unknown frame rate."""
    source_fps = probe_fps(path)
    if source_fps is None:
        source_fps = read_video(path, max_frames=1)[1] or fallback_fps  # read_video names what is wrong with it
        if source_fps is None:
            raise MediaError(path, f"the container states no frame rate (needed to resample the clip to fps={fps})")
    indices = source_indices(frames, source_fps, fps)
    video, _ = read_video(path, max_frames=indices[-1] + 1)
    return video[:, [i for i in indices if i < video.shape[1]]], source_fps


def load_clip(item: MediaItem, buckets: list[Bucket], max_upscale: float | None, fps: float):
    """(clip (3, F, H, W) in [0, 1] at `fps`, bucket, source (H, W), source fps or None for an image), or MediaError
    with the reason to skip it."""
    if is_image(item.media_path):
        clip, bucket, source_hw = fit_clip(item.media_path, read_image(item.media_path)[:, None], buckets, max_upscale)
        return clip, bucket, source_hw, None
    video, source_fps = read_resampled(item.media_path, max(b.frames for b in buckets), fps)
    clip, bucket, source_hw = fit_clip(item.media_path, video, buckets, max_upscale)
    return clip, bucket, source_hw, source_fps


def load_reference(item: MediaItem, bucket: Bucket, source_hw: tuple[int, int], downscale: int, fps: float,
                   source_fps: float | None):  # fmt: skip
    """The item's reference, resampled to `fps` like the target (its own frame rate, else the target's), then
    fitted as 0.9.x (train.preprocess.fit_reference)."""
    path = item.reference_path
    try:
        if is_image(path):
            ref = read_image(path)[:, None]
        else:
            ref, _ = read_resampled(path, bucket.frames, fps, fallback_fps=source_fps)
    except MediaError as e:
        raise MediaError(item.media_path, f"reference {path.name}: {e.reason}") from None
    return fit_reference(item, ref, bucket, source_hw, downscale)


def clip_audio(item: MediaItem, seconds: float, silence_peak: float) -> tuple[torch.Tensor, int] | str:
    """The item's sound over [0, seconds): ((C, N) float32 with C = 1 or 2, N = round(seconds * rate), its rate),
    or why there is none (NO_TRACK, SILENT). MediaError when the audio cannot be decoded."""
    path = item.audio_path or item.media_path
    try:
        waveform, rate = read_audio(path)
    except MediaError as e:
        if e.reason in ("no audio stream", "no samples in the audio stream"):
            return NO_TRACK
        raise MediaError(item.media_path, f"audio {path.name}: {e.reason}") from None
    n = round(seconds * rate)
    waveform = waveform[:, :n]
    if waveform.abs().max() < silence_peak:
        return SILENT
    waveform = F.pad(waveform, (0, n - waveform.shape[1]))  # a track that ends before the clip: silence after it
    if waveform.shape[0] > 2:  # surround: an equal-weight downmix (the trainer takes mono or stereo)
        waveform = waveform.mean(dim=0, keepdim=True)
    return waveform, rate


def fit_mel(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, C, T_mel, M) -> (B, C, frames, M): the first `frames` mel frames, padded at the end with digital silence
    (the log floor) if there are fewer."""
    mel = mel[:, :, :frames]
    return F.pad(mel, (0, 0, 0, frames - mel.shape[2]), value=math.log(LOG_FLOOR))


# ------------------------------------------------------------------------------------------------ the run


def settings(cfg: PreprocessConfig, metas: dict, spaces: dict[str, str], buckets: list[Bucket]) -> dict:
    """The index's description of how the cache was made (everything but items and skipped)."""
    vae, text_cfg = metas["vae"].cfg, metas["text"].config
    t, s = vae.temporal_factor, vae.spatial_factor
    audio = None
    if cfg.audio:
        acfg = metas["audio_vae"].cfg
        shapes = {str(b): [acfg.z_channels, audio_latent_frames_for_video(b.frames, cfg.fps), acfg.latent_mel_bins]
                  for b in buckets if b.frames > 1}  # fmt: skip
        audio = {"sample_rate": acfg.sample_rate, "latent_space": spaces["audio_vae"],
                 "latent_channels": acfg.z_channels, "mel_bins": acfg.latent_mel_bins,
                 "latents_per_second": acfg.latents_per_second, "silence_peak": cfg.silence_peak,
                 "latent_shape_per_bucket": shapes}  # fmt: skip
    return {
        "version": INDEX_VERSION,
        "family": "ltx2",
        "vae": {"checkpoint": str(cfg.checkpoint), "latent_space": spaces["vae"], "scale": [t, s, s],
                "latent_channels": vae.latent_channels},
        "fps": float(cfg.fps),
        "audio": audio,
        "text_encoder": {"path": str(Path(cfg.text_encoder).expanduser().resolve()), "max_tokens": cfg.gemma_tokens,
                         "feature_extractor": text_cfg.feature_extractor},
        "precision": cfg.precision,
        "buckets": [list(b) for b in buckets],
        "max_upscale": cfg.max_upscale,
        "reference_downscale": cfg.reference_downscale,
    }  # fmt: skip


def audio_ok(path: Path, space: str, shape: list[int]) -> bool:
    """Whether an audio latent file is whole and of this audio latent space and shape (else it is encoded again)."""
    if not path.is_file():
        return False
    try:
        reader = SafetensorsReader(path)
    except ValueError:
        return False
    info = reader.infos.get("latents")
    return info is not None and list(info.shape) == list(shape) and reader.metadata.get("latent_space") == space


def print_audio_summary(index: dict, root: Path) -> None:
    """How many items have sound, and a table of those without (why)."""
    if index["audio"] is None:
        print("[preprocess] audio not encoded (audio=false)")
        return
    items = index["items"]
    missing = [(_rel(Path(it["media_path"]), root), it["audio_missing"]) for it in items if it["audio_missing"]]
    print(f"[preprocess] audio: {len(items) - len(missing)} of {len(items)} items have sound")
    if missing:
        width = max(len(p) for p, _ in missing)
        print(f"  {'without audio':<{width}}  why")
        for p, why in missing:
            print(f"  {p:<{width}}  {why}")


def run(cfg: PreprocessConfig) -> dict:
    """Build or resume the LTX-2 cache in `cfg.out`; returns the final index (see the module docstring)."""
    from train.train_vae import latent_space_id

    ckpt, metas, buckets = check_config(cfg)
    source = Path(cfg.data).expanduser().resolve()
    root = source if source.is_dir() else source.parent
    items, skipped = read_dataset(source)
    device, dtype = torch.device(cfg.device), PRECISIONS[cfg.precision]
    vaes = ltx2_checkpoint.load(ckpt, [n for n in ("vae", "audio_vae") if n in metas], device=device,
                                dtype=torch.float32)  # fmt: skip
    spaces = {name: latent_space_id(m) for name, m in vaes.items()}  # of the float32 weights, as training checks it
    vae, audio_vae = vaes["vae"].to(dtype), (vaes["audio_vae"].to(dtype) if cfg.audio else None)
    out = Path(cfg.out).expanduser()
    head = settings(cfg, metas, spaces, buckets)
    check_existing(out, head, cfg.overwrite)
    refs = any(it.reference_path for it in items)
    folders = ("latents", "text") + (("audio",) if cfg.audio else ()) + (("reference",) if refs else ()) + \
        (("reference_audio",) if refs and cfg.audio else ())  # fmt: skip
    writer = CacheWriter(out, head, skipped, cfg.index_every, folders)

    @torch.no_grad()
    def encode(x: torch.Tensor) -> torch.Tensor:  # (3, F, H, W) in [0, 1] -> (128, f, h, w), normalized means
        return vae.encode((x * 2 - 1)[None].to(device=device, dtype=dtype))[0].float()

    @torch.no_grad()
    def encode_audio(waveform: torch.Tensor, rate: int, frames: int) -> torch.Tensor:  # -> (8, T, 16)
        mel = waveform_to_mel(as_stereo(waveform[None].to(device)), rate)  # (1, 2, T_mel, 64) float32
        mel = fit_mel(mel, mel_frames_for_latents(audio_latent_frames_for_video(frames, cfg.fps)))
        return audio_vae.encode(mel.to(dtype))[0].float()

    def key(item: MediaItem) -> str:
        ref_key = (_rel(item.reference_path, root), cfg.reference_downscale) if item.reference_path else None
        sound = _rel(item.audio_path, root) if item.audio_path else None
        return item_id(_rel(item.media_path, root), item.caption, buckets, cfg.max_upscale, ref_key, sound)

    def cached(item: MediaItem, iid: str) -> dict | None:
        record = cached_record(latent_file(out, iid), spaces["vae"],
                               reference_file(out, iid) if item.reference_path else None)  # fmt: skip
        if record is not None and record.get("audio_shape") is not None and \
                not audio_ok(audio_file(out, iid), spaces["audio_vae"], record["audio_shape"]):
            return None  # its audio file is missing or damaged: the item is encoded again
        if record is not None and record.get("reference_audio_shape") is not None and \
                not audio_ok(reference_audio_file(out, iid), spaces["audio_vae"], record["reference_audio_shape"]):
            return None
        return record

    def encode_item(item: MediaItem, iid: str) -> dict:
        clip, bucket, source_hw, source_fps = load_clip(item, buckets, cfg.max_upscale, cfg.fps)
        ref = None
        if item.reference_path:
            ref = load_reference(item, bucket, source_hw, cfg.reference_downscale, cfg.fps, source_fps)
        sound: tuple[torch.Tensor, int] | str | None = None
        if cfg.audio:
            sound = IMAGE if bucket.frames == 1 else clip_audio(item, bucket.frames / cfg.fps, cfg.silence_peak)
        latents = encode(clip)
        record = {"id": iid, "media_path": str(item.media_path), "caption": item.caption,
                  "reference_path": str(item.reference_path) if item.reference_path else None,
                  "audio_path": str(item.audio_path) if item.audio_path else None,
                  "bucket": list(bucket), "latent_shape": list(latents.shape), "fps": float(cfg.fps),
                  "source_fps": source_fps, "audio": None, "audio_shape": None,
                  "audio_missing": sound if isinstance(sound, str) else None}  # fmt: skip
        if ref is not None:  # the reference and the audio first: a latent file implies they are written
            ref_latents = encode(ref)
            record |= {"reference_shape": list(ref_latents.shape), "reference_downscale": cfg.reference_downscale}
            save(reference_file(out, iid), {"latents": ref_latents},
                 {"item": json.dumps(record), "latent_space": spaces["vae"]})  # fmt: skip
        if ref is not None and cfg.audio and bucket.frames > 1:  # the reference's own sound (audio IC-LoRA modes)
            ref_sound = clip_audio(replace(item, media_path=item.reference_path, audio_path=None),
                                   bucket.frames / cfg.fps, cfg.silence_peak)
            if isinstance(ref_sound, tuple):
                ref_audio = encode_audio(*ref_sound, bucket.frames)
                record["reference_audio_shape"] = list(ref_audio.shape)
                save(reference_audio_file(out, iid), {"latents": ref_audio},
                     {"item": json.dumps(record), "latent_space": spaces["audio_vae"]})  # fmt: skip
        if isinstance(sound, tuple):
            audio_latents = encode_audio(*sound, bucket.frames)
            record |= {"audio": str(item.audio_path or item.media_path), "audio_shape": list(audio_latents.shape)}
            save(audio_file(out, iid), {"latents": audio_latents},
                 {"item": json.dumps(record), "latent_space": spaces["audio_vae"]})  # fmt: skip
        save(latent_file(out, iid), {"latents": latents}, {"item": json.dumps(record), "latent_space": spaces["vae"]})
        return record

    writer.clips(items, key, cached, encode_item)
    vae = audio_vae = vaes = None  # freed before Gemma loads

    def load_text():
        from ltx.ltx2.text import GemmaTextEncoder

        processor = ltx2_checkpoint.load(ckpt, "text", device=device, dtype=dtype)["text"]
        try:
            gemma = GemmaTextEncoder.from_folder(Path(cfg.text_encoder).expanduser(), dtype=dtype, device=device,
                                                 max_length=cfg.gemma_tokens)  # fmt: skip
        except (FileNotFoundError, ValueError):
            raise
        except Exception as e:  # noqa: BLE001 - whatever transformers raises on a damaged folder
            raise ValueError(f"text_encoder={cfg.text_encoder} cannot be loaded ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); pass a whole local "
                             "Gemma-3 folder (config.json, the weights, the tokenizer)") from None
        return gemma, processor

    v2 = head["text_encoder"]["feature_extractor"] == "v2"

    cut: list[tuple[str, int]] = []  # captions longer than gemma_tokens: (caption, its token count)

    @torch.no_grad()
    def encode_caption(encoders, caption: str) -> dict[str, torch.Tensor]:
        gemma, processor = encoders
        if (n := gemma.token_count(caption)) > cfg.gemma_tokens:
            cut.append((caption, n))
        hidden, mask = gemma.encode([caption])  # 49 x (1, T, D), (1, T) left padded
        video, audio = processor.features(hidden, mask)  # (1, T, Dv'), (1, T, Da')
        real = int(mask[0].sum())  # the last `real` positions hold the caption's tokens
        stored = {"video": video[0, video.shape[1] - real:]}
        if v2:
            stored["audio"] = audio[0, audio.shape[1] - real:]
        return stored

    texts = writer.captions(text_keys(head), load_text, encode_caption, cfg.text_encoder)
    index = writer.write_index(True)
    print_summary(index, root, writer.encoded, texts)
    print_audio_summary(index, root)
    if cut:  # one line for the run: the model trains on what it reads
        caption, n = cut[0]
        print(f"[preprocess] warning: {len(cut)} caption(s) encoded this run are longer than gemma_tokens="
              f"{cfg.gemma_tokens} and were cut to it, e.g. {caption[:60]!r}... ({n} tokens); shorten them or raise "
              "gemma_tokens (a multiple of 128)")
    print(f"[preprocess] the cache is in {out.resolve()} (train on it: python -m train.finetune model=<LTX-2 preset> "
          f"checkpoint={cfg.checkpoint} data={cfg.out})")
    return index
