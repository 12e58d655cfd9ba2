"""Score ShapesWorld-AV prompt following and audio-video sync: colour, motion, pitch, timbre, voices, pan, sync.

    python tools/eval_av.py OUT_DIR                    # a folder of *.mp4 (with sound) + prompts.json / <stem>.json
    python tools/eval_av.py OUT_DIR --audio wav        # the sound from <stem>.wav beside each mp4
    python tools/eval_av.py clip.mp4 --prompt "a red circle moves to the left" --items
    python tools/eval_av.py --self-test -n 96          # ground-truth ShapesWorld-AV clips and chance baselines
    python tools/eval_av.py --self-test -n 96 --write-dir /tmp/gt_av   # the ground truth through mp4 + AAC files

Prints a table (measures down; all / 1-shape / 2-shape / seen / held-out across, each "accuracy (n)", and the
chance level) and, with --items, one line per clip; --json writes the full report. The measures, the file
contract and the a2v / v2a use are documented in ltx/data/shapes_av_eval.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ltx.core.checkpoint import atomic_file  # noqa: E402
from ltx.data.shapes import check_video_size  # noqa: E402
from ltx.data.shapes_av import FPS, SAMPLE_RATE, ShapesWorldAV, write_clip  # noqa: E402
from ltx.data.shapes_av_eval import AUDIO_SOURCES, AVReport, evaluate_av, evaluate_file, evaluate_folder  # noqa: E402
from ltx.data.shapes_eval import noise_video, sidecar_prompt  # noqa: E402


def self_test(args: argparse.Namespace) -> dict[str, AVReport]:
    """Ground truth (half train, half held-out split), then three baselines scored against the same prompts:
    i.i.d. noise (pixels and audio), smooth colour-blob video with white-noise audio, and every clip's
    soundtrack and video taken from two other clips (a prompt-blind generator of proper scenes: chance)."""
    worlds = [ShapesWorldAV(split=split, num_samples=args.n, frames=args.frames, height=args.height,
                            width=args.width, seed=args.seed, sample_rate=args.sample_rate)
              for split in ("train", "heldout")]
    samples = [(f"{w.split}_{i:05d}", w[i]) for i in range(args.n // 2 + args.n % 2) for w in worlds][: args.n]
    rate, fps = args.sample_rate, FPS
    reports = {}
    if args.write_dir is not None:
        folder = Path(args.write_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, s in samples:
            write_clip(folder / name, s, wav=False)
        (folder / "prompts.json").write_text(json.dumps({f"{n}.mp4": s.caption for n, s in samples}, indent=1))
        reports[f"ground truth via mp4 + AAC files in {folder}"] = evaluate_folder(folder)
    else:
        reports["ground truth"] = evaluate_av((n, s.video, s.audio, rate, s.caption, fps) for n, s in samples)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (args.frames, args.height, args.width)
    length = samples[0][1].audio.shape[1]
    for smooth, label in ((False, "i.i.d. pixel noise + white-noise audio"),
                          (True, "smooth colour-blob noise + white-noise audio")):
        reports[label] = evaluate_av(
            (n, noise_video(*shape, smooth=smooth, generator=generator),
             0.1 * torch.randn(2, length, generator=generator), rate, s.caption, fps) for n, s in samples)
    m = len(samples)
    reports["another clip's video and a third clip's sound (chance)"] = evaluate_av(
        (n, samples[(i + 1) % m][1].video, samples[(i + 2) % m][1].audio, rate, s.caption, fps)
        for i, (n, s) in enumerate(samples))
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", help="a folder of *.mp4 (with prompts.json or <stem>.json) or one mp4")
    parser.add_argument("--prompt", help="the prompt of a single mp4 (instead of a <stem>.json sidecar)")
    parser.add_argument("--audio", choices=AUDIO_SOURCES, default="auto",
                        help="the sound: the mp4's own track, the <stem>.wav beside it, or auto (track, else WAV)")
    parser.add_argument("--json", type=Path, help="write the full report (summary + per clip) here")
    parser.add_argument("--items", action="store_true", help="also print one line per clip")
    parser.add_argument("--self-test", action="store_true", help="score ground-truth ShapesWorld-AV clips instead")
    parser.add_argument("-n", type=int, default=96, help="self-test: number of clips (half train, half held-out)")
    parser.add_argument("--seed", type=int, default=0, help="self-test: scene and noise seed")
    parser.add_argument("--frames", type=int, default=17, help="self-test: frames (8N+1)")
    parser.add_argument("--height", type=int, default=64, help="self-test: height (multiple of 32)")
    parser.add_argument("--width", type=int, default=64, help="self-test: width (multiple of 32)")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="self-test: the soundtracks' rate")
    parser.add_argument("--write-dir", type=Path, help="self-test: write the clips as mp4 + AAC, score the files")
    args = parser.parse_args(argv)
    if args.json is not None and not args.json.absolute().parent.is_dir():
        parser.error(f"--json {args.json}: {args.json.absolute().parent} is not a folder")

    if args.self_test:
        if args.path is not None:
            parser.error("--self-test takes no path")
        if args.n < 1:
            parser.error("-n must be >= 1")
        if args.sample_rate < 4000:
            parser.error(f"--sample-rate must be >= 4000 Hz, got {args.sample_rate}")
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
                reports = {str(path): evaluate_folder(path, audio=args.audio)}
            else:
                prompt = args.prompt if args.prompt is not None else sidecar_prompt(path)
                reports = {str(path): evaluate_file(path, prompt, audio=args.audio)}
        except (FileNotFoundError, ValueError) as e:
            parser.error(str(e))

    for title, report in reports.items():
        print(f"\n== {title}")
        print(report.table())
        if args.items:
            print(report.item_table())
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
