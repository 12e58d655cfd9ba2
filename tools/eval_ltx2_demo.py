#!/usr/bin/env python
"""Score the LTX-2 demo model (ShapesWorld-AV) from the pixels and the waveform of what it generates.

    python tools/eval_ltx2_demo.py                          # all four sets, 96 prompts / clips each
    python tools/eval_ltx2_demo.py --sets t2av -n 32 --steps 10 --checkpoint runs/demo_ltx2_av/model.safetensors

Sets (prompts and clips from seeds never used for training: the training data is ShapesWorldAV(train, seed 0)):
- `t2av`: text to video + sound; half the prompts from seen colour x shape x motion triples, half held out;
- `a2v`: audio to video: a ground-truth clip's soundtrack (and its caption) given, the video generated; scored
  for the video's colour and motion and their agreement with the sound (colour = pitch, motion = pan, sync);
- `v2a`: video to audio: a ground-truth clip's frames given, the sound generated; scored for pitch, timbre, pan
  and sync against the given video;
- `roundtrip`: the ground-truth clips through the video VAE and through the audio VAE + vocoder: the ceiling of
  every measure (a model decoded by them cannot score above it).
Every generated clip goes to OUT/<set>/ as mp4 (+ AAC) and wav with a prompts.json (`python tools/eval_av.py
OUT/<set>` re-scores a folder); OUT/report.json holds every set's summary (with each measure's n) and
OUT/contact_sheet.png shows the first t2av clips, each as frames above its waveform and spectrogram.
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

from ltx.api import load_pipeline  # noqa: E402
from ltx.core.audio_io import audio_contact_sheet, write_video_with_audio, write_wav  # noqa: E402
from ltx.core.media import slug  # noqa: E402
from ltx.data.shapes_av import ShapesWorldAV  # noqa: E402
from ltx.data.shapes_av_eval import evaluate_av  # noqa: E402
from ltx.ltx2.audio import waveform_to_mel  # noqa: E402

SETS = ("t2av", "a2v", "v2a", "roundtrip")
EVAL_SEED = 1000  # ShapesWorldAV seeds of the evaluation clips (training: seed 0)


def clips(n: int, seed: int = EVAL_SEED) -> list:
    """n ground-truth ShapesWorld-AV clips: n // 2 of seen triples, n - n // 2 held out."""
    out = []
    for split, k in (("train", n // 2), ("heldout", n - n // 2)):
        world = ShapesWorldAV(split=split, num_samples=k, seed=seed)
        out += [world[i] for i in range(k)]
    return out


def write(folder: Path, index: int, prompt: str, video: torch.Tensor, audio: torch.Tensor, rate: int, fps: float,
          prompts: dict[str, str]) -> None:
    """video (3, F, H, W) in [-1, 1], audio (2, N): <folder>/NNN_<prompt>.mp4 (+ AAC) and .wav."""
    stem = f"{index:03d}_{slug(prompt)}"
    write_video_with_audio(folder / f"{stem}.mp4", (video.clamp(-1, 1) + 1) / 2, fps, audio.clamp(-1, 1), rate)
    write_wav(folder / f"{stem}.wav", audio.clamp(-1, 1), rate)
    prompts[f"{stem}.mp4"] = prompt


def run_set(name: str, pipe, samples: list, args, out: Path) -> tuple[dict, list]:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    items, prompts, fps = [], {}, float(pipe.preset.generation.fps)
    common = dict(num_inference_steps=args.steps) if args.steps else {}
    for i, s in enumerate(samples):
        if name == "roundtrip":
            with torch.no_grad():
                m = pipe.modules
                video = m["vae"].decode(m["vae"].encode(s.video[None]))[0].clamp(-1, 1)
                mel = waveform_to_mel(s.audio[None], s.sample_rate)
                audio = m["vocoder"](m["audio_vae"].decode(m["audio_vae"].encode(mel)))[0].float()
            rate = int(m["vocoder"].sample_rate)
        elif name == "t2av":
            o = pipe(s.caption, seed=args.seed + i, **common)
            video, audio, rate = o.frames[0] * 2 - 1, o.waveform[0], o.sample_rate
        elif name == "a2v":
            wav = folder / f"{i:03d}_given.wav"
            write_wav(wav, s.audio, s.sample_rate)
            o = pipe(s.caption, seed=args.seed + i, audio_path=wav, **common)
            video, audio, rate = o.frames[0] * 2 - 1, s.audio, s.sample_rate  # scored: generated video, given sound
        else:  # v2a
            o = pipe(s.caption, seed=args.seed + i, video_path=(s.video.permute(1, 2, 3, 0) + 1) / 2, **common)
            video, audio, rate = s.video, o.waveform[0], o.sample_rate  # scored: given video, generated sound
        write(folder, i, s.caption, video, audio, rate, fps, prompts)
        items.append((f"{name}_{i:03d}", video, audio, rate, s.caption, fps))
    (folder / "prompts.json").write_text(json.dumps(prompts, indent=1) + "\n")
    report = evaluate_av(items)
    print(f"\n== {name} ({len(samples)} clips)\n{report.table()}")
    return report.summary(), items


def contact_sheet(items: list, path: Path, rows: int = 6) -> None:
    """The first `rows` items as frames over waveform + spectrogram, stacked."""
    from PIL import Image

    sheets = [audio_contact_sheet((v.clamp(-1, 1) + 1) / 2, fps, a, rate, count=9, caption=p)
              for _, v, a, rate, p, fps in items[:rows]]
    width = max(s.width for s in sheets)
    canvas = Image.new("RGB", (width, sum(s.height for s in sheets)), "white")
    y = 0
    for s in sheets:
        canvas.paste(s, (0, y))
        y += s.height
    canvas.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=96, help="prompts / clips per set (half seen, half held out)")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--checkpoint", type=Path, help="default: the preset's bundled weights")
    p.add_argument("--text-encoder", type=Path, help="default: the preset's text encoder folder")
    p.add_argument("--steps", type=int, help="override the preset's step count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "outputs/eval_ltx2_demo")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.checkpoint, model="ltx2-demo", text_encoder=args.text_encoder, device="cpu",
                         dtype="float32")
    samples = clips(args.n)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"n": args.n, "steps": args.steps, "checkpoint": str(args.checkpoint or "bundled"), "sets": {}}
    for name in args.sets:
        t0 = time.time()
        summary, items = run_set(name, pipe, samples, args, args.out)
        report["sets"][name] = {"seconds": round(time.time() - t0, 1), "summary": summary}
        if name == "t2av":
            contact_sheet(items, args.out / "contact_sheet.png")
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
