"""Fine-tune any LTX-Video checkpoint on your own videos: LoRA or full, one process or many (torchrun).

    python -m train.preprocess data=my_videos/ out=cache/my_videos             # once: latents + text states
    python -m train.finetune data=cache/my_videos run_dir=runs/my_lora         # configs/finetune.yaml
    torchrun --nproc_per_node 2 -m train.finetune data=... parallel=fsdp      # the same run on 2 processes

The trainer is the shared loop of train/harness.py (optimizer step, non-finite check, EMA, LR schedule, logging,
checkpoints) around `Trainer.forward_backward`; what varies is applied from outside:
- the adapter (`mode: lora` injects `ltx.ltxv.lora` adapters and trains only those; `mode: full` trains every
  transformer weight);
- the objective, a function (`OBJECTIVES`) from a micro-batch to per-sample losses; fine-tuning uses
  `flow_matching_objective` (rectified-flow velocity loss with per-token first-frame conditioning);
- IC-LoRA control (`reference_video: true`, a cache preprocessed from a manifest with `reference_path`): each
  sample's clean reference latents are prepended to its target tokens with the target's positions (spatial
  coordinates times the reference's downscale factor), at sigma 0 and without loss (the training layout of
  ltx/ltxv/conditioning.py; `generate control=[...]` appends them at inference, which gives the same outputs);
- how the model runs (`ltx.core.parallel.parallelize`: DDP / FSDP2, activation checkpointing, compile).

Determinism and exact resume. Step k trains on `BucketBatchSampler.batch(k)`: a global batch of `batch_size`
cached clips of one bucket, a pure function of (seed, k). Sample j of that batch draws its sigma, its
first-frame and caption-dropout coins and its noise from a generator seeded by (seed, k, j). Nothing
depends on how the global batch is split over processes or micro-batches, so a run saved on 2 processes
resumes on 1 (or the reverse) with the same global-batch losses. The checkpoint (train/dist_checkpoint.py,
torch.distributed.checkpoint, written atomically) holds the trainable weights, the optimizer, the EMA, the
step, the metric history and the wandb run id (the LR schedule is a function of the step). A resume whose
config changes what is trained (base checkpoint, data, mode, adapter shape, batch, seed, objective settings)
is refused, naming the differing fields, before anything is written.

Outputs in run_dir: metrics.jsonl (loss, loss per sigma bucket, grad norm, lr, s/step), loss.png,
checkpoints/, samples/step_NNNNNN/ (validation videos from the parity-tested sampler of `infer.generate`,
mp4 + a contact sheet), and the result: lora.safetensors (ComfyUI format with alpha, loads in `generate
loras=[...]`, ComfyUI and diffusers) or model.safetensors (a full checkpoint `generate` and the converter
read).
"""

from __future__ import annotations

from train.finetune_core import (  # noqa: F401 - re-exported: the app's schema, trainer and helpers live there
    EMA,
    FROZEN_FIELDS,
    OBJECTIVES,
    AVSettings,
    FinetuneConfig,
    LoRASettings,
    MicroBatch,
    SigmaSettings,
    Trainer,
    TrainingError,
    ValidationSettings,
    batch_split,
    check_inputs,
    check_resume,
    draw,
    flow_matching_objective,
    main_for,
    run_trainer,
    slurm_environment,
    to_config,
)
from train.finetune_ltx2 import AVTrainer


def train(cfg: FinetuneConfig) -> dict:
    """One run, by the trainer of the preset's family: LTX-2 presets train with train/finetune_ltx2.py."""
    return run_trainer(AVTrainer if cfg.model.is_ltx2 else Trainer, cfg)


def _main() -> None:
    main_for(FinetuneConfig, "finetune", train)


if __name__ == "__main__":
    _main()
