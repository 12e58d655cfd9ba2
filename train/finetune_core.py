"""The fine-tuning trainer's parts (the app is train/finetune.py, whose docstring describes the behaviour): the
config schema (`FinetuneConfig` and its sections, LTX-2's `av` included), the checks that run before anything is
written, the flow-matching objective, and `Trainer`, the LTX-Video 0.9.x trainer on the shared loop of
train/harness.py. The LTX-2 trainer (train/finetune_ltx2.py) and the distiller (train/distill.py) build on it."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import textwrap
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from infer.app import hydra_app
from ltx.core.checkpoint import CheckpointError, atomic_file
from ltx.core.losses import (
    SigmaSampler,
    first_frame_mask,
    masked_flow_matching_loss,
    sigma_bucket_means,
    sigma_bucket_sums,
)
from ltx.core.media import load_image, read_video, slug, write_contact_sheet, write_mp4
from ltx.core.offload import apply_training_offload
from ltx.core.parallel import init_distributed, parallelize
from ltx.core.viz import video_grid
from ltx.data.latent_cache import BucketBatchSampler, LatentCache, shard
from ltx.ltxv.api import scheduler_spec
from ltx.ltxv.checkpoint import WRITERS, checkpoint_from_modules, load_component, read_checkpoint
from ltx.ltxv.conditioning import ConditioningItem, GuideItem
from ltx.ltxv.guidance import TextConditioning
from ltx.ltxv.keys_official import config_diff
from ltx.ltxv.lora import LoRAConfig, freeze_base, inject_lora, lora_parameters, save_lora
from ltx.ltxv.patchify import patchify, token_positions
from ltx.ltxv.pipelines import check_size, generate
from ltx.ltxv.text import T5TextEncoder
from ltx.presets import ModelPreset, config_root
from train.dist_checkpoint import resolve
from train.harness import EMA, ShardedCheckpoint, TrainingError, TrainLoop, lr_factor, step_generator
from train.runner import (
    Run,
    check_choice,
    check_int,
    check_number,
    check_run_dir,
    first_line,
    invalid,
    peak_rss_mib,
)
from train.train_vae import latent_space_id

# ------------------------------------------------------------------------------------------------ config


@dataclass(kw_only=True)
class LoRASettings:
    rank: int = 16
    alpha: float | None = None  # None = rank (scale 1)
    dropout: float = 0.0
    # module-name patterns (ltx.core.lora): attention of every block; add ff.net.0.proj, ff.net.2 for the MLPs
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    format: str = "comfy"  # the exported file: comfy | diffusers | ltx | trainer (tools/convert_weights.py converts)


@dataclass(kw_only=True)
class SigmaSettings:
    kind: str = "shifted_logit_normal"  # uniform | logit_normal | shifted_logit_normal
    std: float = 1.0
    max_mu: float = 2.05  # the bound on the token-count shift (ltx.core.losses.SigmaSampler)
    uniform_fraction: float = 0.0


@dataclass(kw_only=True)
class AVSettings:
    """LTX-2 only (model=ltx-2-*): what the audio+video transformer learns (train/finetune_ltx2.py)."""

    mode: str = "t2av"  # ltx.ltx2.training.MODES: t2av t2v i2v extend ic_lora a2v v2a t2a ... (README table)
    video_loss_weight: float = 1.0
    audio_loss_weight: float = 1.0
    prefix: int | None = None  # extension modes: clean latent frames (video) / steps (audio); None: the mode's
    video_clean_p: float = 0.0  # t2av: per-sample probability of a clean video (learns video-to-audio); 0 = official
    audio_clean_p: float = 0.0  # t2av: per-sample probability of a clean audio (learns audio-to-video); 0 = official
    connector: str = "frozen"  # frozen | trainable (mode=full only): the text connectors after the cached features
    base_dtype: str = "auto"  # LoRA: the frozen base's dtype: bfloat16 (half the memory; computes under bf16
    # autocast) | float32 | auto = bfloat16 on CUDA, float32 on CPU (where bf16 matmuls are slow)


@dataclass(kw_only=True)
class ValidationSettings:
    every: int = 0  # sample every N steps (0: only at the end); also at the end of the run
    prompts: list[str] = field(default_factory=list)  # none: `from_data` captions of the training data
    from_data: int = 3  # without prompts: sample this many captions of the cache (spread over it); 0: no validation
    images: list[str] = field(default_factory=list)  # optional first-frame image per prompt (image-to-video)
    controls: list[str] = field(default_factory=list)  # reference / control video per prompt (reference_video runs)
    seed: int = 0
    steps: int | None = None  # None: the preset's step count
    guidance_scale: float | None = None  # None: the preset's
    height: int | None = None  # None: the first bucket's size
    width: int | None = None
    num_frames: int | None = None


@dataclass(kw_only=True)
class FinetuneConfig:
    model: ModelPreset  # configs/model/<name>.yaml: the architecture to expect and the sampler for validation
    data: str  # a cache folder written by train.preprocess
    run_dir: str = "runs/finetune"
    checkpoint: str | None = None  # base model (any format the converter reads); None: the preset's local weights
    vae_checkpoint: str | None = None  # when the VAE is not in `checkpoint`
    text_encoder: str | None = None  # for validation prompts only; None: the preset's local one
    mode: str = "lora"  # lora | full
    lora: LoRASettings = field(default_factory=LoRASettings)
    objective: str = "flow_matching"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 4  # the global batch (all processes, all micro-batches)
    micro_batch: int | None = None  # per process per forward; None: batch_size / processes (no accumulation)
    lr: float = 1e-4
    lr_schedule: str = "constant"  # constant | linear | cosine (after `warmup` steps, down to min_lr_ratio)
    warmup: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes, CUDA)
    grad_clip: float = 1.0  # 0 = off
    ema: float = 0.0  # 0 = off; else the decay of an exponential moving average of the trained weights
    caption_dropout: float = 0.0  # probability of training a sample on the empty caption (keeps CFG working)
    first_frame_p: float = 0.0  # probability of image-to-video conditioning per sample (0.5 for I2V LoRAs)
    reference_video: bool = False  # IC-LoRA control: prepend each clip's cached reference (clean, no loss)
    sigma: SigmaSettings = field(default_factory=SigmaSettings)
    fps: float | None = None  # RoPE time positions; None: the preset's generation fps (= what it is sampled at)
    precision: str = "float32"  # float32 | bfloat16 (autocast; the trained weights stay float32)
    activation_checkpointing: bool = False
    compile: bool = False
    parallel: str = "ddp"  # ddp | fsdp (used only under torchrun with > 1 process)
    # blocks: LoRA on a card smaller than the frozen transformer: its blocks stay in CPU memory and stream to the
    # device one at a time (prefetched offload_prefetch blocks ahead on a side stream; ltx.core.offload)
    offload: str = "none"  # none | blocks (one process, mode=lora)
    offload_prefetch: int = 1  # blocks copied ahead of the one computing (block offload)
    device: str = "auto"  # auto: cuda if available
    threads: int | None = None  # CPU threads per process
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    av: AVSettings = field(default_factory=AVSettings)  # LTX-2 presets only
    export_format: str = "ltx"  # full fine-tunes: ltx | official
    stop_after: int | None = None  # end this session at that step (resumable), e.g. to time-box a run
    wandb: bool = True  # offline logs in run_dir/wandb (rank 0 only)
    wandb_project: str = "ltx-finetune"

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            check_int(name, getattr(self, name))
        for name in ("micro_batch", "stop_after", "threads"):
            check_int(name, getattr(self, name), optional=True)
        check_int("warmup", self.warmup, 0)
        check_int("offload_prefetch", self.offload_prefetch, 0)
        check_number("lr", self.lr, 0.0, lo_open=True)
        check_number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("grad_clip", self.grad_clip, 0.0)
        check_number("ema", self.ema, 0.0, 0.99999)
        check_number("caption_dropout", self.caption_dropout, 0.0, 1.0)
        check_number("first_frame_p", self.first_frame_p, 0.0, 1.0)
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise invalid("betas", self.betas, "must be two numbers in [0, 1)")
        if self.fps is not None:
            check_number("fps", self.fps, 0.0, lo_open=True)
        for name, valid in {"mode": ("lora", "full"), "lr_schedule": ("constant", "linear", "cosine"),
                            "optimizer": ("adamw", "adamw8bit"), "precision": ("float32", "bfloat16"),
                            "parallel": ("ddp", "fsdp"), "export_format": ("ltx", "official"),
                            "offload": ("none", "blocks"),
                            "objective": tuple(OBJECTIVES)}.items():
            check_choice(name, getattr(self, name), valid)
        check_choice("lora.format", self.lora.format, ("comfy", "diffusers", "ltx", "trainer"))
        if self.offload != "none" and self.mode != "lora":
            raise invalid("offload", self.offload, "streams the frozen transformer blocks from CPU memory, so it "
                          "needs mode=lora (a full fine-tune trains every weight); use offload=none")
        if self.mode == "lora":
            check_int("lora.rank", self.lora.rank)
            if self.lora.alpha is not None:
                check_number("lora.alpha", self.lora.alpha, 0.0, lo_open=True)
            check_number("lora.dropout", self.lora.dropout, 0.0, 0.99)
            if not self.lora.targets:
                raise invalid("lora.targets", self.lora.targets, "name at least one module pattern, e.g. to_q")
        SigmaSampler(**asdict(self.sigma))  # validates
        v = self.validation
        check_int("validation.every", v.every, 0)
        if v.images and len(v.images) != len(v.prompts):
            raise invalid("validation.images", v.images, "give one image per validation prompt, or none")
        if v.controls and len(v.controls) != len(v.prompts):
            raise invalid("validation.controls", v.controls, "give one control video per validation prompt, or none")
        if v.controls and not self.reference_video:
            raise invalid("validation.controls", v.controls, "control videos guide an IC-LoRA: they need "
                          "reference_video=true")
        for name in ("steps", "height", "width", "num_frames"):
            check_int(f"validation.{name}", getattr(v, name), optional=True)
        if v.guidance_scale is not None:
            check_number("validation.guidance_scale", v.guidance_scale, 1.0)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise invalid("device", self.device, "must be auto, cpu, cuda or cuda:N")
        check_number("av.video_loss_weight", self.av.video_loss_weight, 0.0)
        check_number("av.audio_loss_weight", self.av.audio_loss_weight, 0.0)
        check_number("av.video_clean_p", self.av.video_clean_p, 0.0, 1.0)
        check_number("av.audio_clean_p", self.av.audio_clean_p, 0.0, 1.0)
        check_int("av.prefix", self.av.prefix, optional=True)
        check_choice("av.connector", self.av.connector, ("frozen", "trainable"))
        check_choice("av.base_dtype", self.av.base_dtype, ("auto", "bfloat16", "float32"))


# What a resume may not change: it would train something else than the checkpoint holds.
FROZEN_FIELDS = ("data", "checkpoint", "mode", "lora.rank", "lora.alpha", "lora.targets", "objective", "seed",
                 "batch_size", "caption_dropout", "first_frame_p", "sigma", "fps", "model.dit", "ema", "optimizer",
                 "reference_video", "av")


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def frozen_diff(old: dict, new: dict, fields: tuple[str, ...] = FROZEN_FIELDS) -> dict[str, tuple]:
    return {k: (_get(old, k), _get(new, k)) for k in fields if _get(old, k) != _get(new, k)}


# ------------------------------------------------------------------------------------------------ objective


@dataclass
class MicroBatch:
    """One process's share of a global batch (all rows from one bucket), on the training device."""

    x0: Tensor  # (B, T, C) clean latent tokens
    noise: Tensor  # (B, T, C)
    sigma: Tensor  # (B,)
    cond_mask: Tensor  # (B, T) bool: clean conditioning tokens (first frame), no loss
    context: Tensor  # (B, S, D) text states
    context_mask: Tensor  # (B, S)
    positions: Tensor  # (B, 3, T)
    reference: Tensor | None = None  # (B, R, C) clean reference tokens (IC-LoRA), prepended; None: no reference
    reference_positions: Tensor | None = None  # (B, 3, R) on the target's grid


def flow_matching_objective(model: nn.Module, mb: MicroBatch) -> Tensor:
    """Per-sample rectified-flow loss (B,). Conditioning tokens are clean (x = x0) with sigma 0, the convention
    the official inference code samples with; the others are x = (1 - sigma) x0 + sigma noise. The target is
    the velocity noise - x0 on the non-conditioning tokens only (`ltx.core.losses.masked_flow_matching_loss`).
    A reference (IC-LoRA) is prepended as clean sigma-0 tokens at its own positions; its outputs are dropped."""
    s = mb.sigma[:, None, None]
    cond = mb.cond_mask[..., None]
    x = torch.where(cond, mb.x0, (1 - s) * mb.x0 + s * mb.noise)
    positions = mb.positions
    if mb.reference is None:
        # one sigma per sample unless some row has conditioning tokens (the DiT's per-token AdaLN path)
        sigma = torch.where(mb.cond_mask, 0.0, mb.sigma[:, None]) if mb.cond_mask.any() else mb.sigma
    else:
        R = mb.reference.shape[1]
        sigma = torch.where(mb.cond_mask, 0.0, mb.sigma[:, None])
        sigma = torch.cat([torch.zeros_like(sigma[:, :1]).expand(-1, R), sigma], 1)
        x = torch.cat([mb.reference.to(x.dtype), x], 1)
        positions = torch.cat([mb.reference_positions, mb.positions], 2)
    v = model(x, sigma, mb.context, mb.context_mask, positions)
    if mb.reference is not None:
        v = v[:, mb.reference.shape[1] :]
    return masked_flow_matching_loss(v, mb.x0, mb.noise, mb.cond_mask)


OBJECTIVES: dict[str, Callable[[nn.Module, MicroBatch], Tensor]] = {"flow_matching": flow_matching_objective}


def draw(cfg: FinetuneConfig, sampler: SigmaSampler, step: int, index: int, shape: tuple[int, int]):
    """(sigma, first-frame coin, caption-dropout coin, noise (T, C)) of one sample, in a fixed order."""
    g = step_generator(cfg.seed, step, index)
    sigma = sampler.sample(shape[0], g)
    cond, drop = (torch.rand(2, generator=g) < torch.tensor([cfg.first_frame_p, cfg.caption_dropout])).tolist()
    return sigma, cond, drop, torch.randn(shape, generator=g)


# ------------------------------------------------------------------------------------------------ the run


def resolve_paths(cfg: FinetuneConfig) -> FinetuneConfig:
    """The preset's local weights (the bundled demo) where the config names none, relative to the repository."""
    repo = config_root()  # the checkout, or <prefix>/share/ltx for an installed package
    cfg.model.require_ltx_video("this trainer (LTX-2 presets fine-tune with python -m train.finetune; distillation "
                                "is for 0.9.x)")
    g = cfg.model.generation

    def local(path: str | None) -> str | None:
        return None if path is None else str(path if Path(path).is_absolute() else repo / path)

    ckpt = cfg.checkpoint if cfg.checkpoint is not None else local(g.checkpoint_path)
    if ckpt is None:
        raise ValueError(f"checkpoint=... is needed: preset {cfg.model.name} has no local weights")
    text = cfg.text_encoder if cfg.text_encoder is not None else local(g.text_encoder_path)
    return dataclasses.replace(cfg, checkpoint=ckpt, text_encoder=text,
                               fps=cfg.fps if cfg.fps is not None else g.fps)


def check_inputs(cfg: FinetuneConfig, world: int, log_name: str = "finetune"):
    """Everything that can be checked before a file is written: paths, headers, the cache against the model,
    the batch split, the resume. Returns (checkpoint, vae checkpoint, cache)."""
    for name in ("checkpoint", "vae_checkpoint"):
        p = getattr(cfg, name)
        if p is not None and not Path(p).exists():
            raise FileNotFoundError(f"{name}={p} does not exist")
    ckpt = read_checkpoint(cfg.checkpoint)
    vae_ckpt = read_checkpoint(cfg.vae_checkpoint) if cfg.vae_checkpoint else ckpt
    if "dit" not in ckpt.components:
        raise ValueError(f"checkpoint={cfg.checkpoint} has no transformer (it has {sorted(ckpt.components)})")
    if "vae" not in vae_ckpt.components:
        raise ValueError(f"{vae_ckpt.path} has no VAE; pass vae_checkpoint=...")
    dit_cfg = ckpt.components["dit"].config
    diff = config_diff(dit_cfg, cfg.model.dit)
    if diff:
        shown = "; ".join(f"{k}: checkpoint {a!r} vs preset {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"checkpoint={cfg.checkpoint} is not a {cfg.model.name} transformer: {shown}; pick the "
                         f"matching model=<preset>")
    if not Path(cfg.data).is_dir():
        raise FileNotFoundError(f"data={cfg.data} is not a folder; make it with python -m train.preprocess")
    cache = LatentCache(cfg.data)
    if getattr(cache, "family", "ltxv") == "ltx2":
        raise ValueError(f"data={cfg.data} is an LTX-2 cache (made with an LTX-2 checkpoint); train it with an LTX-2 "
                         f"preset (model=ltx-2-19b-dev or ltx-2.3-22b-dev), or preprocess with the checkpoint of "
                         f"model={cfg.model.name}")
    if len(cache) == 0:
        raise ValueError(f"data={cfg.data} holds no clips (see its index.json 'skipped' list)")
    c, d = cache.latent_channels, cache.text_channels
    if c != dit_cfg.in_channels or d != dit_cfg.caption_channels:
        raise ValueError(f"data={cfg.data} holds {c}-channel latents and {d}-wide text states; the transformer "
                         f"takes {dit_cfg.in_channels} and {dit_cfg.caption_channels}: preprocess with this "
                         f"model's VAE and text encoder")
    with_ref, factors = cache.references
    if cfg.reference_video and with_ref < len(cache):
        raise ValueError(f"reference_video=true but {len(cache) - with_ref} of the {len(cache)} clips in "
                         f"data={cfg.data} have no reference: give every manifest row a reference_path and "
                         "preprocess again")
    if cfg.reference_video and len(factors) > 1:
        raise ValueError(f"data={cfg.data} mixes reference downscale factors {sorted(factors)}; preprocess with one "
                         "reference_downscale")
    if not cfg.reference_video and with_ref:
        print(f"[{log_name}] note: data={cfg.data} holds {with_ref} reference videos; they are ignored unless "
              "reference_video=true (IC-LoRA control)")
    batch_split(cfg, world)  # raises for a batch that does not split
    v = cfg.validation
    if (v.prompts or v.from_data) and (v.height or v.width or v.num_frames):
        F_, H, W = cache.buckets_list[0]
        try:
            check_size(v.height or H, v.width or W, v.num_frames or F_, tuple(cache.scale))
        except ValueError as e:
            raise ValueError(f"validation size: {e}") from None
    return ckpt, vae_ckpt, cache


def batch_split(cfg: FinetuneConfig, world: int) -> tuple[int, int]:
    """(rows per process per step, rows per micro-batch); the global batch must split evenly."""
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split over {world} processes; use a multiple of "
                         f"{world}, e.g. {max(world, cfg.batch_size // world * world)}")
    per_rank = cfg.batch_size // world
    micro = cfg.micro_batch or per_rank
    if per_rank % micro:
        raise ValueError(f"micro_batch={micro} does not divide the {per_rank} rows per process (batch_size "
                         f"{cfg.batch_size} / {world} processes); valid: "
                         f"{[m for m in range(1, per_rank + 1) if per_rank % m == 0]}")
    return per_rank, micro


def check_resume(cfg: FinetuneConfig, resolved: dict, run_dir: Path) -> bool:
    """Whether this is a resume; refuses one whose frozen fields changed (before anything is written)."""
    if resolve(run_dir / "checkpoints") is None:
        return False
    old_path = run_dir / "config.json"
    if not old_path.is_file():
        raise TrainingError(f"{run_dir} holds checkpoints but no config.json; use a new run_dir")
    try:
        old = json.loads(old_path.read_text())
    except json.JSONDecodeError as e:
        raise TrainingError(f"{old_path} is not valid JSON ({e}); use a new run_dir") from None
    diff = frozen_diff(old, resolved, getattr(cfg, "FROZEN", FROZEN_FIELDS))
    if diff:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise TrainingError(f"{run_dir} was trained with another config ({shown}); resuming would train something "
                            f"else. Use a new run_dir, or restore those values")
    return True


def build_model(cfg: FinetuneConfig, ckpt, device: torch.device) -> tuple[nn.Module, list[nn.Parameter]]:
    """The transformer in float32 with its adapter (LoRA) applied from outside; returns it and what trains."""
    dit = load_component(ckpt, "dit", dtype=torch.float32, device=device)
    if cfg.mode == "lora":
        inject_lora(dit, LoRAConfig(rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                                    targets=tuple(cfg.lora.targets)), generator=torch.Generator().manual_seed(cfg.seed))
        dit.to(device)
        freeze_base(dit)
        params = list(lora_parameters(dit))
    else:
        params = list(dit.parameters())
    dit.train()
    return dit, params


def model_device(cfg: FinetuneConfig, device: torch.device) -> torch.device:
    """Where the trainer builds the transformer: in CPU memory when its blocks will stream (offload=blocks)."""
    return torch.device("cpu") if cfg.offload == "blocks" else device


def check_offload(cfg: FinetuneConfig, dist) -> None:
    if cfg.offload != "none" and dist.enabled:
        raise invalid("offload", cfg.offload, f"runs in one process; this run has {dist.world_size} (use "
                      "offload=none with DDP / FSDP, or one process)")


def offload_blocks(cfg: FinetuneConfig, model: nn.Module, device: torch.device, dist, attr: str = "transformer_blocks"):
    """offload=blocks: the frozen blocks of `model` (built in CPU memory) stream to `device`, the rest and the
    adapters move there (ltx.core.offload.apply_training_offload); None for offload=none."""
    if cfg.offload == "none":  # check_offload(cfg, dist) ran at the trainer's start
        return None
    handle = apply_training_offload(model, device, prefetch=cfg.offload_prefetch, attr=attr)
    if dist.is_main:
        print(f"offload=blocks: {len(handle.blocks)} transformer blocks stream from CPU memory to {device} "
              f"(prefetch {cfg.offload_prefetch}); adapters and the other layers stay on {device}")
    return handle


def make_optimizer(cfg: FinetuneConfig, params: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw8bit":
        if device.type != "cuda":
            raise ValueError("optimizer=adamw8bit needs CUDA (bitsandbytes); use optimizer=adamw on CPU")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("optimizer=adamw8bit needs bitsandbytes: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


class Trainer:
    """State and step of one fine-tuning run (one per process): `forward_backward` is its step; `fit` runs it on
    the shared loop (train/harness.py), which does the optimizer step, logging, checkpoints and resume."""

    def __init__(self, cfg: FinetuneConfig):
        slurm_environment()
        cfg = resolve_paths(cfg)
        self.cfg = cfg
        self.dist = init_distributed()
        check_offload(cfg, self.dist)
        self.resolved = _plain(cfg)
        self.run_dir = Path(cfg.run_dir)
        check_run_dir(self.run_dir)  # a file, or a folder that cannot be written: refused before anything loads
        self.ckpt, self.vae_ckpt, self.cache = check_inputs(cfg, self.dist.world_size, self.log_name)
        self.per_rank, self.micro = batch_split(cfg, self.dist.world_size)
        check_resume(cfg, self.resolved, self.run_dir)
        self.run = Run(self.run_dir, is_main=self.dist.is_main)
        self.reference_downscale = max(self.cache.references[1], default=1) if cfg.reference_video else None
        self._check_latent_space()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = self._device()
        self.validation_text = self._encode_validation_prompts()  # the text encoder is loaded and freed here
        self.sampler = BucketBatchSampler(self.cache, cfg.batch_size, cfg.seed)
        self.sigmas = SigmaSampler(**asdict(cfg.sigma))
        self.objective = self.make_objective()
        self.dit, params = self.build_model()  # in CPU memory with offload=blocks
        self.offload = offload_blocks(cfg, self.dit, self.device, self.dist)
        self.trainable = {n: p for n, p in self.dit.named_parameters() if p.requires_grad}
        self.n_trainable = sum(p.numel() for p in params)
        mode = "none" if not self.dist.enabled else cfg.parallel
        self.model = parallelize(self.dit, self.dist, mode=mode, activation_checkpointing=cfg.activation_checkpointing,
                                 compile=cfg.compile, param_dtype=None)
        trained = {n: p for n, p in self.dit.named_parameters() if p.requires_grad}  # FSDP2 made them DTensors
        self.params = list(trained.values())
        self.opt = self.make_optimizer(self.params)
        self.ema = EMA.of(cfg.ema, trained) if cfg.ema else None
        self._scale = tuple(self.cache.scale)
        self._positions = {}

    # -------------------------------------------------------------------------------------------- setup
    # What a trainer built on this one (train/distill.py) replaces: the objective, the model, the optimizer.
    def make_objective(self) -> Callable[[nn.Module, MicroBatch], Tensor]:
        return OBJECTIVES[self.cfg.objective]

    def build_model(self) -> tuple[nn.Module, list[nn.Parameter]]:
        return build_model(self.cfg, self.ckpt, model_device(self.cfg, self.device))

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(self.cfg, params, self.device)

    def _device(self) -> torch.device:
        dev = self.cfg.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.cfg.device} but CUDA is not available; use device=cpu")
        return torch.device(f"cuda:{self.dist.local_rank}") if dev == "cuda" and self.dist.enabled else \
            torch.device(dev)

    def _check_latent_space(self) -> None:
        self._vae_module = load_component(self.vae_ckpt, "vae", dtype=torch.float32)
        space = latent_space_id(self._vae_module)
        if self.cache.latent_space != space:
            raise ValueError(f"data={self.cfg.data} was encoded by another VAE (latent space {self.cache.latent_space})"
                             f" than {self.vae_ckpt.path} ({space}); preprocess again with this checkpoint")

    log_name: ClassVar[str] = "finetune"  # the app's name in its log lines

    def validation_prompts(self) -> list[str]:
        """The validation prompts: `validation.prompts`, or without them `validation.from_data` distinct captions
        of the cache, spread over it (what the run learns, with no prompt to write)."""
        v = self.cfg.validation
        if v.prompts:
            return list(v.prompts)
        if isinstance(v.from_data, bool) or not isinstance(v.from_data, int) or v.from_data < 0:
            raise invalid("validation.from_data", v.from_data, "must be an integer >= 0 (0: no validation)")
        return [self.cache.items[i]["caption"] for i in self.data_caption_items(v.from_data)]

    def data_caption_items(self, count: int) -> list[int]:
        """Indices of `count` cache items with distinct, non-empty captions, evenly spaced over the cache."""
        items, n, picked, seen = self.cache.items, len(self.cache), [], set()
        for k in range(count):
            for j in range(n):  # from the k-th evenly spaced item onwards, the next caption not taken yet
                i = (k * n // count + j) % n
                caption = items[i]["caption"].strip()
                if caption and caption not in seen:
                    picked.append(i)
                    seen.add(caption)
                    break
        return picked

    def _encode_validation_prompts(self):
        """(prompt states, negative states) of the validation prompts, each (context (P, S, D), mask (P, S)), or
        None without prompts. Given prompts go through the text encoder; captions of the data use their cached
        states (no text encoder needed), with the preset's negative prompt encoded at the cache's length (the
        cached empty caption when it is "")."""
        v = self.cfg.validation
        self.validation_prompts_used = prompts = self.validation_prompts()
        self.validation_controls_used = list(v.controls)
        if not prompts:
            return None
        if not v.prompts:
            if self.cfg.reference_video:  # an IC-LoRA samples each caption with its own clip's control video
                refs = [self.cache.items[i].get("reference_path") for i in self.data_caption_items(len(prompts))]
                self.validation_controls_used = refs if all(r and Path(r).is_file() for r in refs) else []
            if self.dist.is_main:
                print(f"[{self.log_name}] validation: {len(prompts)} captions of data={self.cfg.data} (set "
                      "validation.prompts, or validation.from_data=0 for none): " + "; ".join(map(repr, prompts)))
            return self._cached_validation_states(prompts)
        if self.cfg.text_encoder is None or not Path(self.cfg.text_encoder).exists():
            raise FileNotFoundError(f"validation prompts need a text encoder; text_encoder={self.cfg.text_encoder} "
                                    f"does not exist")
        for p in v.images:
            if not Path(p).is_file():
                raise FileNotFoundError(f"validation image {p} does not exist")
        for p in v.controls:
            if not Path(p).is_file():
                raise FileNotFoundError(f"validation control video {p} does not exist")
        encoded = None
        if self.dist.is_main:  # one process loads the text encoder (a T5-XXL is 9 GB), the others receive states
            g = self.cfg.model.generation
            try:
                t5 = T5TextEncoder(self.cfg.text_encoder, dtype=torch.float32, max_tokens=g.text_tokens)
            except Exception as e:  # noqa: BLE001 - whatever transformers raises on a damaged folder
                raise ValueError(f"text_encoder={self.cfg.text_encoder} cannot be loaded ({first_line(e)}); pass a "
                                 "whole local T5 folder (text_encoder/ and tokenizer/)") from None
            encoded = t5.encode(list(v.prompts)), t5.encode([g.negative_prompt] * len(v.prompts))
            del t5
        return self.dist.broadcast_object(encoded) if self.dist.enabled else encoded

    def _cached_validation_states(self, prompts: list[str]):
        """`_encode_validation_prompts` for captions of the data: their cached states, and the negative prompt's."""
        rows = [self.cache[i] for i in self.data_caption_items(len(prompts))]
        P = len(rows)
        positive = torch.stack([r["context"].float() for r in rows]), torch.stack([r["mask"] for r in rows])
        null_ctx, null_mask = self.cache.null_text()
        negative = null_ctx.float()[None].expand(P, -1, -1), null_mask[None].expand(P, -1)
        text = self.cfg.model.generation.negative_prompt or ""
        if not text:
            return positive, negative
        if self.cfg.text_encoder is None or not Path(self.cfg.text_encoder).is_dir():
            print(f"[{self.log_name}] note: validation samples use the empty negative prompt: the preset's needs the "
                  f"text encoder (text_encoder={self.cfg.text_encoder} does not exist)")
            return positive, negative
        encoded = None
        if self.dist.is_main:
            try:
                t5 = T5TextEncoder(self.cfg.text_encoder, dtype=torch.float32,
                                   max_tokens=self.cache.index["text_encoder"]["max_tokens"])
            except Exception as e:  # noqa: BLE001 - whatever transformers raises on a damaged folder
                raise ValueError(f"text_encoder={self.cfg.text_encoder} cannot be loaded ({first_line(e)}); pass a "
                                 "whole local T5 folder (text_encoder/ and tokenizer/)") from None
            encoded = t5.encode([text] * P)
            del t5
        return positive, self.dist.broadcast_object(encoded) if self.dist.enabled else encoded

    def positions(self, bucket: tuple[int, int, int], rows: int) -> Tensor:
        if bucket not in self._positions:
            _, f, h, w = self.cache.latent_shape(bucket)
            self._positions[bucket] = token_positions(f, h, w, fps=self.cfg.fps, scale=self._scale,
                                                      causal=self.dit.cfg.causal_temporal_positioning).to(self.device)
        return self._positions[bucket].expand(rows, -1, -1)

    def reference_positions(self, shape: tuple[int, ...], downscale: int, rows: int) -> Tensor:
        """Positions (rows, 3, R) of reference latents (C, f, h, w) made at 1/downscale of the target's size: the
        target's grid (spatial coordinates times downscale), as `ltx.ltxv.conditioning.guide_tokens` places guides."""
        key = ("reference", tuple(shape), downscale)
        if key not in self._positions:
            t, sh, sw = self._scale
            pos = token_positions(*shape[1:], fps=self.cfg.fps, scale=(t, sh * downscale, sw * downscale),
                                  causal=self.dit.cfg.causal_temporal_positioning)
            self._positions[key] = pos.to(self.device)
        return self._positions[key].expand(rows, -1, -1)

    # -------------------------------------------------------------------------------------------- one step
    def micro_batches(self, step: int):
        """This process's micro-batches of step `step`: (global sample indices, MicroBatch)."""
        items = self.sampler.batch(step)
        mine = shard(list(range(len(items))), self.dist.rank, self.dist.world_size)  # positions in the global batch
        null_ctx, null_mask = self.cache.null_text()
        for start in range(0, len(mine), self.micro):
            js = mine[start : start + self.micro]
            rows = [self.cache[items[j]] for j in js]
            x0 = torch.stack([patchify(r["latents"][None])[0] for r in rows])  # (B, T, C)
            _, f, h, w = rows[0]["latents"].shape
            drawn = [draw(self.cfg, self.sigmas, step, j, tuple(x0.shape[1:])) for j in js]
            sigma = torch.tensor([d[0] for d in drawn], dtype=torch.float32)
            cond = first_frame_mask(torch.tensor([d[1] for d in drawn]), f, h, w)
            drop = [d[2] for d in drawn]
            ctx = torch.stack([null_ctx if dr else r["context"] for r, dr in zip(rows, drop)])
            cmask = torch.stack([null_mask if dr else r["mask"] for r, dr in zip(rows, drop)])
            dev = self.device
            ref = ref_pos = None
            if self.cfg.reference_video:
                refs = [r["reference"] for r in rows]
                ref = torch.stack([patchify(r[None])[0] for r in refs]).to(dev)  # (B, R, C)
                ref_pos = self.reference_positions(tuple(refs[0].shape), rows[0]["reference_downscale"], len(js))
            yield js, MicroBatch(x0=x0.to(dev), noise=torch.stack([d[3] for d in drawn]).to(dev), sigma=sigma.to(dev),
                                 cond_mask=cond.to(dev), context=ctx.to(dev, torch.float32), context_mask=cmask.to(dev),
                                 positions=self.positions(tuple(rows[0]["bucket"]), len(js)), reference=ref,
                                 reference_positions=ref_pos)

    def forward_backward(self, step: int) -> dict[str, float]:
        """Gradients of step `step`'s global-batch mean loss (accumulated over micro-batches, summed over
        processes by DDP / FSDP2 at the last one); returns the loss and its means per sigma bucket."""
        n_micro = self.per_rank // self.micro
        loss_sum = torch.zeros((), dtype=torch.float64)
        buckets = torch.zeros(2, 4)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bfloat16")
        for k, (_, mb) in enumerate(self.micro_batches(step)):
            sync = k == n_micro - 1
            no_sync = self.model.no_sync() if hasattr(self.model, "no_sync") and not sync else nullcontext()
            if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
                self.model.set_requires_gradient_sync(sync)
            with no_sync:
                with autocast:
                    per_sample = self.objective(self.model, mb)  # (B,)
                (per_sample.sum() / self.per_rank).backward()
            loss_sum += per_sample.detach().double().sum().cpu()
            buckets += sigma_bucket_sums(mb.sigma, per_sample)
        local = torch.cat([loss_sum.float().reshape(1), buckets.flatten()])
        totals = self.dist.all_reduce_mean(local) * self.dist.world_size if self.dist.enabled else local
        return {"loss": float(totals[0]) / self.cfg.batch_size} | sigma_bucket_means(totals[1:].reshape(2, 4))

    # -------------------------------------------------------------------------------------------- the loop
    def state_model(self) -> tuple[nn.Module, bool]:
        """What the checkpoint holds: (module, trainable parameters only?)."""
        return self.dit, self.cfg.mode == "lora"

    @cached_property
    def loop(self) -> TrainLoop:
        """The shared loop over `forward_backward`, made once the optimizer has all its parameter groups."""
        cfg = self.cfg
        model, trainable_only = self.state_model()
        checkpoint = ShardedCheckpoint(self.run, model, self.opt, self.dist, self.resolved,
                                       trainable_only=trainable_only, keep=cfg.keep_checkpoints, ema=self.ema)
        return TrainLoop(self.run, self.forward_backward, optimizer=self.opt, lr_lambda=lambda s: lr_factor(cfg, s),
                         params=self.params, checkpoint=checkpoint, steps=cfg.steps, log_every=cfg.log_every,
                         checkpoint_every=cfg.checkpoint_every, stop_after=cfg.stop_after, grad_clip=cfg.grad_clip,
                         ema=self.ema, after_step=self._validate_on_schedule,
                         advice=f"lower lr (now {cfg.lr}), or precision=float32 / grad_clip")

    def _validate_on_schedule(self, step: int) -> None:
        every = self.cfg.validation.every
        if every and step % every == 0 and step != self.cfg.steps:  # the last step validates in `fit`
            self.validate()

    def fit(self) -> dict:
        cfg, run = self.cfg, self.run
        resumed = self.loop.resume()
        run.start(self.resolved, project=cfg.wandb_project, use_wandb=cfg.wandb)
        if self.dist.is_main:
            print(f"[{self.log_name}] {cfg.mode}: {self.n_trainable / 1e6:.3f} M trainable parameters; "
                  f"{len(self.cache)} clips in {len(self.cache.buckets)} bucket(s); global batch {cfg.batch_size} on "
                  f"{self.dist.world_size} process(es) x {self.per_rank // self.micro} micro-batch(es) of "
                  f"{self.micro}; {'resumed at step ' + str(run.step) if resumed else 'from step 0'}")
        self.loop.fit()
        pace = self.loop.session_s_per_step  # the definition of metrics.jsonl's s_per_step, over the session
        report = {"steps": run.step, "trainable_parameters": self.n_trainable,
                  "seconds_this_session": round(self.loop.clock.seconds, 1),
                  "s_per_step": None if pace is None else round(pace, 4),
                  "peak_rss_mib": peak_rss_mib(), "processes": self.dist.world_size}
        if torch.cuda.is_available() and self.device.type == "cuda":
            report["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        if run.step == cfg.steps:
            self.validate()
            path = self.export(final=True)
            report["result"] = str(path) if path else None
        keys = ("loss",) + tuple(sorted({k for r in run.history for k in r if k.startswith("loss_sigma")}))
        run.plot(keys, title=f"{self.run_dir.name}: {cfg.mode} fine-tuning ({self.n_trainable / 1e6:.3f} M trained)")
        if self.dist.is_main:
            with atomic_file(self.run_dir / "report.json", "w") as f:
                f.write(json.dumps(report, indent=2) + "\n")
            print(json.dumps(report, indent=2))
        run.finish()
        return report

    # -------------------------------------------------------------------------------------------- outputs
    def weights_for_export(self, ema: bool) -> dict[str, Tensor]:
        """Full (unsharded) trained tensors on CPU, on every process (collective under FSDP)."""
        src = self.ema.averages if ema and self.ema else dict(self.dit.named_parameters())
        out = {}
        for n in self.trainable:
            t = src[n].detach()
            out[n] = (t.full_tensor() if hasattr(t, "full_tensor") else t).cpu().clone()
        return out

    def export(self, final: bool) -> Path | None:
        """The result, in a file other tools load: a LoRA (`lora.format`, ComfyUI by default) or a full checkpoint
        (`write_model`)."""
        weights = self.weights_for_export(ema=self.ema is not None)
        if not self.dist.is_main:
            return None
        cfg = self.cfg
        name = "" if final else f"_step{self.run.step:06d}"
        if cfg.mode != "lora":
            path = self.run_dir / f"model{name}.safetensors"
            self.write_model(weights, path)
            return path
        path = self.run_dir / f"lora{name}.safetensors"
        tensors = {n.removeprefix(self.lora_prefix).replace(".lora_A.default.", ".lora_A.")
                   .replace(".lora_B.default.", ".lora_B."): t for n, t in weights.items()}
        extra = {} if self.reference_downscale is None else {  # the official trainer's / ComfyUI's IC-LoRA key
            "reference_downscale_factor": str(self.reference_downscale), "ic_lora": "reference_video"}
        self.lora_writer(path, tensors, format=cfg.lora.format, rank=cfg.lora.rank,
                         alpha=cfg.lora.alpha or cfg.lora.rank, targets=list(cfg.lora.targets),
                         base_model=f"{Path(cfg.checkpoint).name} ({cfg.model.name}); {self.trained_what()}",
                         overwrite=True, extra_metadata=extra)
        return path

    # What the LTX-2 trainer replaces in `export`: the LoRA policy, the adapters' name prefix, the full file.
    lora_writer = staticmethod(save_lora)  # ltx.ltxv.lora.save_lora: 0.9.x's names and alpha
    lora_prefix: ClassVar[str] = ""  # what precedes the module names in the trained model's parameter names

    def trained_what(self) -> str:
        return f"trained {self.run.step} steps by train.{self.log_name}"

    def write_model(self, weights: dict[str, Tensor], path: Path) -> None:
        """A full fine-tune's checkpoint: the trained transformer with the VAE, in `export_format`."""
        dit = load_component(self.ckpt, "dit", dtype=torch.float32)
        dit.load_state_dict(weights, strict=True)
        WRITERS[self.cfg.export_format](checkpoint_from_modules({"dit": dit, "vae": self._vae_module},
                                                                extra=self.ckpt.extra), path, overwrite=True)

    @torch.no_grad()
    def validate(self) -> Path | None:
        """Sample the validation prompts with the generate app's sampler; every process takes part (FSDP)."""
        if self.validation_text is None:
            return None
        cfg, v = self.cfg, self.cfg.validation
        F_, H, W = self.cache.buckets_list[0]
        height, width, frames = v.height or H, v.width or W, v.num_frames or (F_ if F_ > 1 else 1)
        sampling = cfg.model.sampling
        first = sampling.first_pass
        changes = {}
        if v.steps is not None:
            changes |= {"num_inference_steps": v.steps, "timesteps": None}
        if v.guidance_scale is not None:
            changes["guidance_scale"] = [v.guidance_scale] * len(first.guidance_scale)
        sampling = dataclasses.replace(sampling, first_pass=dataclasses.replace(first, **changes))
        sched = scheduler_spec(self.ckpt, self._vae_module.cfg)
        vae = self._vae_module.to(self.device)
        if self.ema:
            self.ema.swap()  # sample with the averaged weights
        self.dit.eval()
        try:
            videos = []
            prompts = self.validation_prompts_used
            for i in range(len(prompts)):
                (pc, pm), (nc, nm) = self.validation_text
                text = TextConditioning(pc[i : i + 1].to(self.device), pm[i : i + 1].to(self.device),
                                        nc[i : i + 1].to(self.device), nm[i : i + 1].to(self.device))
                items = [ConditioningItem(load_image(v.images[i], height, width).to(self.device), 0, 1.0)] \
                    if v.images else []
                controls = self.validation_controls_used
                guides = [self._control(controls[i], frames)] if controls else []
                torch.manual_seed(v.seed)
                gen = torch.Generator(self.device).manual_seed(v.seed)
                frames_out = generate(self.dit, vae, text, sampling, sched, height=height, width=width,
                                      num_frames=frames, fps=cfg.fps, generator=gen, items=items, guides=guides)
                videos.append(frames_out[0].float().cpu())
        finally:
            self.dit.train()
            if self.ema:
                self.ema.swap()
        if not self.dist.is_main:
            return None
        out = self.run_dir / "samples" / f"step_{self.run.step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        for i, (prompt, video) in enumerate(zip(prompts, videos)):
            write_mp4(out / f"{i:02d}_{slug(prompt)}.mp4", video, cfg.fps)
            write_contact_sheet(out / f"{i:02d}_{slug(prompt)}.png", video, 8, prompt)
        grid = self.labelled_grid(out.with_suffix(".png"), videos, prompts)
        with atomic_file(out / "prompts.txt", "w") as f:
            f.write("\n".join(prompts) + "\n")
        self.run.image("samples", grid)
        return grid

    @staticmethod
    def labelled_grid(path: Path, videos: list[Tensor], prompts: list[str], frames: int = 5, scale: int = 2) -> Path:
        """The validation contact sheet: one row of `frames` evenly spaced frames per video ((3, F, H, W) in
        [0, 1]), each row under its prompt; a PNG written atomically."""
        from PIL import Image, ImageDraw

        line_h, char_w = 14, 6  # PIL's default bitmap font
        rows = [Image.fromarray(video_grid([v * 2 - 1], frames)) for v in videos]
        width = max(r.width for r in rows) * scale
        bands = [textwrap.wrap(p, max(20, width // char_w - 2))[:3] for p in prompts]
        height = sum(len(b) * line_h + 6 + r.height * scale + 4 for b, r in zip(bands, rows))
        sheet = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(sheet)
        y = 0
        for i, (band, row) in enumerate(zip(bands, rows)):
            for k, line in enumerate(band):
                draw.text((4, y + 3 + k * line_h), f"{i}: {line}" if k == 0 else f"   {line}", fill="black")
            y += len(band) * line_h + 6
            sheet.paste(row.resize((row.width * scale, row.height * scale), Image.NEAREST), (0, y))
            y += row.height * scale + 4
        with atomic_file(path, "wb") as f:
            sheet.save(f, format="PNG")
        return path

    def _control(self, path: str, frames: int) -> GuideItem:
        """A validation control video as a strength-1 guide of at most `frames` (8k + 1) frames."""
        video = read_video(path, max_frames=frames)[0]
        t = self._scale[0]
        n = (video.shape[1] - 1) // t * t + 1
        return GuideItem((video[:, :n] * 2 - 1)[None].to(self.device), 1.0, 0, self.reference_downscale or 1)


def slurm_environment() -> None:
    """Under a Slurm job with several tasks (the submitit launcher) and no torchrun variables: export torchrun's
    RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from Slurm's, through submitit."""
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:  # optional: only Slurm runs need it
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise ValueError("a multi-task Slurm job needs submitit: pip install 'ltx[slurm]'") from None
    TorchDistributedEnvironment().export()


def _plain(cfg: FinetuneConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def run_trainer(trainer_cls: type[Trainer], cfg: FinetuneConfig) -> dict:
    """Build and fit a trainer; the process group is left together after a normal end."""
    trainer = trainer_cls(cfg)
    dist = trainer.dist
    try:
        report = trainer.fit()
    except BaseException:
        dist.destroy(barrier=False)
        raise
    # Free the model, its optimizer and FSDP's DTensors (which hold the process group) while the interpreter is
    # whole: left to its finalization, gloo's worker threads can outlive them and abort the process ("terminate
    # called without an active exception", seen once in CI on rank 1 after a normal end).
    del trainer
    gc.collect()
    dist.destroy()
    return report


def to_config(raw, schema: type = FinetuneConfig) -> FinetuneConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), raw))


def main_for(schema: type, config_name: str, run) -> None:
    """The Hydra entry point of a trainer app (this one, train.distill)."""
    hydra_app(schema, config_name, run, (TrainingError, CheckpointError))

