"""What the generate app does around the library, for both model families: bad input as one `InputError`,
paths that must exist, the device, the run folder (checked before any weights load, made only when the
outputs are ready) and atomic text files. The config is any object with the GenerateConfig fields used."""

from __future__ import annotations

import os
import re
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


def run_folder(cfg) -> Path:
    """The output folder of this run (created): `name`, or the next free run_NNN; never silently reused."""
    check_output(cfg)
    root = Path(cfg.output_dir).expanduser()
    if cfg.name is not None:
        out = root / cfg.name
        out.mkdir(parents=True, exist_ok=True)
        return out
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"run_(\d+)", p.name))]
    n = max(taken, default=-1) + 1
    while True:
        out = root / f"run_{n:03d}"
        try:
            out.mkdir()  # atomic: two concurrent runs never share a folder
            return out
        except FileExistsError:
            n += 1


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)
