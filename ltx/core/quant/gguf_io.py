"""GGUF files of a transformer, as ComfyUI-GGUF reads and writes them, through the `gguf` package.

Naming (ComfyUI-GGUF `loader.py`, `tools/convert.py`): tensors are the state-dict keys without the
`model.diffusion_model.` prefix (a prefixed file is read too), `general.architecture` is "ltxv" for both families
(ComfyUI-GGUF's arch list has no LTX-2 entry), 1-D tensors, tensors of <= 1024 values and `scale_shift_table` are
F32, others keep their 16-bit type (BF16 / F16; ltx keeps F32 sources F32), and a tensor whose rows are no whole
number of blocks is stored as flat block rows with its real shape in `comfy.gguf.orig_shape.<name>` (INT32 array).
GGUF dims are innermost-first: a (out, in) weight is [in, out].

This ltx writes two string fields of its own: `ltx.config` (the checkpoint's official metadata config JSON, so the
file is self-describing) and `ltx.family` ("ltxv" or "ltx2"); files without them (community files) need the
transformer's config from elsewhere (the LTX-Video 0.9.x reader infers it from the tensor shapes).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import Tensor

from ltx.core.checkpoint import TensorInfo, check_output_path, remove_stale_temps, temp_prefix
from ltx.core.quant import formats as fm
from ltx.core.quant.formats import QuantError

GGUF_PREFIX = "model.diffusion_model."
_SMALL = 1024  # ComfyUI-GGUF's QUANTIZATION_THRESHOLD: tensors this small stay F32
_NP_FLOAT = {fm.Q.F32: np.float32, fm.Q.F16: np.float16}


@dataclass(frozen=True)
class GGUFTensorInfo(TensorInfo):
    """A GGUF tensor: quantized ones are uint8 (rows, bytes) with their ggml type; float ones have their shape."""

    qtype: int = 0


def is_gguf(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


class GGUFFile:
    """Headers and lazy tensors of a .gguf file, with SafetensorsReader's interface (`infos`, `keys()`, `get`,
    `metadata`: the file's string fields)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._reader = gguf.GGUFReader(self.path)
        except (ValueError, OSError, IndexError, KeyError, TypeError) as e:
            raise QuantError(f"{self.path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        self.metadata: dict[str, str] = {}
        for name, fld in self._reader.fields.items():
            if fld.types == [gguf.GGUFValueType.STRING]:
                self.metadata[name] = str(bytes(fld.parts[fld.data[-1]]), encoding="utf-8")
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.infos: dict[str, GGUFTensorInfo] = {}
        self.logical: dict[str, tuple[int, ...]] = {}  # the (out, in) shape of quantized tensors
        for name, t in self._tensors.items():
            qtype = fm.Q(int(t.tensor_type))
            shape = self._orig_shape(name) or tuple(int(d) for d in reversed(t.shape.tolist()))
            if qtype in fm.GGUF_FLOAT:
                self.infos[name] = GGUFTensorInfo(fm.GGUF_FLOAT[qtype], shape, (t.data_offset, t.data_offset),
                                                  int(qtype))
            else:
                fm.gguf_sizes(qtype)  # a type the gguf package does not know: one line
                byte_shape = tuple(int(d) for d in t.data.shape)
                self.infos[name] = GGUFTensorInfo(torch.uint8, byte_shape, (t.data_offset, t.data_offset), int(qtype))
                self.logical[name] = shape

    def _orig_shape(self, name: str) -> tuple[int, ...] | None:
        fld = self._reader.get_field(f"comfy.gguf.orig_shape.{name}")
        if fld is None:
            return None
        return tuple(int(fld.parts[i][0]) for i in fld.data)

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, name: str) -> Tensor:
        t, info = self._tensors[name], self.infos[name]
        raw = torch.from_numpy(np.array(t.data))  # a copy: the reader's memmap is read-only
        if info.dtype == torch.uint8:
            return raw.reshape(info.shape)
        return raw.view(torch.uint8).view(info.dtype).reshape(info.shape)


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    return GGUFFile(path)


def _float_type(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> fm.Q:
    """ComfyUI-GGUF's rule: F32 for 1-D, small and scale_shift_table tensors; else the source's 16-bit type (F32
    sources stay F32: a float32 file is not rounded)."""
    numel = torch.Size(shape).numel()
    if len(shape) <= 1 or numel <= _SMALL or "scale_shift_table" in name:
        return fm.Q.F32
    return {torch.bfloat16: fm.Q.BF16, torch.float16: fm.Q.F16}.get(dtype, fm.Q.F32)


def _as_numpy(t: Tensor, qtype: fm.Q) -> np.ndarray:
    if qtype == fm.Q.BF16:
        return t.detach().cpu().to(torch.bfloat16).contiguous().view(torch.uint8).numpy()
    return t.detach().cpu().to(fm.GGUF_FLOAT[qtype]).contiguous().numpy()


def write_gguf(dst: str | os.PathLike, infos: Mapping[str, TensorInfo], get: Callable[[str], Tensor],
               layers: list[str], qtype: int, *, strings: Mapping[str, str] | None = None, arch: str = "ltxv",
               overwrite: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Write tensors `infos` / `get` (keys in ComfyUI-GGUF naming) as a GGUF file: the `.weight` of each of
    `layers` quantized to `qtype`, the rest F32 / BF16 (module docstring). Streams one tensor at a time into a
    temporary file renamed over `dst` when complete."""
    dst = check_output_path(dst, overwrite=overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    qtype = fm.Q(qtype)
    block, size = fm.gguf_sizes(qtype)
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for k, v in (strings or {}).items():
        writer.add_string(k, v)
    layer_set = set(layers)
    plan = []
    for name, info in infos.items():
        shape = tuple(info.shape)
        if name.endswith(".weight") and name[: -len(".weight")] in layer_set:
            numel = torch.Size(shape).numel()
            if numel % block:
                raise QuantError(f"{name}: {numel} values are no whole number of {qtype.name} blocks of {block}")
            if shape[-1] % block:
                writer.add_array(f"comfy.gguf.orig_shape.{name}", list(shape))
                byte_shape = (numel // block, size)
            else:
                byte_shape = (*shape[:-1], shape[-1] // block * size)
            plan.append((name, qtype, byte_shape))
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), numel // block * size, raw_dtype=qtype)
        else:
            t_type = _float_type(name, shape, info.dtype)
            if t_type == fm.Q.BF16:
                byte_shape = (*shape[:-1], shape[-1] * 2)
                writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), torch.Size(shape).numel() * 2,
                                       raw_dtype=fm.Q.BF16)
            else:
                np_type = np.dtype(_NP_FLOAT[t_type])
                writer.add_tensor_info(name, shape, np_type, torch.Size(shape).numel() * np_type.itemsize)
            plan.append((name, t_type, shape))
    remove_stale_temps(dst)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dst), suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, t_type, byte_shape in plan:
            t = get(name)
            if t_type in fm.GGUF_FLOAT:
                data = _as_numpy(t, t_type)
            else:
                data = fm.gguf_quantize(t, t_type).reshape(byte_shape).numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                writer.write_tensor_data(np.ascontiguousarray(data))
            if progress is not None:
                progress(name)
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst
