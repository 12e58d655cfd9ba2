#!/usr/bin/env python
"""The quality cost of step caching (ltx.core.step_cache) on both demo models: forwards saved vs accuracy and
fidelity to the uncached run, for several thresholds per kind.

    OMP_NUM_THREADS=1 python tools/eval_cache.py                     # both demos, the default grid
    python tools/eval_cache.py --family ltxv -n 48 --teacache 0.05 0.1 --first-block 0.1

Per point (a kind and a threshold), with the same prompts and seeds as the uncached baseline:
- 0.9.x demo (`ltx.load_pipeline()`): ShapesWorld prompts of tools/eval_demo.py (half seen, half held-out
  triples), scored by ltx.data.shapes_eval (colour, motion, both = the demo accuracy of tools/eval_shapes.py);
  PSNR of each cached video to its uncached twin (frames in [0, 1], mean over videos).
- LTX-2 demo (`ltx.load_pipeline(model="ltx2-demo")`): the t2av clips' captions of tools/eval_ltx2_demo.py,
  scored by ltx.data.shapes_av_eval (colour, motion, pitch); PSNR as above and the audio SNR to the uncached
  waveform, 10 log10(sum b^2 / sum (a - b)^2).
- forwards: transformer forwards of the run (one per step for the 0.9.x demo, whose CFG rows are one batch; two
  per step for the LTX-2 demo: conditional and unconditional passes), the fraction whose blocks were skipped,
  and the speedup as forwards / computed forwards (LTX-2: per stream; the video stream is the cost on the real
  models). A first_block skip still runs block 0 (blocks_run counts it).
Writes OUT/eval_cache.json and the plot (default docs/step_cache_curve.png).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ltx.api import load_pipeline  # noqa: E402
from ltx.core.checkpoint import atomic_file  # noqa: E402
from ltx.core.step_cache import CachePolicy  # noqa: E402
from ltx.data.shapes_av_eval import evaluate_av  # noqa: E402
from ltx.data.shapes_eval import evaluate  # noqa: E402
from tools.eval_demo import prompts as demo_prompts  # noqa: E402
from tools.eval_ltx2_demo import clips as av_clips  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frames in [0, 1]; inf for identical videos."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def snr(a: torch.Tensor, b: torch.Tensor) -> float:
    """dB of the reference b over the difference; inf for identical waveforms."""
    err = float(((a.float() - b.float()) ** 2).sum())
    return math.inf if err == 0 else 10 * math.log10(float((b.float() ** 2).sum()) / err)


def finite_mean(values: list[float]) -> float | None:
    """Mean in dB where identical items (inf) count as 100 dB; None when empty."""
    return sum(min(v, 100.0) for v in values) / len(values) if values else None


def add_stats(total: dict, stats: dict) -> dict:
    for k, v in stats.items():
        total[k] = add_stats(total.get(k, {}), v) if isinstance(v, dict) else total.get(k, 0) + v
    return total


def run_ltxv(policies: list[CachePolicy | None], args) -> list[dict]:
    pipe = load_pipeline(device="cpu")
    pipe("a red circle moves up", seed=0)  # warm-up: the first call's one-time costs stay out of the timings
    todo = demo_prompts(args.n, args.seed)
    baseline, points = None, []
    for policy in policies:
        videos, stats, t0 = [], {}, time.time()
        for start in range(0, len(todo), args.batch):
            chunk = [c for _, c in todo[start:start + args.batch]]
            out = pipe(chunk, seed=args.seed + start, cache=policy)
            videos += list(out.frames)
            if out.cache_stats is not None:
                add_stats(stats, out.cache_stats)
        seconds = time.time() - t0
        report = evaluate((f"{i:03d}", v * 2 - 1, c) for i, (v, (_, c)) in enumerate(zip(videos, todo)))
        s = report.summary()["all"]
        baseline = baseline or videos
        point = describe(policy, stats, seconds, {"color": s["color"], "motion": s["motion"], "both": s["both"]})
        point["psnr"] = None if policy is None else finite_mean([psnr(a, b) for a, b in zip(videos, baseline)])
        points.append(point)
        print(summary_line("ltxv", point), flush=True)
    return points


def run_ltx2(policies: list[CachePolicy | None], args) -> list[dict]:
    pipe = load_pipeline(model="ltx2-demo", device="cpu")
    pipe("a red circle moves up", seed=0)  # warm-up
    samples = av_clips(args.n_av)
    fps = float(pipe.preset.generation.fps)
    baseline, points = None, []
    for policy in policies:
        results, stats, t0 = [], {}, time.time()
        for start in range(0, len(samples), args.batch):
            chunk = [s.caption for s in samples[start:start + args.batch]]
            out = pipe(chunk, seed=args.seed + start, cache=policy)
            results += list(zip(out.frames, out.waveform))
            rate = out.sample_rate
            if out.cache_stats is not None:
                add_stats(stats, out.cache_stats)
        seconds = time.time() - t0
        report = evaluate_av((f"{i:03d}", v * 2 - 1, a, rate, s.caption, fps)
                             for i, ((v, a), s) in enumerate(zip(results, samples)))
        s = report.summary()["all"]
        baseline = baseline or results
        point = describe(policy, stats, seconds, {m: s[m]["acc"] for m in ("color", "motion", "pitch")})
        if policy is not None:
            point["psnr"] = finite_mean([psnr(v, bv) for (v, _), (bv, _) in zip(results, baseline)])
            point["audio_snr"] = finite_mean([snr(a, ba) for (_, a), (_, ba) in zip(results, baseline)])
        points.append(point)
        print(summary_line("ltx2", point), flush=True)
    return points


def describe(policy: CachePolicy | None, stats: dict, seconds: float, accuracy: dict) -> dict:
    point = {"kind": "uncached" if policy is None else policy.kind,
             "threshold": None if policy is None else policy.threshold, "accuracy": accuracy,
             "seconds": round(seconds, 1), "stats": stats or None}
    if stats:
        f = stats["forwards"]
        point["saved"] = stats["skipped"] / f  # forwards whose blocks were all skipped
        point["speedup"] = f / max(f - stats["skipped"], 1)
        for name in ("video", "audio"):
            if name in stats:
                s = stats[name]
                point[f"{name}_saved"] = s["skipped"] / f
                point[f"{name}_speedup"] = f / max(s["computed"], 1)
    else:
        point["saved"], point["speedup"] = 0.0, 1.0
    return point


def summary_line(family: str, p: dict) -> str:
    acc = " ".join(f"{k} {v:.1%}" for k, v in p["accuracy"].items() if v is not None)
    extra = f" video saved {p['video_saved']:.0%}" if "video_saved" in p else ""
    audio = f" audio SNR {p['audio_snr']:.1f} dB" if p.get("audio_snr") is not None else ""
    psnr_text = "" if p.get("psnr") is None else f" PSNR {p['psnr']:.1f} dB"
    return (f"{family:5} {p['kind']:12} {p['threshold'] if p['threshold'] is not None else '-':>6} saved "
            f"{p['saved']:.0%} ({p['speedup']:.2f}x){extra} | {acc} |{psnr_text}{audio} | {p['seconds']} s")


ACCURACY = {"ltxv": ("both",), "ltx2": ("color", "motion", "pitch")}  # the measures the target is judged on


def deltas(points: list[dict], keys: tuple[str, ...]) -> None:
    """Accuracy change in points against the uncached baseline (the first point), per measure, and the worst."""
    base = points[0]["accuracy"]
    for p in points:
        p["deltas"] = {k: 100 * (p["accuracy"][k] - base[k]) for k in keys
                       if p["accuracy"][k] is not None and base[k] is not None}
        p["delta_points"] = min(p["deltas"].values()) if p["deltas"] else None


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (family, title, key) in zip(axes, (("ltxv", "LTX-Video 0.9.x demo", "saved"),
                                              ("ltx2", "LTX-2 demo (video stream)", "video_saved"))):
        points = results.get(family, {}).get("points", [])
        if not points:
            ax.set_visible(False)
            continue
        twin = ax.twinx()
        for kind, marker in (("teacache", "o"), ("first_block", "s")):
            ps = sorted((p for p in points if p["kind"] == kind), key=lambda p: p[key])
            xs = [0.0] + [100 * p[key] for p in ps]
            ax.plot(xs, [0.0] + [p["delta_points"] for p in ps], marker=marker, label=f"{kind}: accuracy delta")
            twin.plot(xs, [None] + [p["psnr"] for p in ps], marker=marker, linestyle="--", alpha=0.6,
                      label=f"{kind}: PSNR to uncached")
            for p, x in zip(ps, xs[1:]):
                ax.annotate(f"{p['threshold']:g}", (x, p["delta_points"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.axhline(-2, color="red", linewidth=0.8, linestyle=":", label="target: -2 points")
        ax.axvline(100 / 3, color="grey", linewidth=0.8, linestyle=":", label="1.5x fewer forwards")
        ax.set_xlabel("transformer forwards skipped (%)")
        ax.set_ylabel(f"accuracy delta, points ({results[family]['accuracy_key']})")
        twin.set_ylabel("PSNR to the uncached video (dB)")
        ax.set_title(f"{title}, n = {results[family]['n']}")
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=("both", "ltxv", "ltx2"), default="both")
    p.add_argument("-n", type=int, default=48, help="0.9.x demo prompts per point (half seen, half held-out)")
    p.add_argument("--n-av", type=int, default=24, help="LTX-2 demo clips per point")
    p.add_argument("--teacache", type=float, nargs="*", default=[0.03, 0.05, 0.1, 0.2, 0.4])
    p.add_argument("--first-block", type=float, nargs="*", default=[0.05, 0.1, 0.2, 0.3, 0.4])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", type=Path, default=REPO / "outputs/eval_cache")
    p.add_argument("--plot", type=Path, default=REPO / "docs/step_cache_curve.png")
    p.add_argument("--replot", type=Path, help="only redraw the plot (and the deltas) from this eval_cache.json")
    args = p.parse_args()
    if args.replot is not None:
        results = json.loads(args.replot.read_text())
        finish(results, args.replot, args.plot)
        return
    torch.set_num_threads(1)
    policies = [None] + [CachePolicy("teacache", t) for t in args.teacache] + \
        [CachePolicy("first_block", t) for t in args.first_block]
    results = {}
    t0 = time.time()
    with torch.no_grad():
        if args.family in ("both", "ltxv"):
            points = run_ltxv(policies, args)
            results["ltxv"] = {"n": args.n, "points": points}
        if args.family in ("both", "ltx2"):
            points = run_ltx2(policies, args)
            results["ltx2"] = {"n": args.n_av, "points": points}
    results["settings"] = {"seed": args.seed, "batch": args.batch, "seconds": round(time.time() - t0, 1),
                           "threads": 1, "command": " ".join(["python", "tools/eval_cache.py", *sys.argv[1:]])}
    args.out.mkdir(parents=True, exist_ok=True)
    finish(results, args.out / "eval_cache.json", args.plot)


def finish(results: dict, path: Path, plot_path: Path) -> None:
    """Accuracy deltas, the JSON and the plot."""
    for family, keys in ACCURACY.items():
        if family in results:
            deltas(results[family]["points"], keys)
            results[family]["accuracy_key"] = "both" if keys == ("both",) else "worst of " + ", ".join(keys)
    with atomic_file(path, "w") as f:
        f.write(json.dumps(results, indent=1, default=str) + "\n")
    plot(results, plot_path)
    print(f"wrote {path} and {plot_path} ({results['settings']['seconds']} s)")


if __name__ == "__main__":
    main()
