#!/usr/bin/env python
"""The new-concept fine-tuning experiment's evaluator: new-concept accuracy, base accuracy kept, I2V kept.

    python tools/eval_concept.py                                     # the bundled demo model: the baseline
    python tools/eval_concept.py --lora runs/finetune/lora.safetensors --lora-strength 1.0 \\
        --baseline outputs/eval_concept/report.json --out outputs/eval_concept_lora
    python tools/eval_concept.py --checkpoint runs/finetune/ltx-demo-ft.safetensors --name full-ft

Three measurements, each from the pixels alone (ltx.data.shapes_eval, with the concept's detector enabled:
`concept_config`), with the demo preset's sampling defaults (20 steps, CFG 3) unless overridden:
1. New concept: `--n-concept` prompts from ConceptWorld(concept, seed=--seed); the data for training comes from
   tools/make_concept_data.py with another seed (default 0), so these scenes are not training clips (captions
   can still repeat verbatim, the grammar being small: `--train-data` counts them). The score is the
   concept's attribute of the dominant shape (motion for a motion, colour for a colour); both are reported.
   The VAE ceiling is the same score on VAE reconstructions of the prompts' ground-truth clips.
2. Base: the seen-split prompts of tools/eval_demo.py (`prompts(2 n, seed)`, its first half) with its
   per-batch seeds, so with no LoRA these are exactly eval_demo's seen videos of `-n 2n`. Scored with the
   concept's detector (a base shape drifting into the new motion counts as wrong) and, for comparison with
   eval_demo, the palette-only detector (`palette_only`).
3. I2V: `--n-i2v` base and `--n-i2v` concept prompts, each conditioned at frame 0 (strength 1) on the first
   frame of its own ground-truth clip, written as a PNG (OUT/i2v_*/NNNN_first.png: the generate app's
   `conditioning=[{path: ..., frame: 0}]` reproduces it) and loaded as the app does (`--app-preprocessing`
   adds its blur + CRF 29). PSNR (dB, [0, 1] pixels) of generated frame 0 vs that image; the ceiling is the
   VAE reconstruction's frame 0 of the ground-truth clip.

Prints a markdown table row (and, with `--baseline REPORT`, the differences and the experiment's targets:
new concept >= 85%, base colour and motion each down <= 3 points, I2V PSNR down <= 0.5 dB), writes
OUT/report.json, OUT/row.md, a contact sheet (OUT/contact_sheet.png: concept, base, I2V concept rows) and
every video as mp4 + prompts.json per group.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from eval_demo import prompts as demo_prompts  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ltx.core.media import load_image  # noqa: E402
from ltx.core.viz import save_video_grid  # noqa: E402
from ltx.data.shapes import CONCEPTS, ConceptWorld, ShapesWorld, concept_extras  # noqa: E402
from ltx.data.shapes_eval import DetectorConfig, Report, concept_config, evaluate, write_mp4  # noqa: E402
from ltx.ltxv.checkpoint import load_dit, load_vae, read_checkpoint  # noqa: E402
from ltx.ltxv.conditioning import ConditioningItem  # noqa: E402
from ltx.ltxv.guidance import TextConditioning  # noqa: E402
from ltx.ltxv.lora import apply_lora_weights, load_lora_file, merge_lora, remove_lora  # noqa: E402
from ltx.ltxv.pipelines import PassOptions, SchedulerSpec, decode, denoise_pass, encoder  # noqa: E402
from ltx.ltxv.text import T5TextEncoder  # noqa: E402
from ltx.presets import ModelPreset  # noqa: E402

# Targets of the experiment (README of the fine-tuning demo): checked against --baseline.
TARGET_CONCEPT = 0.85
MAX_BASE_DROP = 0.03
MAX_PSNR_DROP = 0.5
SEED_OFFSETS = {"base": 0, "concept": 10_000, "i2v_base": 20_000, "i2v_concept": 30_000}  # generation seeds


# ---------------------------------------------------------------------------------------------- models

def apply_loras(dit: torch.nn.Module, loras: list[dict]) -> torch.nn.Module:
    """ADAPT HERE if ltx.ltxv.lora's API changes: the one place LoRAs touch the model.

    loras: [{"path": ..., "strength": ...}], the generate app's `loras=` entries. Applied as the app does
    (infer/generate.py): fp32 adapters "lora0", "lora1", ..., merged into the weights, then removed.
    """
    if not loras:
        return dit
    for i, spec in enumerate(loras):
        print(apply_lora_weights(dit, load_lora_file(spec["path"]), f"lora{i}", float(spec["strength"]),
                                 dtype=torch.float32))
    merge_lora(dit)
    remove_lora(dit)
    return dit


@dataclass
class Models:
    dit: torch.nn.Module
    vae: torch.nn.Module
    t5: T5TextEncoder
    sched: SchedulerSpec
    first: object  # the preset's first PassConfig, with overrides
    generation: object  # the preset's GenerationDefaults
    opts: dict  # PassOptions fields


def load_models(args: argparse.Namespace) -> Models:
    preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), OmegaConf.load(args.preset)))
    g, first = preset.generation, preset.sampling.first_pass
    if args.steps is not None:
        first = dataclasses.replace(first, num_inference_steps=args.steps, timesteps=None)
    if args.guidance is not None:
        first = dataclasses.replace(first, guidance_scale=[args.guidance] * len(first.guidance_scale))
    ckpt = read_checkpoint(args.checkpoint or REPO / g.checkpoint_path)
    dit, vae = load_dit(ckpt), load_vae(ckpt)
    dit = apply_loras(dit, [{"path": p, "strength": s} for p, s in zip(args.lora, args.lora_strength)])
    t5 = T5TextEncoder(args.text_encoder or REPO / g.text_encoder_path, dtype=torch.float32, max_tokens=g.text_tokens)
    sched = SchedulerSpec.from_official(ckpt.extra.get("scheduler"), ckpt.extra.get("allowed_inference_steps"))
    opts = dict(stg_mode=preset.sampling.stg_mode, stochastic=preset.sampling.stochastic_sampling)
    return Models(dit.eval(), vae.eval(), t5, sched, first, g, opts)


@torch.no_grad()
def generate(m: Models, captions: list[str], seed: int, batch: int, first_frames: Tensor | None = None,
             image_cond_noise_scale: float = 0.15) -> list[Tensor]:
    """One video (3, F, H, W) in [-1, 1] per caption, as tools/eval_demo.py makes them (batch b uses seeds
    seed + b * batch); first_frames (N, 3, 1, H, W) in [-1, 1]: frame-0 conditioning, strength 1."""
    g, out = m.generation, []
    for start in range(0, len(captions), batch):
        chunk = captions[start : start + batch]
        ctx, mask = m.t5.encode(chunk)
        nctx, nmask = m.t5.encode([g.negative_prompt] * len(chunk))
        gen = torch.Generator().manual_seed(seed + start)
        torch.manual_seed(seed + start)
        items, opts = (), PassOptions(**m.opts)
        if first_frames is not None:
            items = [ConditioningItem(first_frames[start : start + batch], frame=0, strength=1.0)]
            opts = PassOptions(**m.opts, image_cond_noise_scale=image_cond_noise_scale)
        latents = denoise_pass(m.dit, m.vae, TextConditioning(ctx, mask, nctx, nmask), m.first, m.sched,
                               height=g.height, width=g.width, num_frames=g.num_frames, fps=g.fps, generator=gen,
                               items=items, opts=opts)
        out += list(decode(m.vae, latents) * 2 - 1)
    return out


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, videos: list[Tensor], batch: int = 32) -> list[Tensor]:
    """VAE encode -> decode of (3, F, H, W) clips in [-1, 1] (the ceiling of anything decoded by this VAE)."""
    enc, out = encoder(vae), []
    torch.manual_seed(0)  # the encoder's posterior sample uses the global RNG
    for i in range(0, len(videos), batch):
        out += list(decode(vae, enc(torch.stack(videos[i : i + batch]))) * 2 - 1)
    return out


# ---------------------------------------------------------------------------------------------- scoring

def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [-1, 1], on the [0, 1] scale."""
    mse = ((a.float() - b.float()) / 2).square().mean().item()
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def quantize(video: Tensor) -> Tensor:
    """[-1, 1] -> the uint8 levels an image file holds, back in [-1, 1]."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def write_png(path: Path, frame: Tensor) -> None:
    from PIL import Image

    rgb = ((frame.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    Image.fromarray(rgb).save(path)


def load_png(path: Path, height: int, width: int, official: bool) -> Tensor:
    """The conditioning image as the generate app loads it -> (1, 3, 1, H, W) in [-1, 1]."""
    return load_image(str(path), height, width, official)


def group_summary(report: Report, group: str) -> dict:
    s = report.summary()[group]
    return {"n": s["n"], "color": s["color"], "motion": s["motion"], "both": s["both"]}


def save_group(folder: Path, names: list[str], videos: list[Tensor], captions: list[str], fps: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, v in zip(names, videos):
        write_mp4(folder / n, v, fps=fps)
    (folder / "prompts.json").write_text(json.dumps(dict(zip(names, captions)), indent=1) + "\n")


def caption_overlap(train_data: Path, concept: str, seed: int, report: Report, score: str) -> dict:
    """Check the evaluation scenes are not the training clips; count the prompts whose caption repeats a training
    caption verbatim, and score the new concept on the others alone."""
    meta = json.loads((train_data / "concept_data.json").read_text())
    if meta["concept"] == concept and meta["seed"] == seed:
        raise SystemExit(f"--seed {seed} is the training data's seed ({train_data}): the evaluation prompts would be "
                         "the training clips; use another --seed")
    train = {c["caption"] for c in meta["clips"]}
    novel = [r for r in report.items if r.prompt not in train]
    ok = [getattr(r, f"{score}_ok") for r in novel]
    return {"train_data": str(train_data), "train_seed": meta["seed"], "n": len(report.items),
            "concept_prompts_with_a_training_caption": len(report.items) - len(novel),
            "concept_novel_captions": {"n": len(novel), score: sum(ok) / len(ok) if ok else None}}


# ---------------------------------------------------------------------------------------------- report

def headline(report: dict) -> dict[str, float]:
    c, b, i = report["concept"], report["base"], report["i2v"]
    return {"concept": c[c["score"]], "concept_color": c["color"], "concept_motion": c["motion"],
            "base_color": b["color"], "base_motion": b["motion"], "i2v_psnr": i["psnr"],
            "i2v_psnr_base": i["base"]["psnr"], "i2v_psnr_concept": i["concept"]["psnr"]}


def table_header(concept: str, score: str) -> str:
    return (f"| run | new concept `{concept}` ({score}) | new concept colour / motion | base colour | base motion | "
            "I2V frame-0 PSNR (base / concept) | n concept / base / I2V | time |\n|---|---|---|---|---|---|---|---|")


def table_row(report: dict) -> str:
    h, n, s = headline(report), report["n"], report["settings"]
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    return (f"| {report['name']} | {pct(h['concept'])} (VAE ceiling {pct(report['concept']['ceiling'])}) | "
            f"{pct(h['concept_color'])} / {pct(h['concept_motion'])} | {pct(h['base_color'])} | "
            f"{pct(h['base_motion'])} | {h['i2v_psnr']:.2f} dB ({h['i2v_psnr_base']:.2f} / "
            f"{h['i2v_psnr_concept']:.2f}; ceiling {report['i2v']['psnr_ceiling']:.2f}) | "
            f"{n['concept']} / {n['base']} / {n['i2v']} | {s['seconds']:.0f} s |")


def compare(report: dict, baseline: dict) -> dict:
    """Differences to a baseline report and the experiment's targets."""
    now, before = headline(report), headline(baseline)
    delta = {k: now[k] - before[k] for k in now}
    targets = {
        f"new concept >= {TARGET_CONCEPT:.0%}": now["concept"] >= TARGET_CONCEPT,
        f"base colour drop <= {100 * MAX_BASE_DROP:.0f} points": -delta["base_color"] <= MAX_BASE_DROP + 1e-9,
        f"base motion drop <= {100 * MAX_BASE_DROP:.0f} points": -delta["base_motion"] <= MAX_BASE_DROP + 1e-9,
        f"I2V PSNR drop <= {MAX_PSNR_DROP} dB": -delta["i2v_psnr"] <= MAX_PSNR_DROP,
    }
    return {"baseline": baseline["name"], "delta": delta, "targets": targets, "all_met": all(targets.values())}


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concept", default="up-right", choices=CONCEPTS)
    p.add_argument("--checkpoint", type=Path, help="default: the preset's bundled weights (or a full fine-tune)")
    p.add_argument("--text-encoder", type=Path, help="default: the preset's text encoder folder")
    p.add_argument("--lora", type=Path, action="append", default=[], help="a LoRA file (repeatable)")
    p.add_argument("--lora-strength", type=float, action="append", default=[],
                   help="strength of each --lora, in order (default 1.0)")
    p.add_argument("--name", help="the run's name in the table (default: the LoRA / checkpoint file, or 'demo')")
    p.add_argument("--preset", type=Path, default=REPO / "configs/model/ltx-demo.yaml")
    p.add_argument("--n-concept", type=int, default=96, help="new-concept prompts")
    p.add_argument("--n-base", type=int, default=96, help="base (seen-split) prompts")
    p.add_argument("--n-i2v", type=int, default=16, help="I2V prompts per group (base and concept)")
    p.add_argument("--seed", type=int, default=1234, help="prompt and generation seed (not the training data's)")
    p.add_argument("--steps", type=int, help="override the preset's step count")
    p.add_argument("--guidance", type=float, help="override the preset's CFG scale")
    p.add_argument("--image-cond-noise-scale", type=float, default=0.15, help="as the generate app (default 0.15)")
    p.add_argument("--app-preprocessing", action="store_true",
                   help="blur + CRF-29 the conditioning image as the generate app's official preprocessing")
    p.add_argument("--batch", type=int, default=8, help="as tools/eval_demo.py (it sets the per-batch seeds)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-data", type=Path, help="a make_concept_data folder: check seeds, count shared captions")
    p.add_argument("--baseline", type=Path, help="a report.json of this tool to compare with (targets)")
    p.add_argument("--out", type=Path, default=REPO / "outputs/eval_concept")
    args = p.parse_args(argv)
    if len(args.lora_strength) > len(args.lora):
        p.error("more --lora-strength than --lora values")
    args.lora_strength += [1.0] * (len(args.lora) - len(args.lora_strength))
    if min(args.n_concept, args.n_base, args.n_i2v) < 1:
        p.error("--n-concept, --n-base and --n-i2v must be >= 1")
    name = args.name or (args.lora[0].stem if args.lora else args.checkpoint.stem if args.checkpoint else "demo")
    torch.set_num_threads(args.threads)
    t0 = time.time()

    m = load_models(args)
    g = m.generation
    fps = int(g.fps)
    size = dict(frames=g.num_frames, height=g.height, width=g.width, seed=args.seed)
    cfg = concept_config(args.concept)
    score = "motion" if concept_extras(args.concept)[1] else "color"
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {}

    # 1. new concept
    t = time.time()
    world = ConceptWorld(concept=args.concept, num_samples=max(args.n_concept, args.n_i2v), **size)
    concept_samples = [world[i] for i in range(world.num_samples)]
    captions = [s.caption for s in concept_samples[: args.n_concept]]
    videos = generate(m, captions, args.seed + SEED_OFFSETS["concept"], args.batch)
    names = [f"{i:04d}_concept.mp4" for i in range(len(captions))]
    concept_report = evaluate(zip(names, videos, captions), cfg)
    truth = [s.video for s in concept_samples[: args.n_concept]]
    ceiling_report = evaluate(zip(names, reconstruct(m.vae, truth), captions), cfg)
    save_group(args.out / "concept", names, videos, captions, fps)
    contact = videos[:6]
    seconds["concept"] = time.time() - t
    print(f"  new concept: {len(videos)} videos ({seconds['concept']:.0f} s)", flush=True)  # the first includes warm-up

    # 2. base: eval_demo's seen prompts and seeds
    t = time.time()
    base_captions = [c for split, c in demo_prompts(2 * args.n_base, args.seed) if split == "train"]
    base_videos = generate(m, base_captions, args.seed + SEED_OFFSETS["base"], args.batch)
    base_names = [f"{i:04d}_train.mp4" for i in range(len(base_captions))]
    base_report = evaluate(zip(base_names, base_videos, base_captions), cfg)
    palette_report = evaluate(zip(base_names, base_videos, base_captions), DetectorConfig())
    save_group(args.out / "base", base_names, base_videos, base_captions, fps)
    contact += base_videos[:6]
    seconds["base"] = time.time() - t
    print(f"  base: {len(base_videos)} videos ({seconds['base']:.0f} s)", flush=True)

    # 3. I2V: frame 0 = the first frame of each prompt's ground-truth clip
    t = time.time()
    base_world = ShapesWorld(split="train", num_samples=args.n_i2v, **size)
    i2v = {}
    for group, samples in (("base", [base_world[i] for i in range(args.n_i2v)]),
                           ("concept", concept_samples[: args.n_i2v])):
        folder = args.out / f"i2v_{group}"
        folder.mkdir(parents=True, exist_ok=True)
        firsts = []
        for i, s in enumerate(samples):
            write_png(folder / f"{i:04d}_first.png", s.video[:, 0])
            firsts.append(load_png(folder / f"{i:04d}_first.png", g.height, g.width, args.app_preprocessing)[0])
        caps = [s.caption for s in samples]
        vids = generate(m, caps, args.seed + SEED_OFFSETS[f"i2v_{group}"], args.batch, torch.stack(firsts),
                        args.image_cond_noise_scale)
        truth_first = [quantize(s.video[:, :1]) for s in samples]  # the PNG's pixels (3, 1, H, W)
        psnrs = [psnr(v[:, :1], f) for v, f in zip(vids, truth_first)]
        ceiling = [psnr(r[:, :1], f) for r, f in zip(reconstruct(m.vae, [s.video for s in samples]), truth_first)]
        nm = [f"{i:04d}_i2v_{group}.mp4" for i in range(len(caps))]
        rep = evaluate(zip(nm, vids, caps), cfg)
        save_group(folder, nm, vids, caps, fps)
        i2v[group] = {"n": len(vids), "psnr": sum(psnrs) / len(psnrs), "psnr_ceiling": sum(ceiling) / len(ceiling),
                      "accuracy": group_summary(rep, "concept" if group == "concept" else "seen"),
                      "psnr_items": [round(x, 3) for x in psnrs]}
        if group == "concept":
            contact += vids[:4]
    all_psnr = i2v["base"]["psnr_items"] + i2v["concept"]["psnr_items"]
    ceilings = [i2v[k]["psnr_ceiling"] * i2v[k]["n"] for k in ("base", "concept")]
    seconds["i2v"] = time.time() - t
    print(f"  I2V: {2 * args.n_i2v} videos ({seconds['i2v']:.0f} s)", flush=True)

    report = {
        "name": name,
        "concept": {"name": args.concept, "score": score, **group_summary(concept_report, "concept"),
                    "ceiling": group_summary(ceiling_report, "concept")[score],
                    "ceiling_detail": group_summary(ceiling_report, "concept")},
        "base": {**group_summary(base_report, "seen"), "palette_only": group_summary(palette_report, "seen")},
        "i2v": {"psnr": sum(all_psnr) / len(all_psnr), "psnr_ceiling": sum(ceilings) / len(all_psnr), **i2v},
        "n": {"concept": len(captions), "base": len(base_captions), "i2v": len(all_psnr)},
        "settings": {"checkpoint": str(args.checkpoint or g.checkpoint_path), "text_encoder": str(args.text_encoder
                     or g.text_encoder_path), "loras": [{"path": str(p), "strength": s} for p, s in
                     zip(args.lora, args.lora_strength)], "steps": m.first.num_inference_steps,
                     "guidance": m.first.guidance_scale, "seed": args.seed, "batch": args.batch,
                     "image_cond_noise_scale": args.image_cond_noise_scale,
                     "app_preprocessing": args.app_preprocessing, "detector": dataclasses.asdict(cfg),
                     "seconds": round(time.time() - t0, 1), "seconds_per_group": {k: round(v, 1) for k, v in
                                                                                  seconds.items()}},
    }
    if args.train_data is not None:
        report["train_data"] = caption_overlap(args.train_data, args.concept, args.seed, concept_report, score)
    if args.baseline is not None:
        report["comparison"] = compare(report, json.loads(args.baseline.read_text()))
    report["items"] = {"concept": concept_report.to_json()["items"], "base": base_report.to_json()["items"]}

    row = table_row(report)
    print(f"\nnew-concept experiment ({report['settings']['seconds']:.0f} s): {args.concept!r}, {name}")
    print(table_header(args.concept, score))
    print(row)
    if "train_data" in report:
        t = report["train_data"]
        novel = t["concept_novel_captions"]
        shown = "-" if novel[score] is None else f"{novel[score]:.1%}"
        print(f"{t['concept_prompts_with_a_training_caption']} of {t['n']} concept prompts repeat a training caption; "
              f"on the other {novel['n']}: {score} {shown}")
    if "comparison" in report:
        c = report["comparison"]
        print(f"\nvs {c['baseline']}: " + ", ".join(f"{k} {v:+.3f}" for k, v in c["delta"].items()))
        for target, ok in c["targets"].items():
            print(f"  [{'x' if ok else ' '}] {target}")
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "row.md").write_text(table_header(args.concept, score) + "\n" + row + "\n")
    save_video_grid(args.out / "contact_sheet.png", contact)
    print(f"wrote {args.out}/report.json, row.md, contact_sheet.png and the videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
