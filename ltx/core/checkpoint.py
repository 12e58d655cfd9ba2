"""Safetensors IO that fails with clear messages, writes atomically and streams, plus strict module loading.

- `SafetensorsReader` checks a file before trusting it (magic header, JSON, sizes, truncation) and hands out
  one tensor at a time.
- `write_safetensors` streams `TensorEntry`s to disk, one tensor in memory at a time, into a temporary file
  that is renamed over the destination only when complete: a crash never leaves a half-written checkpoint.
- `load_strict` is `load_state_dict(strict=True, assign=True)` with errors that list missing and unexpected
  keys (first few, and counts) and name shape mismatches; `fit_problems` is the same check on shapes alone
  (headers, `meta` modules), so a converter can refuse a checkpoint before writing it.
- `check_output_path` says in one line why a path cannot take a file (or a folder): it is a folder (a file),
  a parent is a file, it exists and overwriting was not asked for.

Temporary files and folders are named `.{target name}.{pid}-{host}.{random}.tmp` beside their target. A kill
that cannot unwind (SIGKILL, power loss) leaves one behind; the next atomic write of the same target removes
those whose writer is gone (same host, pid not alive; `remove_stale_temps`). Files of any other name, and
temporaries of live processes or other hosts, are never touched. `raise_on_sigterm()` turns SIGTERM into an
exception (`Terminated`, a KeyboardInterrupt) so that the cleanup of an interrupted write runs on `kill` too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import tempfile
import threading
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
            if self.path.is_dir():
                raise CheckpointError(f"{self.path}: a folder, not a .safetensors file")
            if self.path.exists():
                raise CheckpointError(f"{self.path}: not a regular file (a device, pipe or socket?)")
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


def metadata_object(path: str | os.PathLike, raw: str, key: str = "config") -> dict:
    """A safetensors metadata entry's JSON (an LTX-2 `config`, a packed text encoder's `gemma_config`, ...) as a
    dict, or a CheckpointError saying what is wrong with it."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: metadata {key!r} is not a JSON object")
    return value


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


def check_output_path(path: str | os.PathLike, *, folder: bool = False, overwrite: bool = False) -> Path:
    """Raise an OSError with a one-line message if `path` cannot take a new file (`folder=False`) or folder.

    Refused: a parent that is a file, `path` being a folder where a file goes or a file where a folder goes
    (whatever `overwrite` says), `path` existing without `overwrite`. Nothing is created."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise NotADirectoryError(f"{parent} is a file, so {path} cannot be created under it")
            break
    if path.is_dir() and not folder:
        raise IsADirectoryError(f"{path} is a folder; this output is a single file: give a file path")
    if path.exists() and folder and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; this output is a folder: give a folder path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    return path


def _atomic_target(path: Path, overwrite: bool, folder: bool = False) -> None:
    check_output_path(path, folder=folder, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp$")


def temp_prefix(path: str | os.PathLike) -> str:
    """The name prefix of this process's temporaries for `path`: `.{name}.{pid}-{host}.` (then random, `.tmp`)."""
    return f".{Path(path).name}.{os.getpid()}-{_HOST}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep
    return True


def own_temps(folder: str | os.PathLike) -> list[Path]:
    """This process's temporaries (files or folders of the atomic writers' naming) in `folder`."""
    try:
        return sorted(p for p in Path(folder).iterdir()
                      if (m := _TMP_NAME.match(p.name)) and int(m["pid"]) == os.getpid() and m["host"] == _HOST)
    except OSError:
        return []


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that interrupted atomic writes of `path` left beside it; return what was removed.

    Only names of our pattern for this very target (`.{name}.{pid}-{host}.XXXX.tmp`), written on this host by a
    process that no longer runs, are removed: a live writer's temporary, another host's (shared file systems)
    and every other file are left alone."""
    path = Path(path)
    removed: list[Path] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = _TMP_NAME.match(p.name)
        if not m or m["target"] != path.name or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass  # another process cleaned it first
    return removed


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the handler `raise_on_sigterm` installs (a KeyboardInterrupt, so code that cleans up
    on Ctrl-C does so on `kill` too). `signum` is the signal number: exit with 128 + signum."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def raise_on_sigterm() -> bool:
    """Make SIGTERM raise `Terminated` (a KeyboardInterrupt) in the main thread, so `finally` / `except` blocks
    run: atomic writes remove their temporary files, as they do on Ctrl-C.

    Installs the handler only in the main thread (signal handlers can only be set there) and only over the
    default action: a handler someone else installed (a launcher's, torch.distributed.elastic's) or SIG_IGN is
    kept. Idempotent. Returns whether SIGTERM now raises `Terminated`. Call it early in a program's main."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is _raise_terminated:
        return True
    if current not in (signal.SIG_DFL, None):
        return False
    signal.signal(signal.SIGTERM, _raise_terminated)
    return True


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it is synced and renamed over `path`, on any error it
    is removed, so `path` is always either the old file or the complete new one. Temporaries that killed
    writers left for `path` are removed first (`remove_stale_temps`)."""
    path = Path(path)
    remove_stale_temps(path)
    _atomic_target(path, overwrite)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the target, not the temporary
        raise type(e)(e.errno, f"{e.strerror} (creating a temporary file in {path.parent})", str(path)) from None
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
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path` (the old folder is moved
    aside, the new one renamed in, the old one deleted), on any error it is removed and `path` is untouched.
    The whole old folder is replaced: callers that must keep files they did not write check first. A kill
    between the two renames leaves only `.{name}.old`: the next `atomic_dir(path)` puts it back first."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink() and not path.exists() and not path.is_symlink():
        old.rename(path)  # killed between moving the old folder aside and renaming the new one in
    remove_stale_temps(path)
    _atomic_target(path, overwrite, folder=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as e:  # name the target, not the temporary
        raise type(e)(e.errno, f"{e.strerror} (creating a temporary folder in {path.parent})", str(path)) from None
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode mkdir would
        yield tmp
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


def _natural(key: str) -> list:
    """Sort key that puts blocks.2 before blocks.10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", key)]


def fit_problems(
    expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    found: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
) -> list[str]:
    """What keeps `found` ({key: (shape, dtype)}) from loading strictly into a model whose state dict is
    `expected`: missing and unexpected keys (first few, and counts), shape mismatches, and tensors that are not
    floating point where the model's are (or have another dtype where the model's are not). [] if it fits."""
    missing = sorted(set(expected) - set(found), key=_natural)
    unexpected = sorted(set(found) - set(expected), key=_natural)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    common = sorted(set(expected) & set(found), key=_natural)
    mismatched = [f"{k}: checkpoint {tuple(found[k][0])} vs model {tuple(expected[k][0])}"
                  for k in common if tuple(found[k][0]) != tuple(expected[k][0])]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:5])
                        + (f" (+{len(mismatched) - 5} more)" if len(mismatched) > 5 else ""))
    wrong_dtype = []
    for k in common:
        want, got = expected[k][1], found[k][1]
        if (want.is_floating_point and not got.is_floating_point) or (not want.is_floating_point and want != got):
            kind = "floating point" if want.is_floating_point else str(want).replace("torch.", "")
            wrong_dtype.append(f"{k}: {str(got).replace('torch.', '')}, the model needs {kind}")
    if wrong_dtype:
        problems.append(f"{len(wrong_dtype)} wrong dtypes: " + "; ".join(wrong_dtype[:5])
                        + (f" (+{len(wrong_dtype) - 5} more)" if len(wrong_dtype) > 5 else ""))
    return problems


def load_strict(module: nn.Module, sd: Mapping[str, Tensor], *, what: str = "checkpoint") -> nn.Module:
    """`load_state_dict(strict=True, assign=True)` with readable errors. Works for modules built on `meta`."""
    expected = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict(keep_vars=True).items()}
    problems = fit_problems(expected, {k: (tuple(v.shape), v.dtype) for k, v in sd.items()})
    if problems:
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: " + " | ".join(problems))
    module.load_state_dict(dict(sd), strict=True, assign=True)
    return module
