"""What the generate app does around the library, for both model families: bad input as one `InputError`,
paths that must exist, the device, the run folder (checked before any weights load, staged and renamed into
place when every output is written) and atomic text files. The config is any object with the GenerateConfig
fields used."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx.core.checkpoint import atomic_file
from ltx.core.device import resolve_device as resolve_library_device


class InputError(ValueError):
    """Bad input found before any heavy work (the message says what to change)."""


def existing(path: str | os.PathLike | None, what: str, hint: str) -> Path:
    """`path` as a Path; InputError when it is not given (None or blank) or does not exist."""
    if path is None or not str(path).strip():
        raise InputError(f"no {what} given; {hint}")
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} {p} does not exist; {hint}")
    return p


def existing_file(path: str | os.PathLike | None, what: str, hint: str) -> Path:
    """`existing`, and a file, not a folder."""
    p = existing(path, what, hint)
    if not p.is_file():
        raise InputError(f"{what} {p} is a folder, not a file; {hint}")
    return p


def resolve_device(cfg) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of `cfg.device` / `cfg.precision` (an unavailable device is refused here, before
    anything loads)."""
    try:
        return resolve_library_device(cfg.device, cfg.precision.value)
    except ValueError as e:
        raise InputError(str(e)) from None


def check_output(cfg) -> None:
    """The output folder can be made and written (checked before any weights load; made only when the videos
    are ready, so a failed run leaves no empty folder)."""
    root = Path(cfg.output_dir).expanduser()
    target = root / cfg.name if cfg.name is not None else root
    if cfg.name is not None and target.exists() and (not target.is_dir() or any(target.iterdir())) \
            and not cfg.overwrite:
        raise InputError(f"output folder {target} exists and is not empty; pick another name or pass overwrite=true")
    existing_parent = target
    while not existing_parent.exists():  # the nearest existing ancestor must be a writable folder
        existing_parent = existing_parent.parent
    if not existing_parent.is_dir():
        raise InputError(f"output_dir {root}: {existing_parent} is a file, not a folder; pick another output_dir")
    if not os.access(existing_parent, os.W_OK | os.X_OK):
        raise InputError(f"output_dir {root}: {existing_parent} is not writable; pick another output_dir")


@contextmanager
def output_folder(cfg) -> Iterator[OutputFolder]:
    """Where a run writes its files: a private staging folder next to the final one, renamed into place when
    every file is written (`folder.final` is set then). A failure (a full disk, Ctrl-C) removes what was staged, so
    no run folder is ever half written. The final folder is `name` (an empty one is replaced; a non-empty one was
    refused before the run, or, when another run filled it meanwhile, this run's files go to the next free
    `name_N`) or the next free run_NNN; with `overwrite=true` the files go straight into `name`, each atomically."""
    check_output(cfg)
    root = Path(cfg.output_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if cfg.name is not None and cfg.overwrite:
        (root / cfg.name).mkdir(parents=True, exist_ok=True)
        folder = OutputFolder(root / cfg.name)
        yield folder
        folder.final = folder.path
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{cfg.name or 'run'}.", suffix=".tmp", dir=root))
    folder = OutputFolder(staging)
    try:
        yield folder
        folder.final = _claim(root, cfg.name, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@dataclass
class OutputFolder:
    path: Path  # where to write now
    final: Path | None = None  # where the files are once the run is done


def _claim(root: Path, name: str | None, staging: Path) -> Path:
    """Rename `staging` to `name` (or name_1, name_2, ... if another run got there first) or the next run_NNN."""
    if name is not None:
        candidates = (root / (name if n == 0 else f"{name}_{n}") for n in range(10**6))
    else:
        taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"run_(\d+)", p.name))]
        candidates = (root / f"run_{n:03d}" for n in range(max(taken, default=-1) + 1, 10**9))
    for target in candidates:
        try:
            os.rename(staging, target)  # atomic; replaces only an empty folder
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                continue
            raise
        if name is not None and target.name != name:
            print(f"warning: {root / name} was filled by another run meanwhile; this run's files are in {target}")
        return target
    raise FileExistsError(f"no free output folder under {root}")


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)
