"""Quantized layouts: detection from tensor headers, which Linears each writer quantizes, and the writers' view.

| layout     | stored per quantized Linear                                 | told apart by                          |
|------------|-------------------------------------------------------------|----------------------------------------|
| fp8-scaled | F8_E4M3 `.weight`, F32 scalar `.weight_scale`, `.input_scale` | (Lightricks LTX-2 / 2.3 fp8 files)   |
| fp8-comfy  | the same (legacy `.scale_weight`, `.scale_input`) | `scaled_fp8`, `.comfy_quant`, `_quantization_metadata
| fp8-cast   | F8_E4M3 `.weight`, no scale                                 | (0.9.8 fp8, ltx-core fp8_cast)         |
| nvfp4      | U8 `.weight` (out, in/2), F8_E4M3 `.weight_scale` (swizzled), F32 `.weight_scale_2`, `.input_scale` |  |
| gguf       | ggml blocks (Q8_0, Q4_K, ...) in a .gguf file               | the GGUF magic; ComfyUI-GGUF names     |

Which Linears the writers quantize (`select_layers`), following the official rules:
- fp8-scaled / fp8-comfy: ltx-core's `EXCLUDED_LAYER_SUBSTRINGS` (quantization/fp8_scaled_mm.py): everything but
  patchify_proj, adaln_single, caption_projection, proj_out, their audio and A<->V counterparts (any name holding
  one of these), and the blocks transformer_blocks.0 and 43..47;
- fp8-cast: ltx-core's `TRANSFORMER_LINEAR_DOWNCAST_MAP`: to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2
  inside transformer_blocks (for 0.9.x the same Linears LTX-Video-Q8-Kernels' convert script casts: 2-D "attn" /
  "ff." block weights);
- nvfp4: ltx-core's allowlist of 12 Linears per block (nvfp4/convert.py): attn1 q/k/v/out, attn2 q/out,
  audio_to_video_attn q/out, video_to_audio_attn k/v, ff.net.0.proj, ff.net.2;
- gguf-*: every Linear inside transformer_blocks whose values fill whole blocks (ComfyUI-GGUF stores rows that
  are not a multiple of the block as flat rows with `comfy.gguf.orig_shape`); other tensors: F32 for 1-D ones,
  small ones (<= 1024 values) and scale_shift_table (ComfyUI-GGUF's rule), BF16 for the rest.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ltx.core.checkpoint import SafetensorsReader, TensorInfo
from ltx.core.quant import formats as fm
from ltx.core.quant.formats import QuantError
from ltx.core.quant.linear import QuantizedLinear, Scheme, quantize_weight

LAYOUTS: dict[str, str] = {
    "fp8-scaled": "Lightricks fp8: F8_E4M3 weight + fp32 per-tensor weight_scale and input_scale",
    "fp8-comfy": "ComfyUI fp8: the same tensors plus a .comfy_quant format tensor per layer",
    "fp8-cast": "0.9.8 fp8: F8_E4M3 weight, no scale",
    "nvfp4": "NVFP4: packed E2M1 weight, swizzled E4M3 scales per 16 values, fp32 weight_scale_2 and input_scale",
    **{f"gguf-{t.name.lower()}": f"GGUF {t.name} (ComfyUI-GGUF naming)" for t in sorted(fm.GGUF_QUANTIZERS)},
}
SUPPORTED = ("fp8-scaled (F8_E4M3 .weight + F32 scalar .weight_scale [+ .input_scale]), fp8-comfy (the same with a "
             "scaled_fp8 marker, .comfy_quant tensors or _quantization_metadata; legacy .scale_weight), fp8-cast "
             "(F8_E4M3 .weight, no scale), nvfp4 (U8 .weight + F8_E4M3 .weight_scale + F32 .weight_scale_2 "
             "[+ .input_scale]), gguf (any ggml type the gguf package decodes)")

FP8_EXCLUDED = ("patchify_proj", "adaln_single", "caption_projection", "proj_out", "transformer_blocks.0.",
                *[f"transformer_blocks.{i}." for i in range(43, 48)])  # audio / av_ca names contain these
FP8_CAST_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
NVFP4_SUFFIXES = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_out.0",
                  "audio_to_video_attn.to_q", "audio_to_video_attn.to_out.0", "video_to_audio_attn.to_k",
                  "video_to_audio_attn.to_v", "ff.net.0.proj", "ff.net.2")
_NVFP4_LAYER = re.compile(r"transformer_blocks\.\d+\.(" + "|".join(map(re.escape, NVFP4_SUFFIXES)) + ")")
_BLOCK = re.compile(r"transformer_blocks\.\d+\.(.+)")
_SCALES = ("weight_scale", "input_scale", "weight_scale_2", "scale_weight", "scale_input", "comfy_quant")


def layout_kind(layout: str) -> tuple[str, int]:
    """Writer layout name -> (QuantizedLinear kind, GGUF type)."""
    if layout in ("fp8-scaled", "fp8-comfy"):
        return "fp8_scaled", 0
    if layout == "fp8-cast":
        return "fp8_cast", 0
    if layout == "nvfp4":
        return "nvfp4", 0
    if layout.startswith("gguf-"):
        name = layout[5:].upper()
        if name in fm.Q.__members__ and fm.Q[name] in fm.GGUF_QUANTIZERS:
            return "gguf", int(fm.Q[name])
    raise QuantError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not isinstance(m, QuantizedLinear) and ".lora_" not in n}


def select_layers(model: nn.Module, layout: str) -> list[str]:
    """The Linears of `model` a writer quantizes for `layout` (the module docstring gives the rules)."""
    kind, qtype = layout_kind(layout)
    out = []
    for name, m in _linears(model).items():
        block = _BLOCK.fullmatch(name)
        if kind == "fp8_scaled":
            ok = not any(s in name for s in FP8_EXCLUDED)
        elif kind == "fp8_cast":
            ok = block is not None and any(block[1] == s or block[1].endswith("." + s) for s in FP8_CAST_SUFFIXES)
        elif kind == "nvfp4":
            ok = _NVFP4_LAYER.fullmatch(name) is not None and m.in_features % fm.NVFP4_BLOCK == 0
        else:
            ok = block is not None and (m.in_features * m.out_features) % fm.gguf_sizes(qtype)[0] == 0
        if ok:
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------- detection


@dataclass
class Detection:
    """What a file (or a component's tensors) holds: `layout` ("none" for a float file), the quantized Linears
    with their schemes (`plan`, keyed by the layer's key prefix), marker tensors to register, a count by kind."""

    layout: str
    plan: dict[str, Scheme] = field(default_factory=dict)
    markers: dict[str, tuple[tuple[int, ...], torch.dtype]] = field(default_factory=dict)

    def line(self, where: str = "") -> str:
        kinds = Counter(s.describe() for s in self.plan.values())
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (f"{where + ': ' if where else ''}quantized checkpoint, layout {self.layout} ({what} Linears): kept "
                f"quantized in memory, dequantized per layer in the forward")


def _is_scalar(info: TensorInfo) -> bool:
    return torch.Size(info.shape).numel() == 1 and len(info.shape) <= 1


def detect_infos(infos: Mapping[str, TensorInfo], *, where: str = "", comfy: bool = False) -> Detection:
    """The layout of tensors `infos` ({key: TensorInfo}; GGUF infos carry `.qtype`). Raises one QuantError line for
    a quantized layout this does not read (naming what was found and the supported layouts), or a broken one."""
    prefix = f"{where}: " if where else ""

    def refuse(problem: str, key: str) -> QuantError:
        return QuantError(f"{prefix}unknown quantized layout: {problem} (e.g. {key!r}); supported: {SUPPORTED}")

    markers = {k: (tuple(i.shape), i.dtype) for k, i in infos.items() if k == "scaled_fp8"}
    comfy = comfy or bool(markers) or any(k.endswith(".comfy_quant") for k in infos)
    plan: dict[str, Scheme] = {}
    for key, info in infos.items():
        if not key.endswith(".weight"):
            continue
        layer = key[: -len(".weight")]
        extra = {n: infos[f"{layer}.{n}"] for n in _SCALES if f"{layer}.{n}" in infos}
        qtype = getattr(info, "qtype", None)
        if qtype is not None:
            if fm.Q(qtype) not in fm.GGUF_FLOAT:
                plan[layer] = Scheme("gguf", (("weight", tuple(info.shape), torch.uint8),), int(qtype))
            continue
        tensors = [("weight", tuple(info.shape), info.dtype)] + [(n, tuple(i.shape), i.dtype) for n, i in extra.items()]
        if info.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            scale = extra.get("weight_scale", extra.get("scale_weight"))
            if "weight_scale_2" in extra:
                raise refuse("an F8 weight with a .weight_scale_2", key)
            if scale is None:
                if len(info.shape) != 2:
                    raise refuse(f"an F8 tensor of shape {tuple(info.shape)} that is no Linear weight", key)
                plan[layer] = Scheme("fp8_cast", tuple(tensors))
            elif not _is_scalar(scale) or scale.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise refuse(f"an F8 weight with a {str(scale.dtype)[6:]} scale of shape {tuple(scale.shape)} "
                             "(block-wise or per-channel FP8)", key)
            else:
                plan[layer] = Scheme("fp8_scaled", tuple(tensors))
        elif info.dtype == torch.uint8 and "weight_scale_2" in extra:
            if "comfy_quant" in extra:
                raise refuse("ComfyUI NVFP4 (comfy-kitchen's packing, not verified here); Lightricks NVFP4 "
                             "files have no .comfy_quant", key)
            scale, scale_2 = extra.get("weight_scale"), extra["weight_scale_2"]
            if scale is None or scale.dtype not in (torch.float8_e4m3fn, torch.uint8) or not _is_scalar(scale_2):
                raise refuse("a U8 weight whose .weight_scale is missing or not F8_E4M3 / .weight_scale_2 not a "
                             "scalar", key)
            plan[layer] = Scheme("nvfp4", tuple(tensors))
        elif info.dtype.is_floating_point and set(extra) - {"comfy_quant"}:
            raise refuse(f"scale tensors {sorted(extra)} beside a {str(info.dtype)[6:]} weight", key)
        elif info.dtype in (torch.int8, torch.uint8) and len(info.shape) == 2:  # other dtypes: the fit check says
            raise refuse(f"a {str(info.dtype)[6:]} Linear weight without the scales of a known layout", key)
    orphans = [k for k in infos if k.rsplit(".", 1)[-1] in _SCALES and f"{k.rsplit('.', 1)[0]}.weight" not in infos]
    if orphans:
        raise refuse("scale tensors without a .weight beside them", orphans[0])
    if not plan:
        return Detection("none", markers=markers)
    kinds = {s.kind for s in plan.values()}
    names = {"fp8_scaled": "fp8-comfy" if comfy else "fp8-scaled", "fp8_cast": "fp8-cast", "nvfp4": "nvfp4",
             "gguf": "gguf"}
    return Detection("+".join(sorted(names[k] for k in kinds)), plan, markers)


def plan_from_infos(infos: Mapping[str, TensorInfo]) -> dict[str, Scheme]:
    return detect_infos(infos).plan


def _comfy_metadata(reader: SafetensorsReader, where: str) -> bool:
    raw = reader.metadata.get("_quantization_metadata")
    if raw is None:
        return False
    try:
        meta = json.loads(raw)
        layers = meta["layers"]
        formats = {str(v["format"]) for v in layers.values()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise QuantError(f"{where}: corrupt _quantization_metadata in the header ({e!r}); expected "
                         '{"format_version": ..., "layers": {name: {"format": ...}}}') from None
    known = {"float8_e4m3fn", "float8_e5m2"}
    if formats - known:
        raise QuantError(f"{where}: unknown quantized layout: _quantization_metadata formats {sorted(formats - known)}"
                         f"; supported: {SUPPORTED}")
    for name in layers:
        info = reader.infos.get(f"{name}.weight")
        if info is None or info.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
            raise QuantError(f"{where}: corrupt: _quantization_metadata lists {name!r} as fp8 but the file's "
                             f"{name}.weight is {'absent' if info is None else str(info.dtype)[6:]}")
    return True


def detect(path: str | os.PathLike) -> Detection:
    """The layout of a .safetensors or .gguf file, from its header alone; one-line errors (QuantError or
    CheckpointError) for an unreadable file or a layout this does not read."""
    from ltx.core.quant.gguf_io import is_gguf, read_gguf

    path = Path(path)
    if is_gguf(path):
        f = read_gguf(path)
        found = detect_infos(f.infos, where=str(path))
        found.layout = "gguf" if found.layout != "none" else "none"
        return found
    reader = SafetensorsReader(path)
    comfy = _comfy_metadata(reader, str(path))
    infos = dict(reader.infos)
    marker = [k for k in infos if k == "scaled_fp8" or k.endswith(".scaled_fp8")]
    for k in marker:  # the marker sits under the model prefix in ComfyUI files
        infos["scaled_fp8"] = infos.pop(k)
    return detect_infos(infos, where=str(path), comfy=comfy)


# ---------------------------------------------------------------------------------------------------- writing


class QuantizingView:
    """Tensors `infos` / `get` (any key space) as they are written in `layout`: the weights of `layers` (key
    prefixes) quantized, with their scale tensors added after them (same order position), every other floating
    tensor cast to `dtype` (None: kept). Exposes `infos`, `keys()`, `get(key)` and `metadata` (like
    SafetensorsReader), so the family writers stream it; each layer is quantized once."""

    def __init__(self, infos: Mapping[str, TensorInfo], get: Callable[[str], Tensor], layers: list[str], layout: str,
                 dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None):
        self.kind, self.qtype = layout_kind(layout)
        if self.kind == "gguf":
            raise QuantError("GGUF is written with ltx.core.quant.write_gguf, not into a .safetensors file")
        self.layout, self.dtype, self._get = layout, dtype, get
        self.metadata = dict(metadata or {})
        self._layers = set(layers)
        self._cache: dict[str, dict[str, Tensor]] = {}
        self._made: set[str] = set()  # keys the view produces (quantized tensors, scales)
        self.infos: dict[str, TensorInfo] = {}
        for key, info in infos.items():
            layer = key[: -len(".weight")] if key.endswith(".weight") else None
            if layer in self._layers:
                out, inp = info.shape
                probe = torch.zeros(out, inp, device="meta")
                scheme, _ = _meta_scheme(probe, self.kind, self.qtype)
                for name, shape, dt in scheme.tensors:
                    self.infos[f"{layer}.{name}"] = TensorInfo(dt, shape, info.offsets)
                    self._made.add(f"{layer}.{name}")
                if layout == "fp8-comfy":
                    self.infos[f"{layer}.comfy_quant"] = TensorInfo(torch.uint8, (len(_COMFY_FP8),), info.offsets)
                    self._made.add(f"{layer}.comfy_quant")
            elif dtype is not None and info.dtype.is_floating_point:
                self.infos[key] = TensorInfo(dtype, info.shape, info.offsets)
            else:
                self.infos[key] = info
        missing = self._layers - {k[: -len(".weight")] for k in infos if k.endswith(".weight")}
        if missing:
            raise QuantError(f"no .weight for the layers {sorted(missing)[:5]}")

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, key: str) -> Tensor:
        layer, _, name = key.rpartition(".")
        if key not in self._made:
            t = self._get(key)
            return t.to(self.infos[key].dtype) if t.is_floating_point() else t
        if name == "comfy_quant":
            return torch.tensor(list(_COMFY_FP8), dtype=torch.uint8)
        if layer not in self._cache:
            _, tensors = quantize_weight(self._get(f"{layer}.weight"), self.kind, self.qtype)
            self._cache[layer] = tensors
        tensors = self._cache[layer]
        t = tensors.pop(name)
        if not tensors:
            del self._cache[layer]
        return t.cpu()


_COMFY_FP8 = json.dumps({"format": "float8_e4m3fn"}).encode()


def _meta_scheme(weight: Tensor, kind: str, qtype: int) -> tuple[Scheme, dict]:
    """The scheme (names, shapes, dtypes) `quantize_weight` would give, without computing it."""
    out, inp = weight.shape
    f32 = torch.float32
    if kind == "fp8_scaled":
        t = (("weight", (out, inp), torch.float8_e4m3fn), ("weight_scale", (), f32), ("input_scale", (), f32))
    elif kind == "fp8_cast":
        t = (("weight", (out, inp), torch.float8_e4m3fn),)
    elif kind == "nvfp4":
        if inp % fm.NVFP4_BLOCK:
            raise QuantError(f"nvfp4 needs in_features divisible by {fm.NVFP4_BLOCK}, got {inp}")
        t = (("weight", (out, inp // 2), torch.uint8), ("weight_scale", fm.nvfp4_scale_shape(out, inp),
             torch.float8_e4m3fn), ("weight_scale_2", (), f32), ("input_scale", (), f32))
    else:
        block, size = fm.gguf_sizes(qtype)
        t = (("weight", (out * inp // block, size), torch.uint8),)
    return Scheme(kind, t, qtype), {}
