"""The bundled LTX-2 demo (demo/ltx2-demo.safetensors + demo/ltx2/text_encoder, `model=ltx2-demo`): the file is
an official single-file LTX-2 checkpoint that loads strictly and round-trips through the converter, and
`infer.generate` / `ltx.load_pipeline` make video with sound from text, from a soundtrack (audio-to-video) and
for a given video (video-to-audio) on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ltx.data.shapes_av import SAMPLE_RATE, ShapesWorldAV, write_clip
from ltx.ltx2 import checkpoint as ltx2_checkpoint

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo/ltx2-demo.safetensors"
pytestmark = pytest.mark.usefixtures("one_thread")


def _streams(path: Path) -> tuple[np.ndarray, np.ndarray, int, float]:
    """(frames (F, H, W, 3) uint8, audio (C, N) float, sample rate, audio duration in s) of an mp4, by PyAV."""
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.rate
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return frames, audio, rate, audio.shape[1] / rate


def test_bundled_file_is_an_official_ltx2_checkpoint(tmp_path):
    ckpt = ltx2_checkpoint.read(DEMO)
    assert sorted(ckpt.keys) == ["audio_vae", "text", "transformer", "vae", "vocoder"]
    modules = ltx2_checkpoint.load(ckpt)  # strict: every tensor of the file has its place, none is missing
    assert modules["vae"].cfg.scale == (8, 8, 8) and modules["vocoder"].sample_rate == SAMPLE_RATE
    assert all(k.startswith(("model.diffusion_model.", "text_embedding_projection.", "vae.", "audio_vae.",
                             "vocoder.")) for k in ckpt.reader.infos)  # the released files' prefixes
    ours, back = tmp_path / "demo_ltx2.safetensors", tmp_path / "demo_official.safetensors"
    for src, dst, layout in ((DEMO, ours, "ltx2"), (ours, back, "official")):
        r = subprocess.run([sys.executable, str(REPO / "tools/convert_weights.py"), str(src), str(dst), "--to", layout],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = ltx2_checkpoint.read(DEMO).reader, ltx2_checkpoint.read(back).reader
    assert sorted(a.infos) == sorted(b.infos) and a.metadata["config"] == b.metadata["config"]
    assert all(torch.equal(a.get(k), b.get(k)) for k in a.infos)


def test_generate_writes_video_with_sound(tmp_path):
    cmd = [sys.executable, "-m", "infer.generate", "model=ltx2-demo", 'prompts=["a red circle moves to the left"]',
           f"output_dir={tmp_path}", "steps=8"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    mp4 = next((tmp_path / "run_000").glob("*.mp4"))
    frames, audio, rate, seconds = _streams(mp4)
    assert frames.shape == (17, 64, 64, 3)
    assert rate == SAMPLE_RATE and audio.shape[0] == 2 and abs(seconds - 17 / 8) < 0.05  # AAC frames pad the end
    assert mp4.with_suffix(".wav").is_file() and mp4.with_suffix(".png").is_file()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, object]:
    sample = ShapesWorldAV(split="heldout", num_samples=1, seed=4321)[0]
    mp4, _ = write_clip(tmp_path_factory.mktemp("clip") / "given", sample, wav=False)
    return mp4, sample


def test_audio_to_video_and_video_to_audio(clip, tmp_path):
    from ltx.api import load_pipeline

    mp4, sample = clip
    pipe = load_pipeline(model="ltx2-demo", device="cpu", dtype="float32")
    a2v = pipe(sample.caption, seed=0, audio_path=mp4, num_inference_steps=8)
    given = torch.from_numpy(_streams(mp4)[1]).float()
    assert torch.allclose(a2v.waveform[0], given[:, : a2v.waveform.shape[-1]], atol=1e-6)  # the sound as given
    assert tuple(a2v.frames.shape) == (1, 3, 17, 64, 64)
    v2a = pipe(sample.caption, seed=0, video_path=mp4, num_inference_steps=8)
    frames = torch.from_numpy(_streams(mp4)[0]).permute(3, 0, 1, 2).float() / 255
    assert (v2a.frames[0] - frames).abs().max() < 1 / 255 + 1e-6  # the frames as given (fitted: same size)
    assert v2a.waveform.shape[:2] == (1, 2) and v2a.sample_rate == SAMPLE_RATE
    assert v2a.waveform.abs().max() > 1e-3  # a soundtrack, not silence
