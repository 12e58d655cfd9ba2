"""Score ShapesWorld prompt following: the dominant shape's colour and motion in generated videos.

    python tools/eval_shapes.py OUT_DIR                   # a folder of *.mp4 + prompts.json (or <stem>.json)
    python tools/eval_shapes.py clip.mp4 --prompt "a red circle moves to the left"
    python tools/eval_shapes.py --self-test -n 200        # ground-truth ShapesWorld clips and chance baselines
    python tools/eval_shapes.py --self-test --noise 0.1 --write-dir /tmp/gt   # noisy clips, through mp4 files

Prints a table (seen / held-out / all: colour, motion, both) and, with --json, writes the full report.
The detector and the file contract are documented in ltx/data/shapes_eval.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ltx.core.checkpoint import atomic_file
from ltx.data.shapes import ShapesWorld, check_video_size
from ltx.data.shapes_eval import (
    Report,
    evaluate,
    evaluate_file,
    evaluate_folder,
    noise_video,
    sidecar_prompt,
    write_mp4,
)


def self_test(args: argparse.Namespace) -> dict[str, Report]:
    """Ground truth (half train, half held-out split) and two noise baselines scored against the same prompts."""
    worlds = [ShapesWorld(split=split, num_samples=args.n, frames=args.frames, height=args.height, width=args.width,
                          seed=args.seed) for split in ("train", "heldout")]
    samples = [(f"{w.split}_{i:05d}", w[i]) for i in range(args.n // 2 + args.n % 2) for w in worlds][: args.n]
    generator = torch.Generator().manual_seed(args.seed)
    truth = []
    for name, s in samples:
        video = s.video
        if args.noise > 0:
            video = (video + args.noise * torch.randn(video.shape, generator=generator)).clamp(-1, 1)
        truth.append((name, video, s.caption))
    reports = {}
    if args.write_dir is not None:
        folder = Path(args.write_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, video, _ in truth:
            write_mp4(folder / f"{name}.mp4", video)
        (folder / "prompts.json").write_text(json.dumps({f"{n}.mp4": p for n, _, p in truth}, indent=1))
        reports[f"ground truth via mp4 files in {folder}"] = evaluate_folder(folder)
    else:
        reports["ground truth"] = evaluate(truth)
    shape = (args.frames, args.height, args.width)
    for smooth, label in ((False, "i.i.d. pixel noise"), (True, "smooth colour-blob noise")):
        reports[label] = evaluate((n, noise_video(*shape, smooth=smooth, generator=generator), s.caption)
                                  for n, s in samples)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", help="a folder of *.mp4 (with prompts.json or <stem>.json) or one mp4")
    parser.add_argument("--prompt", help="the prompt of a single mp4 (instead of a <stem>.json sidecar)")
    parser.add_argument("--json", type=Path, help="write the full report (summary + per video) here")
    parser.add_argument("--self-test", action="store_true", help="score ground-truth ShapesWorld clips instead")
    parser.add_argument("-n", type=int, default=200, help="self-test: number of clips (half train, half held-out)")
    parser.add_argument("--seed", type=int, default=0, help="self-test: ShapesWorld and noise seed")
    parser.add_argument("--frames", type=int, default=17, help="self-test: frames (8N+1)")
    parser.add_argument("--height", type=int, default=64, help="self-test: height (multiple of 32)")
    parser.add_argument("--width", type=int, default=64, help="self-test: width (multiple of 32)")
    parser.add_argument("--noise", type=float, default=0.0, help="self-test: Gaussian noise sigma on [-1, 1] clips")
    parser.add_argument("--write-dir", type=Path, help="self-test: write the clips as mp4 + prompts.json, read back")
    args = parser.parse_args(argv)
    if args.json is not None and not args.json.absolute().parent.is_dir():
        parser.error(f"--json {args.json}: {args.json.absolute().parent} is not a folder")  # before the evaluation

    if args.self_test:
        if args.path is not None:
            parser.error("--self-test takes no path")
        if args.n < 1:
            parser.error("-n must be >= 1")
        try:
            check_video_size(args.frames, args.height, args.width)
        except ValueError as e:
            parser.error(str(e))
        reports = self_test(args)
    elif args.path is None:
        parser.error("give a folder or an mp4 file, or --self-test")
    else:
        path = Path(args.path)
        if path.is_dir() and args.prompt is not None:
            parser.error("--prompt is for a single mp4; a folder needs prompts.json or <stem>.json sidecars")
        if not path.exists():
            parser.error(f"{path} does not exist")
        try:  # a broken file contract is a usage error: say what to fix, no traceback
            if path.is_dir():
                reports = {str(path): evaluate_folder(path)}
            else:
                prompt = args.prompt if args.prompt is not None else sidecar_prompt(path)
                reports = {str(path): evaluate_file(path, prompt)}
        except (FileNotFoundError, ValueError) as e:
            parser.error(str(e))

    for title, report in reports.items():
        print(f"\n== {title}")
        print(report.table())
        for name, why in report.skipped.items():
            print(f"  skipped {name}: {why}", file=sys.stderr)
    if args.json is not None:
        try:
            with atomic_file(args.json, "w") as f:
                f.write(json.dumps({title: r.to_json() for title, r in reports.items()}, indent=1))
        except OSError as e:
            parser.error(f"--json {args.json}: cannot write the report ({e.strerror or e})")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
