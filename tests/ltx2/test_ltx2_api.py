"""`ltx.load_pipeline` / `ltx.open_pipeline` for LTX-2 (ltx.ltx2.api): on a tiny random checkpoint in the official
bundled layout it generates exactly what `python -m infer.generate` computes for the same request, and
`open_pipeline(...).check(...)` refuses bad requests, naming the argument, before any weights load."""

from __future__ import annotations

import pytest
import test_ltx2_generate as generate_tests
import torch

import infer.generate as app
import ltx
from ltx.ltx2 import api as ltx2_api
from ltx.presets import load_preset

pytestmark = pytest.mark.usefixtures("one_thread")
files = generate_tests.files  # the same files: a tiny official bundle, a tiny Gemma folder, upsampler, LoRAs, media


def _preset(name: str):
    preset = load_preset(name)
    preset.av.video.stg_blocks = [1]  # the tiny transformer has 2 blocks
    preset.av.audio.stg_blocks = [1]
    return preset


def _open(files, model="ltx-2-19b-dev", **kw) -> ltx2_api.Pipeline:
    base = dict(model=_preset(model), text_encoder=files["gemma"], upsampler=files["up"],
                distilled_lora=files["lora"], device="cpu", dtype="float32")
    return ltx.open_pipeline(files["ckpt"], **(base | kw))


def test_load_pipeline_generates_what_the_app_computes(files, tmp_path, monkeypatch):
    """Two stages with an image, a user LoRA and the distilled LoRA fused in place for stage 2: the API's frames
    and waveform equal the app's bitwise; a second call (the transformer restored first) equals the first."""
    seen = []
    generate = ltx2_api.Pipeline.generate
    monkeypatch.setattr(ltx2_api.Pipeline, "generate", lambda self, *a, **k: seen.append(generate(self, *a, **k))
                        or seen[-1])
    cfg = generate_tests._config(files, tmp_path, prompts=["a dog barks at the sea"],
                  conditioning=[app.ConditioningSpec(path=str(files["image"]), frame=0)],
                  loras=[app.LoraSpec(path=str(files["user_lora"]), strength=0.5)])
    app.run(cfg)
    pipe = ltx.load_pipeline(files["ckpt"], model=cfg.model, text_encoder=files["gemma"], upsampler=files["up"],
                             distilled_lora=files["lora"], loras=[(files["user_lora"], 0.5)], device="cpu",
                             dtype="float32")
    assert isinstance(pipe, ltx2_api.Pipeline) and pipe.loaded
    request = dict(seed=3, height=128, width=128, num_frames=9, frame_rate=24.0, num_inference_steps=2,
                   images=[(files["image"], 0, 1.0)])
    first = pipe("a dog barks at the sea", **request)
    again = pipe("a dog barks at the sea", **request)
    ours = seen[0]
    assert first.frames.shape == (1, 3, 9, 128, 128) and first.sample_rate == ours.sample_rate == 24000
    assert torch.equal(first.frames, ours.frames) and torch.equal(first.waveform, ours.waveform)
    assert torch.equal(again.frames, first.frames) and torch.equal(again.waveform, first.waveform)


def test_distilled_with_a_soundtrack_returns_the_input_sound(files):
    pipe = _open(files, "ltx-2-19b-distilled").load()
    out = pipe("music plays softly", seed=1, height=128, width=128, num_frames=17, frame_rate=24.0,
               audio_path=files["tone"], audio_start_time=0.25)
    from ltx.core.audio_io import read_audio

    wave, rate = read_audio(files["tone"])
    start, n = round(0.25 * rate), round(17 / 24 * rate)
    assert out.sample_rate == rate and torch.equal(out.waveform[0], wave[:, start:start + n].expand(2, -1))
    assert out.frames.shape == (1, 3, 17, 128, 128) and torch.isfinite(out.frames).all()


@pytest.fixture
def no_weights(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("weights were read before the bad request was reported")

    monkeypatch.setattr("ltx.ltx2.checkpoint.load", boom)
    monkeypatch.setattr("ltx.ltx2.checkpoint.load_upsampler", boom)
    monkeypatch.setattr("ltx.ltx2.text.GemmaTextEncoder.from_folder", boom)


@pytest.mark.parametrize("model, kw, message", [
    ("ltx-2-19b-dev", dict(height=96), r"height=96 must be a positive multiple of 64.*nearest valid: 64 or 128"),
    ("ltx-2-19b-dev", dict(num_frames=10), r"num_frames=10 must be 8k \+ 1"),
    ("ltx-2-19b-dev", dict(frame_rate=0), r"frame_rate must be a positive number"),
    ("ltx-2-19b-dev", dict(num_inference_steps=0), r"num_inference_steps must be a positive integer"),
    ("ltx-2-19b-dev", dict(sigmas=[0.5, 0.7]), r"sigmas must be a strictly descending list"),
    ("ltx-2-19b-distilled", dict(video_guider_params={"cfg_scale": 3.0}),
     r"the distilled pipeline samples without guidance"),
    ("ltx-2-19b-dev", dict(video_guider_params={"stg_blocks": [7]}),
     r"video_guider_params: stg_blocks \[7\] out of range"),
    ("ltx-2-19b-dev", dict(video_guider_params={"cfg": 3.0}), r"video_guider_params: unknown field\(s\) \['cfg'\]"),
    ("ltx-2-19b-dev", dict(audio_guider_params={"cfg_scale": -1.0}), r"audio_guider_params: cfg_scale must be"),
    ("ltx-2-19b-dev", dict(negative_prompt=" "), r"CFG needs a negative prompt"),
    ("ltx-2-19b-dev", dict(images=[("IMAGE", 9, 1.0)]), r"images\[0\] .*frame 9 is past the last frame \(8\)"),
    ("ltx-2-19b-dev", dict(images=[("IMAGE", 0, 1.5)]), r"images\[0\] .*strength 1.5 must be in \[0, 1\]"),
    ("ltx-2-19b-dev", dict(images=[("/nope.png", 0, 1.0)]), r"images\[0\]: /nope.png does not exist"),
    ("ltx-2-19b-dev", dict(video_conditioning=[("CONTROL", 1.0)]), r"ICLoraPipeline, on the distilled checkpoint"),
    ("ltx-2-19b-distilled", dict(video_conditioning=[("CONTROL", 1.0)]), r"needs its IC-LoRA"),
    ("ltx-2-19b-dev", dict(audio_path="TONE", num_frames=33), r"audio .* has 1.00 s from 0 s.*num_frames <= 17"),
    ("ltx-2-19b-dev", dict(audio_path="TONE", audio_guider_params={"cfg_scale": 7.0}), r"nothing guides it"),
    ("ltx-2-19b-dev", dict(audio_start_time=2.0), r"audio_start_time=2.0 is for audio-to-video: give audio_path"),
    ("ltx-2-19b-dev", dict(audio_path="TONE", audio_start_time=3.0), r"audio_start_time 3 s is past the end"),
])  # fmt: skip
def test_check_refuses_bad_requests_before_weights_load(files, no_weights, model, kw, message):
    names = {"IMAGE": str(files["image"]), "CONTROL": str(files["control"]), "TONE": str(files["tone"])}
    kw = {k: ([(names.get(v[0], v[0]), *v[1:]) for v in value] if k in ("images", "video_conditioning") else
              names.get(value, value) if k == "audio_path" else value) for k, value in kw.items()}
    pipe = _open(files, model)
    with pytest.raises(ValueError, match=message):
        pipe.check(**(dict(height=128, width=128, num_frames=9, frame_rate=24.0) | kw))
    assert not pipe.loaded


def test_open_refuses_missing_files_and_the_other_family(files, no_weights):
    with pytest.raises(ValueError, match="no upsampler given; the two_stage pipeline upsamples x2"):
        _open(files, upsampler=None)
    with pytest.raises(ValueError, match="no distilled_lora given"):
        _open(files, distilled_lora=None)
    with pytest.raises(ValueError, match=r"loras\[0\]: "):
        _open(files, loras=[files["ckpt"]])  # not a LoRA
    with pytest.raises(ValueError, match="model_version '2.0.0'.*LTX-2.3"):
        _open(files, "ltx-2.3-22b-dev")
    with pytest.raises(ValueError, match="distilled_lora: only the LTX-2 presets take it"):
        ltx.open_pipeline(model="ltx-demo", distilled_lora=files["lora"])
    with pytest.raises(ValueError, match=r"vae._class_name='CausalVideoAutoencoder' \(absent, which ltx-core reads "
                                         r"as that\) is the convolutional VAE \(ltx.ltx2.vae\), not a diffusion "
                                         r"decoder"):
        _open(files, vae=files["ckpt"])  # LTX-2: `vae` is LTX-2.5's diffusion-VAE file
    pipe = _open(files, pipeline="one_stage", upsampler=None, distilled_lora=None)  # another official pipeline
    assert pipe.pipeline.value == "one_stage" and len(pipe.check(height=96, width=96, num_frames=9).sigmas) == 41
    with pytest.raises(ValueError, match="call .load"):
        pipe("a dog barks", seed=0)
