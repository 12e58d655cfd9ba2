"""Train the demo DiT on ShapesWorld latents from scratch (CPU-sized), with exact resume.

    python -m train.train_dit                        # configs/train_dit.yaml; needs the demo VAE (train_vae)
    python -m train.train_dit steps=100 run_dir=runs/dit_smoke

The model is the native LTX-Video transformer (`ltx.models.dit.DiT`) with the small config of
configs/demo/dit.yaml, trained with the rectified-flow objective (ltx/losses.py) on normalized latents of
the demo VAE. Text comes from the demo text encoder (a tiny T5 with a byte-level tokenizer, fixed-seed
weights, frozen); captions are dropped to "" with probability `caption_dropout` so that classifier-free
guidance works at sampling time. An exponential moving average of the weights is kept and exported.

Latents of `num_videos` training clips are encoded once (posterior mean) and cached in the run folder.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ltx.data.shapes import ShapesWorld
from ltx.losses import add_noise, flow_matching_loss, sample_sigmas
from ltx.models.dit import DiT, DiTConfig
from ltx.models.text import T5TextEncoder
from ltx.models.vae import VideoVAE
from ltx.patchify import patchify, token_positions
from train.runner import Run, resume_lr, step_generator, train_loop


@dataclass(kw_only=True)
class TrainDiTConfig:
    run_dir: str = "runs/demo_dit"
    dit: DiTConfig = field(default_factory=DiTConfig)  # filled from configs/demo/dit.yaml
    vae_checkpoint: str = "demo/ltx-demo.safetensors"  # a checkpoint with the trained demo VAE (any format)
    text_encoder: str = "demo/text_encoder"
    text_tokens: int = 96
    seed: int = 0
    steps: int = 2000
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.01
    ema: float = 0.998
    caption_dropout: float = 0.1
    sigma_sampler: str = "shifted_logit_normal"
    frames: int = 17
    size: int = 64
    fps: float = 25.0
    num_videos: int = 2048
    stop_after: int | None = None  # end this session at that step (resumable), e.g. to time-box a run
    log_every: int = 10
    checkpoint_every: int = 100
    threads: int = 2
    wandb: bool = True


@torch.no_grad()
def encode_dataset(vae: VideoVAE, data: ShapesWorld, cache: Path) -> tuple[torch.Tensor, list[str]]:
    """Normalized posterior-mean latents (N, C, F', H', W') and captions of every clip, cached on disk."""
    if cache.exists():
        blob = torch.load(cache, weights_only=False)
        if blob["n"] == len(data):
            return blob["latents"], blob["captions"]
    from tqdm import tqdm

    latents, captions = [], []
    for start in tqdm(range(0, len(data), 16), desc="encoding clips"):
        samples = [data[i] for i in range(start, min(len(data), start + 16))]
        latents.append(vae.encode(torch.stack([s.video for s in samples])))
        captions += [s.caption for s in samples]
    blob = {"n": len(data), "latents": torch.cat(latents), "captions": captions}
    from train.runner import atomic_torch_save

    atomic_torch_save(blob, cache)
    return blob["latents"], blob["captions"]


@torch.no_grad()
def encode_captions(text: T5TextEncoder, captions: list[str], chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(context (N, S, D), mask (N, S)) for every caption; each distinct caption is encoded once."""
    unique = sorted(set(captions))
    ctx, mask = [], []
    for start in range(0, len(unique), chunk):
        c, m = text.encode(unique[start : start + chunk])
        ctx.append(c)
        mask.append(m)
    where = {cap: i for i, cap in enumerate(unique)}
    index = torch.tensor([where[c] for c in captions])
    return torch.cat(ctx)[index], torch.cat(mask)[index]


def train(cfg: TrainDiTConfig) -> dict:
    from ltx.convert.formats import load_component

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    vae = load_component(cfg.vae_checkpoint, "vae")
    data = ShapesWorld(split="train", num_samples=cfg.num_videos, frames=cfg.frames, height=cfg.size,
                       width=cfg.size, seed=cfg.seed + 1000)
    run = Run(Path(cfg.run_dir), cfg.seed)
    run.start(asdict(cfg), project="ltx-demo-dit", use_wandb=cfg.wandb)
    latents, captions = encode_dataset(vae, data, Path(cfg.run_dir) / "latents.pt")
    _, C, Fl, Hl, Wl = latents.shape
    tokens = patchify(latents)  # (N, T, C)
    text = T5TextEncoder(cfg.text_encoder, dtype=torch.float32, max_tokens=cfg.text_tokens)
    context, mask = encode_captions(text, captions + [""])  # the text encoder is frozen: encode once
    null_context, null_mask = context[-1:], mask[-1:]
    positions = token_positions(Fl, Hl, Wl, fps=cfg.fps, causal=cfg.dit.causal_temporal_positioning,
                                scale=(vae.cfg.temporal_factor, vae.cfg.spatial_factor, vae.cfg.spatial_factor))

    dit = DiT(cfg.dit).init_weights(torch.Generator().manual_seed(cfg.seed))
    ema = copy.deepcopy(dit).requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    if run.resume({"dit": dit, "ema": ema}, {"opt": opt}):
        resume_lr(sched, run.step)
    t0 = time.time()

    def step_fn(step: int) -> dict[str, float]:
        g = step_generator(cfg.seed, step)
        idx = torch.randint(tokens.shape[0], (cfg.batch_size,), generator=g)
        x0 = tokens[idx]
        drop = (torch.rand(cfg.batch_size, generator=g) < cfg.caption_dropout)[:, None]
        ctx = torch.where(drop[..., None], null_context, context[idx])  # (B, S, D_text), "" where dropped
        ctx_mask = torch.where(drop, null_mask, mask[idx])
        sigma = sample_sigmas(cfg.batch_size, x0.shape[1], kind=cfg.sigma_sampler, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        v = dit(add_noise(x0, noise, sigma), sigma, ctx, ctx_mask, positions.expand(cfg.batch_size, -1, -1))
        loss = flow_matching_loss(v, x0, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), dit.parameters()):
                pe.lerp_(p, 1 - decay)
        return {"loss": loss.item(), "grad_norm": float(gnorm), "lr": sched.get_last_lr()[0]}

    train_loop(run, step_fn, steps=cfg.steps, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
               stop_after=cfg.stop_after, on_checkpoint=lambda: run.save({"dit": dit, "ema": ema}, {"opt": opt}))
    run.plot(("loss",), title="demo DiT training (flow matching)")
    report = {"steps": run.step, "train_seconds_this_session": round(time.time() - t0, 1),
              "final_loss_avg": sum(r["loss"] for r in run.history[-10:]) / max(1, len(run.history[-10:]))}
    torch.save(ema.state_dict(), Path(cfg.run_dir) / "dit_ema.pt")
    (Path(cfg.run_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    run.finish()
    return report


ConfigStore.instance().store(name="train_dit_schema", node=TrainDiTConfig)


@hydra.main(config_path="../configs", config_name="train_dit", version_base=None)
def main(raw) -> None:
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainDiTConfig), raw))
    train(cfg)


if __name__ == "__main__":
    main()
