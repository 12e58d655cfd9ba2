#!/usr/bin/env python
"""What IC-LoRA guide tokens cost: transformer time per sampling step with and without a control video.

A guide adds its tokens to the self-attention sequence (ltx/ltxv/conditioning.py): a same-size reference doubles
the video tokens, a reference at 1/2 size adds a quarter. Linear layers and cross-attention grow with the token
count, self-attention with its square, so the cost ratio is between 2x and 4x for a same-size reference. Rows:

- the bundled demo model at its size (17 x 64 x 64: 192 video tokens), a step as the demo samples it (CFG 3:
  a batch of 2 rows), no guide / a same-size guide / a guide at 1/2 size;
- a few blocks of the 2B (D = 2048) and 13B (D = 4096) transformers at the token counts of 768 x 512 x 121
  (6,144 video tokens; 12,288 with a same-size reference, 7,680 at 1/2), one row, 128 text tokens, random
  weights. `--layers` blocks (default 1): a per-block figure, the full model is that times 28 / 48.

Times are the median of `--reps` forwards (at least 30 for the demo) after one warm-up, the settings of a row
group run in turn, fp32 on the CPU (bf16 has no fast path on these
CPUs); the FLOP ratio is counted from the architecture (tools/bench_dit.py `dit_flops`). Prints a markdown table.

    python tools/bench_control.py                      # demo + 2B-width block; ~2 min on 2 cores
    python tools/bench_control.py --widths 2048 4096 --layers 1 --reps 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from bench_dit import dit_flops  # noqa: E402

from ltx.ltxv.patchify import token_positions  # noqa: E402
from ltx.ltxv.transformer import DiT, DiTConfig  # noqa: E402


def forward_fn(dit: DiT, grid: tuple[int, int, int], guide_grid: tuple[int, int, int] | None, *, rows: int,
               text: int, scale: tuple[int, int, int]):
    """A closure running one forward over the video tokens (+ the guide's), `rows` batch rows."""
    cfg = dit.cfg
    g = torch.Generator().manual_seed(0)
    pos = token_positions(*grid, fps=25.0, causal=cfg.causal_temporal_positioning, scale=scale, batch=rows)
    T = pos.shape[-1]
    sigma = torch.full((rows, T), 0.6)
    if guide_grid is not None:
        d = grid[1] // guide_grid[1]
        gpos = token_positions(*guide_grid, fps=25.0, causal=cfg.causal_temporal_positioning, batch=rows,
                               scale=(scale[0], scale[1] * d, scale[2] * d))
        pos = torch.cat([pos, gpos], 2)
        sigma = torch.cat([sigma, torch.zeros(rows, gpos.shape[-1])], 1)
    x = torch.randn(rows, pos.shape[-1], cfg.in_channels, generator=g)
    ctx = torch.randn(rows, text, cfg.caption_channels, generator=g)
    mask = torch.ones(rows, text, dtype=torch.long)
    return lambda: dit(x, sigma, ctx, mask, pos)


@torch.no_grad()
def median_times(fns: list, reps: int) -> list[float]:
    """Median seconds of each closure; the closures run in turn (round robin) after one warm-up each, so a
    slow spell of a noisy machine hits all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def tokens(grid) -> int:
    return grid[0] * grid[1] * grid[2]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other tool
        print(f"error: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="*", default=[2048], help="transformer widths for the 768x512x121 rows")
    ap.add_argument("--layers", type=int, default=1, help="blocks in the 768x512x121 rows")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-demo", action="store_true")
    args = ap.parse_args(argv)
    bad = [f"--{k} {getattr(args, k)}: give an integer >= 1" for k in ("layers", "reps", "threads")
           if getattr(args, k) is not None and getattr(args, k) < 1]
    bad += [f"--widths {w}: give positive multiples of 64 (64-wide heads)" for w in args.widths if w < 64 or w % 64]
    if bad:
        ap.error(bad[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if not args.no_demo:
        from ltx.ltxv.checkpoint import load_dit

        dit = load_dit(str(REPO / "demo/ltx-demo.safetensors"), dtype=torch.float32).eval()
        grid, text = (3, 8, 8), 96
        guides = (("same size", grid), ("1/2 size", (3, 4, 4)))
        base, *with_guide = median_times([forward_fn(dit, grid, gg, rows=2, text=text, scale=(8, 8, 8))
                                          for gg in (None, *(g for _, g in guides))], max(args.reps, 30))
        for (name, gg), t in zip(guides, with_guide):
            c = dit.cfg
            flops = [dit_flops(c.num_layers, c.dim, n, text, c.caption_channels, c.in_channels)
                     for n in (tokens(grid), tokens(grid) + tokens(gg))]
            rows.append((f"demo ({c.num_layers} blocks, D {c.dim}), 17x64x64, CFG batch 2", name,
                         f"{tokens(grid)} -> {tokens(grid) + tokens(gg)}", base, t, flops[1] / flops[0]))
    for width in args.widths:
        heads = width // 64
        cfg = DiTConfig(num_layers=args.layers, num_heads=heads, head_dim=64, in_channels=128, out_channels=128,
                        caption_channels=4096, causal_temporal_positioning=True)
        dit = DiT(cfg).init_weights(torch.Generator().manual_seed(0)).eval()
        grid, text = (16, 16, 24), 128  # 768 x 512 x 121 with the 32x / 8x VAE: (121 - 1) / 8 + 1 = 16 frames
        guides = (("same size", grid), ("1/2 size", (16, 8, 12)))
        base, *with_guide = median_times([forward_fn(dit, grid, gg, rows=1, text=text, scale=(8, 32, 32))
                                          for gg in (None, *(g for _, g in guides))], args.reps)
        for (name, gg), t in zip(guides, with_guide):
            flops = [dit_flops(args.layers, width, n, text) for n in (tokens(grid), tokens(grid) + tokens(gg))]
            rows.append((f"D {width}, {args.layers} block(s), 768x512x121, batch 1", name,
                         f"{tokens(grid)} -> {tokens(grid) + tokens(gg)}", base, t, flops[1] / flops[0]))
    print(f"threads: {torch.get_num_threads()}, fp32, CPU\n")
    print("| setting | guide | tokens | s/step without | s/step with | measured ratio | FLOP ratio |")
    print("|---|---|---|---|---|---|---|")
    for setting, name, toks, base, t, fr in rows:
        print(f"| {setting} | {name} | {toks} | {base:.4f} | {t:.4f} | {t / base:.2f}x | {fr:.2f}x |")


if __name__ == "__main__":
    main()
