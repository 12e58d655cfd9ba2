"""What every training app needs around its step function: a run folder, atomic checkpoints, exact resume,
and logs people can look at (metrics.jsonl, a loss-curve PNG, wandb in offline mode).

Exact resume: every random draw of step k comes from `step_generator(seed, k)`, a generator seeded by the
run seed and the step number, so no RNG state has to be saved and a run resumed at step k draws exactly
what the uninterrupted run drew. The checkpoint holds the model, the optimizer, the step and the metric
history; it is written to a temporary file and renamed, so a kill at any moment leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ltx.checkpoint import atomic_file


def step_generator(seed: int, step: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator for every random draw of training step `step` (see the module docstring)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


@dataclass
class Run:
    """A run folder: checkpoints/, metrics.jsonl, loss.png, and the resolved config."""

    root: Path
    seed: int
    history: list[dict] = field(default_factory=list)
    step: int = 0
    _wandb: object = None
    _t0: float = field(default_factory=time.time)

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoint.pt"

    def start(self, config: dict, *, project: str, use_wandb: bool = True) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        if use_wandb:
            try:
                import wandb

                self._wandb = wandb.init(project=project, dir=str(self.root), mode="offline", config=config,
                                         resume="allow", id=self.root.name.replace("/", "_"))
            except Exception as e:  # noqa: BLE001 - tracking must never stop training
                print(f"[run] wandb disabled: {e}")

    def resume(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> bool:
        """Load the run's checkpoint if there is one; returns whether it did."""
        if not self.checkpoint_path.exists():
            return False
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name], strict=True)
        for name, o in optimizers.items():
            o.load_state_dict(state["optimizers"][name])
        self.step, self.history = state["step"], state["history"]
        print(f"[run] resumed {self.root} at step {self.step}")
        return True

    def save(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
        state = {
            "step": self.step,
            "history": self.history,
            "modules": {n: m.state_dict() for n, m in modules.items()},
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
        }
        atomic_torch_save(state, self.checkpoint_path)

    def log(self, metrics: dict[str, float]) -> None:
        row = {"step": self.step, "time_s": round(time.time() - self._t0, 2), **metrics}
        self.history.append(row)
        with open(self.root / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=self.step)

    def image(self, key: str, path: Path) -> None:
        """Log a picture the run wrote (e.g. a contact sheet of validation samples) to wandb, at this step."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=self.step)

    def plot(self, keys: tuple[str, ...] = ("loss",), title: str = "") -> Path:
        """Loss curves as a PNG (log scale, raw and smoothed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            pts = [(r["step"], r[key]) for r in self.history if key in r and math.isfinite(r[key])]
            if not pts:
                continue
            steps, vals = zip(*pts)
            ax.plot(steps, vals, alpha=0.3, label=f"{key}")
            k = max(1, len(vals) // 25)
            smooth = [sum(vals[max(0, i - k) : i + 1]) / len(vals[max(0, i - k) : i + 1]) for i in range(len(vals))]
            ax.plot(steps, smooth, label=f"{key} (smoothed)")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.set_title(title or self.root.name)
        ax.grid(alpha=0.3)
        ax.legend()
        out = self.root / "loss.png"
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def resume_lr(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put a LambdaLR and its optimizer at `step` after a resume (without stepping the optimizer)."""
    scheduler.last_epoch = step
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(step)


def train_loop(run: Run, step_fn: Callable[[int], dict[str, float]], *, steps: int, log_every: int,
               checkpoint_every: int, on_checkpoint: Callable[[], None], progress: bool = True,
               stop_after: int | None = None) -> None:
    """Run `step_fn(step)` from the run's current step to `steps`, logging and checkpointing on schedule.

    `stop_after` ends the session early at that step (after checkpointing), as a time-boxed session or a kill
    would; running again with the same config resumes where it stopped."""
    from tqdm import tqdm

    end = steps if stop_after is None else min(steps, stop_after)
    bar = tqdm(total=steps, initial=run.step, desc=run.root.name, disable=not progress, dynamic_ncols=True)
    while run.step < end:
        metrics = step_fn(run.step)
        run.step += 1
        bar.update(1)
        if run.step % log_every == 0 or run.step == steps:
            run.log(metrics)
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
        if run.step % checkpoint_every == 0 or run.step == end:
            on_checkpoint()
    bar.close()
