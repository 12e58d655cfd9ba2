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

Times are medians after warm-up; the tables give ratios (LoRA / full, N processes vs 1) rather than
absolute claims, which depend on the machine.

  python tools/bench_finetune.py                                    # CPU: parts 1 and 2 (demo model)
  python tools/bench_finetune.py --synthetic --layers 2 --size 256x256x17 --steps 3 --warmup 1   # part 3, tiny
  python tools/bench_finetune.py --device cuda --json bench.json    # GPU: parts 1, 2 (CPU gloo) and 3 (2B)
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
    times = []
    for k in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = step()
        _sync(device)
        if k >= args.warmup:
            times.append(time.perf_counter() - t0)
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


def _run_worker(args, which: str, data: Path | None) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", which, "--device", args.device, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--layers", str(args.layers), "--size", "x".join(map(str, args.size)), "--text-tokens",
           str(args.text_tokens), "--synthetic-batch", str(args.synthetic_batch), "--synthetic-precision",
           args.synthetic_precision, "--base-dtype", args.base_dtype, "--rank", str(args.rank), "--fps", str(args.fps)]
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
    p.add_argument("--layers", type=int, default=28, help="part 3: transformer blocks (28 = 2B)")
    p.add_argument("--size", type=_size, default=(768, 512, 49), metavar="WxHxF", help="part 3: video size")
    p.add_argument("--text-tokens", type=int, default=128, help="part 3: caption tokens (width 4096)")
    p.add_argument("--synthetic-batch", type=int, default=1, help="part 3: batch")
    p.add_argument("--synthetic-precision", default="bfloat16", choices=("bfloat16", "float32"),
                   help="part 3: autocast dtype")
    p.add_argument("--base-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="part 3: frozen base weights (float32 as train.finetune keeps them; bfloat16 halves them)")
    p.add_argument("--rank", type=int, default=16, help="part 3: LoRA rank (attention q, k, v, out)")
    p.add_argument("--fps", type=float, default=24.0, help="part 3: RoPE time positions")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        out = worker_synthetic(args) if args.worker == "synthetic" else worker_mode(args, args.worker)
        print(json.dumps(out))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    if args.base_dtype == "bfloat16" and args.synthetic_precision == "float32":
        raise SystemExit("error: --base-dtype bfloat16 needs --synthetic-precision bfloat16 (autocast)")

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
