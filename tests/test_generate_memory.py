"""generate's memory options on the bundled demos: quantize= (the transformer quantized in memory after loading),
text_encoder_device=cpu, and vram_budget= taking every setting of the plan."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from conftest import REPO
from omegaconf import OmegaConf

import infer.generate as app
from ltx.core.media import read_video
from ltx.core.memory_plan import Settings
from ltx.core.quant import QuantizedLinear, quantize_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "a red circle moves to the left"


def _config(tmp_path, model: str = "ltx-demo", **kw) -> app.GenerateConfig:
    raw = {"model": OmegaConf.load(REPO / f"configs/model/{model}.yaml"),
           "prompts": [PROMPT], "output_dir": str(tmp_path), "steps": 4} | kw
    return app.to_config(OmegaConf.create(raw))


def test_quantize_in_memory_changes_the_video_a_little_and_is_recorded(tmp_path, capsys):
    plain = app.run(_config(tmp_path, name="plain"))[0]
    fp8 = app.run(_config(tmp_path, name="fp8", quantize="fp8-scaled"))[0]
    assert "50 transformer Linears quantized in memory" in capsys.readouterr().out
    a, b = read_video(plain)[0], read_video(fp8)[0]
    diff = (a - b).abs().mean().item()
    # fp8 weights: another video, close to the full-precision one (measured 0.0095 of the [0, 1] range; the
    # bound 0.02 is a coarse "same scene" check: a wrong dequantization scale moves whole frames)
    assert 0 < diff < 0.02, diff
    assert yaml.safe_load(fp8.with_suffix(".yaml").read_text())["config"]["quantize"] == "fp8-scaled"


def test_ltx2_quantize_and_the_text_encoder_on_the_cpu(tmp_path, capsys):
    out = app.run(_config(tmp_path, "ltx2-demo", quantize="gguf-q8_0", text_encoder_device="cpu"))[0]
    assert "168 transformer Linears quantized in memory" in capsys.readouterr().out
    assert out.is_file() and out.with_suffix(".wav").is_file()


def test_quantize_pipeline_keeps_an_already_quantized_transformer():
    import ltx

    pipe = ltx.load_pipeline(model="ltx-demo", device="cpu")
    first = quantize_pipeline(pipe, "fp8-cast")
    before = {n: type(m) for n, m in pipe.dit.named_modules()}
    note = quantize_pipeline(pipe, "gguf-q4_k", device="cpu")
    assert "already quantized" in note and {n: type(m) for n, m in pipe.dit.named_modules()} == before
    quantized = sum(isinstance(m, QuantizedLinear) for m in pipe.dit.modules())
    assert f"{quantized} transformer Linears quantized in memory" in first and quantized > 0


@pytest.mark.parametrize("kw,words", [
    ({"quantize": "int3"}, "quantize='int3' is not a layout ltx quantizes to (supported: fp8-scaled"),
    ({"text_encoder_device": "tpu"}, "text_encoder_device='tpu' is not supported (supported: auto, cpu)"),
])
def test_bad_memory_options_are_one_line(tmp_path, kw, words):
    with pytest.raises(app.InputError) as e:
        app.run(_config(tmp_path, **kw))
    assert str(e.value).startswith(words) and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_ltx2_control_with_quantize_is_refused(tmp_path):
    clip = tmp_path / "control.mp4"
    clip.write_bytes(b"")
    with pytest.raises(app.InputError, match="reloads the transformer's file weights"):
        app.run(_config(tmp_path, "ltx2-demo", quantize="fp8-scaled", control=[{"path": str(clip)}]))


def test_vram_budget_takes_every_setting_of_the_plan(tmp_path, monkeypatch):
    """The planner's weights become quantize= (fp8 -> fp8-scaled), its text encoder placement
    text_encoder_device=; an explicit quantize= wins."""
    real = app.plan_memory

    def plan_with(settings):
        def fake(*args, **kwargs):
            plan = real(*args, **kwargs)
            return dataclasses.replace(plan, settings=settings)
        return fake

    monkeypatch.setattr(app, "plan_memory", plan_with(Settings(weights="fp8", offload="model", vae_tiling=True,
                                                                text_encoder_device="cpu")))
    cfg = app.memory_settings(_config(tmp_path, vram_budget="8GB"))
    assert (cfg.quantize, cfg.offload, cfg.vae_tiling, cfg.text_encoder_device) == ("fp8-scaled", "model", True, "cpu")
    cfg = app.memory_settings(_config(tmp_path, vram_budget="8GB", quantize="gguf-q8_0"))
    assert cfg.quantize == "gguf-q8_0"
    monkeypatch.setattr(app, "plan_memory", plan_with(Settings()))
    cfg = app.memory_settings(_config(tmp_path, vram_budget="8GB"))
    assert (cfg.quantize, cfg.offload, cfg.text_encoder_device) == (None, "none", "auto")
    assert torch.device(app.text_device(cfg, torch.device("cpu"))).type == "cpu"


def test_ltx2_transformer_from_its_own_gguf_file(tmp_path):
    """transformer=<a GGUF> beside the bundle: the converter's GGUF of the demo's transformer loads into the
    bundle's config and equals the transformer quantized in memory byte for byte; the outputs are bitwise equal."""
    import subprocess
    import sys

    import ltx
    from ltx.core.quant import quantize_model

    gguf = tmp_path / "transformer-Q8_0.gguf"
    subprocess.run([sys.executable, "tools/convert_weights.py", "demo/ltx2-demo.safetensors", str(gguf),
                    "--to", "gguf-q8_0"], cwd=REPO, check=True, capture_output=True)
    from_file = ltx.load_pipeline(model="ltx2-demo", device="cpu", transformer=gguf)
    in_memory = ltx.load_pipeline(model="ltx2-demo", device="cpu")
    assert len(quantize_model(in_memory.modules["transformer"], "gguf-q8_0")) == 168
    a, b = (p.modules["transformer"].state_dict() for p in (from_file, in_memory))
    assert a.keys() == b.keys() and all(torch.equal(a[k].flatten(), b[k].flatten()) for k in a)
    x, y = (p(PROMPT, seed=1, num_inference_steps=3) for p in (from_file, in_memory))
    assert torch.equal(x.frames, y.frames) and torch.equal(x.waveform, y.waveform)
    with pytest.raises(ValueError, match="only the LTX-2 presets take it"):
        ltx.open_pipeline(model="ltx-demo", transformer=gguf)
    other = tmp_path / "other.gguf"  # the 0.9.x demo's transformer is not this bundle's
    subprocess.run([sys.executable, "tools/convert_weights.py", "demo/ltx-demo.safetensors", str(other), "--to",
                    "gguf-q8_0"], cwd=REPO, check=True, capture_output=True)
    with pytest.raises(ValueError, match="is not this bundle's transformer") as e:
        ltx.open_pipeline(model="ltx2-demo", transformer=other)
    assert "\n" not in str(e.value)
