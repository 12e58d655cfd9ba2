"""Sharded, atomic, topology-free training checkpoints through `torch.distributed.checkpoint` (DCP).

Layout of a checkpoint folder:

    folder/latest              text: the name of the newest complete checkpoint, e.g. "step_00000200"
    folder/step_00000200/      DCP files (.metadata + one __<rank>_0.distcp per rank) and extra.pt
    folder/step_00000100/      the previous one (the last `keep` are kept)

The model and optimizer state come from `get_state_dict`, which gives the same fully qualified names for a
plain module, DDP (no `module.`), compiled blocks (no `_orig_mod.`) and FSDP2 (DTensor shards): DCP stores
every tensor with its global shape, so a checkpoint written by N processes loads on M processes with any of
the three layouts. Optimizer state is keyed by parameter name, not by position.

Atomicity: a checkpoint is written into `step_XXXXXXXX.tmp/`, completed with `extra.pt` (rank 0), renamed to
`step_XXXXXXXX/`, and only then does `latest` (rewritten atomically) name it. A kill at any moment leaves
`latest` naming a complete checkpoint; leftover `*.tmp` folders are ignored and removed at the next save or
load. `extra.pt` is read with `torch.load(weights_only=False)`: load only checkpoints you wrote.

`python -m train.dist_checkpoint consolidate CKPT_DIR OUT.safetensors` writes the model weights of a
checkpoint (no optimizer state) as one safetensors file, on one process.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ltx.core.checkpoint import CheckpointError, TensorEntry, atomic_file, write_safetensors
from ltx.core.parallel import Dist

LATEST = "latest"
EXTRA = "extra.pt"
_NAME = re.compile(r"^step_(\d{8,})$")
_TMP = re.compile(r"^step_\d{8,}\.tmp$")
_OLD = re.compile(r"^step_\d{8,}\.old$")
logging.getLogger("c10d-NullHandler-dcp_logger").setLevel(logging.WARNING)  # DCP logs every call at DEBUG


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _options(trainable_only: bool) -> StateDictOptions:
    # trainable_only (e.g. LoRA): frozen parameters are neither saved nor expected back
    return StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)


@contextmanager
def _quiet():
    # DCP warns on every single-process save/load that it "assumes the intent"; that intent is ours
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _state(model: nn.Module, optimizer: torch.optim.Optimizer | None, trainable_only: bool) -> dict:
    opts = _options(trainable_only)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return {"model": get_model_state_dict(model, options=opts)}
    model_sd, optim_sd = get_state_dict(model, optimizer, options=opts)
    return {"model": model_sd, "optim": optim_sd}


def _remove_stale(folder: Path) -> None:
    """Rank 0: drop `step_*.tmp` folders (interrupted writes) and `step_*.old` ones (interrupted replaces)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_dir() and _TMP.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_dir() and _OLD.match(p.name):
            target = p.with_name(p.name[: -len(".old")])
            if target.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:  # killed between moving the old copy aside and renaming the new one in: roll back
                p.rename(target)


def _fsync_dir(path: Path) -> None:
    """Make the renames inside `path` durable (best effort: not every filesystem syncs folders)."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The checkpoint folders under `folder` that were renamed into place, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def save_state(
    folder: str | os.PathLike,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extra: dict,
    dist: Dist,
    trainable_only: bool = False,
    keep: int = 2,
) -> Path:
    """Save model + optimizer state (sharded, every rank) and `extra` (rank 0) as `folder/step_XXXXXXXX`.

    Call on every rank. `extra` holds what the trainer needs besides tensors (step, scheduler state, wandb id,
    config fingerprint, metrics) and must be torch-saveable. With `trainable_only` only parameters that
    require grad are saved (LoRA runs: adapters + optimizer). The `keep` newest checkpoints are kept.
    An optimizer that has not stepped yet has no state and is not saved (get_state_dict would initialize it
    with a zero-lr step, which counts as an Adam step)."""
    folder = Path(folder)
    name = step_dir_name(step)
    final, tmp = folder / name, folder / f"{name}.tmp"
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
    dist.barrier()  # nobody writes into tmp before rank 0 has cleaned it
    with_optimizer = optimizer is not None and bool(optimizer.state)
    state = _state(model, optimizer if with_optimizer else None, trainable_only)
    try:
        with _quiet():
            dcp.save(state, checkpoint_id=tmp, no_dist=not dist.enabled)
        dist.barrier()  # every rank's shards are on disk
        if dist.is_main:
            with open(tmp / EXTRA, "wb") as f:
                torch.save({"step": step, "trainable_only": trainable_only, "optimizer": with_optimizer,
                            "extra": extra}, f)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
    except (OSError, CheckpointException) as e:  # a full disk, a quota, a vanished mount: one line, nothing half-kept
        shutil.rmtree(tmp, ignore_errors=True)
        previous = [p.name for p in complete_checkpoints(folder)]
        kept = f"the last checkpoint, {previous[-1]}, is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {final} ({_describe(e)}); {kept}. Free space on that "
                              "disk (or set a run_dir on another) and rerun the same command to resume") from None
    if dist.is_main:
        if final.exists():  # the same step saved again: move the old copy aside first (see _remove_stale)
            old = folder / f"{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(folder)
        with atomic_file(folder / LATEST, "w") as f:
            f.write(name + "\n")
        for old in complete_checkpoints(folder)[: -max(1, keep)]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def _describe(e: BaseException) -> str:
    """One line for an exception; DCP's CheckpointException wraps one per failing rank."""
    if isinstance(e, CheckpointException) and e.failures:
        rank, (e, _) = next(iter(e.failures.items()))
        return f"rank {rank}: {_describe(e)}"
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first.split('. ')[0]}"[:300]


def _what_to_do(folder: Path, bad: str) -> str:
    others = [p.name for p in complete_checkpoints(folder) if p.name != bad]
    hint = f"write {others[-1]!r} into {folder / LATEST}" if others else f"delete {folder / LATEST} to start over"
    return f"delete {folder / bad} and {hint}" if (folder / bad).exists() else hint


def resolve(folder: str | os.PathLike) -> Path | None:
    """The checkpoint `folder/latest` names (checked to be complete), or None when there is none yet.

    `folder` may also be a checkpoint itself (a folder with DCP `.metadata`)."""
    folder = Path(folder)
    if (folder / ".metadata").is_file():
        return folder
    latest = folder / LATEST
    if not latest.is_file():
        # `latest` deleted, or a kill between the first checkpoint's rename and its `latest`: resume from the
        # newest complete checkpoint rather than start over on top of them
        done = [p for p in complete_checkpoints(folder) if all((p / need).is_file() for need in (".metadata", EXTRA))]
        if done:
            print(f"{latest} is missing: resuming from the newest complete checkpoint, {done[-1].name}", flush=True)
        return done[-1] if done else None
    try:
        name = latest.read_text().strip()
    except UnicodeDecodeError:
        name = "<not text>"
    if not _NAME.match(name):
        raise CheckpointError(f"{latest}: names {name!r}, not a checkpoint folder (step_XXXXXXXX): damaged? "
                              f"{_what_to_do(folder, name)}")
    ckpt = folder / name
    if not ckpt.is_dir():
        raise CheckpointError(f"{latest} names {name}, which does not exist; {_what_to_do(folder, name)}")
    for need in (".metadata", EXTRA):
        if not (ckpt / need).is_file():
            raise CheckpointError(f"{ckpt}: incomplete checkpoint (no {need}); {_what_to_do(folder, name)}")
    return ckpt


def _listing(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _check_fits(ckpt: Path, state: dict, trainable_only: bool) -> None:
    """Name what does not match before DCP fails on it: a different config or set of trainable parameters is
    a mismatch to report, not a corrupt checkpoint."""
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    saved = dcp.FileSystemReader(ckpt).read_metadata().state_dict_metadata
    flat, _ = flatten_state_dict(state)
    missing = sorted(k for k in flat if k not in saved)
    unexpected = [] if trainable_only else sorted(k for k in saved if k.startswith("model.") and k not in flat)
    shapes = [
        f"{k}: checkpoint {tuple(saved[k].size)} vs model {tuple(v.shape)}"
        for k, v in sorted(flat.items())
        if k in saved and isinstance(v, torch.Tensor) and isinstance(saved[k], TensorStorageMetadata)
        and tuple(saved[k].size) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listing(shapes, 2)}")
    if problems:
        raise CheckpointError(
            f"{ckpt} does not fit this model/optimizer ({' | '.join(problems)}); was it written with another "
            "model config or another set of trainable parameters?"
        )


def _read_extra(folder: Path, trainable_only: bool) -> tuple[Path | None, dict | None]:
    ckpt = resolve(folder)
    if ckpt is None:
        return None, None
    try:
        saved = torch.load(ckpt / EXTRA, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle raises
        raise CheckpointError(
            f"{ckpt / EXTRA}: cannot be read ({_describe(e)}); {_what_to_do(ckpt.parent, ckpt.name)}"
        ) from None
    if not isinstance(saved, dict) or any(k not in saved for k in ("trainable_only", "optimizer", "extra")):
        raise CheckpointError(f"{ckpt / EXTRA}: not a checkpoint's {EXTRA} (it holds "
                              f"{sorted(saved) if isinstance(saved, dict) else type(saved).__name__}); "
                              f"{_what_to_do(ckpt.parent, ckpt.name)}")
    if saved["trainable_only"] and not trainable_only:
        raise CheckpointError(f"{ckpt}: holds only the trainable parameters; load it with trainable_only=True")
    return ckpt, saved


def load_state(
    folder: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    dist: Dist,
    trainable_only: bool = False,
) -> dict | None:
    """Load the latest checkpoint in `folder` into `model` and `optimizer` (any layout: plain, DDP, FSDP2,
    any number of processes); returns the saved `extra`, or None when there is no checkpoint yet.

    Call on every rank, with the model already parallelized and the optimizer built over its parameters.
    Raises CheckpointError (one line, naming the folder and what to do) for an incomplete or corrupt
    checkpoint, or one that does not fit the model, on every rank alike."""
    folder = Path(folder)
    found: tuple | str | None = None
    if dist.is_main:  # rank 0 decides, so that every rank raises or goes on together
        _remove_stale(folder)
        try:
            found = _read_extra(folder, trainable_only)
        except CheckpointError as e:
            found = str(e)
    found = dist.broadcast_object(found)
    if isinstance(found, str):
        raise CheckpointError(found)
    ckpt, saved = found
    if ckpt is None:
        return None
    if not saved["optimizer"]:
        optimizer = None  # saved before the first step: the fresh optimizer is already that state
    state = _state(model, optimizer, trainable_only)
    try:
        _check_fits(ckpt, state, trainable_only)
        with _quiet():
            dcp.load(state, checkpoint_id=ckpt, no_dist=not dist.enabled)
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - a failed read: not the files that were written
        what = _what_to_do(ckpt.parent, ckpt.name)
        raise CheckpointError(f"{ckpt}: cannot be loaded ({_describe(e)}); {what}") from e
    opts = _options(trainable_only)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state["model"], options=opts)
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=opts)
    return saved["extra"]


def consolidate(
    ckpt_dir: str | os.PathLike,
    out_safetensors: str | os.PathLike,
    *,
    prefix: str = "model.",
    metadata: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """The model weights of a DCP checkpoint as one safetensors file (keys without `prefix`), on one process
    and without a process group; one tensor in memory at a time. `ckpt_dir` is a checkpoint or a folder with
    `latest`."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    ckpt = resolve(ckpt_dir)
    if ckpt is None:
        raise CheckpointError(f"{ckpt_dir}: no checkpoint here (neither .metadata nor {LATEST})")
    try:
        meta = dcp.FileSystemReader(ckpt).read_metadata()
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - a damaged .metadata: whatever unpickling raises
        raise CheckpointError(f"{ckpt}: its .metadata cannot be read ({_describe(e)}): the checkpoint is damaged; "
                              f"{_what_to_do(ckpt.parent, ckpt.name)}") from None
    keys = [k for k, m in meta.state_dict_metadata.items()
            if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)]
    if not keys:
        raise CheckpointError(f"{ckpt}: no tensors under {prefix!r}")

    def loader(key: str, m: TensorStorageMetadata):
        def load() -> torch.Tensor:
            sd = {key: torch.empty(m.size, dtype=m.properties.dtype)}
            try:
                with _quiet():
                    dcp.load(sd, storage_reader=dcp.FileSystemReader(ckpt), no_dist=True)
            except (Exception, CheckpointException) as e:  # noqa: BLE001 - a damaged shard: whatever the reader raises
                raise CheckpointError(f"{ckpt}: {key} cannot be read ({_describe(e)}): a shard is damaged or "
                                      f"truncated; {_what_to_do(ckpt.parent, ckpt.name)}") from None
            return sd[key]

        return load

    entries = []
    for k in sorted(keys):
        m = meta.state_dict_metadata[k]
        entries.append(TensorEntry(k[len(prefix):], m.properties.dtype, tuple(m.size), loader(k, m)))
    return write_safetensors(out_safetensors, entries, metadata, overwrite=overwrite)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.dist_checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consolidate", help="model weights of a checkpoint -> one safetensors file")
    c.add_argument("ckpt_dir", help="a step_XXXXXXXX folder, or a checkpoint folder with `latest`")
    c.add_argument("out", help="output .safetensors")
    c.add_argument("--prefix", default="model.", help="state key prefix of the model weights (default: model.)")
    c.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = consolidate(args.ckpt_dir, args.out, prefix=args.prefix, overwrite=args.overwrite)
    except (CheckpointError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # the output: a full disk, a path under a file, no permission
        raise SystemExit(f"error: cannot write {args.out}: {e.strerror or e}"
                         f"{f' ({e.filename})' if e.filename else ''}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
