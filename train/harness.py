"""The one training loop of every training app (fine-tuning, distillation, the demo DiT and VAE).

An app gives `TrainLoop` a `forward_backward(step) -> metrics` function: it draws step `step`'s batch, runs
the model and calls `backward()`, and returns at least the global-batch "loss" (a float). Everything around
it is written here once: zeroing the gradients, gradient clipping, the non-finite check, the optimizer and
LR-schedule step (`lr_factor`), the EMA, the logging and checkpoint cadence, the progress bar, a time-boxed
session (`stop_after`) and the resume. Where the state goes is the app's choice of checkpoint store:
`runner.RunCheckpoint` (one torch.save file, the demo apps) or `ShardedCheckpoint` (train/dist_checkpoint.py,
topology-free, fine-tuning and distillation).

Exact resume: every random draw of step k comes from `step_generator(seed, k)` (or, per sample j of the global
batch, `step_generator(seed, k, j)`), so no RNG state is saved and a run resumed at step k draws exactly what
the uninterrupted run drew, on any number of processes. The LR schedule is a function of the step, so a
resume only puts the scheduler at the checkpoint's step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.distributed.tensor import distribute_tensor
from tqdm import tqdm

from ltx.core.parallel import Dist
from train.dist_checkpoint import load_state, save_state
from train.runner import Run


class TrainingError(RuntimeError):
    """Training cannot go on (bad data, a diverged run, a resume that does not fit); the message says why."""


# ------------------------------------------------------------------------------------------------ randomness


def step_seed(seed: int, step: int, index: int | None = None) -> int:
    """The seed of training step `step`, or of sample `index` of that step's global batch."""
    base = seed * 1_000_003 + step
    return (base if index is None else base * 100_003 + index) % (2**63 - 1)


def step_generator(seed: int, step: int, index: int | None = None,
                   device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of every random draw of step `step` (of its sample `index`): see the module docstring."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, index))


# ------------------------------------------------------------------------------------------------ the schedule


class ScheduleFields(Protocol):
    steps: int
    warmup: int
    lr_schedule: str  # constant | linear | cosine
    min_lr_ratio: float


def lr_factor(cfg: ScheduleFields, step: int) -> float:
    """The learning-rate multiplier at `step`: linear warmup over `warmup` steps, then constant, or a linear or
    cosine decay to `min_lr_ratio` at `steps`."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    done = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "linear":
        return 1.0 - (1.0 - cfg.min_lr_ratio) * done
    if cfg.lr_schedule == "cosine":
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; expected constant, linear or cosine")


def set_schedule_step(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put a LambdaLR and its optimizer's learning rates at `step` (after a resume, without stepping)."""
    scheduler.last_epoch = step
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(step)


# ------------------------------------------------------------------------------------------------ the step


def grad_norm(params: list[nn.Parameter], clip: float) -> float:
    """Total gradient norm, clipped to `clip` when > 0; works on DTensor (FSDP2) gradients too."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, clip if clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


class EMA:
    """An exponential moving average of trained tensors: average <- average + (1 - d) (live - average) after
    every optimizer step, with the decay warmed up as d = min(decay, (1 + step) / (10 + step))."""

    def __init__(self, decay: float, pairs: dict[str, tuple[Tensor, Tensor]]):
        self.decay = decay
        self.pairs = pairs  # name -> (average, live)

    @classmethod
    def of(cls, decay: float, named: dict[str, Tensor]) -> EMA:
        """An average of `named` starting at their current values (a copy of each)."""
        return cls(decay, {n: (t.detach().clone(), t) for n, t in named.items()})

    @classmethod
    def of_modules(cls, decay: float, pairs: list[tuple[nn.Module, nn.Module]]) -> EMA:
        """Averages kept as the parameters of copies of the live modules: [(average module, live module)]."""
        return cls(decay, {f"{i}.{n}": (a, p) for i, (avg, live) in enumerate(pairs)
                           for (n, a), p in zip(avg.named_parameters(), live.parameters())})

    @property
    def averages(self) -> dict[str, Tensor]:
        return {n: a for n, (a, _) in self.pairs.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, live in self.pairs.values():
            average.lerp_(live.detach(), 1 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the averages and the live values (twice: back as they were, bit for bit)."""
        for average, live in self.pairs.values():
            kept = live.detach().clone()
            live.copy_(average)
            average.copy_(kept)

    def state_dict(self) -> dict[str, Tensor]:
        """The averages as full (unsharded) CPU tensors."""
        return {n: (a.full_tensor() if hasattr(a, "full_tensor") else a).cpu() for n, a in self.averages.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for n, a in self.averages.items():
            full = state[n].to(a.device)
            if hasattr(a, "device_mesh"):  # FSDP2: this process's shard of the full tensor
                full = distribute_tensor(full, a.device_mesh, a.placements)
            a.copy_(full)


# ------------------------------------------------------------------------------------------------ state


class Checkpoint(Protocol):
    """Where a run's state goes: `save` writes the state at `run.step`; `load` restores the newest one
    (weights, optimizer, EMA, and run.step / run.history / run.wandb_id) and says whether there was one."""

    def save(self) -> None: ...

    def load(self) -> bool: ...


@dataclass
class ShardedCheckpoint:
    """run_dir/checkpoints/ (train/dist_checkpoint.py): sharded, atomic, loads on any number of processes.
    The DCP files hold `model` (its trainable parameters only when `trainable_only`) and the optimizer;
    extra.pt holds the step, the metric history, the wandb id, the resolved config and the EMA."""

    run: Run
    model: nn.Module
    optimizer: torch.optim.Optimizer
    dist: Dist
    config: dict
    trainable_only: bool = False
    keep: int = 2
    ema: EMA | None = None

    @property
    def folder(self) -> Path:
        return self.run.root / "checkpoints"

    def save(self) -> None:
        run = self.run
        extra = {"step": run.step, "history": run.history, "wandb_id": run.wandb_id, "config": self.config,
                 "ema": self.ema.state_dict() if self.ema else {}}
        save_state(self.folder, run.step, model=self.model, optimizer=self.optimizer, extra=extra, dist=self.dist,
                   keep=self.keep, trainable_only=self.trainable_only)

    def load(self) -> bool:
        extra = load_state(self.folder, model=self.model, optimizer=self.optimizer, dist=self.dist,
                           trainable_only=self.trainable_only)
        if extra is None:
            return False
        self.run.step, self.run.history, self.run.wandb_id = extra["step"], extra["history"], extra["wandb_id"]
        if self.ema:
            self.ema.load_state_dict(extra["ema"])
        return True


# ------------------------------------------------------------------------------------------------ the loop


class TrainLoop:
    """`forward_backward` then one optimizer step, from the run's step to `steps` (module docstring).

    Per step, after the optimizer step: the metrics are logged every `log_every` steps (and at the last),
    the state is saved every `checkpoint_every` steps (and where the session ends), then `after_step(step)`
    runs (validation samples, on the app's own cadence). `stop_after` ends the session at that step, as a
    time-boxed session or a kill would; running again with the same config resumes where it stopped."""

    def __init__(self, run: Run, forward_backward: Callable[[int], dict[str, float]], *,
                 optimizer: torch.optim.Optimizer, lr_lambda: Callable[[int], float], params: list[nn.Parameter],
                 checkpoint: Checkpoint, steps: int, log_every: int, checkpoint_every: int,
                 stop_after: int | None = None, grad_clip: float = 1.0, ema: EMA | None = None,
                 after_step: Callable[[int], None] | None = None, advice: str = "lower lr"):
        self.run, self.forward_backward, self.checkpoint = run, forward_backward, checkpoint
        self.optimizer, self.params, self.grad_clip, self.ema = optimizer, params, grad_clip, ema
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        self.steps, self.log_every, self.checkpoint_every = steps, log_every, checkpoint_every
        self.end = steps if stop_after is None else min(steps, stop_after)
        self.after_step, self.advice = after_step, advice
        self.resumed: bool | None = None  # set by `resume`

    def resume(self) -> bool:
        """Load the newest checkpoint, if any, and put the LR schedule at its step; returns whether it did."""
        if self.resumed is None:
            self.resumed = self.checkpoint.load()
            if self.resumed:
                set_schedule_step(self.scheduler, self.run.step)
        return self.resumed

    def train_step(self, step: int) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.forward_backward(step)
        return metrics | self.optimizer_step(step, metrics["loss"])

    def optimizer_step(self, step: int, loss: float) -> dict[str, float]:
        """Clip, refuse a non-finite loss or gradient (saving the last good state), step the optimizer, the LR
        schedule and the EMA."""
        gnorm = grad_norm(self.params, self.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.checkpoint.save()  # the state after `step` good steps: the last good one
            raise TrainingError(f"step {step + 1}: loss {loss}, gradient norm {gnorm} (not finite); stopped, the last "
                                f"good state (step {step}) is saved in {self.run.root}. Try: {self.advice}")
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update(step)
        return {"grad_norm": gnorm, "lr": self.scheduler.get_last_lr()[0]}

    def fit(self) -> None:
        """Train from the run's step to `steps` (or `stop_after`); resumes first if `resume` was not called.

        Time is reported one way everywhere (`StepClock`): s_per_step is wall-clock seconds per step, everything
        the loop does included (data, forward / backward, optimizer, logging, checkpoints, validation samples),
        averaged over the steps since the previous metrics row in metrics.jsonl / wandb, over the session so far
        on the progress bar (with the time left at that pace), and over the whole session in `session_s_per_step`
        (the apps' final summary)."""
        self.resume()
        run = self.run
        self.clock = clock = StepClock(run.step)
        bar = tqdm(total=self.steps, initial=run.step, desc=run.root.name, disable=not run.is_main,
                   dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        while run.step < self.end:
            metrics = self.train_step(run.step)
            run.step += 1
            bar.update(1)
            if run.step % self.log_every == 0 or run.step == self.steps:
                run.log(metrics | {"s_per_step": clock.since_last_row(run.step)})
                pace = clock.session(run.step)
                bar.set_postfix_str(f"loss={metrics['loss']:.4g}, s/step={pace:.3g}, "
                                    f"left {format_seconds(pace * (self.end - run.step))}")
            if run.step % self.checkpoint_every == 0 or run.step == self.end:
                self.checkpoint.save()
            if self.after_step is not None:
                self.after_step(run.step)
        clock.stop(run.step)
        bar.close()

    @property
    def session_s_per_step(self) -> float | None:
        """Mean wall-clock seconds per step of this session's `fit` (None before it ran a step)."""
        clock = getattr(self, "clock", None)
        return None if clock is None or clock.steps == 0 else clock.seconds / clock.steps


class StepClock:
    """Wall-clock time of a session's steps, for the one definition of s_per_step (`TrainLoop.fit`)."""

    def __init__(self, step: int):
        self.t0 = self.t_row = time.perf_counter()
        self.first = self.row_step = step
        self.seconds, self.steps = 0.0, 0

    def since_last_row(self, step: int) -> float:
        """Seconds per step since the previous row (or the session's start), and start the next interval."""
        now = time.perf_counter()
        pace = (now - self.t_row) / max(1, step - self.row_step)
        self.t_row, self.row_step = now, step
        return round(pace, 4)

    def session(self, step: int) -> float:
        return (time.perf_counter() - self.t0) / max(1, step - self.first)

    def stop(self, step: int) -> None:
        self.seconds, self.steps = time.perf_counter() - self.t0, step - self.first


def format_seconds(seconds: float) -> str:
    """1h02m, 3m05s, 12s."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
