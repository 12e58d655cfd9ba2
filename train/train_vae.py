"""Train the demo video VAE on ShapesWorld from scratch (CPU-sized), with exact resume.

    python -m train.train_vae                       # configs/train_vae.yaml
    python -m train.train_vae steps=200 run_dir=runs/vae_smoke

The model is the native LTX-Video VAE (`ltx.models.vae.VideoVAE`) with the small block list of
configs/demo/vae.yaml. Training clips are random 9-frame x 32 x 32 crops of 17 x 64 x 64 ShapesWorld videos
(the VAE is convolutional and causal in time, so it runs on full clips afterwards); the loss is
L1 + MSE reconstruction through a posterior sample plus a small KL term. At the end the per-channel latent
statistics (mean and std of posterior means over full clips) are measured and stored in the VAE, as the
official checkpoints carry them, and the reconstruction PSNR on full train and held-out clips is reported.
Every `sample_every` steps (and at the end) RUN/samples/step_NNNNNN.png shows held-out clips, each above its
reconstruction.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ltx.data.shapes import ShapesWorld
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


def batch(cfg: TrainVAEConfig, data: ShapesWorld, step: int) -> torch.Tensor:
    """The (B, 3, crop_frames, crop, crop) training batch of `step` (deterministic in seed and step)."""
    g = step_generator(cfg.seed, step)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
    clips = []
    for i in idx.tolist():
        v = data[i].video  # (3, F, H, W)
        t0 = int(torch.randint(cfg.frames - cfg.crop_frames + 1, (1,), generator=g))
        y0, x0 = (int(v) for v in torch.randint(cfg.size - cfg.crop_size + 1, (2,), generator=g))
        clips.append(v[:, t0 : t0 + cfg.crop_frames, y0 : y0 + cfg.crop_size, x0 : x0 + cfg.crop_size])
    return torch.stack(clips)


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
def evaluate(vae: VideoVAE, data: ShapesWorld, n: int) -> float:
    """Reconstruction PSNR (dB) through the posterior mean on `n` full clips."""
    scores = []
    for start in range(0, n, 8):
        video = torch.stack([data[i].video for i in range(start, min(n, start + 8))])
        scores.append(psnr(vae(video).clamp(-1, 1), video))
    return sum(scores) / len(scores)


@torch.no_grad()
def reconstruction_rows(vae: VideoVAE, data: ShapesWorld, n: int) -> list[torch.Tensor]:
    """[clip 0, its reconstruction, clip 1, ...] for the first `n` clips of `data` (posterior mean)."""
    video = torch.stack([data[i].video for i in range(min(n, len(data)))])
    recon = vae(video).clamp(-1, 1)
    return [row for pair in zip(video, recon) for row in pair]


def train(cfg: TrainVAEConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = ShapesWorld(split="train", num_samples=cfg.num_videos, frames=cfg.frames, height=cfg.size,
                       width=cfg.size, seed=cfg.seed)
    vae = VideoVAE(cfg.vae).init_weights(torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(  # 50 warm-up steps, then linear decay to 10%
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * (1 - s / cfg.steps)))
    run = Run(Path(cfg.run_dir), cfg.seed)
    run.start(asdict(cfg), project="ltx-demo-vae", use_wandb=cfg.wandb)
    if run.resume({"vae": vae}, {"opt": opt}):
        resume_lr(sched, run.step)
    t0 = time.time()

    def step_fn(step: int) -> dict[str, float]:
        video = batch(cfg, data, step)
        mean, logvar = vae.encode_moments(video).chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=step_generator(cfg.seed + 1, step))
        z = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise
        recon = vae.decoder(z)
        rec = (recon - video).abs().mean() + (recon - video).square().mean()
        kl = gaussian_kl(mean, logvar.clamp(-30, 20))
        loss = rec + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
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
    stats = measure_statistics(vae, data, cfg.stats_videos)
    report = {
        "steps": run.step,
        "train_seconds_this_session": round(time.time() - t0, 1),
        "peak_rss_mib": peak_rss_mib(),
        "psnr_train_db": evaluate(vae, data, cfg.eval_videos),
        "psnr_heldout_db": evaluate(vae, heldout, cfg.eval_videos),
        **stats,
    }
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
