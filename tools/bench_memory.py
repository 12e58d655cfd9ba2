"""Memory benchmark: weight layouts and offload, on the CPU (always) and on a GPU (when one is there).

    python tools/bench_memory.py                       # CPU: a tiny-width 0.9.x DiT at realistic token counts
    python tools/bench_memory.py --dry-run             # CI: the same rows at toy sizes, seconds
    python tools/bench_memory.py --gpu --ltx2-checkpoint /w/ltx-2-19b-distilled.safetensors \\
        --ltx2-text-encoder /w/gemma-3-12b-it-qat-q4_0-unquantized --ltx2-upsampler /w/ltx-2-spatial-upscaler...

CPU rows, per layout (bf16, fp32, and ltx.core.quant's fp8-scaled, fp8-cast, nvfp4 (dequantizing forward),
gguf-q8_0, gguf-q4_k; "module missing" when ltx.core.quant is absent): the time to quantize the model in memory
("load"), the resident bytes of its weights, and the forward time (median of --repeats) at --tokens tokens; then
the forward with block streaming (ltx.core.offload, prefetch 1) against without, bf16.

GPU rows (`--gpu`, CUDA only; NOT RUN in this repository's sessions, which had no GPU): LTX-2 19B distilled and
0.9.8 13B distilled at 768x512x121, peak GB (torch.cuda.max_memory_allocated) and seconds per video for bf16, fp8,
fp8 + block offload, GGUF Q8_0 and Q4_K (quantized in memory from the bf16 file), each next to the planner's
prediction (ltx.plan_memory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ltx.core.checkpoint import atomic_file
from ltx.core.offload import apply_block_offload, apply_offload
from ltx.ltxv.transformer import DiT, DiTConfig

try:
    from ltx.core import quant
except ImportError:  # helper F's module not there yet: its rows say so
    quant = None

LAYOUTS = ("bf16", "fp32", "fp8-scaled", "fp8-cast", "nvfp4", "gguf-q8_0", "gguf-q4_k")
GPU_SETTINGS = (("bf16", "none"), ("fp8-scaled", "model"), ("fp8-scaled", "blocks"), ("gguf-q8_0", "model"),
                ("gguf-q4_k", "model"))


def tiny_dit(width: int, layers: int) -> DiT:
    heads = max(1, width // 64)
    cfg = DiTConfig(num_layers=layers, num_heads=heads, head_dim=width // heads, in_channels=128, out_channels=128,
                    caption_channels=256)
    return DiT(cfg).init_weights(torch.Generator().manual_seed(0))


def inputs(model: DiT, tokens: int):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, tokens, 128, generator=g), torch.full((1,), 0.5), torch.randn(1, 32, 256, generator=g),
            torch.ones(1, 32), torch.rand(1, 3, tokens, generator=g))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def weight_bytes(model: torch.nn.Module) -> int:
    if quant is not None:
        return quant.resident_bytes(model)
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def layout_row(layout: str, width: int, layers: int, tokens: int, repeats: int) -> dict:
    model = tiny_dit(width, layers)
    x = inputs(model, tokens)
    row = {"layout": layout}
    t = time.perf_counter()
    if layout in ("bf16", "fp32"):
        model = model.to(torch.bfloat16 if layout == "bf16" else torch.float32)
        x = tuple(v.to(torch.bfloat16) if layout == "bf16" and v.is_floating_point() else v for v in x)
    elif quant is None:
        return {**row, "note": "module missing (ltx.core.quant)"}
    else:
        try:
            row["note"] = f"{len(quant.quantize_model(model, layout))} Linears quantized (the layout's choice)"
        except Exception as e:  # a layout the module cannot apply to this model: the row says why
            return {**row, "note": f"error: {str(e).splitlines()[0][:100]}"}
    row["load_s"] = time.perf_counter() - t
    row["resident_MB"] = weight_bytes(model) / 1e6
    with torch.no_grad():
        row["forward_s"] = timed(lambda: model(*x), repeats)
    return row


def offload_rows(width: int, layers: int, tokens: int, repeats: int) -> list[dict]:
    model = tiny_dit(width, layers).to(torch.bfloat16)
    x = tuple(v.to(torch.bfloat16) if v.is_floating_point() else v for v in inputs(model, tokens))
    with torch.no_grad():
        plain = timed(lambda: model(*x), repeats)
        streamer = apply_block_offload(model, "cpu", prefetch=1)
        streamed = timed(lambda: model(*x), repeats)
        copies = sum(streamer.stats["block_copies"]["forward"])
        streamer.remove()
    return [{"layout": "bf16, no offload", "forward_s": plain},
            {"layout": "bf16, block offload (CPU: copies are clones)", "forward_s": streamed,
             "note": f"{copies} block copies in {repeats} forwards of {layers} blocks"}]


def cpu_table(args) -> list[dict]:
    rows = [layout_row(layout, args.width, args.layers, args.tokens, args.repeats) for layout in LAYOUTS]
    return rows + offload_rows(args.width, args.layers, args.tokens, args.repeats)


def gpu_rows(args) -> list[dict]:
    """The GPU table (prepared, not run here): one full video per setting, peak memory and wall time."""
    import ltx

    rows = []
    runs = (("ltx-2-19b-distilled", args.ltx2_checkpoint, dict(text_encoder=args.ltx2_text_encoder,
                                                               upsampler=args.ltx2_upsampler)),
            ("ltxv-13b-0.9.8-distilled", args.ltxv_checkpoint, dict(text_encoder=args.ltxv_text_encoder,
                                                                    upsampler=args.ltxv_upsampler)))
    for model, checkpoint, files in runs:
        if checkpoint is None:
            continue
        for layout, offload in GPU_SETTINGS:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            pipe = ltx.load_pipeline(checkpoint, model=model, device="cpu", dtype="bfloat16", **files)
            transformer = pipe.dit if hasattr(pipe, "dit") else pipe.modules["transformer"]
            if layout != "bf16":
                quant.quantize_model(transformer, layout)
            handle = apply_offload(pipe, offload, device="cuda")
            load_s = time.perf_counter() - t
            t = time.perf_counter()
            pipe("a red fox runs through fresh snow", seed=0, height=512, width=768, num_frames=121)
            torch.cuda.synchronize()
            planned = ltx.plan_memory(model, height=512, width=768, num_frames=121, budget="200GB",
                                      weights=layout.replace("-scaled", ""), offload=offload)
            rows.append({"layout": f"{model} {layout} offload={offload}", "load_s": load_s,
                         "s_per_video": time.perf_counter() - t,
                         "peak_GB": torch.cuda.max_memory_allocated() / 1e9, "planned_GB": planned.peak / 1e9})
            handle.remove()
            del pipe, transformer, handle
    return rows


def markdown(rows: list[dict]) -> str:
    keys = ["layout", "load_s", "resident_MB", "forward_s", "s_per_video", "peak_GB", "planned_GB", "note"]
    keys = [k for k in keys if any(k in r for r in rows)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="toy sizes, one repeat (CI)")
    p.add_argument("--width", type=int, default=512, help="DiT width of the CPU rows (tiny; the tokens are real)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=6144, help="768x512x121 gives 6144 latent tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the rows here (atomically)")
    p.add_argument("--gpu", action="store_true", help="the GPU table (needs CUDA and the checkpoints)")
    for family in ("ltx2", "ltxv"):
        for what in ("checkpoint", "text-encoder", "upsampler"):
            p.add_argument(f"--{family}-{what}")
    args = p.parse_args(argv)
    if args.dry_run:
        args.width, args.layers, args.tokens, args.repeats = 128, 1, 64, 1
    for name in ("width", "layers", "tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    torch.manual_seed(0)
    rows = cpu_table(args)
    print(f"CPU, DiT width {args.width}, {args.layers} blocks, {args.tokens} tokens, median of {args.repeats}:")
    print(markdown(rows))
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here; the GPU table was not run", file=sys.stderr)
            return 2
        gpu = gpu_rows(args)
        print(markdown(gpu))
        rows += gpu
    if args.json:
        with atomic_file(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
