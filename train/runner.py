"""A training run's folder and the checks of the training configs.

`Run` is the run folder every training app writes: config.json, metrics.jsonl (one JSON row per logged step),
loss.png, wandb in offline mode, and, for the demo apps (`RunCheckpoint`), checkpoint.pt: the modules, the
optimizers, the step, the metric history and the wandb id in one file, written to a temporary file and
renamed, so a kill at any moment leaves the previous checkpoint intact. The loop around it is
train/harness.py.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ltx.core.checkpoint import atomic_file


def atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


class RunError(ValueError):
    """A run folder or its checkpoint that cannot be used as it is; the message names it and says what to do."""


# ------------------------------------------------------------------------------------------ config checks
# Shared by the training configs' __post_init__: each raises ValueError("NAME=VALUE is invalid: WHAT IS VALID").


def invalid(name: str, value: object, valid: str) -> ValueError:
    return ValueError(f"{name}={value!r} is invalid: {valid}")


def check_int(name: str, value: object, lo: int = 1, *, optional: bool = False) -> None:
    """An integer >= lo (bools are not integers here); None passes when `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise invalid(name, value, f"must be an integer >= {lo}" + (" (or null)" if optional else ""))


def check_number(name: str, value: object, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    """A finite number in [lo, hi] (open at an end when lo_open / hi_open)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        parts = [f"{'>' if lo_open else '>='} {lo:g}"] if lo > -math.inf else []
        parts += [f"{'<' if hi_open else '<='} {hi:g}"] if hi < math.inf else []
        raise invalid(name, value, "must be a finite number" + (" " + " and ".join(parts) if parts else ""))


def check_choice(name: str, value: object, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise invalid(name, value, f"must be one of {', '.join(valid)}")


def check_multiple(name: str, value: object, factor: int, *, plus: int = 0, what: str = "") -> None:
    """An integer of the form factor * k + plus (k >= 1 when plus == 0, else k >= 0); names the nearest valid."""
    check_int(name, value, max(1, plus))
    if (value - plus) % factor:
        lower = max(plus or factor, (value - plus) // factor * factor + plus)
        upper = (value - plus) // factor * factor + plus + factor
        form = f"{factor}*N + {plus}" if plus else f"a multiple of {factor}"
        raise invalid(name, value, f"must be {form}{what}; nearest valid: {lower} or {upper}")


def check_run_dir(run_dir: str | os.PathLike, name: str = "run_dir") -> None:
    """Refuse a run_dir that is a file, or that cannot be created or written (before anything is written)."""
    path = Path(run_dir)
    if not str(run_dir):
        raise invalid(name, str(run_dir), "give a folder for the run's outputs")
    if path.exists() and not path.is_dir():
        raise RunError(f"{name}={path} is a file, not a folder; remove it or pick another {name}")
    probe = path
    while not probe.exists():  # the nearest folder that exists: the run folder, or where it will be made
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"{name}={path} cannot be made: {probe} is a file; pick another {name}")
    try:  # os.access is no use as root or on a read-only mount: try it
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise RunError(f"{name}={path} is not writable ({probe}: {e.strerror or e}); fix its permissions or pick "
                       f"another {name}") from None


def first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    text = text[0] if text else ""
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


@dataclass
class Run:
    """A run folder: config.json, metrics.jsonl, loss.png, wandb/, and the checkpoint(s). Every process of a
    distributed run keeps the history; only the main one (`is_main`) writes."""

    root: Path
    history: list[dict] = field(default_factory=list)
    step: int = 0
    is_main: bool = True
    wandb_id: str | None = None  # kept in the checkpoint: a resumed run logs to the same wandb run
    _wandb: object = None
    _t0: float = field(default_factory=time.time)
    _state: dict | None = None  # the checkpoint `open` read, until `resume` applies it

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoint.pt"

    def open(self) -> bool:
        """Check the run folder and read its checkpoint, before anything is written: a folder that cannot be
        written, or a checkpoint that cannot be read, is refused by name. Returns whether there is a checkpoint."""
        check_run_dir(self.root)
        if not self.checkpoint_path.exists():
            self._state = None
            return False
        self._state = self._read_checkpoint()
        return True

    def _read_checkpoint(self) -> dict:
        path = self.checkpoint_path
        todo = (f"delete it to start the run over (or pick another run_dir), or restore it from a copy "
                f"(atomic saves never leave a partial {path.name}: it was damaged after it was written)")
        if not path.is_file():
            raise RunError(f"{path} is not a file; remove it to start the run over, or pick another run_dir")
        if path.stat().st_size == 0:
            raise RunError(f"{path} is empty (0 bytes); {todo}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - whatever a damaged zip or pickle raises
            raise RunError(f"{path} cannot be read, it is truncated or not a checkpoint ({first_line(e)}); "
                           f"{todo}") from None
        need = ("step", "history", "modules", "optimizers")
        if not isinstance(state, dict) or any(k not in state for k in need):
            have = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise RunError(f"{path} is not a checkpoint of this trainer (it holds {have}, not {list(need)}); {todo}")
        if not isinstance(state["step"], int) or state["step"] < 0 or not isinstance(state["history"], list):
            raise RunError(f"{path} holds step {state['step']!r} and a {type(state['history']).__name__} history; "
                           f"{todo}")
        return state

    def resume(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> bool:
        """Load the run's checkpoint if there is one (read by `open`); returns whether it did. A checkpoint of
        another model or config (other modules, names or shapes) is refused naming the differences."""
        if self._state is None and not self.open():
            return False
        state, path = self._state, self.checkpoint_path
        problems = [f"no {n!r} weights" for n in modules if n not in state["modules"]]
        problems += [f"{n!r} weights this config does not train" for n in state["modules"] if n not in modules]
        for name, m in modules.items():
            saved, own = state["modules"].get(name), m.state_dict()
            if not isinstance(saved, dict):
                continue
            missing, unexpected = [k for k in own if k not in saved], [k for k in saved if k not in own]
            shapes = [f"{k} is {tuple(saved[k].shape)} there, {tuple(v.shape)} here" for k, v in own.items()
                      if k in saved and getattr(saved[k], "shape", None) is not None
                      and tuple(saved[k].shape) != tuple(v.shape)]
            for what, keys in (("lacks", missing), ("has unknown", unexpected), ("shape mismatch:", shapes)):
                if keys:
                    more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
                    problems.append(f"{name} {what} {', '.join(keys[:3])}{more}")
        if problems:
            raise RunError(f"{path} was written by another model or config: {'; '.join(problems)}. Resume with the "
                           f"config the run started with (see {self.root / 'config.json'}), or use a new run_dir")
        try:
            for name, m in modules.items():
                m.load_state_dict(state["modules"][name], strict=True)
            for name, o in optimizers.items():
                o.load_state_dict(state["optimizers"][name])
        except (KeyError, ValueError, RuntimeError) as e:
            raise RunError(f"{path} does not fit this config ({first_line(e)}); resume with the config the run "
                           f"started with, or use a new run_dir") from None
        self.step, self.history = state["step"], [r for r in state["history"] if r.get("step", 0) <= state["step"]]
        self.wandb_id = state.get("wandb_id")
        self._state = None
        print(f"[run] resumed {self.root} at step {self.step}")
        return True

    def start(self, config: dict, *, project: str, use_wandb: bool = True) -> None:
        """Write the run's records, after the checkpoint was validated and loaded: config.json, and
        metrics.jsonl cut back to the checkpoint's history (rows logged after the last checkpoint are logged
        again by the resumed run; a run killed before its first checkpoint starts an empty file)."""
        if not self.is_main:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.root / "config.json", "w") as f:
                f.write(json.dumps(config, indent=2, default=str) + "\n")
            with atomic_file(self.root / "metrics.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in self.history)
        except OSError as e:
            raise RunError(f"run_dir={self.root} cannot be written ({e}); fix its permissions or pick another "
                           "run_dir") from None
        if use_wandb:
            try:
                import wandb

                self.wandb_id = self.wandb_id or f"{self.root.name}-{uuid.uuid4().hex[:8]}"
                self._wandb = wandb.init(project=project, dir=str(self.root), mode="offline", config=config,
                                         resume="allow", id=self.wandb_id)
            except Exception as e:  # noqa: BLE001 - tracking must never stop training
                print(f"[run] wandb disabled: {e}")

    def save(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> None:
        state = {
            "step": self.step,
            "history": self.history,
            "modules": {n: m.state_dict() for n, m in modules.items()},
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "wandb_id": self.wandb_id,
        }
        atomic_torch_save(state, self.checkpoint_path)

    def log(self, metrics: dict[str, float]) -> None:
        row = {"step": self.step, "time_s": round(time.time() - self._t0, 2), **metrics}
        self.history.append(row)
        if not self.is_main:
            return
        with open(self.root / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=self.step)

    def image(self, key: str, path: Path) -> None:
        """Log a picture the run wrote (e.g. a contact sheet of validation samples) to wandb, at this step."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=self.step)

    def plot(self, keys: tuple[str, ...] = ("loss",), title: str = "") -> Path | None:
        """Loss curves as a PNG (log scale; each key raw, faint, and smoothed in the same colour), by the main
        process. The legend sits right of the axes, so it never covers a curve."""
        if not self.is_main:
            return None
        import matplotlib  # heavy: only when a run ends

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = self.figure(keys, title)
        out = self.root / "loss.png"
        with atomic_file(out, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return out

    def figure(self, keys: tuple[str, ...], title: str = ""):
        """The matplotlib figure `plot` saves."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        positive = False
        for key in keys:
            pts = [(r["step"], r[key]) for r in self.history if key in r and math.isfinite(r[key])]
            if not pts:
                continue
            steps, vals = zip(*pts)
            positive = positive or any(v > 0 for v in vals)
            k = max(1, len(vals) // 25)
            smooth = [sum(vals[max(0, i - k) : i + 1]) / len(vals[max(0, i - k) : i + 1]) for i in range(len(vals))]
            (line,) = ax.plot(steps, smooth, linewidth=1.6, label=f"{key} (smoothed over {k + 1})" if k > 1 else key)
            if k > 1:
                ax.plot(steps, vals, alpha=0.25, linewidth=0.8, color=line.get_color())
        ax.set_xlabel("step")
        if positive:
            ax.set_yscale("log")
        ax.set_title(title or self.root.name, fontsize="medium")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        fig.tight_layout()
        return fig

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


@dataclass
class RunCheckpoint:
    """The demo apps' state: run_dir/checkpoint.pt with these modules and optimizers (`Run.save` / `Run.resume`,
    which reads what `Run.open` checked)."""

    run: Run
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def save(self) -> None:
        self.run.save(self.modules, self.optimizers)

    def load(self) -> bool:
        return self.run.resume(self.modules, self.optimizers)


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
