"""Train the demo video VAE on ShapesWorld from scratch (CPU-sized), with exact resume.

    python -m train.train_vae                       # configs/train_vae.yaml
    python -m train.train_vae steps=200 run_dir=runs/vae_smoke

The model is the native LTX-Video VAE (`ltx.models.vae.VideoVAE`) with the small block list of
configs/demo/vae.yaml. Training clips are random 9-frame x 32 x 32 crops of 17 x 64 x 64 ShapesWorld videos
(the VAE is convolutional and causal in time, so it runs on full clips afterwards); the loss is
L1 + MSE reconstruction through a posterior sample plus a small KL term. At the end the per-channel latent
statistics (mean and std of posterior means over full clips) are measured and stored in the VAE, as the
official checkpoints carry them, and the reconstruction PSNR on full train and held-out clips is reported,
with the prompt-following accuracy of the reconstructions (`ltx.data.shapes_eval`): a DiT whose samples
decode through this VAE cannot score above it.
Every `sample_every` steps (and at the end) RUN/samples/step_NNNNNN.png shows held-out clips, each above its
reconstruction.

Shapes cover 1-17% of a frame, so a plain per-pixel loss is mostly background: `fg_weight` weighs the pixels
that differ from the clip's background (its per-channel median) that many times more.

Decoder fine-tuning (configs/train_vae_decoder.yaml): `init_from` a trained VAE and `train_encoder: false`
train the decoder alone, on full clips, with the encoder and the latent statistics frozen. The latent space
stays bitwise the same, so a DiT trained on the old VAE's latents works unchanged with the new decoder (as
Stable Diffusion's ft-MSE VAE fine-tuned only its decoder). `latent_noise` adds N(0, s^2) in the normalized
latent space, so that the decoder also sees latents a little off the encoder's, as a DiT's samples are.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ltx.data.shapes import ShapesWorld
from ltx.data.shapes_eval import estimate_background
from ltx.data.shapes_eval import evaluate as evaluate_prompt_following
from ltx.losses import gaussian_kl, psnr
from ltx.models.vae import VAEConfig, VideoVAE
from ltx.viz import save_video_grid
from train.runner import Run, peak_rss_mib, resume_lr, step_generator, train_loop

REPO = Path(__file__).resolve().parents[1]


@dataclass(kw_only=True)
class TrainVAEConfig:
    run_dir: str = "runs/demo_vae"
    vae: VAEConfig = field(default_factory=VAEConfig)  # filled from configs/demo/vae.yaml
    seed: int = 0
    steps: int = 4000
    batch_size: int = 6
    lr: float = 1e-3
    weight_decay: float = 0.0
    kl_weight: float = 1e-4
    fg_weight: float = 1.0  # loss weight of shape pixels relative to background pixels
    init_from: str | None = None  # start from this VAE: a run's vae_final.pt or any checkpoint with a VAE
    train_encoder: bool = True  # False: decoder fine-tuning; the encoder and latent statistics stay frozen
    latent_noise: float = 0.0  # std of noise added to the normalized latents before decoding
    warmup: int = 50
    crop_frames: int = 9
    crop_size: int = 32
    frames: int = 17
    size: int = 64
    num_videos: int = 4096  # distinct training clips (rendered on the fly, deterministic per index)
    eval_videos: int = 64
    stats_videos: int = 256  # clips used to measure the per-channel latent statistics
    sample_every: int = 1000  # write RUN/samples/step_NNNNNN.png: held-out clips over their reconstructions
    sample_videos: int = 4
    stop_after: int | None = None  # end this session at that step (resumable), e.g. to time-box a run
    log_every: int = 10
    checkpoint_every: int = 100
    threads: int = 2
    wandb: bool = True


def foreground_weight(video: torch.Tensor, fg_weight: float, threshold: float = 0.15) -> torch.Tensor:
    """(1, F, H, W) loss weights of a (3, F, H, W) clip in [-1, 1]: `fg_weight` where a pixel's summed
    absolute difference to the clip's background colour (per-channel median) exceeds `threshold`, else 1."""
    background = estimate_background(video).view(3, 1, 1, 1)  # the evaluator's estimate
    shape = (video - background).abs().sum(0, keepdim=True) > threshold
    return torch.where(shape, fg_weight, 1.0)


def batch(cfg: TrainVAEConfig, data: ShapesWorld, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of `step` (deterministic in seed and step): clips (B, 3, crop_frames, crop, crop)
    and their loss weights (B, 1, crop_frames, crop, crop), measured on the full clips before cropping."""
    g = step_generator(cfg.seed, step)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
    clips, weights = [], []
    for i in idx.tolist():
        v = data[i].video  # (3, F, H, W)
        w = foreground_weight(v, cfg.fg_weight)
        t0 = int(torch.randint(cfg.frames - cfg.crop_frames + 1, (1,), generator=g))
        y0, x0 = (int(v) for v in torch.randint(cfg.size - cfg.crop_size + 1, (2,), generator=g))
        crop = (slice(None), slice(t0, t0 + cfg.crop_frames), slice(y0, y0 + cfg.crop_size),
                slice(x0, x0 + cfg.crop_size))
        clips.append(v[crop])
        weights.append(w[crop])
    return torch.stack(clips), torch.stack(weights)


@torch.no_grad()
def measure_statistics(vae: VideoVAE, data: ShapesWorld, n: int) -> dict[str, float]:
    """Set the per-channel latent statistics from posterior means of `n` full clips."""
    means = []
    for start in range(0, n, 8):
        video = torch.stack([data[i].video for i in range(start, min(n, start + 8))])
        means.append(vae.encode_moments(video).chunk(2, dim=1)[0])
    z = torch.cat(means)  # (n, C, F', H', W') raw posterior means
    per_channel = z.transpose(0, 1).flatten(1)  # (C, everything)
    stats = vae.per_channel_statistics
    stats.mean.copy_(per_channel.mean(1))
    stats.std.copy_(per_channel.std(1).clamp_min(1e-4))
    return {"latent_mean_abs": per_channel.mean(1).abs().mean().item(),
            "latent_std_mean": per_channel.std(1).mean().item()}


@torch.no_grad()
def reconstruction_scores(vae: VideoVAE, data: ShapesWorld, n: int) -> dict[str, float]:
    """Reconstructions (posterior mean) of `n` full clips, scored two ways: PSNR in dB (mean over batches of 8),
    and prompt-following accuracy in % (`ltx.data.shapes_eval`, from pixels, against each clip's caption): the
    ceiling for a DiT decoded by this VAE."""
    psnrs, items = [], []
    for start in range(0, n, 8):
        samples = [data[i] for i in range(start, min(n, start + 8))]
        video = torch.stack([s.video for s in samples])
        recon = vae(video).clamp(-1, 1)
        psnrs.append(psnr(recon, video))
        items += [(f"{data.split}_{start + j}", r, s.caption) for j, (s, r) in enumerate(zip(samples, recon))]
    acc = evaluate_prompt_following(items).summary()["all"]
    return {"psnr_db": sum(psnrs) / len(psnrs), "colour": 100 * acc["color"], "motion": 100 * acc["motion"]}


@torch.no_grad()
def reconstruction_rows(vae: VideoVAE, data: ShapesWorld, n: int) -> list[torch.Tensor]:
    """[clip 0, its reconstruction, clip 1, ...] for the first `n` clips of `data` (posterior mean)."""
    video = torch.stack([data[i].video for i in range(min(n, len(data)))])
    recon = vae(video).clamp(-1, 1)
    return [row for pair in zip(video, recon) for row in pair]


def latent_space_id(vae: VideoVAE) -> str:
    """A fingerprint of the latent space a VAE encodes into: a hash of its encoder weights and latent
    statistics (not the decoder). A DiT trained on one latent space is only valid with VAEs of the same id."""
    h = hashlib.sha256()
    for name, t in sorted(vae.state_dict().items()):
        if not name.startswith("decoder."):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def initial_state(path: str) -> dict[str, torch.Tensor]:
    """The VAE state dict to start from: a training run's vae_final.pt, or the VAE of any checkpoint."""
    if Path(path).suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    from ltx.convert.formats import load_component

    return load_component(path, "vae").state_dict()


def train(cfg: TrainVAEConfig) -> dict:
    if not cfg.train_encoder and not cfg.init_from:
        raise ValueError("train_encoder=false fine-tunes the decoder of a trained VAE: set init_from to its "
                         "vae_final.pt or checkpoint (e.g. init_from=runs/demo_vae/vae_final.pt)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = ShapesWorld(split="train", num_samples=cfg.num_videos, frames=cfg.frames, height=cfg.size,
                       width=cfg.size, seed=cfg.seed)
    vae = VideoVAE(cfg.vae).init_weights(torch.Generator().manual_seed(cfg.seed))
    if cfg.init_from:
        vae.load_state_dict(initial_state(cfg.init_from), strict=True)
    vae.encoder.requires_grad_(cfg.train_encoder)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(  # warm-up, then linear decay to 10%
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * (0.1 + 0.9 * (1 - s / cfg.steps)))
    run = Run(Path(cfg.run_dir), cfg.seed)
    run.start(asdict(cfg), project="ltx-demo-vae", use_wandb=cfg.wandb)
    if run.resume({"vae": vae}, {"opt": opt}):
        resume_lr(sched, run.step)
    t0 = time.time()

    def step_fn(step: int) -> dict[str, float]:
        video, weight = batch(cfg, data, step)
        with torch.set_grad_enabled(cfg.train_encoder):
            mean, logvar = vae.encode_moments(video).chunk(2, dim=1)
        g = step_generator(cfg.seed + 1, step)
        z = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn(mean.shape, generator=g)
        if cfg.latent_noise:
            z = vae.denormalize(vae.normalize(z) + cfg.latent_noise * torch.randn(z.shape, generator=g))
        recon = vae.decoder(z)
        err = recon - video
        rec = ((err.abs() + err.square()) * weight).sum() / (weight.sum() * video.shape[1])
        kl = gaussian_kl(mean, logvar.clamp(-30, 20))
        loss = rec + cfg.kl_weight * kl if cfg.train_encoder else rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        return {"loss": loss.item(), "recon": rec.item(), "kl": kl.item(), "lr": sched.get_last_lr()[0]}

    heldout = ShapesWorld(split="heldout", num_samples=cfg.eval_videos, frames=cfg.frames, height=cfg.size,
                          width=cfg.size, seed=cfg.seed + 7)

    def on_checkpoint() -> None:
        run.save({"vae": vae}, {"opt": opt})
        if run.step % cfg.sample_every == 0 or run.step == cfg.steps:
            path = save_video_grid(Path(cfg.run_dir) / f"samples/step_{run.step:06d}.png",
                                   reconstruction_rows(vae, heldout, cfg.sample_videos))
            run.image("reconstructions", path)

    train_loop(run, step_fn, steps=cfg.steps, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
               stop_after=cfg.stop_after, on_checkpoint=on_checkpoint)
    run.plot(("loss", "recon"), title="demo VAE training")
    vae.eval()
    if cfg.train_encoder:
        stats = measure_statistics(vae, data, cfg.stats_videos)
    else:  # the latent space must stay the one the DiT was trained in
        stats = {"latent_statistics": f"kept from {cfg.init_from}"}
    report = {
        "steps": run.step,
        "train_seconds_this_session": round(time.time() - t0, 1),
        "peak_rss_mib": peak_rss_mib(),
        **stats,
    }
    for split, clips in (("train", data), ("heldout", heldout)):
        scores = reconstruction_scores(vae, clips, cfg.eval_videos)
        report[f"psnr_{split}_db"] = scores.pop("psnr_db")
        report[f"reconstruction_accuracy_{split}"] = scores
    torch.save(vae.state_dict(), Path(cfg.run_dir) / "vae_final.pt")
    (Path(cfg.run_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    run.finish()
    return report


ConfigStore.instance().store(name="train_vae_schema", node=TrainVAEConfig)  # typos and bad types fail


@hydra.main(config_path="../configs", config_name="train_vae", version_base=None)
def main(raw) -> None:
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainVAEConfig), raw))
    train(cfg)


if __name__ == "__main__":
    main()
