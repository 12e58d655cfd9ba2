"""Training apps: a few steps lower the loss, and a run resumed from its checkpoint continues exactly as the
uninterrupted run (same losses, bit for bit)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import REPO
from omegaconf import OmegaConf

from ltx.ltxv.vae import VAEConfig
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
    assert (part / "samples/step_000004.png").is_file()  # the final reconstruction sheet
    final_a = torch.load(full / "vae_final.pt")
    final_b = torch.load(part / "vae_final.pt")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.slow
def test_vae_training_lowers_the_loss(tmp_path):
    train_vae.train(_vae_cfg(tmp_path, steps=30, lr=3e-3))
    losses = [r["loss"] for r in _losses(tmp_path)]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_foreground_weight_marks_exactly_the_shape_pixels():
    video = torch.full((3, 5, 16, 16), -0.5)
    video[:, :, 4:8, 6:11] = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1, 1)  # a red box on every frame
    w = train_vae.foreground_weight(video, 10.0)
    expected = torch.ones(1, 5, 16, 16)
    expected[:, :, 4:8, 6:11] = 10.0
    assert torch.equal(w, expected)


@pytest.mark.slow
def test_decoder_finetuning_keeps_the_latent_space(tmp_path):
    """train_encoder=false: the encoder and the latent statistics come out bitwise equal to the start VAE's
    (so a DiT trained on its latents stays valid), the decoder changes, and the run resumes exactly."""
    base = tmp_path / "base"
    train_vae.train(_vae_cfg(base, steps=2))
    with pytest.raises(ValueError, match="init_from"):
        train_vae.train(_vae_cfg(tmp_path / "bad", steps=2, train_encoder=False))
    kw = dict(init_from=str(base / "vae_final.pt"), train_encoder=False, fg_weight=10.0, latent_noise=0.05,
              crop_frames=17, crop_size=64, lr=3e-3)
    full, part = tmp_path / "full", tmp_path / "part"
    train_vae.train(_vae_cfg(full, steps=4, **kw))
    train_vae.train(_vae_cfg(part, steps=4, stop_after=2, **kw))
    train_vae.train(_vae_cfg(part, steps=4, **kw))
    a = {r["step"]: r["loss"] for r in _losses(full)}
    b = {r["step"]: r["loss"] for r in _losses(part)}
    assert a[3] == b[3] and a[4] == b[4]
    before, after = torch.load(base / "vae_final.pt"), torch.load(full / "vae_final.pt")
    frozen = [k for k in before if not k.startswith("decoder.")]
    assert any(k.startswith("encoder.") for k in frozen) and any("per_channel" in k for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    report = json.loads((full / "report.json").read_text())
    assert set(report["reconstruction_accuracy_heldout"]) == {"colour", "motion"}


def test_export_refuses_a_vae_of_another_latent_space(tmp_path):
    """export_demo pairs a DiT run only with a VAE that encodes into the latent space it trained on: the same
    encoder and statistics pass whatever the decoder, another encoder is refused by name."""
    from ltx.ltxv.transformer import DiT, DiTConfig
    from ltx.ltxv.vae import VideoVAE
    from train import export_demo

    vae_cfg = export_demo._config(VAEConfig, REPO / "configs/demo/vae.yaml")
    dit_cfg = export_demo._config(DiTConfig, REPO / "configs/demo/dit.yaml")
    vae = VideoVAE(vae_cfg).init_weights(torch.Generator().manual_seed(0))
    dit_run, vae_run = tmp_path / "dit", tmp_path / "vae"
    dit_run.mkdir(), vae_run.mkdir()
    torch.save(DiT(dit_cfg).init_weights(torch.Generator().manual_seed(0)).state_dict(), dit_run / "dit_ema.pt")
    (dit_run / "latent_space.json").write_text(json.dumps({"latent_space": train_vae.latent_space_id(vae)}))
    with torch.no_grad():
        next(vae.decoder.parameters()).add_(1.0)  # a fine-tuned decoder: same latent space
    torch.save(vae.state_dict(), vae_run / "vae_final.pt")
    out = export_demo.export(vae_run, dit_run, tmp_path / "demo.safetensors")
    assert out.is_file()
    with torch.no_grad():
        next(vae.encoder.parameters()).add_(1.0)  # another encoder
    torch.save(vae.state_dict(), vae_run / "vae_final.pt")
    with pytest.raises(ValueError, match="latent space"):
        export_demo.export(vae_run, dit_run, tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()


def test_reconstruction_accuracy_of_a_perfect_autoencoder_is_full():
    from ltx.data.shapes import ShapesWorld

    data = ShapesWorld(split="heldout", num_samples=8, seed=3)
    scores = train_vae.reconstruction_scores(torch.nn.Identity(), data, 8)
    assert {k: scores[k] for k in ("colour", "motion")} == {"colour": 100.0, "motion": 100.0}
    assert scores["psnr_db"] == float("inf")


@pytest.fixture(scope="module")
def demo_parts(tmp_path_factory):
    """A random demo-layout VAE checkpoint and the demo text encoder, made from scratch in a temp folder."""
    from ltx.ltxv.checkpoint import checkpoint_from_modules, write_ltx
    from ltx.ltxv.vae import VideoVAE
    from train.make_text_encoder import make

    root = tmp_path_factory.mktemp("demo")
    cfg = _vae_cfg(root, steps=1).vae
    torch.manual_seed(0)
    write_ltx(checkpoint_from_modules({"vae": VideoVAE(cfg).init_weights()}), root / "vae.safetensors")
    make(root / "text_encoder")
    return root


def _dit_cfg(run_dir, demo_parts, steps, **kw):
    from ltx.ltxv.transformer import DiTConfig
    from train import train_dit

    dit = DiTConfig(num_layers=2, num_heads=2, head_dim=16, in_channels=16, out_channels=16, caption_channels=128,
                    causal_temporal_positioning=True)
    return train_dit.TrainDiTConfig(run_dir=str(run_dir), dit=dit, vae_checkpoint=str(demo_parts / "vae.safetensors"),
                                    text_encoder=str(demo_parts / "text_encoder"), steps=steps, batch_size=4,
                                    num_videos=16, log_every=1, checkpoint_every=3, wandb=False, threads=1,
                                    sample_every=30, sample_prompts=2, sample_steps=3, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("text_lr, schedule", [(0.0, "constant"), (2e-3, "cosine")], ids=["frozen-text", "joint-text"])
def test_dit_training_resumes_exactly_and_learns(tmp_path, demo_parts, text_lr, schedule):
    from safetensors.torch import load_file

    from train import train_dit

    full, part = tmp_path / "full", tmp_path / "part"
    kw = dict(steps=40, lr=2e-3, text_lr=text_lr, lr_schedule=schedule)
    train_dit.train(_dit_cfg(full, demo_parts, **kw))
    train_dit.train(_dit_cfg(part, demo_parts, stop_after=35, **kw))
    train_dit.train(_dit_cfg(part, demo_parts, **kw))
    a = {r["step"]: r["loss"] for r in _losses(full)}
    b = {r["step"]: r["loss"] for r in _losses(part)}
    assert [a[s] for s in range(36, 41)] == [b[s] for s in range(36, 41)]
    ema_a, ema_b = torch.load(full / "dit_ema.pt"), torch.load(part / "dit_ema.pt")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert sorted(p.name for p in (part / "samples").glob("*.png")) == ["step_000030.png", "step_000040.png"]
    from ltx.ltxv.checkpoint import load_component

    space = train_vae.latent_space_id(load_component(demo_parts / "vae.safetensors", "vae"))
    assert json.loads((part / "latent_space.json").read_text())["latent_space"] == space  # what export checks
    assert torch.load(part / "latents.pt", weights_only=False)["latent_space"] == space
    from ltx.ltxv.checkpoint import checkpoint_from_modules, write_ltx
    from ltx.ltxv.vae import VideoVAE

    other = VideoVAE(_vae_cfg(tmp_path, steps=1).vae).init_weights(torch.Generator().manual_seed(1))
    write_ltx(checkpoint_from_modules({"vae": other}), tmp_path / "other_vae.safetensors")
    with pytest.raises(ValueError, match="latent space"):  # resuming on another VAE's latents is refused
        other_cfg = replace(_dit_cfg(part, demo_parts, **kw), vae_checkpoint=str(tmp_path / "other_vae.safetensors"))
        train_dit.train(other_cfg)
    if text_lr:  # the jointly trained text encoder is written out, equal after the resume, and has moved
        t5 = "text_encoder/text_encoder/model.safetensors"
        ta, tb = load_file(full / t5), load_file(part / t5)
        t0 = load_file(demo_parts / "text_encoder/text_encoder/model.safetensors")
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
        assert any(not torch.equal(ta[k], t0[k]) for k in ta)
    losses = [a[s] for s in sorted(a)]
    # measured: 1.02 -> 0.83 over 40 steps; batch-4 loss noise is about +-5%, so 0.9 separates learning from luck
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:5]) / 5, losses


def test_demo_preset_matches_training_configs():
    """The generate preset and the training app describe the same demo transformer."""
    from ltx.ltxv.transformer import DiTConfig
    from ltx.presets import ModelPreset

    preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset),
                                                 OmegaConf.load(REPO / "configs/model/ltx-demo.yaml")))
    trained = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DiTConfig),
                                                  OmegaConf.load(REPO / "configs/demo/dit.yaml")))
    assert preset.dit == trained
    # the RoPE time positions are frame / fps: training and sampling must use the same fps
    assert OmegaConf.load(REPO / "configs/train_dit.yaml").fps == preset.generation.fps


def test_lr_schedule_closed_form():
    from train.train_dit import TrainDiTConfig, lr_factor

    cfg = TrainDiTConfig(steps=1100, warmup=100, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(cfg, 0) == pytest.approx(0.01) and lr_factor(cfg, 99) == pytest.approx(1.0)
    assert lr_factor(cfg, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 600) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert lr_factor(cfg, 1100) == pytest.approx(0.1)
    assert lr_factor(TrainDiTConfig(lr_schedule="constant"), 5000) == 1.0
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(TrainDiTConfig(lr_schedule="linear"), 500)


def test_text_encoder_pretraining_labels_and_learning():
    """The caption-reading targets agree with the caption parser, and a few steps lower the loss."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from ltx.data.shapes import parse_caption
    from train.make_text_encoder import FIELDS, caption_batch, pretrain, scene_labels

    texts, labels = caption_batch("train", 64, seed=3)
    assert labels.shape == (64, len(FIELDS))
    assert all(scene_labels(parse_caption(t)) == row.tolist() for t, row in zip(texts, labels))
    assert (labels[:, 3] == 6).any() and (labels[:, 3] < 6).any()  # one- and two-shape scenes both occur

    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(vocab_size=384, d_model=128, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                                    feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False))
    first = pretrain(model, ByT5Tokenizer(), steps=1, seed=0)["final_loss"]
    torch.manual_seed(0)
    model = T5EncoderModel(model.config)
    report = pretrain(model, ByT5Tokenizer(), steps=60, seed=0)
    assert report["final_loss"] < 0.8 * first, (first, report)


def test_training_configs_compose():
    """The documented commands' configs resolve to valid schemas: the 45-minute defaults and the decoder stage
    (which inherits configs/train_vae.yaml and overrides it)."""
    from hydra import compose, initialize_config_dir

    from train import train_dit

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        dec = compose(config_name="train_vae_decoder")
        vae = compose(config_name="train_vae")
        dit = compose(config_name="train_dit")
    dec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(train_vae.TrainVAEConfig), dec))
    vae = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(train_vae.TrainVAEConfig), vae))
    OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(train_dit.TrainDiTConfig), dit))
    assert not dec.train_encoder and dec.init_from == f"{vae.run_dir}/vae_final.pt"
    assert (dec.crop_frames, dec.crop_size) == (dec.frames, dec.size) and dec.vae == vae.vae
