"""Train the demo DiT on ShapesWorld latents from scratch (CPU-sized), with exact resume.

    python -m train.train_dit                        # configs/train_dit.yaml; needs the demo VAE (train_vae)
    python -m train.train_dit steps=100 run_dir=runs/dit_smoke

The model is the native LTX-Video transformer (`ltx.ltxv.transformer.DiT`) with the small config of
configs/demo/dit.yaml, trained with the rectified-flow objective (ltx/core/losses.py) on normalized latents of
the demo VAE. Text comes from the demo text encoder (a tiny T5 with a byte-level tokenizer, pretrained on
captions by `train.make_text_encoder`). With `text_lr: 0` (the released demo) it stays frozen and every
caption is encoded once; with `text_lr > 0` it is trained jointly with the transformer, and its moving
average is written to RUN/text_encoder for export. Captions are dropped to "" with probability `caption_dropout` so that
classifier-free guidance works at sampling time. An exponential moving average of the weights is kept and
exported.

`fps` sets the temporal RoPE positions (seconds = frame / fps) and must equal the fps the model is sampled
at (the preset's `generation.fps`): positions 3x apart at sampling time cost the first demo a third of its
motion accuracy.

Latents of `num_videos` training clips are encoded once (posterior mean) and cached in the run folder.
Every `sample_every` steps (and at the end) the EMA model samples fixed validation prompts (half seen, half
held-out combinations) into RUN/samples/step_NNNNNN.png, one row per prompt (RUN/samples/prompts.txt).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore
from tqdm import tqdm

from infer.app import hydra_app
from ltx.core.losses import add_noise, flow_matching_loss, sample_sigmas
from ltx.core.viz import save_video_grid
from ltx.data.shapes import ShapesWorld
from ltx.ltxv.checkpoint import load_component
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.patchify import patchify, token_positions
from ltx.ltxv.pipelines import SchedulerSpec, decode, denoise_pass
from ltx.ltxv.text import T5TextEncoder
from ltx.ltxv.transformer import DiT, DiTConfig
from ltx.ltxv.vae import VideoVAE
from ltx.presets import PassConfig
from train.harness import EMA, TrainingError, TrainLoop, lr_factor, step_generator
from train.make_text_encoder import save_text_encoder
from train.runner import (
    Run,
    RunCheckpoint,
    RunError,
    atomic_torch_save,
    check_choice,
    check_int,
    check_multiple,
    check_number,
    first_line,
    peak_rss_mib,
)
from train.train_vae import latent_space_id


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
    lr_schedule: str = "constant"  # or "cosine": from lr down to min_lr_ratio * lr at `steps` (a function of steps)
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    ema: float = 0.998
    caption_dropout: float = 0.1
    sigma_sampler: str = "shifted_logit_normal"
    frames: int = 17
    size: int = 64
    fps: float = 8.0  # = configs/model/ltx-demo.yaml generation.fps (tests/test_train.py checks they agree)
    text_lr: float = 0.0  # > 0: train the text encoder jointly at this learning rate
    num_videos: int = 2048
    sample_every: int = 1000  # write RUN/samples/step_NNNNNN.png: validation prompts sampled with the EMA weights
    sample_prompts: int = 8  # half seen, half held-out combinations
    sample_steps: int = 20
    sample_guidance: float = 3.0
    stop_after: int | None = None  # end this session at that step (resumable), e.g. to time-box a run
    log_every: int = 10
    checkpoint_every: int = 100
    threads: int = 2
    wandb: bool = True

    def __post_init__(self):
        """Every field checked where the config is made (Hydra's to_object, or in code), before anything runs."""
        for name in ("run_dir", "vae_checkpoint", "text_encoder"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: give a path")
        for name in ("text_tokens", "steps", "batch_size", "num_videos", "sample_every", "sample_steps",
                     "log_every", "checkpoint_every", "threads"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, 0)
        check_int("warmup", self.warmup, 0)
        check_int("sample_prompts", self.sample_prompts, 2)  # half seen, half held-out: at least one of each
        check_int("stop_after", self.stop_after, optional=True)
        check_number("lr", self.lr, 0.0, lo_open=True)
        check_number("text_lr", self.text_lr, 0.0)
        check_number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("ema", self.ema, 0.0, 1.0, hi_open=True)
        check_number("caption_dropout", self.caption_dropout, 0.0, 1.0, hi_open=True)
        check_number("fps", self.fps, 0.0, lo_open=True)
        check_number("sample_guidance", self.sample_guidance, 1.0)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_choice("sigma_sampler", self.sigma_sampler, ("uniform", "logit_normal", "shifted_logit_normal"))
        check_multiple("frames", self.frames, 8, plus=1, what=" (ShapesWorld clips)")
        check_multiple("size", self.size, 32, what=" (ShapesWorld clips)")


def load_inputs(cfg: TrainDiTConfig):
    """The VAE and the text encoder, each refused by option name when missing, damaged, of the wrong kind or
    not fitting the config (before anything is written)."""
    if not Path(cfg.vae_checkpoint).exists():
        raise FileNotFoundError(f"vae_checkpoint={cfg.vae_checkpoint} does not exist; pass a checkpoint with a VAE "
                                "(train one with python -m train.train_vae, export with python -m train.export_demo)")
    try:
        vae = load_component(cfg.vae_checkpoint, "vae")
    except (ValueError, OSError, KeyError) as e:
        raise ValueError(f"vae_checkpoint={cfg.vae_checkpoint}: {e}") from None
    t, s = vae.cfg.temporal_factor, vae.cfg.spatial_factor
    check_multiple("frames", cfg.frames, t, plus=1, what=f" (the VAE compresses time {t}x)")
    check_multiple("size", cfg.size, s, what=f" (the VAE compresses space {s}x)")
    if vae.cfg.latent_channels != cfg.dit.in_channels:
        raise ValueError(f"vae_checkpoint={cfg.vae_checkpoint} encodes {vae.cfg.latent_channels}-channel latents; "
                         f"dit.in_channels={cfg.dit.in_channels}: set dit.in_channels/out_channels to match")
    root = Path(cfg.text_encoder)
    if not root.is_dir():
        raise FileNotFoundError(f"text_encoder={root} is not a folder; make it with python -m train.make_text_encoder "
                                f"{root}")
    try:
        text = T5TextEncoder(root, dtype=torch.float32, max_tokens=cfg.text_tokens)
    except Exception as e:  # noqa: BLE001 - whatever transformers raises on a damaged folder
        raise ValueError(f"text_encoder={root} cannot be loaded ({first_line(e)}); make it again with "
                         f"python -m train.make_text_encoder {root} --overwrite") from None
    width = text.model.config.d_model
    if width != cfg.dit.caption_channels:
        raise ValueError(f"text_encoder={root} gives {width}-wide states; dit.caption_channels="
                         f"{cfg.dit.caption_channels}: set it to {width} or use the matching text encoder")
    return vae, text


def _read_latent_cache(cache: Path) -> dict | None:
    """The cached latents blob, or None (with a note) when the file is damaged: it is only a cache."""
    try:
        blob = torch.load(cache, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises anything
        print(f"[train_dit] {cache} cannot be read ({first_line(e)}); encoding the clips again")
        return None
    ok = isinstance(blob, dict) and isinstance(blob.get("n"), int) and isinstance(blob.get("latents"), torch.Tensor)
    ok = ok and isinstance(blob.get("captions"), list) and blob["latents"].ndim == 5
    ok = ok and len(blob["latents"]) == blob["n"] == len(blob["captions"])
    if not ok:
        print(f"[train_dit] {cache} is not a latent cache of this trainer; encoding the clips again")
        return None
    return blob


@torch.no_grad()
def encode_dataset(vae: VideoVAE, data: ShapesWorld, cache: Path, space: str) -> tuple[torch.Tensor, list[str]]:
    """Normalized posterior-mean latents (N, C, F', H', W') and captions of every clip, cached on disk (and
    encoded again when the cache holds another number of clips or another latent space than `space`, the
    VAE's `latent_space_id`)."""
    blob = _read_latent_cache(cache) if cache.exists() else None
    if blob is not None:
        if blob["n"] == len(data) and blob.get("latent_space") == space:
            return blob["latents"], blob["captions"]
        print(f"[train_dit] {cache}: made for {blob['n']} clips of latent space {blob.get('latent_space')}; "
              f"encoding {len(data)} clips of latent space {space}")
    latents, captions = [], []
    for start in tqdm(range(0, len(data), 16), desc="encoding clips"):
        samples = [data[i] for i in range(start, min(len(data), start + 16))]
        latents.append(vae.encode(torch.stack([s.video for s in samples])))
        captions += [s.caption for s in samples]
    blob = {"n": len(data), "latent_space": space, "latents": torch.cat(latents), "captions": captions}
    cache.parent.mkdir(parents=True, exist_ok=True)
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


def validation_prompts(seed: int, n: int) -> list[str]:
    """n // 2 captions of seen combinations, then n - n // 2 of held-out ones (fixed for a seed)."""
    return [ShapesWorld(split=split, num_samples=k, seed=seed + 2000)[i].caption
            for split, k in (("train", n // 2), ("heldout", n - n // 2)) for i in range(k)]


@torch.no_grad()
def sample_videos(dit: DiT, vae: VideoVAE, encode, prompts: list[str], cfg: TrainDiTConfig) -> list[torch.Tensor]:
    """Generate `prompts` with the demo's sampler (LQ schedule, CFG against ""): (3, F, H, W) in [-1, 1] each."""
    text = TextConditioning(*encode(prompts), *encode([""] * len(prompts)))
    p = PassConfig(num_inference_steps=cfg.sample_steps, guidance_scale=[cfg.sample_guidance])
    latents = denoise_pass(dit, vae, text, p, SchedulerSpec(sampler="LinearQuadratic"), height=cfg.size,
                           width=cfg.size, num_frames=cfg.frames, fps=cfg.fps,
                           generator=torch.Generator().manual_seed(cfg.seed))
    return list(decode(vae, latents) * 2 - 1)


def train(cfg: TrainDiTConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    vae, text = load_inputs(cfg)
    data = ShapesWorld(split="train", num_samples=cfg.num_videos, frames=cfg.frames, height=cfg.size,
                       width=cfg.size, seed=cfg.seed + 1000)
    run = Run(Path(cfg.run_dir))
    resuming = run.open()  # the folder is writable and its checkpoint readable; nothing written yet
    space, record = latent_space_id(vae), Path(cfg.run_dir) / "latent_space.json"
    if resuming and record.is_file():
        try:
            trained = json.loads(record.read_text())["latent_space"]
        except (ValueError, KeyError, TypeError) as e:
            raise RunError(f"{record} is damaged ({e!r}); restore it, or delete it if {cfg.vae_checkpoint} is "
                           "the VAE the run started with") from None
        if trained != space:
            raise ValueError(f"{cfg.run_dir} trained on latent space {trained}; {cfg.vae_checkpoint} encodes into "
                             f"{space} (another VAE encoder or latent statistics). Resume with the VAE the run "
                             f"started with, or use a new run_dir")
    latents, captions = encode_dataset(vae, data, Path(cfg.run_dir) / "latents.pt", space)
    _, C, Fl, Hl, Wl = latents.shape
    tokens = patchify(latents)  # (N, T, C)
    t5 = text.model if cfg.text_lr > 0 else None
    if t5 is None:  # frozen: encode every caption once
        context, mask = encode_captions(text, captions + [""])
        null_context, null_mask = context[-1:], mask[-1:]
    else:
        ids, mask = text.tokenize(captions + [""])
        null_ids, null_mask = ids[-1:], mask[-1:]
        t5.train().requires_grad_(True)
    positions = token_positions(Fl, Hl, Wl, fps=cfg.fps, causal=cfg.dit.causal_temporal_positioning,
                                scale=(vae.cfg.temporal_factor, vae.cfg.spatial_factor, vae.cfg.spatial_factor))

    dit = DiT(cfg.dit).init_weights(torch.Generator().manual_seed(cfg.seed))
    modules = {"dit": dit, "ema": copy.deepcopy(dit).requires_grad_(False)}
    groups = [{"params": list(dit.parameters()), "lr": cfg.lr}]
    if t5 is not None:
        groups.append({"params": list(t5.parameters()), "lr": cfg.text_lr})
        modules |= {"text": t5, "text_ema": copy.deepcopy(t5).requires_grad_(False)}
    dit_ema = modules["ema"]
    averaged = [(dit_ema, dit)] + ([(modules["text_ema"], t5)] if t5 is not None else [])
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))

    def forward_backward(step: int) -> dict[str, float]:
        g = step_generator(cfg.seed, step)
        idx = torch.randint(tokens.shape[0], (cfg.batch_size,), generator=g)
        x0 = tokens[idx]
        drop = (torch.rand(cfg.batch_size, generator=g) < cfg.caption_dropout)[:, None]
        ctx_mask = torch.where(drop, null_mask, mask[idx])  # "" where dropped
        if t5 is None:
            ctx = torch.where(drop[..., None], null_context, context[idx])  # (B, S, D_text)
        else:
            ctx = t5(torch.where(drop, null_ids, ids[idx]), attention_mask=ctx_mask).last_hidden_state
        sigma = sample_sigmas(cfg.batch_size, x0.shape[1], kind=cfg.sigma_sampler, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        v = dit(add_noise(x0, noise, sigma), sigma, ctx, ctx_mask, positions.expand(cfg.batch_size, -1, -1))
        loss = flow_matching_loss(v, x0, noise)
        loss.backward()
        return {"loss": loss.item()}

    def encode_ema(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if t5 is None:
            return text.encode(prompts)
        ids_, mask_ = text.tokenize(prompts)
        return modules["text_ema"](ids_, attention_mask=mask_).last_hidden_state, mask_

    prompts = validation_prompts(cfg.seed, cfg.sample_prompts)

    def sample(step: int) -> None:
        if step % cfg.sample_every == 0 or step == cfg.steps:
            path = save_video_grid(Path(cfg.run_dir) / f"samples/step_{step:06d}.png",
                                   sample_videos(dit_ema, vae, encode_ema, prompts, cfg))
            (path.parent / "prompts.txt").write_text("\n".join(prompts) + "\n")
            run.image("samples", path)

    loop = TrainLoop(run, forward_backward, optimizer=opt, lr_lambda=lambda s: lr_factor(cfg, s),
                     params=[p for g in groups for p in g["params"]], ema=EMA.of_modules(cfg.ema, averaged),
                     checkpoint=RunCheckpoint(run, modules, {"opt": opt}), steps=cfg.steps, log_every=cfg.log_every,
                     checkpoint_every=cfg.checkpoint_every, stop_after=cfg.stop_after, after_step=sample)
    loop.resume()
    run.start(asdict(cfg), project="ltx-demo-dit", use_wandb=cfg.wandb)  # after the checkpoint is validated
    record.write_text(json.dumps({"latent_space": space, "vae_checkpoint": cfg.vae_checkpoint}, indent=2) + "\n")
    t0 = time.time()
    loop.fit()
    run.plot(("loss",), title="demo DiT training (flow matching)")
    report = {"steps": run.step, "train_seconds_this_session": round(time.time() - t0, 1),
              "peak_rss_mib": peak_rss_mib(),
              "final_loss_avg": sum(r["loss"] for r in run.history[-10:]) / max(1, len(run.history[-10:]))}
    torch.save(dit_ema.state_dict(), Path(cfg.run_dir) / "dit_ema.pt")
    if t5 is not None:
        save_text_encoder(modules["text_ema"], text.tokenizer, Path(cfg.run_dir) / "text_encoder")
    (Path(cfg.run_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    run.finish()
    return report


def _register_schema() -> None:
    """configs/train_dit.yaml composes on `train_dit_schema` (so typos and bad types fail, also in compose())."""
    ConfigStore.instance().store(name="train_dit_schema", node=TrainDiTConfig)


_register_schema()


def main() -> None:
    """The Hydra entry point: bad input (a config field, a missing or damaged file, an unusable run folder or
    checkpoint) ends in one line `error: ...` (LTX_DEBUG=1 shows the traceback)."""
    hydra_app(TrainDiTConfig, "train_dit", train, (RunError, TrainingError, OSError))


if __name__ == "__main__":
    main()
