#!/usr/bin/env python
"""The distillation table: the teacher at full steps, the teacher at the students' step counts, and students.

    python tools/eval_distill.py                                   # the teacher rows only
    python tools/eval_distill.py --student runs/distill_dmd4 --student runs/distill_step4 -n 96

Every row generates the same prompts as tools/eval_demo.py (`-n`: half seen, half held-out combinations)
with the same seeds, so row k's video j starts from the same noise as the teacher's video j. Columns:
steps, transformer forwards per video (steps x rows per step: 2 with CFG), wall time per video (this
machine, `--threads`), colour / motion accuracy (ltx.data.shapes_eval, from the pixels; seen and held-out),
and the distance to the 20-step CFG teacher's video of the same prompt and noise (PSNR in dB over [0, 1]
pixels, higher = closer; and the share of prompts whose detected colour and motion agree with the teacher's).

A student is a run folder of train/distill.py: its student.json (sigma grid, no guidance) and its
lora.safetensors (merged into the teacher's weights) or model.safetensors. Writes OUT/report.json, OUT/table.md
and a contact sheet (OUT/contact_sheet.png: one row per model, one column per prompt for the first six
prompts, frames 0 / middle / last).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from eval_demo import prompts as demo_prompts  # noqa: E402

from ltx.data.shapes_eval import evaluate  # noqa: E402
from ltx.ltxv.checkpoint import load_dit, load_vae, read_checkpoint  # noqa: E402
from ltx.ltxv.guidance import TextConditioning  # noqa: E402
from ltx.ltxv.lora import apply_lora_weights, load_lora_file, merge_lora, remove_lora  # noqa: E402
from ltx.ltxv.pipelines import PassOptions, SchedulerSpec, decode, denoise_pass  # noqa: E402
from ltx.ltxv.text import T5TextEncoder  # noqa: E402
from ltx.presets import PassConfig, load_preset  # noqa: E402


@dataclass
class Row:
    name: str
    sampling: PassConfig
    lora: Path | None = None
    checkpoint: Path | None = None

    @property
    def forwards(self) -> int:
        steps = len(self.sampling.timesteps) if self.sampling.timesteps else self.sampling.num_inference_steps
        return steps * (2 if self.sampling.guidance_scale[0] > 1 else 1)


def student_row(run: Path) -> Row:
    path = run / "student.json"
    if not path.is_file():
        raise SystemExit(f"error: --student {run}: no student.json there; pass a finished train.distill run_dir")
    try:
        info = json.loads(path.read_text())
        info["timesteps"], info["result"], info["method"]  # noqa: B018 - the keys this tool needs
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {path}: not a train.distill student.json ({e!r}); rerun it") from None
    if not (run / info["result"]).is_file():
        raise SystemExit(f"error: --student {run}: {info['result']} is missing; the run did not finish")
    p = PassConfig(timesteps=info["timesteps"], guidance_scale=[info.get("guidance_scale", 1.0)])
    result = run / info["result"]
    name = f"{run.name} ({info['method']}, {len(info['timesteps'])} steps)"
    return Row(name, p, lora=result if result.name.startswith("lora") else None,
               checkpoint=result if result.name.startswith("model") else None)


def load_model(row: Row, ckpt):
    dit = load_dit(row.checkpoint) if row.checkpoint else load_dit(ckpt)
    if row.lora is not None:
        apply_lora_weights(dit, load_lora_file(row.lora), "student", 1.0, dtype=torch.float32)
        merge_lora(dit)
        remove_lora(dit)
    return dit.eval()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().clamp(min=1e-10)
    return float(10 * torch.log10(1 / mse))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", type=Path, action="append", default=[], help="a train.distill run folder")
    p.add_argument("-n", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-steps", type=int, nargs="*", default=[4, 8], help="teacher rows besides 20 steps")
    p.add_argument("--grid", type=float, nargs="+", action="append", default=[],
                   help="extra teacher rows on an explicit sigma grid (with and without CFG)")
    p.add_argument("--out", type=Path, default=REPO / "outputs/eval_distill")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    preset = load_preset("ltx-demo")
    g, base = preset.generation, preset.sampling.first_pass
    ckpt = read_checkpoint(REPO / g.checkpoint_path)
    vae = load_vae(ckpt)
    t5 = T5TextEncoder(REPO / g.text_encoder_path, dtype=torch.float32, max_tokens=g.text_tokens)
    sched = SchedulerSpec.from_official(ckpt.extra.get("scheduler"), ckpt.extra.get("allowed_inference_steps"))

    rows = [Row(f"teacher, {base.num_inference_steps} steps, CFG {base.guidance_scale[0]:g}", base)]
    for n in args.teacher_steps:
        rows.append(Row(f"teacher, {n} steps, CFG {base.guidance_scale[0]:g}", replace(base, num_inference_steps=n)))
    for grid in args.grid:
        for cfg in (base.guidance_scale[0], 1.0):
            rows.append(Row(f"teacher, grid {grid}, CFG {cfg:g}", PassConfig(timesteps=grid, guidance_scale=[cfg])))
    rows += [student_row(r) for r in args.student]

    todo = demo_prompts(args.n, args.seed)
    captions = [c for _, c in todo]
    chunks = [captions[i : i + args.batch] for i in range(0, len(captions), args.batch)]
    text = [(t5.encode(c), t5.encode([g.negative_prompt] * len(c))) for c in chunks]
    args.out.mkdir(parents=True, exist_ok=True)
    results, reference, sheet = [], None, []
    for row in rows:
        dit = load_model(row, ckpt)
        videos, t0 = [], time.time()
        for b, start in enumerate(range(0, len(todo), args.batch)):
            (ctx, mask), (nctx, nmask) = text[b]
            gen = torch.Generator().manual_seed(args.seed + start)
            torch.manual_seed(args.seed + start)
            with torch.no_grad():
                lat = denoise_pass(dit, vae, TextConditioning(ctx, mask, nctx, nmask), row.sampling, sched,
                                   height=g.height, width=g.width, num_frames=g.num_frames, fps=g.fps, generator=gen,
                                   opts=PassOptions(stg_mode=preset.sampling.stg_mode))
                videos += list(decode(vae, lat))  # (3, F, H, W) in [0, 1]
        seconds = time.time() - t0
        report = evaluate((f"{i:04d}.mp4", v * 2 - 1, c) for i, (v, c) in enumerate(zip(videos, captions)))
        rj = report.to_json()
        det = [(r["color_ok"], r["motion_ok"]) for r in rj["items"]]
        first = reference is None
        if first:
            reference, ref_det = videos, det
        dist = None if first else sum(psnr(a, b) for a, b in zip(videos, reference)) / len(videos)
        agree = sum(a == b for a, b in zip(det, ref_det)) / len(det)
        results.append({"name": row.name, "forwards": row.forwards, "seconds_per_video": seconds / len(videos),
                        "psnr_to_teacher": dist, "agree_with_teacher": agree, **summary(rj)})
        print(format_row(results[-1]), flush=True)
        sheet.append((row.name, videos[:6]))
    table = "\n".join([HEADER, *map(format_row, results)])
    print("\n" + table)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "report.json").write_text(json.dumps({"n": len(todo), "rows": results}, indent=2) + "\n")
    model_sheet(args.out / "contact_sheet.png", sheet, captions[:6])


def model_sheet(path: Path, rows: list, captions: list[str], scale: int = 2) -> None:
    """One row per model, one column per prompt: frames 0, middle and last of each video side by side."""
    from PIL import Image, ImageDraw

    F, H, W = rows[0][1][0].shape[1:]
    tw, th, label, top = 3 * W * scale, H * scale, 300, 30
    sheet = Image.new("RGB", (label + len(captions) * (tw + 6), top + len(rows) * (th + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(captions):
        draw.text((label + j * (tw + 6), 2), c[:48], fill="black")
        draw.text((label + j * (tw + 6), 14), c[48:96], fill="black")
    for i, (name, videos) in enumerate(rows):
        y = top + i * (th + 6)
        draw.text((4, y + th // 2 - 6), name[:46], fill="black")
        for j, v in enumerate(videos):
            frames = torch.cat([v[:, k] for k in (0, F // 2, F - 1)], dim=-1)  # (3, H, 3W)
            img = (frames.clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            sheet.paste(Image.fromarray(img).resize((tw, th), Image.NEAREST), (label + j * (tw + 6), y))
    sheet.save(path)


def summary(rj: dict) -> dict:
    out = {}
    for split in ("seen", "heldout", "all"):
        s = rj["summary"][split]
        out[f"{split}_colour"], out[f"{split}_motion"] = s["color"], s["motion"]
    return out


HEADER = ("| model | forwards / video | s / video | colour (seen / held-out) | motion (seen / held-out) | "
          "PSNR to teacher | detections agree with teacher |\n|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    return (f"| {r['name']} | {r['forwards']} | {r['seconds_per_video']:.3f} | {pct(r['all_colour'])} "
            f"({pct(r['seen_colour'])} / {pct(r['heldout_colour'])}) | {pct(r['all_motion'])} "
            f"({pct(r['seen_motion'])} / {pct(r['heldout_motion'])}) | "
            f"{'(reference)' if r['psnr_to_teacher'] is None else format(r['psnr_to_teacher'], '.2f') + ' dB'} | "
            f"{pct(r['agree_with_teacher'])} |")


if __name__ == "__main__":
    main()
