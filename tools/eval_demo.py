#!/usr/bin/env python
"""Prompt-following accuracy of the demo model: generate ShapesWorld prompts, detect colour and motion.

    python tools/eval_demo.py                      # 96 prompts (48 seen, 48 held-out), default sampler settings
    python tools/eval_demo.py -n 32 --steps 10 --guidance 4 --out outputs/eval_demo_g4

Prompts are ShapesWorld captions: half from the training split (seen colour x shape x motion triples, new
scenes), half from the held-out split (the dominant shape is a triple never shown in training). Videos are
generated with the demo preset's sampling defaults (configs/model/ltx-demo.yaml) unless overridden, written
as mp4 + prompts.json to --out (so `python tools/eval_shapes.py OUT` re-scores them), and scored by
`ltx.data.shapes_eval` (from the pixels alone). Prints the table and writes OUT/report.json and a contact
sheet of the first videos (OUT/contact_sheet.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omegaconf import OmegaConf  # noqa: E402

from ltx.core.viz import save_video_grid  # noqa: E402
from ltx.data.shapes import ShapesWorld  # noqa: E402
from ltx.data.shapes_eval import evaluate, write_mp4  # noqa: E402
from ltx.ltxv.checkpoint import load_dit, load_vae, read_checkpoint  # noqa: E402
from ltx.ltxv.guidance import TextConditioning  # noqa: E402
from ltx.ltxv.pipelines import PassOptions, SchedulerSpec, decode, denoise_pass  # noqa: E402
from ltx.ltxv.text import T5TextEncoder  # noqa: E402
from ltx.presets import ModelPreset  # noqa: E402


def prompts(n: int, seed: int, p_two_shapes: float = 0.5) -> list[tuple[str, str]]:
    """(split, caption) pairs: n // 2 seen, n - n // 2 held-out."""
    out = []
    for split, k in (("train", n // 2), ("heldout", n - n // 2)):
        world = ShapesWorld(split=split, num_samples=k, seed=seed, p_two_shapes=p_two_shapes)
        out += [(split, world[i].caption) for i in range(k)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=96, help="number of prompts (half seen, half held-out)")
    p.add_argument("--preset", type=Path, default=REPO / "configs/model/ltx-demo.yaml")
    p.add_argument("--checkpoint", type=Path, help="default: the preset's bundled weights")
    p.add_argument("--text-encoder", type=Path, help="default: the preset's text encoder folder")
    p.add_argument("--steps", type=int, help="override the preset's step count")
    p.add_argument("--guidance", type=float, help="override the preset's CFG scale")
    p.add_argument("--stg", type=float, help="override the preset's STG scale")
    p.add_argument("--stg-blocks", type=int, nargs="+", help="override the preset's STG blocks")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1234, help="prompt sampling and generation seed")
    p.add_argument("--out", type=Path, default=REPO / "outputs/eval_demo")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--p-two-shapes", type=float, default=0.5,
                   help="share of two-shape prompts (training distribution: 0.5; 0 = single shapes only)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), OmegaConf.load(args.preset)))
    g = preset.generation
    first = preset.sampling.first_pass
    if args.steps is not None:
        first = dataclasses.replace(first, num_inference_steps=args.steps, timesteps=None)
    if args.guidance is not None:
        first = dataclasses.replace(first, guidance_scale=[args.guidance] * len(first.guidance_scale))
    if args.stg is not None:
        first = dataclasses.replace(first, stg_scale=[args.stg] * len(first.stg_scale))
    if args.stg_blocks is not None:
        first = dataclasses.replace(first, skip_block_list=[list(args.stg_blocks)] * len(first.skip_block_list))
    ckpt = read_checkpoint(args.checkpoint or REPO / g.checkpoint_path)
    dit, vae = load_dit(ckpt), load_vae(ckpt)
    t5 = T5TextEncoder(args.text_encoder or REPO / g.text_encoder_path, dtype=torch.float32, max_tokens=g.text_tokens)
    sched = SchedulerSpec.from_official(ckpt.extra.get("scheduler"), ckpt.extra.get("allowed_inference_steps"))
    args.out.mkdir(parents=True, exist_ok=True)

    todo = prompts(args.n, args.seed, args.p_two_shapes)
    videos, names = [], []
    t0 = time.time()
    for start in range(0, len(todo), args.batch):
        chunk = [c for _, c in todo[start : start + args.batch]]
        ctx, mask = t5.encode(chunk)
        nctx, nmask = t5.encode([g.negative_prompt] * len(chunk))
        gen = torch.Generator().manual_seed(args.seed + start)
        torch.manual_seed(args.seed + start)
        with torch.no_grad():
            latents = denoise_pass(dit, vae, TextConditioning(ctx, mask, nctx, nmask), first, sched, height=g.height,
                                   width=g.width, num_frames=g.num_frames, fps=g.fps, generator=gen,
                                   opts=PassOptions(stg_mode=preset.sampling.stg_mode,
                                                    stochastic=preset.sampling.stochastic_sampling))
            frames = decode(vae, latents) * 2 - 1  # (B, 3, F, H, W) in [-1, 1]
        for k, v in enumerate(frames):
            name = f"{start + k:04d}_{todo[start + k][0]}.mp4"
            write_mp4(args.out / name, v, fps=int(g.fps))
            videos.append(v)
            names.append(name)
        print(f"  generated {len(videos)}/{len(todo)} ({time.time() - t0:.0f} s)", flush=True)
    (args.out / "prompts.json").write_text(json.dumps({n: c for n, (_, c) in zip(names, todo)}, indent=2) + "\n")
    report = evaluate((n, v, c) for n, v, (_, c) in zip(names, videos, todo))
    settings = {"steps": first.num_inference_steps, "guidance": first.guidance_scale, "stg": first.stg_scale,
                "stg_blocks": first.skip_block_list, "n": len(todo),
                "p_two_shapes": args.p_two_shapes,
                "seconds": round(time.time() - t0, 1)}
    print(f"\nShapesWorld prompt following, demo model ({settings})")
    print(report.table())
    (args.out / "report.json").write_text(json.dumps({"settings": settings, **report.to_json()}, indent=2) + "\n")
    save_video_grid(args.out / "contact_sheet.png", videos[:6] + videos[len(videos) // 2 : len(videos) // 2 + 6])
    print(f"wrote {args.out}/report.json, contact_sheet.png and {len(videos)} mp4s")


if __name__ == "__main__":
    main()
