#!/usr/bin/env python
"""Benchmark fine-tuning (train/finetune.py): LoRA vs full, 2 gloo processes vs 1, and a 2B-size LoRA step.

1. LoRA vs full on the same config: the bundled demo model and a small cache (ShapesWorld clips written as
   mp4 and preprocessed by train.preprocess in a temporary folder, or `--data CACHE`). Each mode runs in a
   fresh subprocess (this script with a hidden `--worker MODE`) that builds `train.finetune.Trainer(cfg)` and
   calls its loop's `train_step` for `--warmup` + `--steps` steps, so the time is what users get. Memory on CPU
   is the peak RSS (`resource.getrusage` ru_maxrss, monotonic per process: hence the subprocesses) and its
   growth over the RSS after the trainer was built (grads, optimizer state, activations); on CUDA it is
   torch.cuda.max_memory_allocated.
2. 2 gloo processes vs 1 at the same global batch: `python -m torch.distributed.run -m train.finetune` with
   parallel=ddp and parallel=fsdp; OMP_NUM_THREADS and threads= are `--threads` / N, so every run uses the same
   cores. s/step is read from each run's metrics.jsonl (the warm-up steps skipped). These runs are always on
   CPU (CUDA hidden), also on a GPU machine.
3. A 2B-size LoRA step (DiTConfig defaults: 28 layers, 32 heads x 64) at 768x512x49 (7 x 16 x 24 = 2688
   tokens, 128 text tokens of width 4096) with random weights, bf16 autocast and activation checkpointing:
   `ltx.ltxv.lora.inject_lora` on `ltx.ltxv.transformer.DiT`, `train.finetune.flow_matching_objective` on a
   `train.finetune.MicroBatch`, AdamW on the adapters. Peak memory next to the published range of the official
   LTX-Video-Trainer. Runs with `--device cuda`, or alone with `--synthetic` (on CPU: small, e.g. --layers 2).

4. `--ltx2`: one LoRA training step (forward + backward + clipping + AdamW on the adapters) of the LTX-2 19B
   audio + video transformer (`AVTransformerConfig.ltx2_19b()`, real widths: 32 heads x 128 video, 32 x 64 audio;
   `--layers` blocks, default 2) and its two text connectors (frozen, run every step on cached features, as both
   trainers do), random weights, at the token counts of a 768x512x121 clip (16 x 24 x 16 = 6,144 video tokens,
   `audio_latent_frames_for_video(121, 24)` = 126 audio tokens, 1,024 text tokens). Variants: frozen base fp32
   or bf16 (adapters fp32 either way), activation checkpointing per block on or off; OURS
   (`ltx.ltx2.training.AVTrainModel` + `av_loss`, `ltx.core.lora` rank 32 on to_q/to_k/to_v/to_out.0,
   `ltx.core.parallel.apply_activation_checkpointing`) against REF, a step written here from ltx-core 1.0.0
   modules the way the official LTX-2 trainer runs it (`create_embeddings`, `LTXModelConfigurator` + a PEFT LoRA of
   its t2v config, `set_gradient_checkpointing`, Modality inputs, masked MSE per modality; its connectors are never
   frozen, so they get gradients every step, as in the official trainer). bf16 autocast (the official accelerate
   `mixed_precision: bf16`) whenever the base is bf16 or the device is CUDA. Each variant runs in a fresh
   subprocess. "act" = peak minus everything resident before the first step, minus the adapters' gradients and
   AdamW moments: activations and allocator slack, per (video + audio) token and block; `ltx.ltx2.memory` stores
   OURS' values. On CPU the defaults are the four fp32 variants (bf16 autocast takes > 25 min a step on a CPU
   without bf16 units; `--variants all` runs them), 384 video tokens (one 16 x 24 latent frame) and 256 text
   tokens: about 13 min on 2 busy cores (`--video-tokens 6144 --text-tokens 1024` is the clip). With
   `--device cuda`: the eight at the clip's size, then the 48-block model (19B) in bf16 with checkpointing, next
   to the official trainer's published 32 GB (low-VRAM) / 80 GB (standard) figures.

Times are medians after warm-up; the tables give ratios (LoRA / full, N processes vs 1, ours / reference) rather
than absolute claims, which depend on the machine.

  python tools/bench_finetune.py                                    # CPU: parts 1 and 2 (demo model)
  python tools/bench_finetune.py --synthetic --layers 2 --size 256x256x17 --steps 3 --warmup 1   # part 3, tiny
  python tools/bench_finetune.py --device cuda --json bench.json    # GPU: parts 1, 2 (CPU gloo) and 3 (2B)
  python tools/bench_finetune.py --ltx2 --json ltx2.json            # part 4 on CPU (384 video tokens, 2 blocks)
  python tools/bench_finetune.py --ltx2 --device cuda               # part 4 at 6,144 tokens + the 48-block step
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Settings shared by the in-process runs (part 1) and the CLI runs (part 2): configs/finetune.yaml's values.
COMMON = {"lr": 1e-4, "caption_dropout": 0.05, "first_frame_p": 0.0, "grad_clip": 1.0, "seed": 0}
LORA = {"rank": 16, "alpha": 16.0}
# The official LTX-Video-Trainer's published GPU memory for LTXV-2B LoRA training (its low-VRAM to standard
# configurations: 8-bit optimizer / bf16 base weights / gradient checkpointing at the low end).
PUBLISHED_GB = (16, 40)


# ------------------------------------------------------------------------------------------------ helpers


def _rss_bytes() -> int:
    """Current resident memory (Linux), after returning freed heap pages to the OS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _preset():
    from omegaconf import OmegaConf

    from ltx.presets import ModelPreset

    raw = OmegaConf.load(REPO / "configs/model/ltx-demo.yaml")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), raw))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _size(text: str) -> tuple[int, int, int]:
    try:
        w, h, f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WIDTHxHEIGHTxFRAMES, e.g. 768x512x49") from None
    if w % 32 or h % 32 or (f - 1) % 8:
        raise argparse.ArgumentTypeError(f"--size {text}: width and height must be multiples of 32 and frames 8k+1")
    return w, h, f


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}x" if a is not None and b else "-"


def _table(head: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def make_cache(root: Path, clips: int, threads: int) -> Path:
    """`clips` ShapesWorld renders written as mp4 with their captions, preprocessed by train.preprocess."""
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld
    from train import preprocess

    torch.set_num_threads(threads)
    videos = root / "videos"
    videos.mkdir(parents=True)
    data = ShapesWorld(split="train", num_samples=clips, seed=5)
    rows = []
    for k in range(len(data)):
        s = data[k]
        write_mp4(videos / f"clip_{k:03d}.mp4", (s.video + 1) / 2, 8)
        rows.append({"media_path": f"clip_{k:03d}.mp4", "caption": s.caption})
    (videos / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "cache"
    cfg = preprocess.PreprocessConfig(data=str(videos / "manifest.jsonl"), out=str(out), text_tokens=96,
                                      buckets=["17x64x64"], checkpoint=str(REPO / "demo/ltx-demo.safetensors"),
                                      text_encoder=str(REPO / "demo/text_encoder"))
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the tables
        preprocess.run(cfg)
    return out


# ------------------------------------------------------------------------------------------------ workers


def worker_mode(args, mode: str) -> dict:
    """Part 1: one mode's Trainer, its loop's train_step, in this (fresh) process."""
    from train import finetune

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = finetune.FinetuneConfig(
            model=_preset(), data=str(args.data), run_dir=str(Path(tmp) / "run"), mode=mode,
            lora=finetune.LoRASettings(**LORA), steps=args.warmup + args.steps, batch_size=args.batch,
            precision="float32", device=args.device, threads=args.threads, wandb=False, log_every=1,
            checkpoint_every=10**6, **COMMON)
        trainer = finetune.Trainer(cfg)
        try:
            _sync(device)
            built_rss = _rss_bytes()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times, losses = [], []
            for step in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                m = trainer.loop.train_step(step)
                _sync(device)
                if step >= args.warmup:
                    times.append(time.perf_counter() - t0)
                    losses.append(m["loss"])
            out = {"mode": mode, "trainable": trainer.n_trainable, "median_s": statistics.median(times),
                   "min_s": min(times), "steps": len(times), "loss_last": losses[-1],
                   "threads": torch.get_num_threads()}
            if device.type == "cuda":
                out["peak_bytes"] = torch.cuda.max_memory_allocated(device)
            else:
                peak = _peak_rss_bytes()
                out |= {"peak_bytes": peak, "built_rss_bytes": built_rss, "growth_bytes": max(0, peak - built_rss)}
        finally:
            trainer.dist.destroy()
    return out


def worker_synthetic(args) -> dict:
    """Part 3: a 2B-width LoRA step on random weights and inputs (no cache, no checkpoint)."""
    from ltx.core.parallel import apply_activation_checkpointing
    from ltx.ltxv.lora import LoRAConfig, freeze_base, inject_lora, lora_parameters
    from ltx.ltxv.patchify import token_positions
    from ltx.ltxv.transformer import DiT, DiTConfig
    from train.finetune import MicroBatch, flow_matching_objective

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    W, H, F = args.size
    f, h, w = (F - 1) // 8 + 1, H // 32, W // 32
    B, S = args.synthetic_batch, args.text_tokens
    cfg = DiTConfig(num_layers=args.layers)
    torch.manual_seed(0)
    with torch.device(device):
        dit = DiT(cfg)
    dit.init_weights(torch.Generator(device).manual_seed(0))
    with torch.no_grad():  # non-zero everywhere (init zeroes the gates), so no path is trivially cheap
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    dit.to(getattr(torch, args.base_dtype))
    inject_lora(dit, LoRAConfig(rank=args.rank, alpha=float(args.rank)), generator=torch.Generator().manual_seed(0),
                dtype=torch.float32)  # the adapters train in float32, as in train.finetune
    freeze_base(dit)
    apply_activation_checkpointing(dit)
    dit.train()
    params = lora_parameters(dit)
    opt = torch.optim.AdamW(params, lr=1e-4)

    T = f * h * w
    g = torch.Generator(device).manual_seed(1)
    mask = torch.ones(B, S, device=device)
    mask[:, 3 * S // 4 :] = 0  # padded caption tail, as real prompts have
    mb = MicroBatch(x0=torch.randn(B, T, cfg.in_channels, device=device, generator=g),
                    noise=torch.randn(B, T, cfg.in_channels, device=device, generator=g),
                    sigma=torch.rand(B, device=device, generator=g).clamp(0.05, 0.95),
                    cond_mask=torch.zeros(B, T, dtype=torch.bool, device=device),
                    context=torch.randn(B, S, cfg.caption_channels, device=device, generator=g), context_mask=mask,
                    positions=token_positions(f, h, w, fps=args.fps, causal=True, batch=B, device=device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.synthetic_precision == "bfloat16")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast:
            per_sample = flow_matching_objective(dit, mb)
        per_sample.mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(per_sample.detach().mean())

    _sync(device)
    built_rss = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = _timed_steps(step, device, args.warmup, args.steps)
    out = {"layers": cfg.num_layers, "dim": cfg.dim, "tokens": T, "grid": [f, h, w], "text_tokens": S, "batch": B,
           "size": list(args.size), "precision": args.synthetic_precision, "base_dtype": args.base_dtype,
           "rank": args.rank, "trainable": sum(p.numel() for p in params),
           "parameters": sum(p.numel() for p in dit.parameters()), "median_s": statistics.median(times),
           "min_s": min(times), "steps": len(times), "loss_last": loss,
           "finite": bool(torch.isfinite(torch.tensor(loss))), "device": str(device)}
    if device.type == "cuda":
        out |= {"peak_bytes": torch.cuda.max_memory_allocated(device),
                "reserved_bytes": torch.cuda.max_memory_reserved(device)}
    else:
        peak = _peak_rss_bytes()
        out |= {"peak_bytes": peak, "built_rss_bytes": built_rss, "growth_bytes": max(0, peak - built_rss)}
    return out


# ------------------------------------------------------------------------------------------------ part 4: LTX-2

LTX2_CLIP = (768, 512, 121, 24.0)  # width, height, frames, fps: the clip
LTX2_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")  # the official t2v LoRA config (rank 32, alpha 32)
LTX2_CPU_VIDEO_TOKENS = 384  # CPU defaults: one 16 x 24 latent frame (1/16 of the clip) and 256 text tokens
LTX2_CPU_TEXT_TOKENS = 256
# The official LTX-2 trainer's published GPU memory for a 19B LoRA (docs/quick-start.md, ../shared/reference/
# training.md): 80 GB for its standard config, 32 GB (RTX 5090) for the low-VRAM one (int8 base, 8-bit AdamW,
# rank 16).
LTX2_PUBLISHED_GB = {"standard": 80, "low-VRAM": 32}


def _ltx2_grid(tokens: int) -> tuple[int, int, int]:
    """A latent (frames, height, width) grid of `tokens` tokens: 16 x 24 frames (768x512) when it divides."""
    if tokens % (16 * 24) == 0:
        return tokens // (16 * 24), 16, 24
    h = max(d for d in range(1, int(tokens**0.5) + 1) if tokens % d == 0)
    return 1, h, tokens // h


def _fill_random(model: torch.nn.Module, seed: int) -> None:
    """Materialised weights (the model was built on meta) drawn N(0, 0.02): no path is trivially cheap or zero."""
    g = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.normal_(0.0, 0.02, generator=g)


def _ltx2_batch(cfg, grid: tuple[int, int, int], audio_tokens: int, text_tokens: int, dtype: torch.dtype,
                device: torch.device) -> dict:
    """One sample: clean latents, noise and sigma per stream (drawn independently), cached text features
    (B, S, 3840) in the base dtype (19B: feature extractor V1, one tensor for both connectors), left-padded mask."""
    g = torch.Generator(device).manual_seed(1)
    f, h, w = grid
    T = f * h * w
    mask = torch.ones(1, text_tokens, dtype=torch.int64, device=device)
    mask[:, : text_tokens // 4] = 0  # left padding, as a short prompt has (the connectors' registers fill it)
    return {"video_x0": torch.randn(1, T, cfg.in_channels, device=device, generator=g),
            "video_noise": torch.randn(1, T, cfg.in_channels, device=device, generator=g),
            "video_sigma": torch.rand(1, device=device, generator=g).clamp(0.05, 0.95),
            "audio_x0": torch.randn(1, audio_tokens, cfg.audio_in_channels, device=device, generator=g),
            "audio_noise": torch.randn(1, audio_tokens, cfg.audio_in_channels, device=device, generator=g),
            "audio_sigma": torch.rand(1, device=device, generator=g).clamp(0.05, 0.95),
            "features": torch.randn(1, text_tokens, cfg.caption_channels, device=device, generator=g).to(dtype),
            "mask": mask}


def _noised(x0, noise, sigma):
    """x_sigma = (1 - sigma) x0 + sigma noise, the velocity target noise - x0, per-token timesteps (B, T)."""
    s = sigma.view(-1, 1, 1)
    return (1 - s) * x0 + s * noise, noise - x0, sigma.view(-1, 1).expand(x0.shape[0], x0.shape[1])


def _timed_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[list[float], float]:
    """Run `step()` warmup + steps times; the seconds of the timed ones (synchronised) and the last loss."""
    times, loss = [], float("nan")
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        loss = step()
        _sync(device)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return times, loss


def _ltx2_ours(cfg, base_dtype, checkpointing: bool, rank: int, device, batch: dict, grid, fps: float):
    """OURS: ltx.ltx2.training.AVTrainModel (AVTransformer + text connectors) and av_loss, the core LoRA engine,
    ltx.core.parallel activation checkpointing; returns (model, trainable params, loss function)."""
    from ltx.core.lora import LoRAConfig, freeze_base, inject_lora, lora_parameters
    from ltx.core.parallel import apply_activation_checkpointing
    from ltx.ltx2.patchify import audio_positions, video_positions
    from ltx.ltx2.text import EmbeddingsProcessor, TextConnectorConfig
    from ltx.ltx2.training import AVTrainModel, StreamBatch, av_loss
    from ltx.ltx2.transformer import AVTransformer

    with torch.device("meta"):
        text = EmbeddingsProcessor(TextConnectorConfig.ltx2_19b())
        text.feature_extractor = None  # training reads cached features: only the connectors are needed
        model = AVTrainModel(AVTransformer(cfg), text).to(base_dtype)
    model.to_empty(device=device)
    _fill_random(model, 0)
    inject_lora(model.transformer, LoRAConfig(rank=rank, targets=LTX2_TARGETS),
                generator=torch.Generator().manual_seed(0), dtype=torch.float32)  # adapters train in fp32
    freeze_base(model)  # the connectors too, as the official trainer intends (it never trains them in LoRA mode)
    if checkpointing:
        apply_activation_checkpointing(model.transformer)
    model.train()
    b = batch
    nothing_clean = torch.zeros(1, b["video_x0"].shape[1], dtype=torch.bool, device=device)
    video = StreamBatch(x0=b["video_x0"], noise=b["video_noise"], sigma=b["video_sigma"], cond=nothing_clean,
                        positions=video_positions(*grid, fps, batch=1, device=device), generated=True)
    audio = StreamBatch(x0=b["audio_x0"], noise=b["audio_noise"], sigma=b["audio_sigma"],
                        cond=torch.zeros(1, b["audio_x0"].shape[1], dtype=torch.bool, device=device),
                        positions=audio_positions(b["audio_x0"].shape[1], batch=1, device=device), generated=True)

    def loss() -> torch.Tensor:
        return av_loss(model, video, audio, (b["features"], b["features"], b["mask"]))[0]  # (B,)

    return model, lora_parameters(model), loss


def _ltx2_reference(cfg, base_dtype, checkpointing: bool, rank: int, device, batch: dict, grid, fps: float):
    """REF: the official trainer's step rebuilt from ltx-core modules: the connectors' `create_embeddings` on the
    cached features, LTXModel from LTXModelConfigurator with a PEFT LoRA, `set_gradient_checkpointing`, Modality
    inputs with its patchifiers' positions, masked MSE per modality summed. As in the official trainer, the
    embeddings processor is never frozen, so its connectors get gradients (never applied) every step."""
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor, convert_to_additive_mask
    from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape
    from peft import LoraConfig, get_peft_model

    from ltx.ltx2.text import TextConnectorConfig

    meta = {"transformer": {**cfg.to_metadata(), **TextConnectorConfig.ltx2_19b().to_metadata()}}
    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(meta).to(base_dtype)
        text = EmbeddingsProcessor(video_connector=Embeddings1DConnectorConfigurator.from_config(meta),
                                   audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(meta)
                                   ).to(base_dtype)
    model.to_empty(device=device)
    text.to_empty(device=device)
    _fill_random(model, 0)
    _fill_random(text, 1)
    model.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LTX2_TARGETS),
                                             lora_dropout=0.0, init_lora_weights=True))  # fp32 adapters
    model.get_base_model().set_gradient_checkpointing(checkpointing)
    model.train()
    f, h, w = grid
    latent = VideoLatentPatchifier(patch_size=1).get_patch_grid_bounds(
        VideoLatentShape(batch=1, channels=cfg.in_channels, frames=f, height=h, width=w), device=device)
    vpos = get_pixel_coords(latent, SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    vpos[:, 0] = vpos[:, 0] / fps
    apos = AudioPatchifier(patch_size=1).get_patch_grid_bounds(
        AudioLatentShape(batch=1, channels=8, frames=batch["audio_x0"].shape[1], mel_bins=16), device=device)

    def masked_mse(pred, target, mask):  # the trainer's per-sample loss, (B,)
        m = mask.unsqueeze(-1).float()
        return ((pred - target).pow(2) * m).mean(dim=[-2, -1]) / m.mean(dim=[-2, -1]).clamp(min=1e-8)

    def loss() -> torch.Tensor:
        b = batch
        feats = b["features"]
        video_ctx, audio_ctx, ctx_mask = text.create_embeddings(feats, feats,
                                                                convert_to_additive_mask(b["mask"], feats.dtype))
        vx, vt, vts = _noised(b["video_x0"], b["video_noise"], b["video_sigma"])
        ax, at, ats = _noised(b["audio_x0"], b["audio_noise"], b["audio_sigma"])
        video = Modality(enabled=True, latent=vx, sigma=b["video_sigma"], timesteps=vts, positions=vpos,
                         context=video_ctx, context_mask=ctx_mask)
        audio = Modality(enabled=True, latent=ax, sigma=b["audio_sigma"], timesteps=ats, positions=apos,
                         context=audio_ctx, context_mask=ctx_mask)
        v, a = model(video=video, audio=audio, perturbations=None)
        return (masked_mse(v, vt, torch.ones(vt.shape[:2], dtype=torch.bool, device=device))
                + masked_mse(a, at, torch.ones(at.shape[:2], dtype=torch.bool, device=device)))

    everything = torch.nn.ModuleDict({"transformer": model, "text": text})  # for the weight counts
    return everything, [p for p in model.parameters() if p.requires_grad], loss


def worker_ltx2(args, spec: str) -> dict:
    """Part 4: one variant `impl:base_dtype:ckpt|nockpt:layers` of the LTX-2 LoRA step, in this fresh process."""
    import dataclasses

    from ltx.ltx2.transformer import AVTransformerConfig

    impl, base, ckpt, layers = spec.split(":")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base_dtype, checkpointing = getattr(torch, base), ckpt == "ckpt"
    cfg = dataclasses.replace(AVTransformerConfig.ltx2_19b(), num_layers=int(layers))
    grid = _ltx2_grid(args.video_tokens)
    fps = LTX2_CLIP[3]
    batch = _ltx2_batch(cfg, grid, args.audio_tokens, args.text_tokens, base_dtype, device)
    build = _ltx2_ours if impl == "ours" else _ltx2_reference
    torch.manual_seed(0)
    model, params, loss_fn = build(cfg, base_dtype, checkpointing, args.rank, device, batch, grid, fps)
    opt = torch.optim.AdamW(params, lr=1e-4)
    # bf16 autocast as the official accelerate `mixed_precision: bf16`; an fp32 base on CPU runs fp32 (fair there)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=base_dtype == torch.bfloat16 or device.type == "cuda")
    trainable = {id(p) for p in params}
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in trainable)
    adapter_params = sum(p.numel() for p in params)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast:
            per_sample = loss_fn()
        per_sample.mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(per_sample.detach().mean())

    _sync(device)
    built = torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = _timed_steps(step, device, args.warmup, args.steps)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()
    # adapters: fp32 gradient + two AdamW moments, allocated by the first step (the adapters themselves are built)
    adapter_state = adapter_params * 12
    out = {"impl": impl, "base_dtype": base, "checkpointing": checkpointing, "layers": cfg.num_layers,
           "grid": list(grid), "video_tokens": grid[0] * grid[1] * grid[2], "audio_tokens": args.audio_tokens,
           "text_tokens": args.text_tokens, "rank": args.rank, "adapter_params": adapter_params,
           "base_params": sum(p.numel() for p in model.parameters()) - adapter_params, "base_bytes": base_bytes,
           "median_s": statistics.median(times), "min_s": min(times), "steps": len(times), "loss_last": loss,
           "finite": math.isfinite(loss), "device": str(device), "built_bytes": built, "peak_bytes": peak,
           "act_bytes": max(0, peak - built - adapter_state), "threads": torch.get_num_threads()}
    out["act_kib_per_token_block"] = out["act_bytes"] / ((out["video_tokens"] + out["audio_tokens"]) * out["layers"]
                                                         * 1024)
    if device.type == "cuda":
        out["reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return out


def _run_worker(args, which: str, data: Path | None) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", which, "--device", args.device, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--layers", str(args.layers), "--size", "x".join(map(str, args.size)), "--text-tokens",
           str(args.text_tokens), "--synthetic-batch", str(args.synthetic_batch), "--synthetic-precision",
           args.synthetic_precision, "--base-dtype", args.base_dtype, "--rank", str(args.rank), "--fps", str(args.fps),
           "--video-tokens", str(args.video_tokens), "--audio-tokens", str(args.audio_tokens)]
    if data is not None:
        cmd += ["--data", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"worker {which} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
        return None
    print(f"  done: {which}", file=sys.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ part 2


def run_torchrun(args, data: Path, n: int, parallel: str, run_dir: Path) -> dict | None:
    threads = max(1, args.threads // n)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "train.finetune", f"data={data}", f"run_dir={run_dir}",
           f"mode={args.procs_mode}", f"steps={args.warmup + args.steps}", f"batch_size={args.batch}",
           "log_every=1", f"checkpoint_every={10**6}", "wandb=false", f"threads={threads}", "device=cpu",
           "precision=float32", f"parallel={parallel}", f"lora.rank={LORA['rank']}", f"lora.alpha={LORA['alpha']}",
           *(f"{k}={v}" for k, v in COMMON.items())]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "LTX_DEBUG": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        print(f"torchrun n={n} {parallel} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
        return None
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [row["s_per_step"] for row in rows if row["step"] > args.warmup]
    print(f"  done: torchrun {n} x {parallel}", file=sys.stderr)
    med = statistics.median(times)
    return {"processes": n, "parallel": parallel if n > 1 else "none (1 process)", "threads_per_process": threads,
            "median_s": med, "min_s": min(times), "steps": len(times), "clips_per_s": args.batch / med,
            "wall_s": round(wall, 1), "loss_last": rows[-1]["loss"]}


# ------------------------------------------------------------------------------------------------ main


def header(args) -> dict:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    h = {"cpu": cpu, "cores": cores, "threads": args.threads, "torch": torch.__version__,
         "python": platform.python_version(), "device": args.device}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        h["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        h["load_start"] = round(os.getloadavg()[0], 2)
    return h


def _resolve_defaults(p: argparse.ArgumentParser, args) -> None:
    """Per-part defaults of the shared options; bad part-4 values fail in one line before any work."""
    cuda = args.device.startswith("cuda")
    ltx2 = args.ltx2 or (args.worker or "").startswith("ltx2:")
    if args.layers is None:
        args.layers = 2 if ltx2 else 28
    if args.text_tokens is None:
        args.text_tokens = (1024 if cuda else LTX2_CPU_TEXT_TOKENS) if ltx2 else 128
    if args.rank is None:
        args.rank = 32 if ltx2 else 16
    if args.video_tokens is None:
        args.video_tokens = 16 * 24 * 16 if cuda else LTX2_CPU_VIDEO_TOKENS
    if args.audio_tokens is None:
        from ltx.ltx2.patchify import audio_latent_frames_for_video

        args.audio_tokens = audio_latent_frames_for_video(LTX2_CLIP[2], LTX2_CLIP[3])
    for name in ("layers", "text_tokens", "rank", "video_tokens", "audio_tokens", "steps", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: give an integer >= 1")
    if args.variants is None:
        args.variants = "all" if cuda else "fp32"
    if ltx2 and not args.worker:
        args.variant_list = _ltx2_variants(p, args.variants)


def _ltx2_variants(p: argparse.ArgumentParser, text: str) -> list[str]:
    every = [f"{impl}:{base}:{ck}" for base in ("float32", "bfloat16") for ck in ("nockpt", "ckpt")
             for impl in ("ours", "ref")]
    if text in ("all", "fp32"):
        return [v for v in every if text == "all" or ":float32:" in v]
    chosen = [v.strip() for v in text.split(",")]
    bad = [v for v in chosen if v not in every]
    if bad:
        p.error(f"--variants {text}: unknown {', '.join(bad)}; give 'all' or a comma list of impl:base:ckpt with "
                "impl ours|ref, base float32|bfloat16, ckpt|nockpt")
    return chosen


def _pair(ours: dict | None, ref: dict | None, key: str, scale: float, spec: str) -> list[str]:
    """[ours, ref, ours / ref] cells of one measured quantity (either run may be missing)."""
    a, b = (None if x is None else x[key] * scale for x in (ours, ref))
    return [_fmt(a, spec), _fmt(b, spec), _ratio(a, b)]

def run_ltx2(args) -> dict:
    """Part 4: every variant in a fresh subprocess, then one table with ours / reference ratios."""
    h = header(args)
    cuda = args.device.startswith("cuda")
    results: dict = {"header": h, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    t_start = time.perf_counter()
    runs = {}
    for v in args.variant_list:
        r = _run_worker(args, f"ltx2:{v}:{args.layers}", None)
        if r is not None:
            runs[v] = r
    fits = {}
    if args.fit and args.layers > 1:
        for base in ("float32", "bfloat16"):
            top = runs.get(f"ours:{base}:nockpt")
            low = _run_worker(args, f"ltx2:ours:{base}:nockpt:{args.layers - 1}", None) if top else None
            if low is not None:
                tokens = top["video_tokens"] + top["audio_tokens"]
                per_block = (top["act_bytes"] - low["act_bytes"]) / tokens
                fits[base] = {"per_block": per_block, "fixed": top["act_bytes"] / tokens - args.layers * per_block,
                              "layers": [args.layers - 1, args.layers], "runs": [low, top]}
    full = None
    if args.full_model == "on" or (args.full_model == "auto" and cuda):
        full = _run_worker(args, "ltx2:ours:bfloat16:ckpt:48", None)
    if hasattr(os, "getloadavg"):
        h["load_end"] = round(os.getloadavg()[0], 2)
    results |= {"ltx2": list(runs.values()), "ltx2_fit": fits, "ltx2_full": full,
                "total_s": round(time.perf_counter() - t_start, 1)}

    any_run = next(iter(runs.values()), None) or full
    gpu = f", {h['gpu']}" if "gpu" in h else ""
    print(f"\n**LTX-2 LoRA step** - {h['cpu']}, {h['cores']} cores{gpu}; device {args.device}, {args.threads} "
          f"threads; torch {h['torch']}; median of {args.steps} steps after {args.warmup} warm-up")
    if "load_start" in h:
        print(f"\nLoad average (1 min): {h['load_start']} at the start, {h['load_end']} at the end.")
    if any_run:
        f, hh, w = any_run["grid"]
        note = "" if any_run["video_tokens"] == 6144 else " (the 768x512x121 clip has 16 x 16 x 24 = 6144)"
        print(f"\n19B layout, {args.layers} blocks ({any_run['base_params'] / 1e9:.2f} B parameters with the text "
              f"connectors), random weights; "
              f"{f} x {hh} x {w} = {any_run['video_tokens']} video tokens{note}, {any_run['audio_tokens']} audio "
              f"tokens, {any_run['text_tokens']} text tokens; LoRA rank {args.rank} on {'/'.join(LTX2_TARGETS)} "
              f"({any_run['adapter_params'] / 1e6:.1f} M adapter parameters, fp32), AdamW, clip 1.0, batch 1. "
              f"{'bf16 autocast in every variant' if cuda else 'fp32 base: fp32 compute; bf16 base: bf16 autocast'}."
              "\nact = peak - memory before the first step - adapter gradients and AdamW moments (12 B/parameter),"
              " per (video + audio) token and block.\n")
        mib = 2**20
        unit = "CUDA MiB" if cuda else "RSS MiB"
        rows = []
        for base in ("float32", "bfloat16"):
            for ck in ("nockpt", "ckpt"):
                o, r = runs.get(f"ours:{base}:{ck}"), runs.get(f"ref:{base}:{ck}")
                if o is None and r is None:
                    continue
                name = f"{'fp32' if base == 'float32' else 'bf16'} base, {'' if ck == 'ckpt' else 'no '}checkpointing"
                rows.append([name, *_pair(o, r, "median_s", 1000, ".0f"), *_pair(o, r, "peak_bytes", 1 / mib, ".0f"),
                             *_pair(o, r, "act_kib_per_token_block", 1, ".1f"),
                             " / ".join("-" if x is None else ("yes" if x["finite"] else "NO") for x in (o, r))])
        _table(["variant", "ours ms/step", "ref ms/step", "time ours/ref", f"ours peak {unit}", f"ref peak {unit}",
                "peak ours/ref", "ours act KiB/token/block", "ref act KiB/token/block", "act ours/ref",
                "finite loss (ours / ref)"], rows)
    if fits:
        print(f"\nActivation constants (OURS, no checkpointing, {args.layers - 1} and {args.layers} blocks): bytes per "
              "(video + audio) token, ltx.ltx2.memory.ACTIVATIONS\n")
        _table(["compute", "per_block B/token", "fixed B/token"],
               [["fp32" if b == "float32" else "bf16 autocast", f"{f['per_block']:.0f}", f"{f['fixed']:.0f}"]
                for b, f in fits.items()])
    if full:
        peak_gb = full["peak_bytes"] / 1e9
        print(f"\n19B LoRA step, all 48 blocks ({full['base_params'] / 1e9:.2f} B parameters, bf16 base, bf16 "
              f"autocast, checkpointing per block), {full['video_tokens']} video + {full['audio_tokens']} audio + "
              f"{full['text_tokens']} text tokens, rank {full['rank']}; ours\n")
        pub = LTX2_PUBLISHED_GB
        _table(["s/step", "peak allocated GB", "peak reserved GB", f"official standard ({pub['standard']} GB)",
                f"official low-VRAM ({pub['low-VRAM']} GB, int8 base)", "finite loss"],
               [[f"{full['median_s']:.2f}", f"{peak_gb:.1f}", _fmt(full.get("reserved_bytes", 0) / 1e9, ".1f"),
                 f"{peak_gb / pub['standard']:.2f}x", f"{peak_gb / pub['low-VRAM']:.2f}x", str(full["finite"])]])
    elif args.full_model != "off" and cuda:
        print("\nThe 48-block step did not run (see stderr: out of memory?).")
    print(f"\n(total {results['total_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda (part 1 and 3 on it; part 2 always CPU gloo)")
    p.add_argument("--data", type=Path, help="a train.preprocess cache for the demo model (default: made here)")
    p.add_argument("--clips", type=int, default=16, help="clips in the cache made here")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per run (split over processes in part 2)")
    p.add_argument("--batch", type=int, default=8, help="global batch (parts 1 and 2)")
    p.add_argument("--procs-mode", default="lora", choices=("lora", "full"), help="what part 2 trains")
    p.add_argument("--synthetic", action="store_true", help="only part 3 (the 2B-size LoRA step) on --device")
    p.add_argument("--layers", type=int, help="part 3: transformer blocks (default 28 = 2B); part 4: default 2")
    p.add_argument("--size", type=_size, default=(768, 512, 49), metavar="WxHxF", help="part 3: video size")
    p.add_argument("--text-tokens", type=int, help="caption tokens: part 3 default 128 (width 4096), part 4 1024")
    p.add_argument("--synthetic-batch", type=int, default=1, help="part 3: batch")
    p.add_argument("--synthetic-precision", default="bfloat16", choices=("bfloat16", "float32"),
                   help="part 3: autocast dtype")
    p.add_argument("--base-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="part 3: frozen base weights (float32 as train.finetune keeps them; bfloat16 halves them)")
    p.add_argument("--rank", type=int, help="LoRA rank (attention q, k, v, out): part 3 default 16, part 4 32")
    p.add_argument("--ltx2", action="store_true", help="only part 4 (the LTX-2 19B-layout LoRA step) on --device")
    p.add_argument("--video-tokens", type=int, help=f"part 4: video tokens (default {LTX2_CPU_VIDEO_TOKENS} on CPU, "
                   "6144 = 768x512x121 on CUDA)")
    p.add_argument("--audio-tokens", type=int, help="part 4: audio tokens (default 126, 121 frames at 24 fps)")
    p.add_argument("--variants", help="part 4: 'all' (the CUDA default), 'fp32' (the CPU default: bf16 matmuls are "
                   "very slow on CPUs without bf16 units) or a comma list of impl:base:ckpt, e.g. "
                   "ours:float32:ckpt,ref:float32:ckpt (impl ours|ref, base float32|bfloat16, ckpt|nockpt)")
    p.add_argument("--fit", action="store_true", help="part 4: also run OURS without checkpointing at --layers - 1 "
                   "and print the activation constants of ltx.ltx2.memory (slope per block, intercept)")
    p.add_argument("--full-model", choices=("auto", "on", "off"), default="auto",
                   help="part 4: also the 48-block 19B step (auto: on CUDA only)")
    p.add_argument("--fps", type=float, default=24.0, help="part 3: RoPE time positions")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    _resolve_defaults(p, args)
    if args.worker:
        if args.worker.startswith("ltx2:"):
            out = worker_ltx2(args, args.worker.removeprefix("ltx2:"))
        else:
            out = worker_synthetic(args) if args.worker == "synthetic" else worker_mode(args, args.worker)
        print(json.dumps(out))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    if args.base_dtype == "bfloat16" and args.synthetic_precision == "float32":
        raise SystemExit("error: --base-dtype bfloat16 needs --synthetic-precision bfloat16 (autocast)")

    if args.ltx2:
        run_ltx2(args)
        return

    h = header(args)
    results: dict = {"header": h, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    modes, procs, synth = [], [], None
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.synthetic:
            data = args.data
            if data is None:
                t0 = time.perf_counter()
                data = make_cache(Path(tmp), args.clips, args.threads)
                print(f"  cache: {args.clips} clips preprocessed in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            modes = [r for m in ("lora", "full") if (r := _run_worker(args, m, data)) is not None]
            for n, parallel in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):  # 1 process: parallel= is not used
                r = run_torchrun(args, data, n, parallel, Path(tmp) / f"run_{n}_{parallel}")
                if r is not None:
                    procs.append(r)
        if args.synthetic or args.device.startswith("cuda"):
            synth = _run_worker(args, "synthetic", None)
    if hasattr(os, "getloadavg"):
        h["load_end"] = round(os.getloadavg()[0], 2)
    results |= {"modes": modes, "processes": procs, "synthetic": synth,
                "total_s": round(time.perf_counter() - t_start, 1)}

    gpu = f", {h['gpu']}" if "gpu" in h else ""
    print(f"\n**Fine-tuning benchmark** - {h['cpu']}, {h['cores']} cores{gpu}; device {args.device}, "
          f"{args.threads} threads; torch {h['torch']}, Python {h['python']}; median of {args.steps} steps after "
          f"{args.warmup} warm-up (min alongside)")
    if "load_start" in h:
        busy = max(h["load_start"], h["load_end"]) > 0.5 * h["cores"]
        print(f"\nLoad average (1 min): {h['load_start']} at the start, {h['load_end']} at the end"
              + (f" on {h['cores']} cores: other processes were using the CPU, so times are contended (a median far "
                 f"above the min is the sign); compare ratios with care." if busy else "."))
    mib = 2**20
    if modes:
        cuda = args.device.startswith("cuda")
        print(f"\n1. LoRA (rank {LORA['rank']}, attention q/k/v/out) vs full fine-tune: demo model, "
              f"batch {args.batch}, fp32, in-process `Trainer.loop.train_step`, one subprocess per mode\n")
        mem = ["peak CUDA MiB"] if cuda else ["peak RSS MiB", "RSS growth MiB"]
        rows = [[r["mode"], f"{r['trainable']:,}", f"{r['median_s'] * 1000:.1f}", f"{r['min_s'] * 1000:.1f}",
                 f"{args.batch / r['median_s']:.1f}", f"{r['trainable'] * 12 / mib:.1f}",
                 f"{r['peak_bytes'] / mib:.0f}"] + ([] if cuda else [f"{r['growth_bytes'] / mib:.0f}"]) for r in modes]
        by = {r["mode"]: r for r in modes}
        if "lora" in by and "full" in by:
            lo, fu = by["lora"], by["full"]
            rows.append(["lora / full", _ratio(lo["trainable"], fu["trainable"]),
                         _ratio(lo["median_s"], fu["median_s"]), _ratio(lo["min_s"], fu["min_s"]),
                         _ratio(fu["median_s"], lo["median_s"]), _ratio(lo["trainable"], fu["trainable"]),
                         _ratio(lo["peak_bytes"], fu["peak_bytes"])]
                        + ([] if cuda else [_ratio(lo["growth_bytes"], fu["growth_bytes"])]))
        _table(["mode", "trainable params", "ms/step", "min ms", "clips/s", "grads+AdamW MiB"] + mem, rows)
        print("\ngrads+AdamW = 12 bytes per trainable parameter (fp32 gradient and two moments), computed, not "
              "measured." + ("" if cuda else " RSS growth = peak RSS minus the RSS once the trainer is built "
                             "(gradients, optimizer state, activations, allocator slack)."))
    if procs:
        base = next((r for r in procs if r["processes"] == 1), None)
        print(f"\n2. {len(procs)} torchrun runs of `train.finetune` ({args.procs_mode}), gloo on CPU, global batch "
              f"{args.batch}, {args.threads} threads in total (OMP_NUM_THREADS = threads = {args.threads} / N)\n")
        rows = [[r["parallel"], str(r["processes"]), str(r["threads_per_process"]), f"{r['median_s'] * 1000:.1f}",
                 f"{r['min_s'] * 1000:.1f}", f"{r['clips_per_s']:.1f}",
                 _ratio(base["median_s"], r["median_s"]) if base else "-",
                 _ratio(base["min_s"], r["min_s"]) if base else "-"] for r in procs]
        _table(["parallel", "processes", "threads/process", "ms/step", "min ms", "clips/s", "speed-up vs 1",
                "speed-up (min)"], rows)
        print(f"\nNote: the processes share this machine's {h['cores']} CPU cores (the same {args.threads} threads in "
              f"total), so the 2-process rows measure gloo communication and process overhead at equal compute, not "
              f"a GPU scaling figure. One baseline serves both modes: with 1 process parallel= is not applied.")
    if synth:
        s = synth
        cuda = s["device"].startswith("cuda")
        name = "2B" if s["layers"] == 28 and s["dim"] == 2048 else f"2B width, {s['layers']} layers"
        W, H, F = s["size"]
        print(f"\n3. Synthetic LoRA step ({name}, random weights): {W}x{H}x{F} -> {s['grid'][0]}x{s['grid'][1]}x"
              f"{s['grid'][2]} = {s['tokens']} tokens, {s['text_tokens']} text tokens, batch {s['batch']}, "
              f"{s['precision']} autocast, base weights {s['base_dtype']}, activation checkpointing, AdamW on the "
              f"adapters; {s['device']}\n")
        if cuda:
            lo, hi = PUBLISHED_GB
            peak_gb = s["peak_bytes"] / 1e9
            _table(["model", "params", "trainable", "s/step", "peak allocated GB", "peak reserved GB",
                    "LTX-Video-Trainer (published)", "ours / published"],
                   [[name, f"{s['parameters'] / 1e9:.2f} B", f"{s['trainable'] / 1e6:.1f} M", f"{s['median_s']:.3f}",
                     f"{peak_gb:.1f}", f"{s['reserved_bytes'] / 1e9:.1f}", f"{lo}-{hi} GB",
                     f"{peak_gb / hi:.2f}-{peak_gb / lo:.2f}x"]])
        else:
            _table(["model", "params", "trainable", "s/step", "peak RSS MiB", "RSS growth MiB", "finite loss"],
                   [[name, f"{s['parameters'] / 1e6:.1f} M", f"{s['trainable'] / 1e6:.2f} M", f"{s['median_s']:.3f}",
                     f"{s['peak_bytes'] / mib:.0f}", f"{s['growth_bytes'] / mib:.0f}", str(s["finite"])]])
            print(f"\nOn CPU this only checks the path runs; the comparison with the published {PUBLISHED_GB[0]}-"
                  f"{PUBLISHED_GB[1]} GB of the LTX-Video-Trainer needs --device cuda at the full size.")
    print(f"\n(total {results['total_s']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
