"""The generate app (infer/generate.py) end to end on a tiny random model, and its bad-input errors.

The tiny model is the shape of the project's demo model: the demo VAE (configs/demo/vae.yaml: patch size 1,
8x space and time, 16 latent channels, no decode timestep) and a 2-block DiT with 16 input channels and
32 caption channels, saved as one official single file (with a distilled-style `allowed_inference_steps`
list), plus a standalone latent-upsampler file, precomputed embeddings and a tiny random T5 (ByT5
tokenizer). Videos are read back with PyAV: frame count, size and the pixels themselves (the mp4 must
hold the generated frames up to H.264 loss, not just any 17 frames).

Bad-input tests patch the weight loaders to fail, so each error is shown to come before any weights load.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, randomize_, save_official

pytest.importorskip("hydra")
av = pytest.importorskip("av")
pytest.importorskip("PIL")

import infer.generate as app  # noqa: E402
from ltx.ltxv.keys_official import DIT_PREFIX, dit_config_to_official  # noqa: E402
from ltx.ltxv.keys_vae import upsampler_config_to_official, vae_config_to_official  # noqa: E402
from ltx.ltxv.text import save_embeddings  # noqa: E402
from ltx.ltxv.transformer import DiT, DiTConfig  # noqa: E402
from ltx.ltxv.upsampler import LatentUpsampler, UpsamplerConfig  # noqa: E402
from ltx.ltxv.vae import VAEConfig, VideoVAE  # noqa: E402
from ltx.presets import ModelPreset, PassConfig, PipelineType, SamplingDefaults  # noqa: E402

DIT = DiTConfig(num_layers=2, num_heads=2, head_dim=8, in_channels=16, out_channels=16, caption_channels=32,
                causal_temporal_positioning=True)
LQ8 = [1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219]  # official distilled allowed timesteps
BASE = SamplingDefaults(first_pass=PassConfig(num_inference_steps=2, guidance_scale=[3.0], stg_scale=[1.0],
                                              rescaling_scale=[0.7], skip_block_list=[[1]]))
MULTI = SamplingDefaults(pipeline_type=PipelineType.multi_scale, downscale_factor=0.6666666,
                         spatial_upscaler="tiny-upsampler.safetensors",
                         first_pass=PassConfig(timesteps=[1.0, 0.975, 0.725]),
                         second_pass=PassConfig(timesteps=[0.9094, 0.725, 0.4219]))


def preset(sampling: SamplingDefaults) -> ModelPreset:
    return ModelPreset(name="tiny", checkpoint="tiny.safetensors", dit=DIT, vae="0.9.5", sampling=sampling)


def demo_vae_config() -> VAEConfig:
    from omegaconf import OmegaConf

    return VAEConfig(**OmegaConf.to_container(OmegaConf.load(REPO / "configs/demo/vae.yaml")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    dit = randomize_(DiT(DIT), seed=1)
    vae_cfg = demo_vae_config()
    vae = VideoVAE(vae_cfg).init_weights()
    tensors = {DIT_PREFIX + k: v for k, v in dit.state_dict().items()}
    tensors |= {"vae." + k: v for k, v in vae.state_dict().items()}
    config = {"transformer": dit_config_to_official(DIT), "vae": vae_config_to_official(vae_cfg),
              "scheduler": {"_class_name": "RectifiedFlowScheduler", "sampler": "LinearQuadratic", "shifting": None},
              "allowed_inference_steps": LQ8}
    files = {"ckpt": save_official(root / "tiny.safetensors", tensors, config)}

    up_cfg = UpsamplerConfig(in_channels=16, mid_channels=32, num_blocks_per_stage=1)
    up = LatentUpsampler(up_cfg).init_weights()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in up.state_dict().items()}, str(root / "up.safetensors"),
              metadata={"config": json.dumps(upsampler_config_to_official(up_cfg))})
    files["up"] = root / "up.safetensors"

    g = torch.Generator().manual_seed(2)
    mask = torch.ones(2, 8)
    mask[1, 5:] = 0
    files["emb"] = save_embeddings(root / "emb.safetensors", torch.randn(2, 8, 32, generator=g), mask)
    files["neg"] = save_embeddings(root / "neg.safetensors", torch.randn(1, 8, 32, generator=g), torch.ones(1, 8))

    from PIL import Image

    img = (torch.rand(48, 80, 3, generator=g) * 255).to(torch.uint8).numpy()  # another aspect ratio: cropped
    Image.fromarray(img).save(root / "first.png")
    Image.fromarray(img[:, ::-1].copy()).save(root / "key.png")
    (root / "broken.png").write_text("not an image")
    files |= {"first": root / "first.png", "key": root / "key.png", "broken": root / "broken.png"}

    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4))
    t5.save_pretrained(root / "t5" / "text_encoder")
    ByT5Tokenizer().save_pretrained(root / "t5" / "tokenizer")
    files["t5"] = root / "t5"

    models = root / "configs" / "model"  # a preset for the CLI, found through hydra.searchpath
    models.mkdir(parents=True)
    from omegaconf import OmegaConf

    (models / "tiny.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(preset(BASE))))
    files["configs"] = root / "configs"
    return files


def config(tiny, tmp_path, sampling=BASE, **kw) -> app.GenerateConfig:
    base = dict(model=preset(sampling), checkpoint=str(tiny["ckpt"]), embeddings=str(tiny["emb"]),
                negative_embeddings=str(tiny["neg"]), prompts=["a red square", "a blue disc"], height=64, width=64,
                num_frames=17, fps=8.0, seed=3, device="cpu", output_dir=str(tmp_path / "out"))
    return app.GenerateConfig(**(base | kw))


def read_mp4(path: Path) -> torch.Tensor:
    """(F, H, W, 3) uint8 frames of an mp4, decoded with PyAV."""
    with av.open(str(path)) as c:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])


@pytest.fixture
def no_weights(monkeypatch):
    """Make any weight load fail: a bad-input error must come first."""
    def boom(*a, **k):
        raise AssertionError("weights were loaded before the bad input was reported")

    monkeypatch.setattr("ltx.ltxv.api.load_component", boom)  # Pipeline.load, which the app calls
    monkeypatch.setattr("ltx.ltxv.text.T5TextEncoder", boom)


def test_cli_end_to_end(tiny, tmp_path):
    """`python -m infer.generate` on the tiny model: two prompts (one batch), an image at frame 0 and a keyframe,
    CFG + STG; two playable mp4s of 17 frames at 64x64, contact sheets and resolved configs."""
    out = tmp_path / "out"
    cond = f"[{{path: {tiny['first']}, frame: 0}}, {{path: {tiny['key']}, frame: 8, strength: 0.8}}]"
    cmd = [sys.executable, "-m", "infer.generate", f"hydra.searchpath=[file://{tiny['configs']}]", "model=tiny",
           f"checkpoint={tiny['ckpt']}", f"embeddings={tiny['emb']}", f"negative_embeddings={tiny['neg']}",
           'prompts=["a red square", "a blue disc"]', "height=64", "width=64", "num_frames=17", "fps=8",
           f"conditioning={cond}", f"output_dir={out}", "device=cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = out / "run_000"
    assert f"wrote 2 video(s) to {run}" in r.stdout
    videos = sorted(run.glob("*.mp4"))
    assert [v.name for v in videos] == ["00_a_red_square.mp4", "01_a_blue_disc.mp4"]
    for v in videos:
        frames = read_mp4(v)
        assert frames.shape == (17, 64, 64, 3)
        assert v.with_suffix(".png").stat().st_size > 0
        record = v.with_suffix(".yaml").read_text()
        assert "prompt: a " in record and "vae_scale:\n- 8\n- 8\n- 8" in record
    a, b = read_mp4(videos[0]).float(), read_mp4(videos[1]).float()
    assert (a - b).abs().mean() > 1  # different prompts -> different videos
    assert list(tmp_path.iterdir()) == [out]  # Hydra wrote nothing into the working directory


def test_run_t5_multiscale_tiled_matches_written_video(tiny, tmp_path):
    """In-process: a tiny T5 (ByT5 tokenizer) encodes the prompt, multi-scale with the upsampler, tiled VAE; the
    mp4 holds the generated frames (up to H.264 loss, bounds below)."""
    cfg = config(tiny, tmp_path, MULTI, embeddings=None, negative_embeddings=None, text_encoder=str(tiny["t5"]),
                 prompts=["a green triangle"], upsampler_checkpoint=str(tiny["up"]), vae_tiling=True, name="ms")
    frames_seen = {}
    generate = app.generate

    def spy(*a, **k):
        frames_seen["x"] = generate(*a, **k)
        return frames_seen["x"]

    app.generate = spy
    try:
        (path,) = app.run(cfg)
    finally:
        app.generate = generate
    assert path.parent == tmp_path / "out" / "ms"
    video = read_mp4(path).float()
    expected = frames_seen["x"][0].permute(1, 2, 3, 0) * 255  # (F, H, W, 3)
    assert video.shape == expected.shape == (17, 64, 64, 3)
    # the random model's frames are pixel noise, which H.264 + 4:2:0 chroma keep only on average (measured:
    # per-pixel mean |diff| 16 of 255; over 8x8 blocks 1.3 mean, 5.5 max; against the time-reversed video 6.1)
    pool = lambda v: torch.nn.functional.avg_pool2d(v.permute(0, 3, 1, 2), 8)  # noqa: E731
    err = (pool(video) - pool(expected)).abs()
    assert err.mean() < 3 and err.max() < 12
    assert (pool(video) - pool(expected.flip(0))).abs().mean() > 2 * err.mean()  # frame order kept


def test_run_chained_segments(tiny, tmp_path):
    """segments=2 with a 9-frame overlap: 2 * 17 - 9 = 25-frame videos (CFG off, so no negative embeddings)."""
    paths = app.run(config(tiny, tmp_path, segments=2, guidance_scale=1.0, negative_embeddings=None))
    assert [read_mp4(p).shape for p in paths] == [(25, 64, 64, 3)] * 2


def test_help_documents_the_options():
    r = subprocess.run([sys.executable, "-m", "infer.generate", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)  # a hang guard, not a speed limit
    assert r.returncode == 0, r.stderr
    for option in ("model=NAME", "checkpoint=PATH", "embeddings=PATH", "conditioning=", "vae_tiling", "steps=N",
                   "ltxv-2b-0.9.8-distilled", "ltx-demo", "num_frames: 17"):  # the default preset: the demo
        assert option in r.stdout, option


def _claim(cfg) -> Path:
    with app.output_folder(cfg) as folder:
        (folder.path / "00_x.mp4").write_bytes(b"new")
    return folder.final


def test_output_folders_are_never_reused(tiny, tmp_path, no_weights):
    cfg = config(tiny, tmp_path)
    assert _claim(cfg).name == "run_000"
    assert _claim(cfg).name == "run_001"
    named = config(tiny, tmp_path, name="mine")
    assert _claim(named).name == "mine"
    with pytest.raises(app.InputError, match="exists and is not empty.*overwrite=true"):
        app.run(named)
    assert _claim(config(tiny, tmp_path, name="mine", overwrite=True)).name == "mine"
    assert sorted(p.name for p in tmp_path.joinpath("out").iterdir()) == ["mine", "run_000", "run_001"]


def test_a_named_folder_filled_meanwhile_is_not_shared(tiny, tmp_path, no_weights, capsys):
    """Two runs with the same name= at once: the one that finishes second gets name_1, never a shared folder."""
    cfg = config(tiny, tmp_path, name="same")
    with app.output_folder(cfg) as first:
        (first.path / "00_a.mp4").write_bytes(b"first")
        with app.output_folder(cfg) as second:  # started while the first was still writing
            (second.path / "00_b.mp4").write_bytes(b"second")
    assert second.final.name == "same" and first.final.name == "same_1"
    assert [p.name for p in first.final.iterdir()] == ["00_a.mp4"] and [p.name for p in second.final.iterdir()] == [
        "00_b.mp4"]
    assert "filled by another run meanwhile" in capsys.readouterr().out


def test_a_failed_write_leaves_no_folder(tiny, tmp_path, monkeypatch):
    """A full disk while writing the outputs: no half-written run folder (an mp4 without its png / yaml)."""
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app, "write_contact_sheet", full)
    with pytest.raises(OSError, match="No space left"):
        app.run(config(tiny, tmp_path))
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("kw, message", [
    (dict(height=60), r"height 60 is not a positive multiple of 8 \(nearest: 56 or 64\)"),
    (dict(width=70, num_frames=20), r"width 70 .*nearest: 64 or 72.*num_frames 20 .*nearest: 17 or 25"),
    (dict(steps=5), r"not allowed by this \(distilled\) checkpoint.*\[1, 2, 4, 8\]"),
    (dict(conditioning=[app.ConditioningSpec(path="KEY", frame=17)]), r"frame 17 is outside the video \(frames 0..16"),
    (dict(conditioning=[app.ConditioningSpec(path="BROKEN")]), r"cannot read conditioning image .*broken.png"),
    (dict(embeddings=None, negative_embeddings=None), r"no text encoder given.*embeddings="),
    (dict(embeddings=None, text_encoder="/nonexistent/t5"), r"text encoder /nonexistent/t5 does not exist"),
    (dict(negative_embeddings=None), r"needs negative-prompt embeddings.*negative_embeddings="),
    (dict(prompts=["only one"]), r"1 prompts but the embeddings file holds 2"),
    (dict(stg_blocks=[5]), r"STG blocks \[5\] do not exist"),
    (dict(checkpoint="/nonexistent/ckpt.safetensors"), r"checkpoint /nonexistent/ckpt.safetensors does not exist"),
    (dict(segments=2, segment_overlap=8), r"segment_overlap must be 8k \+ 1 frames"),
    (dict(sampling=MULTI), r"multi-scale: pass upsampler_checkpoint=/path/to/tiny-upsampler.safetensors"),
])  # fmt: skip
def test_bad_input_fails_before_loading_weights(tiny, tmp_path, no_weights, kw, message):
    sampling = kw.pop("sampling", BASE)
    if "conditioning" in kw:  # the paths of the module's files, by name
        kw["conditioning"] = [app.ConditioningSpec(path=str(tiny[c.path.lower()]), frame=c.frame)
                              for c in kw["conditioning"]]
    with pytest.raises(app.InputError, match=message):
        app.run(config(tiny, tmp_path, sampling, **kw))
    assert not (tmp_path / "out").exists()  # nothing written either


def test_config_rejects_typos_and_bad_values(tiny):
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    raw = OmegaConf.create({"model": OmegaConf.structured(preset(BASE)), "height": 64})
    assert app.to_config(raw).height == 64
    with pytest.raises(ConfigKeyError):
        app.to_config(OmegaConf.merge(raw, {"heigth": 64}))
    with pytest.raises(ValidationError):
        app.to_config(OmegaConf.merge(raw, {"height": "tall"}))
    with pytest.raises(ValueError, match="strength 1.5"):
        app.to_config(OmegaConf.merge(raw, {"conditioning": [{"path": "a.png", "strength": 1.5}]}))
    for name in ("guidance_scale", "audio_guidance_scale", "modality_scale"):  # 0 is not "unset"
        with pytest.raises(ValueError, match=f"{name}=0.0 is invalid: give a finite .*scale >= 1"):
            app.to_config(OmegaConf.merge(raw, {name: 0.0}))
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="audio_start=.* is invalid: give a start time >= 0"):
            app.to_config(OmegaConf.merge(raw, {"audio_start": bad}))


def test_official_image_preprocessing():
    """Blur: torchvision's 3x3 sigma-1 kernel (closed form); CRF re-encoding: equal to the official compressor."""
    x = torch.zeros(3, 5, 5)
    x[:, 2, 2] = 1
    k = torch.exp(-0.5 * torch.tensor([1.0, 0.0, 1.0]))
    k = k / k.sum()
    torch.testing.assert_close(app.gaussian_blur3(x)[:, 1:4, 1:4], (k[:, None] * k[None]).expand(3, 3, 3))
    torch.testing.assert_close(app.gaussian_blur3(torch.full((3, 4, 6), 0.3)), torch.full((3, 4, 6), 0.3))
    g = torch.Generator().manual_seed(0)
    img = torch.rand(33, 48, 3, generator=g)  # odd height: cropped to 32
    ours = app.crf_compress(img)
    assert ours.shape == (32, 48, 3) and 0.01 < (ours - img[:32]).abs().mean() < 0.3  # lossy, but the same image
    pytest.importorskip("ltx_video")
    from ltx_video.pipelines.crf_compressor import compress

    assert torch.equal(ours, compress(img))


def test_missing_demo_weights_name_the_training_commands(tmp_path):
    r = subprocess.run([sys.executable, "-m", "infer.generate", f"checkpoint={tmp_path}/none.safetensors",
                        'prompts=["a red circle moves up"]', f"output_dir={tmp_path}/out"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)  # a hang guard, not a speed limit
    assert r.returncode != 0
    assert "none.safetensors does not exist" in r.stderr and "python -m train.train_dit" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module,override,words", [
    ("infer.generate", "seed=abc", "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    ("infer.generate", "sed=3", "sed=3: Key 'sed' not in 'GenerateConfig'"),
    ("infer.generate", "model=nope", "Could not find 'model/nope'; Available options in 'model': ltx-2-19b-dev"),
    ("train.preprocess", "reference_downscale=abc", "reference_downscale=abc: Value 'abc'"),
    ("train.finetune", "reference_video=maybe", "reference_video=maybe: Value 'maybe' is not a valid bool"),
    ("train.distill", "lora.rnak=3", "lora.rnak=3: Key 'rnak' not in 'LoRASettings'"),
    ("train.train_dit", "steps=1.5", "steps=1.5: Value '1.5' of type 'float' could not be converted to Integer"),
])
def test_overrides_the_schema_refuses_are_one_line(module, override, words):
    """A typo or a value of the wrong type, in any Hydra app: `error: <override>: <why>`, exit status 1."""
    r = subprocess.run([sys.executable, "-m", module, override], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
