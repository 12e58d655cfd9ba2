"""The Python API (ltx.load_pipeline) and the hardening of generation: every option finite and in range with the
option named, nothing non-finite reaches a file, prompts recorded as the model read them, no empty run folders.
The API's numerical parity with the official pipeline is tested in tests/parity/test_pipeline_parity.py."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import infer.generate as app
import ltx
from ltx.ltxv import api as ltxv_api
from ltx.ltxv.api import NonFiniteError, Pipeline, open_pipeline
from ltx.ltxv.pipelines import PassOptions, SchedulerSpec
from ltx.presets import PassConfig, SamplingDefaults, load_preset, preset_names

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a red circle moves to the left"
NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def demo():
    return ltx.load_pipeline()  # the bundled demo: tiny, CPU, float32


@pytest.fixture(scope="module")
def opened():
    return open_pipeline()  # meta modules, headers only


def test_load_pipeline_generates_and_normalises_the_demo_prompt(demo, one_thread):
    """Capitals and punctuation read as the lower-case caption (the demo encoder's training text): same video."""
    a = demo(PROMPT, seed=0, num_inference_steps=3)
    b = demo("A RED CIRCLE, MOVES TO THE LEFT!", seed=0, num_inference_steps=3)
    assert a.frames.shape == (1, 3, 17, 64, 64) and 0 <= a.frames.min() and a.frames.max() <= 1
    assert b.prompts[0].text == PROMPT and not b.prompts[0].truncated
    assert torch.equal(a.frames, b.frames)
    assert [len(s) - 1 for s in a.sigmas] == [3] and a.forward_rows == [2, 2, 2]  # CFG: two rows per step
    lat = demo([PROMPT, "a blue square moves up"], seed=0, num_inference_steps=2, guidance_scale=1.0,
               output_type="latent")
    assert lat.frames is None and lat.latents.shape[0] == 2 and lat.forward_rows == [2, 2]  # batch 2, no CFG


def test_check_runs_on_an_opened_pipeline_without_weights(opened, monkeypatch):
    monkeypatch.setattr("ltx.ltxv.api.load_component", lambda *a, **k: pytest.fail("weights loaded"))
    req = opened.check(num_inference_steps=4, guidance_scale=[2.5], skip_block_list=[1], stg_scale=1.0)
    assert req.sampling.first_pass.guidance_scale == [2.5] and req.sampling.first_pass.skip_block_list == [[1]]
    assert [len(s) for s in req.sigmas] == [5] and not opened.loaded
    with pytest.raises(ValueError, match="call .load"):
        opened(PROMPT)


@pytest.mark.parametrize("name, values", [
    ("guidance_scale", [INF, NAN, -1.0, 0.5, "3"]),
    ("stg_scale", [INF, NAN, -0.5]),
    ("rescaling_scale", [NAN, 1.5, -0.1]),
    ("num_inference_steps", [0, -5, 2.5, True]),
    ("timesteps", [[], [1.2, 0.5], [0.5, 0.7], [NAN]]),
    ("skip_block_list", [[99], [-1], [1, [2]], 3]),
    ("frame_rate", [0, -1.0, NAN, INF]),
    ("image_cond_noise_scale", [NAN, 2.0, -0.1]),
    ("height", [65, 0, -64, 64.5]),
    ("num_frames", [18, 0]),
    ("tone_map_compression_ratio", [NAN, 1.5]),
    ("decode_timestep", [NAN, 2.0]),
    ("skip_layer_strategy", ["sideways"]),
    ("output_type", ["np"]),
    ("num_segments", [0, 1.5]),
    ("noise_mix", [NAN, 2.0]),
    ("conditioning_start_frames", [[17], [-1]]),
])  # fmt: skip
def test_every_request_value_is_checked_and_named(opened, name, values):
    for value in values:
        kw = {name: value}
        if name == "conditioning_start_frames":
            kw["conditioning_media_paths"] = [str(REPO / "notebooks")]  # never read: the frame is checked first
        with pytest.raises(ValueError) as e:
            opened.check(**kw)
        words = {"frame_rate": "frame_rate", "height": "height", "num_frames": "num_frames",
                 "skip_block_list": "skip_block_list|STG blocks"}.get(name, name)
        assert any(w in str(e.value) for w in words.split("|")), (name, value, str(e.value))


def test_bad_arguments_and_prompts_are_named(demo):
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['guidance'\]"):
        demo.check(guidance=3)
    with pytest.raises(ValueError, match="second_pass given but the preset is single-pass"):
        demo.check(second_pass={"num_inference_steps": 3})
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]"):
        demo(PROMPT, seed=2**64)
    for empty in ("", "   ", [PROMPT, ""]):
        with pytest.raises(ValueError, match="is empty"):
            demo(empty)
    with pytest.raises(ValueError, match="prompt_embeds have width 7"):
        demo(prompt_embeds=torch.zeros(1, 4, 7))
    with pytest.raises(ValueError, match="prompt_embeds hold .* non-finite"):
        demo(prompt_embeds=torch.full((1, 4, 128), NAN))


def test_pass_config_takes_scalars_and_flat_block_lists():
    """Scalars and a flat block list mean "at every breakpoint" (the official configs' convention)."""
    p = PassConfig(num_inference_steps=3, guidance_scale=3.0, stg_scale=1, skip_block_list=[1, 2])
    assert (p.guidance_scale, p.stg_scale, p.skip_block_list) == ([3.0], [1], [[1, 2]])
    p = PassConfig(num_inference_steps=3, guidance_timesteps=[1.0, 0.5], guidance_scale=2.0, skip_block_list=[4])
    assert p.guidance_scale == [2.0, 2.0] and p.skip_block_list == [[4], [4]]
    with pytest.raises(ValueError, match="guidance_scale has 3 entries; it needs one per guidance_timesteps entry"):
        PassConfig(num_inference_steps=3, guidance_timesteps=[1.0, 0.5], guidance_scale=[1, 2, 3])
    with pytest.raises(ValueError, match="exactly one of num_inference_steps or timesteps"):
        PassConfig(num_inference_steps=3, timesteps=[0.5])


def test_defaults_agree_with_the_official_ones():
    assert SchedulerSpec() == SchedulerSpec.from_official(None)  # RectifiedFlowScheduler(): Uniform, no shift
    assert SchedulerSpec().sampler == "Uniform"
    assert PassOptions().image_cond_noise_scale == 0.15  # inference.py's default
    with pytest.raises(ValueError, match="unknown sampler 'LQ'"):
        SchedulerSpec(sampler="LQ")


def test_presets_load_without_omegaconf_identically():
    from omegaconf import OmegaConf

    from ltx.presets import ModelPreset

    for name in preset_names():
        ours = load_preset(name)
        theirs = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset),
                                                     OmegaConf.load(REPO / f"configs/model/{name}.yaml")))
        assert ours == theirs, name
    with pytest.raises(ValueError, match="no model preset 'ltxv-99b'; presets: ltx-2-19b-dev, .*ltx-demo"):
        load_preset("ltxv-99b")


def test_preset_yaml_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (REPO / "configs/model/ltx-demo.yaml").read_text()
    bad.write_text(text.replace("num_layers: 6", "num_layer: 6"))
    with pytest.raises(ValueError, match=r"bad.yaml: unknown field\(s\) \['dit.num_layer'\]"):
        load_preset(bad)
    bad.write_text(text.replace("guidance_scale: [3]", "guidance_scale: [.inf]"))
    with pytest.raises(ValueError, match=r"bad.yaml: guidance_scale must be finite"):
        load_preset(bad)
    bad.write_text("dit: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml: not a readable YAML file"):
        load_preset(bad)


def nan_transformer(pipe: Pipeline, monkeypatch) -> None:
    def forward(*a, **k):
        return torch.full_like(a[0], NAN)

    monkeypatch.setattr(pipe.dit, "forward", forward)


def test_non_finite_latents_are_an_error_not_a_black_video(demo, monkeypatch):
    nan_transformer(demo, monkeypatch)
    with pytest.raises(NonFiniteError, match="the sampled latents hold .* non-finite values"):
        demo(PROMPT, seed=0, num_inference_steps=2)


def test_writers_refuse_non_finite_frames(tmp_path):
    from ltx.core.media import MediaError, write_contact_sheet, write_mp4

    frames = torch.rand(3, 9, 16, 16)
    frames[1, 3, 2, 2] = INF  # a clamp would silently make it white
    with pytest.raises(MediaError, match="a.mp4: not written: the frames hold 1 NaN / inf"):
        write_mp4(tmp_path / "a.mp4", frames, 8)
    with pytest.raises(MediaError, match="a.png: not written"):
        write_contact_sheet(tmp_path / "a.png", frames, 4, "x")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary file


def demo_config(tmp_path, **kw) -> app.GenerateConfig:
    base = dict(model=load_preset("ltx-demo"), prompts=[PROMPT], steps=2, device="cpu",
                output_dir=str(tmp_path / "out"))
    return app.GenerateConfig(**(base | kw))


def test_app_writes_nothing_when_sampling_blows_up(tmp_path, monkeypatch, one_thread):
    real = ltxv_api.load_component

    def load(ckpt, name, **kw):
        m = real(ckpt, name, **kw)
        if name == "dit":
            m.forward = lambda *a, **k: torch.full_like(a[0], INF)
        return m

    monkeypatch.setattr(ltxv_api, "load_component", load)  # what Pipeline.load, which the app calls, uses
    with pytest.raises(app.InputError, match="sampled latents hold .* non-finite.*nothing was written"):
        app.run(demo_config(tmp_path))
    assert not (tmp_path / "out").exists()  # no empty run_000 either


@pytest.mark.parametrize("kw, message", [
    (dict(guidance_scale=INF), r"guidance_scale=inf is invalid: give a finite CFG scale >= 1"),
    (dict(guidance_scale=NAN), r"guidance_scale=nan is invalid"),
    (dict(rescaling_scale=NAN), r"rescaling_scale=nan is invalid: give a value in \[0, 1\]"),
    (dict(stg_scale=-1.0), r"stg_scale=-1.0 is invalid"),
    (dict(fps=NAN), r"fps=nan is invalid"),
    (dict(image_cond_noise_scale=INF), r"image_cond_noise_scale=inf is invalid"),
    (dict(noise_mix=NAN), r"noise_mix=nan is invalid"),
    (dict(seed=2**64), r"seed=18446744073709551616 is invalid: give an integer in \[0, 2\*\*63 - 1\]"),
    (dict(seed=-1), r"seed=-1 is invalid"),
    (dict(steps=0), r"steps=0 is invalid"),
    (dict(num_frames=-3), r"num_frames=-3 is invalid"),
    (dict(stg_blocks=[-2]), r"stg_blocks=\[-2\] is invalid"),
    (dict(prompts=["  "]), r"prompts\[0\] is empty"),
    (dict(name="../elsewhere"), r"name='../elsewhere' is invalid"),
    (dict(contact_sheet_frames=0), r"contact_sheet_frames=0 is invalid"),
])  # fmt: skip
def test_app_options_are_finite_and_in_range(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        demo_config(tmp_path, **kw)


@pytest.mark.parametrize("kw, message", [
    (dict(device="cuda:7"), r"device cuda:7"),
    (dict(device="tpu"), r"device tpu"),
    (dict(output_dir="FILE/sub"), r"output_dir .*FILE/sub: .*FILE is a file, not a folder"),
    (dict(embeddings="GARBAGE"), r"embeddings .*garbage.safetensors is not an embeddings file .*not a safetensors"),
    (dict(embeddings="TRUNCATED"), r"embeddings .*truncated.safetensors is not an embeddings file .*truncated"),
])  # fmt: skip
def test_app_refuses_unusable_devices_folders_and_files_before_loading(tmp_path, monkeypatch, kw, message):
    from ltx.ltxv.text import save_embeddings

    if kw.get("device") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("cuda:7 exists on this machine, so it is a valid device here (the case needs <= 7 GPUs)")
    (tmp_path / "FILE").write_text("a file")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 5 + b"not safetensors")
    save_embeddings(tmp_path / "ok.safetensors", torch.randn(1, 4, 128), torch.ones(1, 4))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[:-64])
    names = {"FILE/sub": str(tmp_path / "FILE/sub"), "GARBAGE": str(tmp_path / "garbage.safetensors"),
             "TRUNCATED": str(tmp_path / "truncated.safetensors")}
    kw = {k: names.get(v, v) for k, v in kw.items()}
    monkeypatch.setattr(ltxv_api, "load_component", lambda *a, **k: pytest.fail("weights loaded"))
    monkeypatch.setattr("ltx.ltxv.text.T5TextEncoder", lambda *a, **k: pytest.fail("text encoder loaded"))
    with pytest.raises(app.InputError, match=message):
        app.run(demo_config(tmp_path, **kw))
    assert not (tmp_path / "out").exists()


def test_app_records_what_the_model_read(tmp_path, capsys, one_thread):
    """A prompt over the token limit is cut: warned, and the yaml / prompts.json / contact sheet say what the
    model read; capitals are normalised with a note."""
    long = " and ".join(["a red circle moves to the left"] * 5)  # 170 bytes > the demo's 96 tokens
    paths = app.run(demo_config(tmp_path, prompts=[long, "A BLUE SQUARE MOVES UP"]))
    out = capsys.readouterr().out
    assert "has 171 tokens; the text encoder reads the first 96" in out  # 170 bytes + the end token
    assert "reads 'A BLUE SQUARE MOVES UP' as 'a blue square moves up'" in out
    import yaml

    record = yaml.safe_load(paths[0].with_suffix(".yaml").read_text())
    assert record["prompt"] == long and record["prompt_truncated"] is True
    assert long.startswith(record["encoded_prompt"]) and len(record["encoded_prompt"]) == 95  # + the end token
    seen = json.loads((paths[0].parent / "prompts.json").read_text())
    assert list(seen.values()) == [record["encoded_prompt"], "a blue square moves up"]


def test_text_normalisation_rules(tmp_path):
    from ltx.ltxv.text import NORMALIZERS, text_normalizer

    assert NORMALIZERS["lowercase_words"]("  A GREEN, Triangle moves UP!! ") == "a green triangle moves up"
    assert NORMALIZERS["strip"]("  A GREEN  ") == "A GREEN"  # T5-XXL folders: the official stripping only
    assert text_normalizer(tmp_path) == "strip"
    assert text_normalizer(REPO / "demo/text_encoder") == "lowercase_words"
    (tmp_path / "ltx_text.json").write_text('{"normalize": "shout"}')
    with pytest.raises(ValueError, match="unknown normalize rule 'shout'"):
        text_normalizer(tmp_path)


def test_console_entry_points_resolve():
    """pyproject's console scripts point at callables, and the apps find their configs without the checkout's cwd."""
    import importlib

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"ltx-generate", "ltx-convert", "ltx-preprocess", "ltx-finetune"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_api_override_of_a_per_step_preset():
    """A scalar override of a per-step guidance list replaces every breakpoint (as the app's overrides do)."""
    from ltx.ltxv.api import with_overrides

    dev = load_preset("ltxv-13b-0.9.8-dev").sampling
    s = with_overrides(dev, guidance_scale=2.0, second_pass={"stg_scale": 0.0})
    assert s.first_pass.guidance_scale == [2.0] * 7 and s.second_pass.stg_scale == [0.0]
    s = with_overrides(dev, num_inference_steps=10, tone_map_compression_ratio=0.6)
    assert s.first_pass.num_inference_steps == 10 and s.second_pass.tone_map_compression_ratio == 0.6
    assert dataclasses.replace(s) == s and isinstance(s, SamplingDefaults)
