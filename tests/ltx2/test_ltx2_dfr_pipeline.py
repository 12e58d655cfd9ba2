"""LTX-2.5 DFR as one run (`model=ltx-2.5-22b-dfr`, `ltx.ltx2.pipelines.dfr`) on the tiny random 2.5 split files of
test_ltx2_25: the output's frame count, rate and soundtrack length, the LoRA staging (the distilled LoRA in every
pass, the detailing IC-LoRA in stage 2 only, the weights restored after it), the generate app, and the one-line
refusals. The passes themselves are checked against diffusers in test_ltx2_dfr.py."""

from __future__ import annotations

import json

import ltx2_tiny
import pytest
import test_ltx2_generate as generate_tests
import torch
from safetensors.torch import save_file
from test_ltx2_25 import files  # noqa: F401  (the module fixture)

import ltx
from ltx.ltx2 import dfr, pipelines
from ltx.presets import load_preset

pytestmark = pytest.mark.usefixtures("one_thread")
REQUEST = dict(height=128, width=128, num_frames=17, frame_rate=24.0)


@pytest.fixture(scope="module")
def temporal(tmp_path_factory):
    """A tiny temporal x2 latent upsampler file (official layout and metadata)."""
    from ltx_core.model.upsampler.model_configurator import LatentUpsamplerConfigurator

    meta = {"in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": False,
            "temporal_upsample": True}
    ref = ltx2_tiny.randomize(LatentUpsamplerConfigurator.from_config(meta), seed=12)
    path = tmp_path_factory.mktemp("temporal") / "temporal.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path),
              metadata={"config": json.dumps(meta)})
    return path


def _open(files, temporal=None, detailing=None, **kwargs):  # noqa: F811
    options = {"temporal_upsampler": temporal} if temporal is not None else {}
    if detailing is not None:
        options["detailing_lora"] = detailing
    return ltx.open_pipeline(files["folder"], model=load_preset("ltx-2.5-22b-dfr"), text_encoder=files["gemma4"],
                             upsampler=files["up"], distilled_lora=files["lora"], device="cpu", dtype="float32",
                             **options, **kwargs)


def test_dfr_run_frames_rate_sound_and_lora_staging(files, temporal, monkeypatch):  # noqa: F811
    """One temporal round from 17 requested frames (canvas 25, slots at 24): 33 frames at 48 fps, the soundtrack
    cut to 33 / 48 s; progress ticks = the steps run; the detailing IC-LoRA is fused for
    stage 2 alone (the weights stage 1 and the rounds see are the distilled-LoRA weights, checked by comparing the
    transformer's tensors at each pass) and a second call with the same seed gives the same output."""
    pipe = _open(files, temporal, (files["ic_lora"], 0.8)).load()
    weights = {}
    render = dfr.render

    def spy(*args, **kwargs):
        def at(name):
            weights[name] = {k: v.clone() for k, v in pipe.modules["transformer"].state_dict().items()}

        at("before")
        before, after = kwargs["before_stage_2"], kwargs["after_stage_2"]
        kwargs["before_stage_2"] = lambda: (before(), at("stage 2"))
        kwargs["after_stage_2"] = lambda: (after(), at("rounds"))
        return render(*args, **kwargs)

    monkeypatch.setattr(dfr, "render", spy)
    ticks = []
    image = torch.rand(96, 160, 3)
    out = pipe("red ball", seed=2, temporal_rounds=1, images=[(image, 0, 1.0)], progress=lambda: ticks.append(1),
               **REQUEST)
    assert out.frames.shape == (1, 3, 33, 128, 128) and out.fps == 48.0 and torch.isfinite(out.frames).all()
    assert out.waveform.shape[-1] == round(33 / 48.0 * out.sample_rate)
    # one tick per step: 8 + 3, and one tile of 4 (a 49-frame canvas has one segment to split)
    assert len(ticks) == 8 + 3 + 4 == pipe.check(temporal_rounds=1, **REQUEST).num_evaluations
    changed = [k for k in weights["before"] if not torch.equal(weights["before"][k], weights["stage 2"][k])]
    assert changed and all(".attn1.to_q" in k or ".audio_attn1.to_v" in k or ".ff.net.2" in k for k in changed)
    assert all(torch.equal(weights["before"][k], weights["rounds"][k]) for k in weights["before"])
    again = pipe("red ball", seed=2, temporal_rounds=1, images=[(image, 0, 1.0)], **REQUEST)
    assert torch.equal(out.frames, again.frames) and torch.equal(out.waveform, again.waveform)
    plain = _open(files, temporal).load()("red ball", seed=2, temporal_rounds=1, images=[(image, 0, 1.0)], **REQUEST)
    assert (plain.frames - out.frames).abs().max() > 1e-3  # the detailing LoRA mattered


def test_dfr_spatial_epilogue_run(files, temporal, monkeypatch):  # noqa: F811
    """`spatial_epilogue=True` after one round: the frames at twice the size (33 at 48 fps, 256 x 256), one tick per
    epilogue tile and step (2 x 2 x 2 tiles, 3 steps), and the detailing IC-LoRA fused again for the epilogue: the
    transformer's weights there are stage 2's, bitwise (the parity of the pass: test_ltx2_dfr_epilogue.py)."""
    pipe = _open(files, temporal, (files["ic_lora"], 0.8)).load()
    weights, render = {}, dfr.render

    def spy(*args, **kwargs):
        def at(name):
            weights[name] = {k: v.clone() for k, v in pipe.modules["transformer"].state_dict().items()}

        before, again = kwargs["before_stage_2"], kwargs["before_epilogue"]
        kwargs["before_stage_2"] = lambda: (before(), at("stage 2"))
        kwargs["before_epilogue"] = lambda: (again(), at("epilogue"))
        return render(*args, **kwargs)

    monkeypatch.setattr(dfr, "render", spy)
    ticks = []
    with pytest.warns(UserWarning, match="clamping the overlap"):  # 8 latent cells: too few for an overlap of 12
        out = pipe("red ball", seed=2, temporal_rounds=1, spatial_epilogue=True, progress=lambda: ticks.append(1),
                   **REQUEST)
    assert out.frames.shape == (1, 3, 33, 256, 256) and out.fps == 48.0 and torch.isfinite(out.frames).all()
    assert len(ticks) == 8 + 3 + 4 + 8 * 3 == pipe.check(temporal_rounds=1, spatial_epilogue=True,
                                                         **REQUEST).num_evaluations
    assert all(torch.equal(weights["stage 2"][k], weights["epilogue"][k]) for k in weights["stage 2"])


def test_dfr_without_rounds_is_the_two_passes(files, monkeypatch):  # noqa: F811
    """Rounds 0: the requested frame count at the request's rate (the canvas padding trimmed); no temporal upsampler
    needed; the detailing reference is absent without a detailing LoRA."""
    seen = {}
    render = dfr.render
    monkeypatch.setattr(dfr, "render", lambda *a, **k: seen.update(k) or render(*a, **k))
    out = _open(files).load()("red ball", seed=5, **REQUEST)
    assert out.frames.shape[2] == 17 and out.fps == 24.0 and seen["rounds"] == 0 and not seen["detailing"]
    assert out.waveform.shape[-1] == round(17 / 24.0 * out.sample_rate)
    # the preset's schedules (through float32, as the official pipeline's sigma tensors)
    assert seen["stage_1_sigmas"] == pytest.approx(dfr.STAGE_1_SIGMAS, rel=1e-7)
    assert seen["stage_2_sigmas"] == pytest.approx(dfr.STAGE_2_SIGMAS, rel=1e-7)


def test_generate_app_writes_the_refined_rate(files, temporal, tmp_path):  # noqa: F811
    import infer.generate as app

    cfg = app.GenerateConfig(model=load_preset("ltx-2.5-22b-dfr"), checkpoint=str(files["folder"]),
                             text_encoder=str(files["gemma4"]), upsampler_checkpoint=str(files["up"]),
                             distilled_lora=str(files["lora"]), temporal_upsampler_checkpoint=str(temporal),
                             temporal_rounds=1, prompts=["red ball"], height=128, width=128, num_frames=17, fps=24.0,
                             seed=3, device="cpu", output_dir=str(tmp_path / "out"))
    (path,) = app.run(cfg)
    frames, audio, rate, channels = generate_tests._decode(path)
    assert frames.shape == (33, 128, 128, 3) and channels == 2
    import av

    with av.open(str(path)) as container:
        assert float(container.streams.video[0].average_rate) == 48.0
    record = path.with_suffix(".yaml").read_text()
    assert "fps: 48.0" in record and "frames: 33" in record and "pipeline: dfr" in record


@pytest.mark.parametrize("change, match", [
    (dict(temporal_rounds=1), "temporal_rounds=1 needs the temporal x2 upsampler: pass temporal_upsampler="),
    (dict(temporal_rounds=3), "temporal_rounds must be 0, 1 or 2, got 3"),
    (dict(spatial_epilogue=1), "spatial_epilogue must be True or False, got 1"),
    (dict(video_guider_params={"cfg_scale": 3.0}), "the dfr pipeline samples without guidance"),
    (dict(audio_path="x.wav"), "the dfr pipeline generates video and sound from the prompt and images"),
])
def test_dfr_requests_refused_in_one_line(files, change, match):  # noqa: F811
    with pytest.raises(ValueError, match=match):
        _open(files).check(**(REQUEST | change))


def test_dfr_files_refused_in_one_line(files, temporal):  # noqa: F811
    with pytest.raises(ValueError, match="temporal_upsampler .*: a pixel_shuffle \\(spatial\\) upsampler; give the "
                                         "temporal x2 one"):
        _open(files, files["up"])
    with pytest.raises(ValueError, match="temporal_upsampler / detailing_lora are for the dfr pipeline"):
        ltx.open_pipeline(files["folder"], model=load_preset("ltx-2.5-22b-distilled"), text_encoder=files["gemma4"],
                          upsampler=files["up"], temporal_upsampler=temporal, device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="spatial_epilogue runs with the dfr pipeline"):
        ltx.open_pipeline(files["folder"], model=load_preset("ltx-2.5-22b-distilled"), text_encoder=files["gemma4"],
                          upsampler=files["up"], device="cpu", dtype="float32").check(spatial_epilogue=True, **REQUEST)
    with pytest.raises(ValueError, match="temporal_rounds runs with the dfr pipeline"):
        ltx.open_pipeline(files["folder"], model=load_preset("ltx-2.5-22b-distilled"), text_encoder=files["gemma4"],
                          upsampler=files["up"], device="cpu", dtype="float32").check(temporal_rounds=1, **REQUEST)
    assert pipelines.AVPipeline.dfr.uses_distilled_lora


def test_generate_options_refused_in_one_line(files, temporal, tmp_path):  # noqa: F811
    """The app's DFR options: out of range, non-finite, a missing, an empty or a wrong file, rounds without the
    upscaler: one line naming the option, before anything is loaded, and no output folder left behind."""
    import infer.generate as app
    from infer.output import InputError

    base = dict(model=load_preset("ltx-2.5-22b-dfr"), checkpoint=str(files["folder"]),
                text_encoder=str(files["gemma4"]), upsampler_checkpoint=str(files["up"]),
                distilled_lora=str(files["lora"]), prompts=["red ball"], height=128, width=128, num_frames=17,
                fps=24.0, device="cpu", output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="temporal_rounds=3 is invalid: give 0, 1 or 2"):
        app.GenerateConfig(**base, temporal_rounds=3)
    with pytest.raises(ValueError, match="temporal_rounds=-1 is invalid"):
        app.GenerateConfig(**base, temporal_rounds=-1)
    with pytest.raises(ValueError, match="detailing_lora_strength=nan is invalid: give a finite LoRA strength"):
        app.GenerateConfig(**base, detailing_lora_strength=float("nan"))
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for change, match in [
        (dict(temporal_rounds=1), "needs the temporal x2 upsampler: .*temporal_upsampler_checkpoint="),
        (dict(temporal_upsampler_checkpoint=str(tmp_path / "nope.safetensors"), temporal_rounds=1),
         "temporal_upsampler_checkpoint"),
        (dict(temporal_upsampler_checkpoint=str(empty), temporal_rounds=1),
         "temporal_upsampler: .*empty.safetensors: not a safetensors file"),
        (dict(temporal_upsampler_checkpoint=str(files["up"]), temporal_rounds=1), "a pixel_shuffle \\(spatial\\)"),
        (dict(detailing_lora=str(temporal)), "detailing_lora: "),
    ]:
        with pytest.raises(InputError, match=match) as e:
            app.run(app.GenerateConfig(**base, **change))
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="detailing_lora: strength must be a finite number, got nan"):
        ltx.open_pipeline(files["folder"], model="ltx-2.5-22b-dfr", detailing_lora=(files["ic_lora"], float("nan")))
