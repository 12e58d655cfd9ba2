#!/usr/bin/env python
"""Benchmark one DiT forward: ltx vs the official ltx-video 0.1.2 Transformer3DModel vs diffusers.

All three load the same random weights (one official single file) and run the same inputs. Each
(implementation, dtype) runs in its own subprocess so that peak memory is measured cleanly: the process
resets its peak RSS (Linux /proc/self/clear_refs) after building the model and the inputs, runs one
forward, and reports VmHWM - VmRSS, the extra memory that forward needed. Times are the median of
`--reps` forwards after `--warmup` warm-up forwards. Ratios are ours / reference (< 1 = ours is faster or
smaller). On a CUDA device the time uses synchronize() and the memory is max_memory_allocated.

  python tools/bench_dit.py                       # CPU: 2B width (32 x 64), 2 layers, 1024 tokens, fp32 + bf16
  python tools/bench_dit.py --device cuda --layers 28 --grid 16 16 24 --dtypes bfloat16   # 2B full, 6144 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
IMPLS = ("ltx", "ltx+compile", "official", "diffusers")
H100_BF16_PEAK = 989.4e12  # dense, SXM (performance.md)


def dit_flops(num_layers: int, dim: int, tokens: int, text: int, caption: int = 4096, channels: int = 128) -> float:
    """Matmul FLOPs of one forward (2 x MACs), counted from the architecture."""
    per_layer = (
        2 * tokens * 4 * dim * dim  # self-attention q, k, v, out
        + 2 * 2 * tokens * tokens * dim  # self-attention scores and weighted sum
        + 2 * (2 * tokens + 2 * text) * dim * dim  # cross-attention q, out (video) and k, v (text)
        + 2 * 2 * tokens * text * dim  # cross-attention scores and weighted sum
        + 2 * 2 * tokens * dim * 4 * dim  # MLP
    )
    head = 2 * tokens * channels * dim * 2 + 2 * text * (caption * dim + dim * dim)
    return num_layers * per_layer + head


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    from ltx.ltxv.checkpoint import load_dit

    F, H, W = args.grid
    T = F * H * W
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, 128, generator=g).to(device, dtype)
    ctx = torch.randn(1, args.text, 4096, generator=g).to(device, dtype)
    mask = torch.ones(1, args.text, device=device)
    mask[:, args.text // 2 :] = 0
    fgrid, hgrid, wgrid = torch.meshgrid(torch.arange(F), torch.arange(H), torch.arange(W), indexing="ij")
    pos = (torch.stack([fgrid, hgrid, wgrid]).flatten(1).float() * torch.tensor([8.0, 32, 32])[:, None])[None]
    pos[:, 0] = (pos[:, 0] - 7).clamp(min=0) / 25.0
    pos = pos.to(device)
    sigma = torch.tensor([[0.7]], device=device)
    if args.per_token:  # image-to-video: first latent frame is the clean condition (sigma 0)
        sigma = sigma.expand(1, T).clone()
        sigma[:, : H * W] = 0.0

    if args.impl.startswith("ltx"):
        model = load_dit(args.weights, dtype=dtype, device=device)
        if args.impl == "ltx+compile":
            from ltx.core.parallel import apply_compile

            apply_compile(model)

        def run():
            return model(x, sigma, ctx, mask, pos)
    elif args.impl == "official":
        from ltx_video.models.transformers.transformer3d import Transformer3DModel

        model = Transformer3DModel.from_pretrained(args.weights).to(device, dtype).eval()

        def run():
            return model(x, pos, encoder_hidden_states=ctx, timestep=sigma, encoder_attention_mask=mask,
                         return_dict=False)[0]
    else:
        from diffusers import LTXVideoTransformer3DModel

        from ltx.ltxv.checkpoint import read_checkpoint, write_diffusers

        folder = Path(args.weights).with_suffix(".diffusers")
        if not folder.exists():
            write_diffusers(read_checkpoint(args.weights), folder)
        model = LTXVideoTransformer3DModel.from_pretrained(folder / "transformer").to(device, dtype).eval()

        def run():
            return model(hidden_states=x, encoder_hidden_states=ctx, timestep=1000 * sigma, encoder_attention_mask=mask,
                         video_coords=pos, return_dict=False)[0]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(args.warmup):
            run()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _reset_peak()
            base = _rss("VmRSS")
        out = run()
        sync()
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else _rss("VmHWM")) - base
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            out = run()
            sync()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"impl": args.impl, "dtype": args.dtype, "median_s": statistics.median(times),
                      "min_s": min(times), "peak_bytes": peak, "finite": bool(torch.isfinite(out).all())}))


def make_weights(path: Path, layers: int) -> None:
    """Random 2B-width official single file (the reference builds it, so every implementation reads the same)."""
    from safetensors.torch import save_file

    from ltx.ltxv.keys_official import DIT_PREFIX, dit_config_to_official
    from ltx.ltxv.transformer import DiT, DiTConfig

    cfg = DiTConfig(num_layers=layers)
    with torch.device("cpu"):
        model = DiT(cfg).init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():  # non-zero everywhere so that no path is trivially cheap
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sd = {DIT_PREFIX + k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"config": json.dumps({"transformer": dit_config_to_official(cfg)})})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--grid", type=int, nargs=3, default=(4, 16, 16), metavar=("F", "H", "W"),
                   help="latent grid (tokens = F*H*W; default 1024)")
    p.add_argument("--text", type=int, default=128, help="text tokens (half of them padding)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--impls", nargs="+", default=["ltx", "official", "diffusers"], choices=IMPLS,
                   help="implementations to time; 'ltx+compile' = ltx with each block torch.compile'd")
    p.add_argument("--per-token", action="store_true",
                   help="per-token timesteps (first latent frame at sigma 0, as with image conditioning)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "DTYPE"), help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.impl, args.dtype = args.worker
        return worker(args)

    tokens = args.grid[0] * args.grid[1] * args.grid[2]
    flops = dit_flops(args.layers, 2048, tokens, args.text)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "dit.safetensors"
        make_weights(weights, args.layers)
        rows = []
        for dtype in args.dtypes:
            for impl in args.impls:
                cmd = [sys.executable, __file__, "--worker", impl, dtype, "--weights", str(weights),
                       "--layers", str(args.layers), "--grid", *map(str, args.grid), "--text", str(args.text),
                       "--device", args.device, "--threads", str(args.threads), "--reps", str(args.reps),
                       "--warmup", str(args.warmup)] + (["--per-token"] if args.per_token else [])
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{impl} {dtype} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(f"  done: {impl} {dtype}", file=sys.stderr)
    print(f"\nDiT forward, 2B width (32 heads x 64), {args.layers} layers, {tokens} tokens, {args.text} text tokens, "
          f"batch 1, {'per-token' if args.per_token else 'global'} timesteps, {args.device}, "
          f"{args.threads} threads, torch {torch.__version__}; median of {args.reps}")
    print(f"{'dtype':9} {'impl':12} {'ms':>10} {'TFLOP/s':>8} {'peak MiB':>9} {'time vs official':>17} "
          f"{'time vs diffusers':>18} {'mem vs official':>16}")
    by = {(r["dtype"], r["impl"]): r for r in rows}
    for r in rows:
        off, dif = by.get((r["dtype"], "official")), by.get((r["dtype"], "diffusers"))

        def ratio(ref, k, r=r):
            return f"{r[k] / ref[k]:.2f}x" if ref and ref[k] > 0 else "-"

        print(f"{r['dtype']:9} {r['impl']:12} {1000 * r['median_s']:10.1f} {flops / r['median_s'] / 1e12:8.3f} "
              f"{r['peak_bytes'] / 2**20:9.1f} {ratio(off, 'median_s'):>17} {ratio(dif, 'median_s'):>18} "
              f"{ratio(off, 'peak_bytes'):>16}")
    if args.device.startswith("cuda"):
        for r in rows:
            print(f"MFU {r['impl']} {r['dtype']}: {flops / r['median_s'] / H100_BF16_PEAK:.1%} of H100 BF16 peak")
    if args.json:
        args.json.write_text(json.dumps({"flops": flops, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
