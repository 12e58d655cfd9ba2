#!/usr/bin/env python
"""Write a small fine-tuning dataset that teaches the demo model a new concept, as real mp4 files + captions.

    python tools/make_concept_data.py data/concept_up_right                   # 64 concept + 32 base clips
    python tools/make_concept_data.py data/concept_cyan --concept cyan --num-concept 128
    python tools/make_concept_data.py data/concept_folder --layout folder     # OUT/*.mp4 + OUT/*.txt captions
    python tools/make_concept_data.py data/distill_base --num-concept 0 --num-base 512 --seed 7  # base clips only

The files are what a user would bring: H.264 mp4s (ltx.data.shapes_eval.write_mp4, yuv420p, CRF 18) with
captions, read by the trainer through the ordinary dataset path (ltx.data.manifest.read_dataset):
- `--layout manifest` (default): OUT/videos/<name>.mp4 and OUT/manifest.jsonl, one
  {"media_path": "videos/<name>.mp4", "caption": "..."} per line (paths relative to the manifest).
- `--layout folder`: OUT/<name>.mp4 with the caption in OUT/<name>.txt beside it.
Both also write OUT/concept_data.json (not read by the trainer): the settings and every clip's scene
parameters, so tools/eval_concept.py --train-data OUT can check that its prompts are not the training clips.

Clips:
- `--num-concept` clips of ltx.data.shapes.ConceptWorld(concept, seed): the dominant shape shows the new
  concept (default "up-right" = "moves to the upper right"; its other attributes, the optional second shape
  and the background vary as in training).
- `--num-base` clips of ShapesWorld(split="train", seed): the demo's own training distribution, replayed so
  that the fine-tune keeps the old words (prior preservation, as in DreamBooth). Default 32 = one third of the
  set: enough that each of the 5 motions appears ~6 times; 0 trains on the concept alone.
The evaluator's prompts use other seeds (tools/eval_concept.py --seed, default 1234), so its scenes are not
these clips. Deterministic: the same arguments give the same captions and the same frames (mp4 bytes too on
one machine and library version).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ltx.data.shapes import CONCEPTS, ConceptWorld, ShapesWorld, check_video_size  # noqa: E402
from ltx.data.shapes_eval import write_mp4  # noqa: E402

LAYOUTS = ("manifest", "folder")


def make_concept_data(out: str | Path, *, concept: str = "up-right", num_concept: int = 64, num_base: int = 32,
                      seed: int = 0, frames: int = 17, height: int = 64, width: int = 64, fps: int = 8, crf: int = 18,
                      layout: str = "manifest", overwrite: bool = False) -> Path:
    """Write the dataset to `out` (see the file docstring); returns the manifest (or, for a folder, `out`)."""
    out = Path(out)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if num_concept < 0 or num_base < 0 or num_concept + num_base < 1:
        raise ValueError(f"need num_concept >= 0 and num_base >= 0 with at least one clip, got {num_concept}, "
                         f"{num_base}")
    check_video_size(frames, height, width)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    media_dir = out / "videos" if layout == "manifest" else out
    media_dir.mkdir(parents=True, exist_ok=True)

    size = dict(frames=frames, height=height, width=width, seed=seed)
    groups = [("concept", ConceptWorld(concept=concept, num_samples=max(num_concept, 1), **size)),
              ("base", ShapesWorld(split="train", num_samples=max(num_base, 1), **size))]
    clips = []
    for group, world in groups:
        for i in range(num_concept if group == "concept" else num_base):
            sample = world[i]
            name = f"{group}_{i:04d}"
            path = media_dir / f"{name}.mp4"
            write_mp4(path, sample.video, fps=fps, crf=crf)
            if layout == "folder":
                path.with_suffix(".txt").write_text(sample.caption + "\n")
            clips.append({"media_path": path.relative_to(out).as_posix(), "caption": sample.caption, "group": group,
                          "index": i, "params": dataclasses.asdict(sample.params)})
    meta = {"concept": concept, "num_concept": num_concept, "num_base": num_base, "seed": seed, "frames": frames,
            "height": height, "width": width, "fps": fps, "crf": crf, "layout": layout,
            "concept_world": f"ConceptWorld(concept={concept!r}, seed={seed})",
            "base_world": f"ShapesWorld(split='train', seed={seed})", "clips": clips}
    (out / "concept_data.json").write_text(json.dumps(meta, indent=1) + "\n")
    if layout == "folder":
        return out
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"media_path": c["media_path"], "caption": c["caption"]}) + "\n"
                                for c in clips))
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--concept", default="up-right", choices=CONCEPTS,
                   help="the new concept (a motion or a colour; default: up-right)")
    p.add_argument("--num-concept", type=int, default=64, help="clips showing the new concept")
    p.add_argument("--num-base", type=int, default=32, help="clips of the demo's training distribution (replay)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (the evaluator uses another one)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better)")
    p.add_argument("--layout", choices=LAYOUTS, default="manifest",
                   help="manifest: videos/*.mp4 + manifest.jsonl; folder: *.mp4 with .txt captions")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = p.parse_args(argv)
    try:
        result = make_concept_data(args.out, concept=args.concept, num_concept=args.num_concept,
                                   num_base=args.num_base, seed=args.seed, frames=args.frames, height=args.height,
                                   width=args.width, fps=args.fps, crf=args.crf, layout=args.layout,
                                   overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    print(f"wrote {args.num_concept} {args.concept!r} + {args.num_base} base clips: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
