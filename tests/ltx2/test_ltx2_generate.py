"""`python -m infer.generate model=ltx-2-...`: video with sound from a tiny official bundled file, a tiny
Gemma 3 folder, a tiny upsampler and a distilled LoRA; and bad input refused in one line before any weights
load."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import ltx2_tiny
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import infer.generate as app
from ltx.presets import load_preset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def _gemma_folder(folder: Path) -> Path:
    """Gemma 3 text model with the width the tiny transformer reads (8) and 48 layers (49 hidden states)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    words = "a dog barks at the sea waves crash on rocks music plays softly red ball".split()
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    cfg = Gemma3TextConfig(vocab_size=len(vocab), hidden_size=ltx2_tiny.TEXT_DIM, intermediate_size=16,
                           num_hidden_layers=ltx2_tiny.NUM_HIDDEN_STATES - 1, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=4, sliding_window=64, max_position_embeddings=2048)
    torch.manual_seed(2)
    Gemma3ForCausalLM(cfg).save_pretrained(folder)
    return folder


def _upsampler_file(path: Path) -> Path:
    from ltx_core.model.upsampler.model_configurator import LatentUpsamplerConfigurator

    meta = {"in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True,
            "temporal_upsample": False}
    ref = ltx2_tiny.randomize(LatentUpsamplerConfigurator.from_config(meta), seed=11)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path),
              metadata={"config": json.dumps(meta)})
    return path


def _lora_file(path: Path, seed: int, metadata: dict | None = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(2):
        for name, (o, n) in {"attn1.to_q": (16, 16), "audio_attn1.to_v": (8, 8), "ff.net.2": (16, 64)}.items():
            sd[f"diffusion_model.transformer_blocks.{i}.{name}.lora_A.weight"] = torch.randn(4, n, generator=g) * 0.1
            sd[f"diffusion_model.transformer_blocks.{i}.{name}.lora_B.weight"] = torch.randn(o, 4, generator=g) * 0.1
    save_file(sd, str(path), metadata=metadata)
    return path


def _control_clip(path: Path) -> Path:
    from ltx.core.media import write_mp4

    g = torch.Generator().manual_seed(4)
    write_mp4(path, torch.rand(3, 12, 64, 64, generator=g), 24.0)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx2gen")
    bundle, _ = ltx2_tiny.official_file(root / "ltx-2-tiny.safetensors", "19b")
    image = root / "first.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(image)
    from ltx.core.audio_io import write_wav

    t = torch.arange(22050) / 22050.0  # 1 s of a mono 22.05 kHz tone
    write_wav(root / "tone.wav", (0.5 * torch.sin(2 * torch.pi * 330 * t))[None], 22050)
    return {"ckpt": bundle, "gemma": _gemma_folder(root / "gemma"), "up": _upsampler_file(root / "up.safetensors"),
            "lora": _lora_file(root / "distilled.safetensors", 1),
            "user_lora": _lora_file(root / "user.safetensors", 2),
            "ic_lora": _lora_file(root / "ic.safetensors", 3, {"reference_downscale_factor": "2"}),
            "control": _control_clip(root / "control.mp4"),
            "image": image, "tone": root / "tone.wav"}


def _config(files, tmp_path, model="ltx-2-19b-dev", **kw) -> app.GenerateConfig:
    preset = load_preset(model)
    preset.av.video.stg_blocks = [1]
    preset.av.audio.stg_blocks = [1]
    base = dict(model=preset, checkpoint=str(files["ckpt"]), text_encoder=str(files["gemma"]),
                upsampler_checkpoint=str(files["up"]), distilled_lora=str(files["lora"]),
                prompts=["a dog barks at the sea", "waves crash on rocks"], height=128, width=128, num_frames=9,
                fps=24.0, steps=2, seed=3, device="cpu", output_dir=str(tmp_path / "out"))
    return app.GenerateConfig(**(base | kw))


def _decode(path: Path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate, layout = stream.rate, stream.layout.nb_channels
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=-1)
    return np.stack(frames), audio, rate, layout


def test_two_stage_writes_video_with_sound(files, tmp_path):
    paths = app.run(_config(files, tmp_path, conditioning=[app.ConditioningSpec(path=str(files["image"]), frame=0)],
                            loras=[app.LoraSpec(path=str(files["user_lora"]), strength=0.5)]))
    assert [p.name for p in paths] == ["00_a_dog_barks_at_the_sea.mp4", "01_waves_crash_on_rocks.mp4"]
    for p in paths:
        frames, audio, rate, channels = _decode(p)
        assert frames.shape == (9, 128, 128, 3) and rate == 24000 and channels == 2  # 19B vocoder: 24 kHz stereo
        # 9 frames at 24 fps = 0.375 s -> round(0.375 * 25) = 9 audio latents -> 33 mel frames -> 7920 samples
        assert abs(audio.shape[-1] - 7920) <= 1024 and np.abs(audio).max() > 1e-4
        assert p.with_suffix(".wav").stat().st_size == 44 + 7920 * 2 * 2
        assert p.with_suffix(".png").stat().st_size > 0
        record = p.with_suffix(".yaml").read_text()
        assert "pipeline: two_stage" in record and "sample_rate: 24000" in record
    a, b = (_decode(p)[0].astype(float) for p in paths)
    assert np.abs(a - b).mean() > 0.5  # different prompts, different videos


def test_distilled_and_one_stage(files, tmp_path):
    (p,) = app.run(_config(files, tmp_path, model="ltx-2-19b-distilled", prompts=["red ball"], steps=None,
                           name="distilled"))
    assert _decode(p)[0].shape == (9, 128, 128, 3)
    cfg = _config(files, tmp_path, prompts=["music plays softly"], height=64, width=96, name="one")
    cfg.model.av.pipeline = type(cfg.model.av.pipeline)("one_stage")
    (p,) = app.run(cfg)
    assert _decode(p)[0].shape == (9, 64, 96, 3)
    cfg = _config(files, tmp_path, prompts=["red ball"], name="keyframes",
                  conditioning=[app.ConditioningSpec(path=str(files["image"]), frame=0),
                                app.ConditioningSpec(path=str(files["image"]), frame=8, strength=0.8)])
    cfg.model.av.pipeline = type(cfg.model.av.pipeline)("keyframes")
    (p,) = app.run(cfg)
    assert _decode(p)[0].shape == (9, 128, 128, 3) and "pipeline: keyframes" in p.with_suffix(".yaml").read_text()
    hq = load_preset("ltx-2.3-22b-hq")  # its sampling on the 19B-layout tiny file
    hq.av.model_version = "2"
    (p,) = app.run(dataclasses.replace(_config(files, tmp_path, prompts=["red ball"], name="hq"), model=hq))
    assert _decode(p)[0].shape == (9, 128, 128, 3) and "pipeline: hq" in p.with_suffix(".yaml").read_text()


def test_audio_to_video_writes_the_given_soundtrack(files, tmp_path):
    (p,) = app.run(_config(files, tmp_path, prompts=["music plays softly"], audio=str(files["tone"]),
                           audio_start=0.25, num_frames=17))
    frames, audio, rate, channels = _decode(p)
    assert frames.shape == (17, 128, 128, 3) and rate == 22050 and channels == 2
    from ltx.core.audio_io import read_audio

    wav, wav_rate = read_audio(p.with_suffix(".wav"))
    n = round(17 / 24 * 22050)  # the video's duration, from 0.25 s into the tone
    t = (torch.arange(n) + round(0.25 * 22050)) / 22050.0
    want = 0.5 * torch.sin(2 * torch.pi * 330 * t)
    assert wav_rate == 22050 and wav.shape == (2, n)
    assert (wav - want).abs().max() < 2e-4  # the input, not a VAE decode (16-bit WAV)
    assert "soundtrack: " in p.with_suffix(".yaml").read_text()


def test_ic_lora_control(files, tmp_path, capsys):
    cfg = _config(files, tmp_path, model="ltx-2-19b-distilled", prompts=["red ball"], steps=None,
                  loras=[app.LoraSpec(path=str(files["ic_lora"]))],
                  control=[app.ControlSpec(path=str(files["control"]))])
    (p,) = app.run(cfg)
    assert _decode(p)[0].shape == (9, 128, 128, 3)
    assert "stage 2: the transformer's own weights again" in capsys.readouterr().out


def test_cli(files, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "infer.generate", "model=ltx-2-19b-distilled", f"checkpoint={files['ckpt']}",
           f"text_encoder={files['gemma']}", f"upsampler_checkpoint={files['up']}", 'prompts=["red ball"]',
           "height=128", "width=128", "num_frames=9", "fps=24", f"output_dir={out}", "device=cpu"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote 1 video(s) with sound" in r.stdout
    run = out / "run_000"
    assert sorted(p.suffix for p in run.iterdir()) == [".json", ".mp4", ".png", ".wav", ".yaml"]


@pytest.fixture
def no_weights(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("weights were loaded before the bad input was reported")

    monkeypatch.setattr("ltx.ltx2.checkpoint.load", boom)
    monkeypatch.setattr("ltx.ltx2.text.GemmaTextEncoder.from_folder", boom)


@pytest.mark.parametrize("kw, message", [
    (dict(height=96), "height=96 must be a positive multiple of 64"),
    (dict(num_frames=10), "num_frames=10 must be 8k \\+ 1; nearest valid: 9 or 17"),
    (dict(upsampler_checkpoint=None), "no upsampler_checkpoint given"),
    (dict(distilled_lora=None), "no distilled_lora given"),
    (dict(text_encoder=None), "no text_encoder given"),
    (dict(checkpoint="/nonexistent.safetensors"), "does not exist"),
    (dict(model="ltx-2.3-22b-dev"), "model_version '2.0.0'.*LTX-2.3"),
    (dict(stg_blocks=[7]), "stg_blocks \\[7\\] out of range"),
    (dict(embeddings="x.safetensors"), "LTX-2 encodes prompts with Gemma"),
    (dict(negative_prompt=" "), "CFG needs a negative prompt"),
    (dict(conditioning=[app.ConditioningSpec(path="/nope.png", frame=0)]), "conditioning\\[0\\]"),
    (dict(conditioning=[app.ConditioningSpec(path="IMAGE", frame=9)]), "past the last frame"),
    (dict(loras=[app.LoraSpec(path="CKPT")]), "loras\\[0\\]"),
    (dict(model="ltx-2-19b-distilled", guidance_scale=3.0), "distilled pipeline samples without guidance"),
    (dict(output_dir="CKPT/out"), "is a file, not a folder"),
    (dict(audio="TONE", num_frames=33), "has 1.00 s from 0 s; 33 frames at 24 fps need 1.38 s: give num_frames <= 17"),
    (dict(audio="TONE", audio_start=5.0), "audio_start_time 5 s is past the end of audio .* \\(1.00 s long\\)"),
    (dict(audio="TONE", audio_start=0.97), "has 0.03 s from 0.97 s; .*: give an earlier audio_start_time or a longer"),
    (dict(audio="TONE", audio_start=0.9, num_frames=17), "has 0.10 s from 0.9 s; .*: give num_frames <= 1, an earl"),
    (dict(audio="TONE", audio_guidance_scale=7.0), "nothing guides it"),
    (dict(audio="IMAGE"), "audio: "),
    (dict(audio=""), "no audio given"),
    (dict(distilled_lora=""), "no distilled_lora given"),
    (dict(text_encoder=""), "no text_encoder given"),
    (dict(control=[app.ControlSpec(path="CONTROL")]), "ICLoraPipeline, on the distilled checkpoint"),
    (dict(model="ltx-2-19b-distilled", control=[app.ControlSpec(path="CONTROL")]), "needs its IC-LoRA"),
    (dict(model="ltx-2-19b-distilled", loras=[app.LoraSpec(path="IC")],
          control=[app.ControlSpec(path="CONTROL", frame=8)]), "aligns the control with frame 0"),
    (dict(model="ltx-2-19b-distilled", loras=[app.LoraSpec(path="IC")],
          control=[app.ControlSpec(path="CONTROL", downscale=3)]), "downscale 3 must divide the stage-1 size"),
])
def test_bad_input_fails_before_loading_weights(files, tmp_path, no_weights, kw, message):
    kw = {k: ([app.ConditioningSpec(path=str(files["image"]), frame=c.frame) if c.path == "IMAGE" else c
               for c in v] if k == "conditioning" else
              [app.ControlSpec(path=str(files["control"]), frame=c.frame, downscale=c.downscale) for c in v]
              if k == "control" else
              [app.LoraSpec(path=str(files["ic_lora"] if x.path == "IC" else files["ckpt"])) for x in v]
              if k == "loras" else
              v.replace("CKPT", str(files["ckpt"])) if k == "output_dir" else
              {"TONE": str(files["tone"]), "IMAGE": str(files["image"]), "": ""}[v] if k == "audio" else v)
          for k, v in kw.items()}
    model = kw.pop("model", "ltx-2-19b-dev")
    with pytest.raises(app.InputError, match=message):
        app.run(_config(files, tmp_path, model=model, **kw))
    assert not (tmp_path / "out").exists()  # nothing written


def test_audio_start_without_audio_is_refused():
    with pytest.raises(ValueError, match="audio_start=0.5 is for audio-to-video: give audio=FILE too"):
        app.GenerateConfig(model=load_preset("ltx-2-19b-dev"), audio_start=0.5)


def test_0_9_file_with_ltx2_preset_and_reverse(files, tmp_path, no_weights):
    from ltx.ltxv.checkpoint import read_checkpoint

    with pytest.raises(Exception, match="LTX-2 checkpoint"):
        read_checkpoint(files["ckpt"])
    demo = REPO / "demo" / "ltx-demo.safetensors"
    with pytest.raises(app.InputError, match="0.9.x"):
        app.run(_config(files, tmp_path, checkpoint=str(demo)))
