#!/usr/bin/env python
"""The IC-LoRA control demo's evaluator: does the generated shape follow the control video?

    python tools/eval_control.py                                            # the bundled demo: the baseline
    python tools/eval_control.py --lora runs/control_lora/lora.safetensors \\
        --baseline outputs/eval_control/report.json --out outputs/eval_control_lora

Scenes (other seeds than the training clips of tools/make_control_data.py, seed 0):
- "seen": `--n` scenes of ShapesWorld(split="train", seed=--seed), the demo's own vocabulary and motions;
- "new motion": `--n-concept` scenes of ConceptWorld("up-right", seed=--seed), a diagonal motion the demo never
  learned (its caption says "moves to the upper right"): only the control can show it. The control data has none.
Each scene's control is its silhouette video (ltx.data.shapes.render_silhouette: the shapes white on black).

Every scene is generated twice with the same seed, by the demo (+ `--lora`): "text" (prompt only) and
"text + control" (prompt + the silhouette as a strength-1 guide, ltx/ltxv/conditioning.py), through the Python API
(`ltx.load_pipeline`, `pipe(..., control=[...])`) with the demo preset's sampling (20 steps, CFG 3). Scores,
from the pixels alone:
- control IoU: per frame, the dominant shape's colour mask in the video against its true silhouette
  (ltx.data.shapes_eval.control_iou), averaged over frames and scenes;
- colour and motion accuracy of the dominant shape (ltx.data.shapes_eval.detect; the new-motion group with
  the up-right detector, `concept_config`).
Without --lora the "text + control" rows show what the guide tokens do to a model never trained with them.
The ground-truth renders through the VAE give the ceiling. Writes OUT/report.json, OUT/table.md and
OUT/contact_sheet.png (per scene: control, text only, text + control; frames 0/4/8/12/16).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ltx  # noqa: E402
from ltx.core.checkpoint import atomic_file  # noqa: E402
from ltx.core.viz import save_video_grid  # noqa: E402
from ltx.data.shapes import ConceptWorld, ShapesWorld, render_silhouette  # noqa: E402
from ltx.data.shapes_eval import DetectorConfig, concept_config, control_iou, evaluate  # noqa: E402
from ltx.ltxv.conditioning import GuideItem  # noqa: E402

GROUPS = ("seen", "new motion")
CONDITIONS = ("text", "text + control")


def scenes(group: str, n: int, seed: int) -> list:
    world = ShapesWorld(split="train", num_samples=n, seed=seed) if group == "seen" else \
        ConceptWorld(concept="up-right", num_samples=n, seed=seed)
    return [world[i] for i in range(n)]


def detector(group: str) -> DetectorConfig:
    return DetectorConfig() if group == "seen" else concept_config("up-right")


@torch.no_grad()
def generate(pipe, samples, control: bool, *, batch: int, seed: int, steps: int | None) -> list[torch.Tensor]:
    """Videos (3, F, H, W) in [-1, 1], one per sample; batch k uses seed + k."""
    out = []
    for k in range(0, len(samples), batch):
        chunk = samples[k : k + batch]
        kw = {} if steps is None else {"num_inference_steps": steps}
        if control:
            sil = torch.stack([render_silhouette(s.params, s.video.shape[1], *s.video.shape[2:]) for s in chunk])
            kw["control"] = [GuideItem(sil, 1.0)]
        frames = pipe([s.caption for s in chunk], seed=seed + k // batch, **kw).frames
        out += [f * 2 - 1 for f in frames.float().cpu()]
    return out


def score(group: str, samples, videos) -> dict:
    report = evaluate(((f"{i:04d}", v, s.caption) for i, (s, v) in enumerate(zip(samples, videos))), detector(group))
    summ = report.summary()["all"]
    ious = [float(control_iou(v, s.params)) for s, v in zip(samples, videos)]
    return {"n": len(samples), "iou": sum(ious) / len(ious), "color": summ["color"], "motion": summ["motion"],
            "ious": ious}


def vae_ceiling(pipe, group: str, samples) -> dict:
    with torch.no_grad():
        videos = []
        for s in samples:
            z = pipe.vae.encode(s.video[None].to(pipe.device, pipe.dtype))
            videos.append(pipe.vae.decode(z)[0].float().cpu().clamp(-1, 1))
    return score(group, samples, videos)


def contact_sheet(path: Path, rows: list[tuple[str, list[torch.Tensor]]]) -> None:
    save_video_grid(path, [v for _, vs in rows for v in vs])


def check_args(args, out: Path) -> str | None:
    """What is wrong with the arguments (one line), or None; checked before anything loads or is written."""
    import math

    if args.lora is not None and not args.lora.is_file() and not args.lora.is_dir():
        return f"--lora {args.lora} does not exist"
    if not math.isfinite(args.lora_strength):
        return f"--lora-strength must be a finite number, got {args.lora_strength}"
    if args.n < 0 or args.n_concept < 0 or args.n + args.n_concept == 0:
        return f"--n {args.n} / --n-concept {args.n_concept}: give counts >= 0, not both 0"
    for name in ("batch", "threads", "steps"):
        v = getattr(args, name)
        if v is not None and v < 1:
            return f"--{name} {v}: give an integer >= 1"
    if args.baseline is not None and not args.baseline.is_file():
        return f"--baseline {args.baseline} does not exist (a report.json of an earlier run)"
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"--out {out}: {existing} is a file, not a folder"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora", type=Path, default=None, help="the IC-LoRA (train.finetune reference_video=true)")
    ap.add_argument("--lora-strength", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=64, help="seen scenes")
    ap.add_argument("--n-concept", type=int, default=64, help="new-motion (up-right) scenes")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    ap.add_argument("--baseline", type=Path, default=None, help="a report.json to compare with")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    out = args.out or REPO / ("outputs/eval_control" if args.lora is None else "outputs/eval_control_lora")
    problem = check_args(args, out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    loras = [(str(args.lora), args.lora_strength)] if args.lora else []
    try:
        pipe = ltx.load_pipeline(loras=loras, device="cpu", dtype="float32")
    except (ValueError, OSError) as e:  # not a LoRA, or not one for the demo transformer
        print(f"error: --lora {args.lora}: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results: dict = {}
    sheet = []
    for group, n in zip(GROUPS, (args.n, args.n_concept)):
        if n == 0:
            continue
        samples = scenes(group, n, args.seed)
        results[group] = {"vae ceiling": vae_ceiling(pipe, group, samples)}
        for cond in CONDITIONS:
            videos = generate(pipe, samples, cond == "text + control", batch=args.batch, seed=args.seed,
                              steps=args.steps)
            results[group][cond] = score(group, samples, videos)
            results[group].setdefault("_videos", {})[cond] = videos[:4]
        for i, s in enumerate(samples[:4]):
            sil = render_silhouette(s.params, s.video.shape[1], *s.video.shape[2:])
            sheet.append((f"{group} {i}", [sil, results[group]["_videos"]["text"][i],
                                           results[group]["_videos"]["text + control"][i]]))
        results[group].pop("_videos")
    name = "bundled demo" if args.lora is None else f"demo + {args.lora.name}"
    lines = ["| model | scenes | condition | n | control IoU | colour | motion |", "|---|---|---|---|---|---|---|"]
    for group, rows in results.items():
        for cond, r in rows.items():
            lines.append(f"| {name if cond != 'vae ceiling' else 'VAE round trip'} | {group} | {cond} | {r['n']} | "
                         f"{r['iou']:.3f} | {r['color']:.1%} | {r['motion']:.1%} |")
    table = "\n".join(lines)
    print(table)
    if args.baseline is not None:
        base = json.loads(args.baseline.read_text())["results"]
        for group in results:
            if group in base:
                b, r = base[group]["text"], results[group]["text + control"]
                print(f"{group}: control IoU {r['iou']:.3f} vs the baseline's text-only {b['iou']:.3f}; colour "
                      f"{100 * (r['color'] - b['color']):+.1f} points (target: within 3)")
    report = {"lora": str(args.lora) if args.lora else None, "seed": args.seed, "seconds": round(time.time() - t0, 1),
              "results": {g: {c: {k: v for k, v in r.items()} for c, r in rows.items()} for g, rows in results.items()}}
    for name, text in (("report.json", json.dumps(report, indent=2)), ("table.md", table)):
        with atomic_file(out / name, "w") as f:
            f.write(text + "\n")
    contact_sheet(out / "contact_sheet.png", sheet)
    print(f"wrote {out}/report.json, table.md, contact_sheet.png ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
