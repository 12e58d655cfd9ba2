#!/usr/bin/env python
"""Write an IC-LoRA control dataset: coloured ShapesWorld clips, each with its silhouette as the control video.

    python tools/make_control_data.py data/control                            # 256 training-distribution clips
    python tools/make_control_data.py data/control_mix --num-concept 64       # + 64 clips of an unseen motion
    python tools/make_control_data.py data/control_small --num 32 --seed 7 --overwrite

The files are what a user would bring (H.264 mp4s, ltx.data.shapes_eval.write_mp4, yuv420p, CRF 18), read by
the trainer through the ordinary dataset path (ltx.data.manifest.read_dataset, its `reference_path` column):
- OUT/videos/<name>.mp4: the target, the coloured clip (ltx.data.shapes.render);
- OUT/controls/<name>.mp4: the control, the same scene's shapes white on black with the same geometry and
  motion (ltx.data.shapes.render_silhouette);
- OUT/manifest.jsonl: one {"media_path": "videos/<name>.mp4", "reference_path": "controls/<name>.mp4",
  "caption": "..."} per line (paths relative to the manifest; caption = ltx.data.shapes.caption(params));
- OUT/control_data.json (not read by the trainer): the settings and every clip's scene parameters, so an
  evaluator (ltx.data.shapes_eval.control_iou) can score on scenes that are not training clips.

Clips:
- `--num` clips of ShapesWorld(split="train", seed), named base_<i>: the demo's own training distribution.
- `--num-concept` clips of ConceptWorld(concept, seed) (default 0; concept default "up-right" = "moves to the
  upper right"), named concept_<i>: a motion the captions' grammar has but the bundled demo never learned, so
  the control video is the only source of the motion.
Deterministic: the same arguments give the same captions, parameters and frames (mp4 bytes too on one machine
and library version). Every file is written to a temporary beside it and renamed when complete
(ltx.core.checkpoint.atomic_file); the manifest comes last, so a folder without manifest.jsonl is an interrupted run.
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

from ltx.core.checkpoint import atomic_file  # noqa: E402
from ltx.data.shapes import CONCEPTS, ConceptWorld, ShapesWorld, check_video_size, render_silhouette  # noqa: E402
from ltx.data.shapes_eval import write_mp4  # noqa: E402


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:  # a temporary beside `path`, renamed over it when complete
        f.write(text)


def make_control_data(out: str | Path, *, num: int = 256, num_concept: int = 0, concept: str = "up-right",
                      seed: int = 0, frames: int = 17, height: int = 64, width: int = 64, fps: int = 8, crf: int = 18,
                      overwrite: bool = False) -> Path:
    """Write the dataset to `out` (see the file docstring); returns the manifest path."""
    out = Path(out)
    if num < 0 or num_concept < 0 or num + num_concept < 1:
        raise ValueError(f"need num >= 0 and num_concept >= 0 with at least one clip, got {num}, {num_concept}")
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {list(CONCEPTS)}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    check_video_size(frames, height, width)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    for sub in ("videos", "controls"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    size = dict(frames=frames, height=height, width=width, seed=seed)
    groups = [("base", num, ShapesWorld(split="train", num_samples=max(num, 1), **size)),
              ("concept", num_concept, ConceptWorld(concept=concept, num_samples=max(num_concept, 1), **size))]
    clips = []
    for group, count, world in groups:
        for i in range(count):
            sample = world[i]
            name = f"{group}_{i:04d}"
            media, reference = f"videos/{name}.mp4", f"controls/{name}.mp4"
            write_mp4(out / media, sample.video, fps=fps, crf=crf)  # atomic (ltx.core.media.write_mp4)
            write_mp4(out / reference, render_silhouette(sample.params, frames, height, width), fps=fps, crf=crf)
            clips.append({"media_path": media, "reference_path": reference, "caption": sample.caption,
                          "group": group, "index": i, "params": dataclasses.asdict(sample.params)})
    meta = {"num": num, "num_concept": num_concept, "concept": concept, "seed": seed, "frames": frames,
            "height": height, "width": width, "fps": fps, "crf": crf,
            "base_world": f"ShapesWorld(split='train', seed={seed})",
            "concept_world": f"ConceptWorld(concept={concept!r}, seed={seed})",
            "control": "ltx.data.shapes.render_silhouette", "clips": clips}
    _write_text(out / "control_data.json", json.dumps(meta, indent=1) + "\n")
    manifest = out / "manifest.jsonl"
    _write_text(manifest, "".join(json.dumps({k: c[k] for k in ("media_path", "reference_path", "caption")}) + "\n"
                                  for c in clips))
    return manifest


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse's own would print the usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--num", type=int, default=256, help="clips of ShapesWorld(split='train') (default: 256)")
    p.add_argument("--num-concept", type=int, default=0, help="clips of ConceptWorld(--concept) (default: 0)")
    p.add_argument("--concept", default="up-right", choices=CONCEPTS,
                   help="the unseen concept of the --num-concept clips (default: up-right)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (an evaluator should use another one)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = p.parse_args(argv)
    try:
        manifest = make_control_data(args.out, num=args.num, num_concept=args.num_concept, concept=args.concept,
                                     seed=args.seed, frames=args.frames, height=args.height, width=args.width,
                                     fps=args.fps, crf=args.crf, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    print(f"wrote {args.num} base + {args.num_concept} {args.concept!r} clips with silhouette controls: {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
