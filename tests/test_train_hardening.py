"""Bad input to the training apps is refused at the entry point, by name, in one line, and a refused or
interrupted run leaves its files as they were: config fields, run folders, damaged or foreign checkpoints,
damaged caches, and metrics.jsonl after kills and resumes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf

from ltx.ltxv.vae import VAEConfig
from train import train_vae
from train.runner import RunError

NAN, INF = math.nan, math.inf


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _vae_cfg(run_dir, steps=2, **kw):
    yaml = OmegaConf.load(REPO / "configs/demo/vae.yaml")
    vae = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VAEConfig), yaml))
    vae = replace(vae, encoder_base_channels=kw.pop("channels", 4), decoder_base_channels=4)
    base = dict(run_dir=str(run_dir), vae=vae, steps=steps, batch_size=1, num_videos=4, eval_videos=1, stats_videos=1,
                log_every=1, checkpoint_every=2, wandb=False, threads=1, sample_every=100, sample_videos=1)
    return train_vae.TrainVAEConfig(**(base | kw))


def _steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- config fields
_COMMON = {  # field -> bad values, for both training configs
    "steps": [-5, 0, NAN, INF], "batch_size": [0, -1, NAN], "lr": [-1.0, 0.0, NAN, INF],
    "log_every": [0, -1], "checkpoint_every": [0], "sample_every": [0], "threads": [0, -2],
    "warmup": [-1, NAN], "stop_after": [0, -3], "num_videos": [0], "seed": [-1], "weight_decay": [-0.1, NAN, INF],
    "frames": [16, 0, -7], "size": [50, 0, -32],
}
_DIT = _COMMON | {
    "ema": [-0.1, 1.0, NAN, INF], "caption_dropout": [-0.1, 1.0, NAN], "text_lr": [-1.0, NAN, INF],
    "min_lr_ratio": [-0.1, 1.5, NAN], "fps": [0.0, -8.0, NAN, INF], "text_tokens": [0], "sample_prompts": [1, 0],
    "sample_steps": [0], "sample_guidance": [NAN, INF, 0.5], "lr_schedule": ["linear"], "sigma_sampler": ["normal"],
}
_VAE = _COMMON | {
    "kl_weight": [-1.0, NAN, INF], "fg_weight": [0.0, -1.0, NAN, INF], "latent_noise": [-0.1, NAN, INF],
    "eval_videos": [0], "stats_videos": [0], "sample_videos": [0], "crop_frames": [8, 0, 25], "crop_size": [20, 0, 96],
}


def _cases(table):
    return [(f, v) for f, values in table.items() for v in values]


@pytest.mark.parametrize("field, value", _cases(_DIT), ids=lambda x: str(x))
def test_dit_config_field_refused(field, value):
    from train.train_dit import TrainDiTConfig

    with pytest.raises(ValueError, match=rf"^{field}=") as e:
        TrainDiTConfig(**{field: value})
    assert "invalid" in str(e.value)


@pytest.mark.parametrize("field, value", _cases(_VAE), ids=lambda x: str(x))
def test_vae_config_field_refused(field, value, tmp_path):
    with pytest.raises(ValueError, match=rf"^{field}=") as e:
        _vae_cfg(tmp_path, **{field: value})
    assert "invalid" in str(e.value)


def test_nearest_valid_size_is_named(tmp_path):
    from train.train_dit import TrainDiTConfig

    with pytest.raises(ValueError, match="nearest valid: 9 or 17"):
        TrainDiTConfig(frames=12)
    with pytest.raises(ValueError, match="nearest valid: 32 or 64"):
        _vae_cfg(tmp_path, size=50)
    with pytest.raises(ValueError, match="crop_size=96 is invalid: must be <= size=64"):
        _vae_cfg(tmp_path, crop_size=96)


@pytest.mark.parametrize("field, value", [("seed", -1), ("pretrain_steps", -1), ("threads", 0), ("threads", NAN)])
def test_text_encoder_config_field_refused(field, value, tmp_path):
    from train.make_text_encoder import MakeTextEncoderConfig

    with pytest.raises(ValueError, match=rf"^{field}="):
        MakeTextEncoderConfig(path=str(tmp_path / "t5"), **{field: value})


def test_defaults_are_valid():
    from train.make_text_encoder import MakeTextEncoderConfig
    from train.train_dit import TrainDiTConfig

    TrainDiTConfig(), train_vae.TrainVAEConfig(), MakeTextEncoderConfig(path="t5")


# ---------------------------------------------------------------------------------------------- run folders
def test_unusable_run_dir_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        train_vae.train(_vae_cfg(tmp_path / "file"))
    with pytest.raises(RunError, match="cannot be made"):
        train_vae.train(_vae_cfg(tmp_path / "file" / "run"))
    from train.make_text_encoder import make

    with pytest.raises(FileExistsError, match="is a file"):
        make(tmp_path / "file", overwrite=True)


def test_one_line_errors_and_no_folder(tmp_path):
    """The Hydra apps print one line naming the field or file; a refused run makes no folder, and a damaged
    checkpoint.pt leaves config.json as it was."""
    run = [sys.executable, "-m", "train.train_dit", f"run_dir={tmp_path / 'dit'}"]
    r = subprocess.run(run + ["lr=-1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == ["error: lr=-1.0 is invalid: must be a finite number > 0"]
    assert not (tmp_path / "dit").exists()
    r = subprocess.run(run + ["vae_checkpoint=none.safetensors"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "vae_checkpoint=none.safetensors does not exist" in r.stderr and not (tmp_path / "dit").exists()

    vae_run = tmp_path / "vae"
    vae_run.mkdir()
    (vae_run / "config.json").write_text('{"old": 1}\n')
    (vae_run / "checkpoint.pt").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "train.train_vae", f"run_dir={vae_run}", "wandb=false"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)  # a hang guard, not a speed limit
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {vae_run / 'checkpoint.pt'} is empty") and "delete it" in lines[0]
    assert (vae_run / "config.json").read_text() == '{"old": 1}\n'


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A tiny VAE run stopped after its step-1 checkpoint (steps=3)."""
    root = tmp_path_factory.mktemp("stopped") / "run"
    train_vae.train(_vae_cfg(root, steps=3, stop_after=1))
    return root


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_refused_before_writing(stopped_run, tmp_path, damage):
    run = _copy(stopped_run, tmp_path / "run")
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10}[damage])
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(RunError, match=f"^{ckpt}.*delete it to start the run over"):
        train_vae.train(_vae_cfg(run, steps=3, lr=5e-4))  # another lr: config.json would change
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_checkpoint_of_another_model_refused(stopped_run, tmp_path):
    run = _copy(stopped_run, tmp_path / "run")
    config = (run / "config.json").read_text()
    with pytest.raises(RunError, match=rf"^{run / 'checkpoint.pt'} was written by another model .*shape mismatch"):
        train_vae.train(_vae_cfg(run, steps=3, channels=8))
    assert (run / "config.json").read_text() == config


def test_init_from_of_the_wrong_kind_refused(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match="init_from=.*none.pt does not exist"):
        train_vae.train(_vae_cfg(tmp_path / "r", init_from=str(tmp_path / "none.pt")))
    with pytest.raises(ValueError, match="init_from=.*bad.pt cannot be read"):
        train_vae.train(_vae_cfg(tmp_path / "r", init_from=str(tmp_path / "bad.pt")))
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- metrics
def test_metrics_have_each_step_once_after_kills_and_resumes(stopped_run, tmp_path, monkeypatch):
    """A run killed after logging a step it had not checkpointed logs that step again when resumed: the
    resume cuts metrics.jsonl back to the checkpoint, so every step appears once."""
    run = _copy(stopped_run, tmp_path / "run")
    assert _steps(run) == [1]
    real_log = train_vae.Run.log

    def log_then_die(self, metrics):
        real_log(self, metrics)
        if self.step == 3:  # logged, not yet checkpointed (checkpoint_every=2): killed here
            raise KeyboardInterrupt

    monkeypatch.setattr(train_vae.Run, "log", log_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_vae.train(_vae_cfg(run, steps=4))
    assert _steps(run) == [1, 2, 3]
    monkeypatch.setattr(train_vae.Run, "log", real_log)
    train_vae.train(_vae_cfg(run, steps=4))  # resumes at the step-2 checkpoint
    assert _steps(run) == [1, 2, 3, 4]
    train_vae.train(_vae_cfg(run, steps=4))  # a finished run run again
    assert _steps(run) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- caches
def test_garbage_latent_cache_is_rebuilt(tmp_path, capsys):
    from ltx.data.shapes import ShapesWorld
    from train.train_dit import encode_dataset

    class Encoder:
        def encode(self, video):
            return video[:, :2, ::8, ::8, ::8].clone()

    data = ShapesWorld(num_samples=2, frames=9, height=32, width=32)
    cache = tmp_path / "latents.pt"
    for garbage in (b"", b"garbage", None):
        if garbage is None:
            torch.save({"n": 2, "latents": "no"}, cache)
        else:
            cache.write_bytes(garbage)
        latents, captions = encode_dataset(Encoder(), data, cache, "space")
        assert latents.shape == (2, 2, 2, 4, 4) and len(captions) == 2
        assert f"{cache} " in capsys.readouterr().out
    assert encode_dataset(Encoder(), data, cache, "space")[0].shape == (2, 2, 2, 4, 4)  # the rebuilt one is used
    assert capsys.readouterr().out == ""


def _tiny_cache(root):
    """A hand-made one-item latent cache (ltx/data/latent_cache.py format)."""
    from ltx.data.latent_cache import NULL_ID, latent_file, text_file
    from train.preprocess import save

    for d in ("latents", "text"):
        (root / d).mkdir(parents=True)
    item = {"id": "a", "media_path": "a.mp4", "caption": "a red circle", "reference_path": None,
            "bucket": [9, 32, 32], "latent_shape": [2, 2, 1, 1], "fps": None}
    save(latent_file(root, "a"), {"latents": torch.zeros(2, 2, 1, 1)}, {"item": json.dumps(item), "latent_space": "s"})
    for iid in ("a", NULL_ID):
        save(text_file(root, iid), {"context": torch.zeros(4, 8), "mask": torch.ones(4, dtype=torch.int64)}, {})
    index = {"version": 1, "complete": True, "vae": {"checkpoint": "v", "latent_space": "s", "scale": [8, 32, 32],
             "latent_channels": 2}, "text_encoder": {"path": "t", "max_tokens": 4}, "precision": "float32",
             "buckets": [[9, 32, 32]], "max_upscale": 2.0, "items": [item], "skipped": []}
    (root / "index.json").write_text(json.dumps(index))
    return root


def test_damaged_or_foreign_latent_cache_items_are_named(tmp_path):
    from ltx.data.latent_cache import LatentCache, latent_file, text_file
    from train.preprocess import save

    root = _tiny_cache(tmp_path / "c")
    assert LatentCache(root)[0]["latents"].shape == (2, 2, 1, 1)
    good = latent_file(root, "a").read_bytes()
    latent_file(root, "a").write_bytes(good[: len(good) - 4])  # truncated
    with pytest.raises(ValueError, match=f"^{latent_file(root, 'a')}: damaged cache file.*train.preprocess"):
        LatentCache(root)
    save(latent_file(root, "a"), {"latents": torch.zeros(4, 2, 1, 1)}, {"latent_space": "other"})
    with pytest.raises(ValueError, match="another VAE"):
        LatentCache(root)
    latent_file(root, "a").write_bytes(good)
    text_file(root, "a").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"^{text_file(root, 'a')}: damaged cache file"):
        LatentCache(root)
