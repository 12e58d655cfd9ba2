"""Safetensors IO that fails with clear messages, writes atomically and streams, plus strict module loading.

- `SafetensorsReader` checks a file before trusting it (magic header, JSON, sizes, truncation) and hands out
  one tensor at a time.
- `write_safetensors` streams `TensorEntry`s to disk, one tensor in memory at a time, into a temporary file
  that is renamed over the destination only when complete: a crash never leaves a half-written checkpoint.
- `load_strict` is `load_state_dict(strict=True, assign=True)` with errors that list missing and unexpected
  keys (first few, and counts) and name shape mismatches.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from torch import Tensor, nn

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # same bound as the safetensors library


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says what and where."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # byte range in the file's data buffer


class SafetensorsReader:
    """Validated, lazy access to one .safetensors file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: not a safetensors file ({size} bytes, too short for a header)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or n < 2:
                raise CheckpointError(f"{self.path}: not a safetensors file (header length field reads {n})")
            if 8 + n > size:
                raise CheckpointError(f"{self.path}: truncated: the header needs {8 + n} bytes, the file has {size}")
            raw = f.read(n)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: not a safetensors file (header is not JSON: {e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: not a safetensors file (header is not a JSON object)")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.infos: dict[str, TensorInfo] = {}
        end = 0
        for name, h in header.items():
            try:
                dtype = DTYPES[h["dtype"]]
                shape = tuple(int(s) for s in h["shape"])
                begin, stop = (int(o) for o in h["data_offsets"])
            except (KeyError, TypeError, IndexError, ValueError) as e:
                raise CheckpointError(f"{self.path}: malformed header entry for {name!r}: {e!r}") from None
            if stop - begin != dtype.itemsize * torch.Size(shape).numel():
                raise CheckpointError(f"{self.path}: {name!r} has {stop - begin} bytes for {dtype} {shape}")
            end = max(end, stop)
            self.infos[name] = TensorInfo(dtype, shape, (begin, stop))
        if 8 + n + end > size:
            raise CheckpointError(
                f"{self.path}: truncated: tensor data needs {8 + n + end} bytes, the file has {size} "
                "(an interrupted download or copy?)"
            )
        self._data_start = 8 + n

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, key: str) -> Tensor:
        """Read one tensor with a plain file read (no mmap: memory stays one tensor, not the file)."""
        info = self.infos[key]
        out = torch.empty(info.shape, dtype=info.dtype)
        nbytes = info.offsets[1] - info.offsets[0]
        if nbytes:
            with open(self.path, "rb") as f:
                f.seek(self._data_start + info.offsets[0])
                got = f.readinto(memoryview(out.reshape(-1).view(torch.uint8).numpy()))
            if got != nbytes:
                raise CheckpointError(f"{self.path}: short read for {key!r} ({got} of {nbytes} bytes)")
        return out


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: its name, what it will be, and how to produce it when its turn comes."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    load: Callable[[], Tensor]


def _tensor_bytes(t: Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def _atomic_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it is synced and renamed over `path`, on any error it
    is removed, so `path` is always either the old file or the complete new one."""
    path = Path(path)
    _atomic_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` (the old folder is moved
    aside, the new one renamed in, the old one deleted), on any error it is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode mkdir would
        yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_safetensors(
    path: str | os.PathLike,
    entries: Iterable[TensorEntry],
    metadata: Mapping[str, str] | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[TensorEntry], None] | None = None,
) -> Path:
    """Stream tensors into a .safetensors file atomically (temporary file + rename)."""
    path = Path(path)
    _atomic_target(path, overwrite)  # refuse before any work
    entries = list(entries)
    header: dict[str, object] = {}
    offset = 0
    for e in entries:
        nbytes = e.dtype.itemsize * int(torch.Size(e.shape).numel())
        header[e.name] = {"dtype": DTYPE_NAMES[e.dtype], "shape": list(e.shape),
                          "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-byte aligned
    with atomic_file(path, "wb", overwrite=overwrite) as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for e in entries:
            t = e.load()
            if t.dtype != e.dtype or tuple(t.shape) != tuple(e.shape):
                raise CheckpointError(
                    f"{e.name}: produced {t.dtype} {tuple(t.shape)}, declared {e.dtype} {tuple(e.shape)}"
                )
            f.write(_tensor_bytes(t))
            del t
            if progress is not None:
                progress(e)
    return path


def write_json(path: str | os.PathLike, obj: object, *, overwrite: bool = False) -> Path:
    """Write a JSON file atomically."""
    with atomic_file(path, "w", overwrite=overwrite) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    return Path(path)


def _listing(names: list[str], n: int = 5) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_strict(module: nn.Module, sd: Mapping[str, Tensor], *, what: str = "checkpoint") -> nn.Module:
    """`load_state_dict(strict=True, assign=True)` with readable errors. Works for modules built on `meta`."""
    expected = module.state_dict(keep_vars=True)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(sd))
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:5]))
    if problems:
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: " + " | ".join(problems))
    module.load_state_dict(dict(sd), strict=True, assign=True)
    return module
