"""Training apps: a few steps lower the loss, and a run resumed from its checkpoint continues exactly as the
uninterrupted run (same losses, bit for bit)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf

from ltx.models.vae import VAEConfig
from train import train_vae


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _vae_cfg(run_dir, steps, **kw):
    yaml = OmegaConf.load(REPO / "configs/demo/vae.yaml")
    vae = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(VAEConfig), yaml))
    vae = replace(vae, encoder_base_channels=4, decoder_base_channels=4)  # smaller than the demo, same blocks
    return train_vae.TrainVAEConfig(run_dir=str(run_dir), vae=vae, steps=steps, batch_size=2, num_videos=32,
                                    eval_videos=2, stats_videos=4, log_every=1, checkpoint_every=2, wandb=False,
                                    threads=1, **kw)


def _losses(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_vae_training_resumes_exactly(tmp_path):
    full = tmp_path / "full"
    train_vae.train(_vae_cfg(full, steps=4))
    part = tmp_path / "part"
    train_vae.train(_vae_cfg(part, steps=4, stop_after=2))  # "killed" after the step-2 checkpoint
    train_vae.train(_vae_cfg(part, steps=4))  # resumed
    a = {r["step"]: r["loss"] for r in _losses(full)}
    b = {r["step"]: r["loss"] for r in _losses(part)}
    assert set(a) == {1, 2, 3, 4} and a[3] == b[3] and a[4] == b[4]
    assert (part / "loss.png").stat().st_size > 1000
    final_a = torch.load(full / "vae_final.pt")
    final_b = torch.load(part / "vae_final.pt")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.slow
def test_vae_training_lowers_the_loss(tmp_path):
    train_vae.train(_vae_cfg(tmp_path, steps=30, lr=3e-3))
    losses = [r["loss"] for r in _losses(tmp_path)]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
