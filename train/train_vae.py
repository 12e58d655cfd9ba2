"""Train the demo video VAE on ShapesWorld from scratch (CPU-sized), with exact resume.

    python -m train.train_vae                       # configs/train_vae.yaml
    python -m train.train_vae steps=200 run_dir=runs/vae_smoke

The model is the native LTX-Video VAE (`ltx.ltxv.vae.VideoVAE`) with the small block list of
configs/demo/vae.yaml, or, through `python -m train.train_vae_ltx2` (configs/train_vae_ltx2.yaml), the native
LTX-2 video VAE (`ltx.ltx2.vae.VideoVAE`, configs/demo/ltx2_vae.yaml) of the LTX-2 demo; the loop is the same.
Training clips are random 9-frame x 32 x 32 crops of 17 x 64 x 64 ShapesWorld videos
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

import torch
from hydra.core.config_store import ConfigStore

from infer.app import hydra_app
from ltx.core.losses import gaussian_kl, psnr
from ltx.core.viz import save_video_grid
from ltx.data.shapes import ShapesWorld
from ltx.data.shapes_eval import estimate_background
from ltx.data.shapes_eval import evaluate as evaluate_prompt_following
from ltx.ltx2 import vae as ltx2_vae
from ltx.ltxv.checkpoint import load_component
from ltx.ltxv.vae import VAEConfig, VideoVAE
from train.harness import TrainingError, TrainLoop, step_generator
from train.runner import (
    Run,
    RunCheckpoint,
    RunError,
    check_int,
    check_multiple,
    check_number,
    first_line,
    peak_rss_mib,
)

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

    def __post_init__(self):
        """Every field checked where the config is made (Hydra's to_object, or in code), before anything runs."""
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"run_dir={self.run_dir!r} is invalid: give a folder for the run's outputs")
        for name in ("steps", "batch_size", "num_videos", "eval_videos", "stats_videos", "sample_every",
                     "sample_videos", "log_every", "checkpoint_every", "threads"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, 0)
        check_int("warmup", self.warmup, 0)
        check_int("stop_after", self.stop_after, optional=True)
        check_number("lr", self.lr, 0.0, lo_open=True)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("kl_weight", self.kl_weight, 0.0)
        check_number("fg_weight", self.fg_weight, 0.0, lo_open=True)
        check_number("latent_noise", self.latent_noise, 0.0)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from={self.init_from!r} is invalid: give a vae_final.pt or checkpoint (or null)")
        if not self.train_encoder and not self.init_from:
            raise ValueError("train_encoder=false fine-tunes the decoder of a trained VAE: set init_from to its "
                             "vae_final.pt or checkpoint (e.g. init_from=runs/demo_vae/vae_final.pt)")
        t, s = self.vae.temporal_factor, self.vae.spatial_factor
        why_t, why_s = f" (the VAE compresses time {t}x)", f" (the VAE compresses space {s}x)"
        check_multiple("frames", self.frames, 8, plus=1, what=" (ShapesWorld clips)")
        check_multiple("size", self.size, 32, what=" (ShapesWorld clips)")
        check_multiple("frames", self.frames, t, plus=1, what=why_t)
        check_multiple("size", self.size, s, what=why_s)
        check_multiple("crop_frames", self.crop_frames, t, plus=1, what=why_t)
        check_multiple("crop_size", self.crop_size, s, what=why_s)
        if self.crop_frames > self.frames:
            raise ValueError(f"crop_frames={self.crop_frames} is invalid: must be <= frames={self.frames}")
        if self.crop_size > self.size:
            raise ValueError(f"crop_size={self.crop_size} is invalid: must be <= size={self.size}")


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
    statistics (not the decoder). A DiT trained on one latent space is only valid with VAEs of the same id.
    Floating weights are hashed as float32, so take the id of the VAE loaded in float32 (as the training apps do):
    a bfloat16 copy of float32 weights is rounded and gets another id."""
    h = hashlib.sha256()
    for name, t in sorted(vae.state_dict().items()):
        if not name.startswith("decoder."):
            h.update(name.encode())
            t = t.detach().cpu()
            h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def initial_state(path: str, ltx2: bool = False, component: str = "vae") -> dict[str, torch.Tensor]:
    """The state dict to start from: a training run's `<component>_final.pt`, or the component of any checkpoint
    (refused by option name when missing, damaged or without it). `component` is "vae" (this app) or
    "audio_vae" (train.train_audio_vae, LTX-2 files only)."""
    final = f"{component}_final.pt"
    if not Path(path).exists():
        raise FileNotFoundError(f"init_from={path} does not exist; pass a run's {final} or a checkpoint with "
                                f"a{'n audio' if component == 'audio_vae' else ''} VAE")
    if Path(path).suffix == ".pt":
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign pickle raises anything
            raise ValueError(f"init_from={path} cannot be read ({first_line(e)}); pass a run's {final}, "
                             "or make it again") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ValueError(f"init_from={path} is not a state dict (a run's {final})")
        return sd
    try:
        if ltx2:
            from ltx.ltx2 import checkpoint as ltx2_checkpoint

            return ltx2_checkpoint.load(path, (component,), dtype=torch.float32)[component].state_dict()
        return load_component(path, component).state_dict()
    except (ValueError, OSError, KeyError) as e:
        raise ValueError(f"init_from={path}: {e}") from None


def load_initial(model: torch.nn.Module, path: str, ltx2: bool = False, component: str = "vae") -> None:
    """Load `initial_state(path, ltx2, component)` into `model`, naming the differences when it is another
    model's."""
    sd, own = initial_state(path, ltx2, component), model.state_dict()
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{w} {', '.join(ks[:3])}{' ...' if len(ks) > 3 else ''}"
                 for w, ks in (("lacks", missing), ("has unknown", unexpected), ("shape mismatch:", shapes)) if ks]
        raise ValueError(f"init_from={path} does not fit this {component} config ({'; '.join(parts)}); pass the "
                         f"{component}_final.pt of a run with the same {component}: settings")
    model.load_state_dict(sd, strict=True)


@dataclass(kw_only=True)
class TrainLTX2VAEConfig(TrainVAEConfig):
    """The same recipe for the LTX-2 video VAE (`python -m train.train_vae_ltx2`)."""

    run_dir: str = "runs/demo_ltx2_vae"
    vae: ltx2_vae.VideoVAEConfig = field(default_factory=ltx2_vae.VideoVAEConfig)  # configs/demo/ltx2_vae.yaml


def build_vae(cfg: TrainVAEConfig) -> VideoVAE | ltx2_vae.VideoVAE:
    """A seeded VAE of the config's family."""
    family = ltx2_vae.VideoVAE if isinstance(cfg.vae, ltx2_vae.VideoVAEConfig) else VideoVAE
    return family(cfg.vae).init_weights(torch.Generator().manual_seed(cfg.seed))


def train(cfg: TrainVAEConfig) -> dict:
    if not cfg.train_encoder and not cfg.init_from:
        raise ValueError("train_encoder=false fine-tunes the decoder of a trained VAE: set init_from to its "
                         "vae_final.pt or checkpoint (e.g. init_from=runs/demo_vae/vae_final.pt)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = ShapesWorld(split="train", num_samples=cfg.num_videos, frames=cfg.frames, height=cfg.size,
                       width=cfg.size, seed=cfg.seed)
    vae = build_vae(cfg)
    if cfg.init_from:
        load_initial(vae, cfg.init_from, isinstance(vae, ltx2_vae.VideoVAE))
    vae.encoder.requires_grad_(cfg.train_encoder)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    run = Run(Path(cfg.run_dir))
    run.open()  # the folder is writable and its checkpoint readable; nothing written yet

    def forward_backward(step: int) -> dict[str, float]:
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
        loss.backward()
        return {"loss": loss.item(), "recon": rec.item(), "kl": kl.item()}

    heldout = ShapesWorld(split="heldout", num_samples=cfg.eval_videos, frames=cfg.frames, height=cfg.size,
                          width=cfg.size, seed=cfg.seed + 7)

    def sample(step: int) -> None:
        if step % cfg.sample_every == 0 or step == cfg.steps:
            path = save_video_grid(Path(cfg.run_dir) / f"samples/step_{step:06d}.png",
                                   reconstruction_rows(vae, heldout, cfg.sample_videos))
            run.image("reconstructions", path)

    def lr_lambda(step: int) -> float:  # warm-up, then linear decay to 10% at `steps`
        return min(1.0, (step + 1) / max(1, cfg.warmup)) * (0.1 + 0.9 * (1 - step / cfg.steps))

    loop = TrainLoop(run, forward_backward, optimizer=opt, lr_lambda=lr_lambda, params=params,
                     checkpoint=RunCheckpoint(run, {"vae": vae}, {"opt": opt}), steps=cfg.steps,
                     log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, stop_after=cfg.stop_after,
                     after_step=sample)
    loop.resume()
    run.start(asdict(cfg), project="ltx-demo-vae", use_wandb=cfg.wandb)  # after the checkpoint is validated
    t0 = time.time()
    loop.fit()
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


def _register_schema() -> None:
    """configs/train_vae.yaml composes on `train_vae_schema` (so typos and bad types fail, also in compose())."""
    ConfigStore.instance().store(name="train_vae_schema", node=TrainVAEConfig)


_register_schema()


def main() -> None:
    """The Hydra entry point (configs/train_vae.yaml, or --config-name train_vae_decoder): bad input ends in
    one line `error: ...` (LTX_DEBUG=1 shows the traceback)."""
    hydra_app(TrainVAEConfig, "train_vae", train, (RunError, TrainingError, OSError))


if __name__ == "__main__":
    main()
