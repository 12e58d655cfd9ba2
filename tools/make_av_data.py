#!/usr/bin/env python
"""Write a ShapesWorld-AV training dataset: seeded clips as mp4 (H.264 + AAC sound) with captions and a manifest.

    python tools/make_av_data.py data/shapes_av -n 4096                 # 4096 clips of split "train", seed 0
    python tools/make_av_data.py data/shapes_av -n 8192                 # resume / extend: existing clips are kept
    python tools/make_av_data.py data/av_small -n 64 --seed 7 --wav --overwrite
    python tools/make_av_data.py data/shapes_av -n 4096 --workers 2     # one process per core

Speed: the AAC track is encoded with FFmpeg's "fast" coder (AAC_CODER; the default "twoloop" coder took ~0.12 s of
CPU per clip, 90% of the work); byte-identical with any --workers. Preprocess with fps=8 (the
clips' rate; train.preprocess resamples to its `fps`, 24 by default).

The files are what a user would bring, read by `train.preprocess` through the ordinary dataset path
(ltx.data.manifest.read_dataset; with an LTX-2 checkpoint the sound comes from each clip's own AAC track):
- OUT/videos/<name>.mp4: the clip (ltx.data.shapes_av.write_clip: H.264 yuv420p CRF 18 + AAC stereo at 16 kHz,
  the soundtrack of ltx.data.shapes_av.soundtrack, exactly the video's duration);
- OUT/videos/<name>.wav (with --wav): the same soundtrack as 16-bit PCM;
- OUT/manifest.jsonl: one {"media_path": "videos/<name>.mp4", "caption": "..."} per line, paths relative to it;
- OUT/av_data.json (not read by the trainer): the settings and every clip's scene parameters, so an evaluator
  can check that its prompts are not training clips.
Clips: ShapesWorldAV(split, seed) items 0 .. n-1, named <split>_<index:06d> (default split "train": no held-out
triple; evaluate on other seeds). Deterministic: the same arguments give the same captions, parameters, frames
and soundtracks (mp4 bytes too on one machine and library version).

Resumable: every file is written to a temporary and renamed when complete (ltx.core.checkpoint.atomic_file), so a
clip file that exists is whole. A rerun into a folder made with the same settings keeps the clips already there
and writes the missing ones (a larger -n extends the set; clip i is the same whatever n); a folder made with other
settings (seed, split, sizes, ...), or one that is not a ShapesWorld-AV dataset, is refused unless --overwrite.
The manifest and av_data.json come last: a folder without manifest.jsonl is an interrupted run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
AAC_CODER = "fast"  # FFmpeg's fast AAC coder: ~7x less encoding time than the default, the clips' bulk of the work
sys.path.insert(0, str(REPO))

from ltx.core.checkpoint import atomic_file  # noqa: E402
from ltx.data.shapes import SPLITS, caption, check_video_size  # noqa: E402
from ltx.data.shapes_av import SAMPLE_RATE, ShapesWorldAV, write_clip  # noqa: E402

META = "av_data.json"


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def _settings(split: str, seed: int, frames: int, height: int, width: int, fps: int, crf: int, wav: bool) -> dict:
    """What determines every clip's bytes (n is not here: clip i does not depend on it)."""
    return {"split": split, "seed": seed, "frames": frames, "height": height, "width": width, "fps": fps,
            "sample_rate": SAMPLE_RATE, "crf": crf, "wav": wav}


def _check_out(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse a non-empty `out` made with other settings (or not by this tool) unless `overwrite` (then empty it)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if overwrite:
        shutil.rmtree(out)
        return
    meta_path = out / META
    started = out / ".settings.json"  # written before the first clip, so an interrupted run can resume
    for path in (meta_path, started):
        if path.exists():
            try:
                old = json.loads(path.read_text())
                old = old.get("settings", old)
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                raise FileExistsError(f"{out}: {path.name} is unreadable; pass --overwrite to replace the "
                                      f"folder") from None
            if old != settings:
                diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
                raise FileExistsError(f"{out} holds a dataset made with other settings (old, new): {diff}; pass "
                                      f"--overwrite to replace it, or write to another folder")
            return
    raise FileExistsError(f"{out} is not empty and is not a ShapesWorld-AV dataset; pass --overwrite to replace it")


def _write_clips(world: ShapesWorldAV, folder: Path, indices: list[int], crf: int, wav: bool,
                 progress: bool = False) -> None:
    """Write clips `indices` of `world` into `folder` (one worker's share)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    for done, i in enumerate(indices, start=1):
        write_clip(folder / f"{world.split}_{i:06d}", world[i], crf=crf, wav=wav, aac_coder=AAC_CODER)
        if progress and done % 256 == 0:
            print(f"  {done}/{len(indices)} clips ({done / (time.perf_counter() - start):.1f} clips/s)",
                  file=sys.stderr)


def make_av_data(out: str | Path, *, num: int = 4096, seed: int = 0, split: str = "train", frames: int = 17,
                 height: int = 64, width: int = 64, fps: int = 8, crf: int = 18, wav: bool = False,
                 overwrite: bool = False, workers: int = 1,
                 progress: bool = False) -> tuple[Path, int]:
    """Write (or complete) the dataset in `out` (see the file docstring) -> (manifest path, clips written now)."""
    out = Path(out)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"-n must be a positive number of clips, got {num!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    check_video_size(frames, height, width)
    settings = _settings(split, seed, frames, height, width, fps, crf, wav) | {"aac_coder": AAC_CODER}
    _check_out(out, settings, overwrite)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    if not (out / ".settings.json").exists():
        _write_text(out / ".settings.json", json.dumps(settings) + "\n")

    world = ShapesWorldAV(split=split, num_samples=num, frames=frames, height=height, width=width, seed=seed,
                          fps=fps, sample_rate=SAMPLE_RATE)
    names = [f"{split}_{i:06d}" for i in range(num)]
    suffixes = (".mp4", ".wav") if wav else (".mp4",)
    todo = [i for i, name in enumerate(names) if not all((out / "videos" / f"{name}{s}").exists() for s in suffixes)]
    start = time.perf_counter()
    jobs = [(world, out / "videos", todo[k::workers], crf, wav) for k in range(max(1, workers))]
    if workers <= 1:
        _write_clips(*jobs[0], progress=progress)
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for future in concurrent.futures.as_completed([pool.submit(_write_clips, *job) for job in jobs]):
                future.result()
    if progress and todo:
        print(f"  wrote {len(todo)} clips ({len(todo) / (time.perf_counter() - start):.1f} clips/s)", file=sys.stderr)
    clips = []
    for i, name in enumerate(names):
        params = world.params(i)
        clips.append({"media_path": f"videos/{name}.mp4", "caption": caption(params), "index": i,
                      "params": dataclasses.asdict(params)})
    meta = {"settings": settings, "num": num, "world": f"ShapesWorldAV(split={split!r}, seed={seed})",
            "sound": "ltx.data.shapes_av.soundtrack", "clips": clips}
    _write_text(out / META, json.dumps(meta, indent=1) + "\n")
    manifest = out / "manifest.jsonl"
    _write_text(manifest, "".join(json.dumps({"media_path": c["media_path"], "caption": c["caption"]}) + "\n"
                                  for c in clips))
    return manifest, len(todo)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse's own would print the usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("-n", "--num", type=int, default=4096, help="number of clips (default: 4096)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (an evaluator should use another one)")
    p.add_argument("--split", default="train", choices=SPLITS, help="ShapesWorld split (default: train)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better)")
    p.add_argument("--wav", action="store_true", help="also write each soundtrack as <name>.wav beside the mp4")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--workers", type=int, default=1, help="processes writing clips (default: 1)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest, written = make_av_data(args.out, num=args.num, seed=args.seed, split=args.split,
                                         frames=args.frames, height=args.height, width=args.width, fps=args.fps,
                                         crf=args.crf, wav=args.wav, overwrite=args.overwrite,
                                         workers=args.workers, progress=True)
    except (ValueError, FileExistsError) as e:
        p.error(str(e))
    seconds = time.perf_counter() - start
    print(f"{args.num} clips in {manifest} ({written} written now, {args.num - written} kept; {seconds:.1f} s, "
          f"{written / max(seconds, 1e-9):.1f} clips/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
