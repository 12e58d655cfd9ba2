"""Quantization applied to a whole model from outside: swap its Linears for `QuantizedLinear` (in memory, or as a
file's tensors say), fill it from a quantized file, undo it, count its bytes. `linear.py` holds the module itself,
`layouts.py` which layers each layout quantizes and how a file is recognised."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ltx.core.checkpoint import SafetensorsReader, load_strict
from ltx.core.quant import formats as fm
from ltx.core.quant.formats import QuantError
from ltx.core.quant.gguf_io import is_gguf, read_gguf
from ltx.core.quant.layouts import detect_infos, layout_kind, select_layers
from ltx.core.quant.linear import QuantizedLinear, QuantizedLoRALinear, Scheme


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def quantize_model(model: nn.Module, layout: str, *, layers: list[str] | None = None) -> list[str]:
    """Quantize a float model in memory, in place: the Linears `layers` names (default: the layout's official
    choice, `ltx.core.quant.select_layers`) become QuantizedLinear holding their weights in `layout`
    ("fp8-scaled", "fp8-comfy", "fp8-cast", "nvfp4", "gguf-q8_0", "gguf-q4_k", ...). Returns the names."""

    kind, qtype = layout_kind(layout)
    chosen = select_layers(model, layout) if layers is None else list(layers)
    for name in chosen:
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear) or isinstance(linear, QuantizedLinear):
            raise QuantError(f"{name} is not a float nn.Linear ({type(linear).__name__})")
        _swap(model, name, QuantizedLinear.quantize(linear, kind, qtype))
    return chosen


def _shape_problem(scheme: Scheme, out: int, inp: int) -> str | None:
    """Why the stored tensors cannot be this Linear's weight, or None."""
    shapes = {n: s for n, s, _ in scheme.tensors}
    if scheme.kind in ("fp8_scaled", "fp8_cast") and shapes["weight"] != (out, inp):
        return f"weight {shapes['weight']}, expected {(out, inp)}"
    if scheme.kind == "nvfp4":
        rows, cols = fm.nvfp4_scale_shape(out, inp)
        scale = shapes["weight_scale"]
        if inp % fm.NVFP4_BLOCK or shapes["weight"] != (out, inp // 2):
            return f"weight {shapes['weight']}, expected {(out, inp // 2)} (two E2M1 values per byte)"
        if len(scale) != 2 or scale[1] != cols or scale[0] < out or scale[0] % 128:
            return f"weight_scale {scale}, expected ({rows}, {cols}) (one E4M3 per 16 values, 128x4 tiles)"
    if scheme.kind == "gguf":
        block, size = fm.gguf_sizes(scheme.qtype)
        nbytes = torch.Size(shapes["weight"]).numel()
        if (out * inp) % block or nbytes != out * inp // block * size:
            return f"{nbytes} bytes of {fm.Q(scheme.qtype).name} blocks, expected {out * inp // block * size}"
    return None


def prepare_model(model: nn.Module, plan: Mapping[str, Scheme], markers: Mapping[str, tuple] | None = None,
                  *, where: str = "") -> nn.Module:
    """Swap the Linears `plan` names for empty QuantizedLinear shells (on the model's device, `meta` included),
    and register the file's marker tensors (`markers` {name: (shape, dtype)}, e.g. ComfyUI's `scaled_fp8`) as
    buffers of the model, so that the quantized file's keys are exactly the model's."""
    for name, scheme in plan.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise QuantError(f"the file quantizes {name!r}, which is no module of {type(model).__name__}") from None
        if not isinstance(linear, nn.Linear) or isinstance(linear, QuantizedLinear):
            raise QuantError(f"the file quantizes {name!r}, a {type(linear).__name__}, not an nn.Linear")
        problem = _shape_problem(scheme, linear.out_features, linear.in_features)
        if problem:
            raise QuantError(f"{where}{': ' if where else ''}corrupt {scheme.describe()} tensors for {name} "
                             f"({linear.out_features}x{linear.in_features} Linear): {problem}")
        _swap(model, name, QuantizedLinear.from_linear(linear, scheme))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, (shape, dtype) in (markers or {}).items():
        model.register_buffer(name, torch.zeros(shape, dtype=dtype, device=device))
    return model


_announced: set[str] = set()


def prepare_for_file(model: nn.Module, infos: Mapping, *, where: str = "") -> nn.Module:
    """What the family loaders call on the model they built (on `meta`) for a file whose tensors are `infos`
    ({our key: TensorInfo}): swap in the quantized Linears the file holds (nothing for a float file) and print,
    once per file, one line naming the layout. An unknown or corrupt quantized layout raises one QuantError line."""

    found = detect_infos(infos, where=where)
    if found.layout == "none":
        return model
    prepare_model(model, found.plan, found.markers, where=where)
    if where not in _announced:
        _announced.add(where)
        print(found.line(where))
    return model


def fixed_dtype_keys(model: nn.Module) -> set[str]:
    """State-dict keys whose dtype must not be cast at load (quantized storage and scales): the loaders cast
    only the other floating tensors to the requested dtype."""
    out = set()
    for name, m in model.named_modules():
        if isinstance(m, (QuantizedLinear, QuantizedLoRALinear)):
            out.update(f"{name}.{n}" if name else n for n in m.scheme.names())
    return out


@torch.no_grad()
def dequantize_model(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Every QuantizedLinear back to a plain nn.Linear holding its dequantized weight (fp32, or `dtype`)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantizedLinear):
            w = m.dequantized_weight(dtype or torch.float32)
            plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
            plain.weight = nn.Parameter(w, requires_grad=False)
            plain.bias = m.bias if dtype is None or m.bias is None else nn.Parameter(m.bias.to(dtype))
            _swap(model, name, plain)
    return model


def load_quantized(model: nn.Module, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None, prefix: str = "") -> nn.Module:
    """Fill `model` (built on `meta` or anywhere) from a quantized .safetensors or .gguf file whose keys (after
    removing `prefix`, e.g. "model.diffusion_model.") are the model's: quantized Linears are swapped in, keys
    and shapes checked strictly, other floating tensors cast to `dtype`. For files the family readers do not
    take (a ComfyUI-GGUF transformer without config); the family loaders are the usual way."""

    src = read_gguf(path) if is_gguf(path) else SafetensorsReader(path)
    keys = {k[len(prefix):]: k for k in src.keys() if k.startswith(prefix)}
    infos = {ours: src.infos[k] for ours, k in keys.items()}
    prepare_for_file(model, infos, where=str(path))
    keep = fixed_dtype_keys(model)
    sd = {}
    for ours, k in keys.items():
        t = src.get(k)
        if dtype is not None and t.is_floating_point() and ours not in keep:
            t = t.to(dtype)
        sd[ours] = t.to(device)
    return load_strict(model, sd, what=str(path)).eval()


def resident_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (each tensor once), quantized storage as stored."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen and not t.is_meta:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# the planner's weight formats (ltx.core.memory_plan.WEIGHT_FORMATS) -> the layout that realizes each in memory
PLAN_LAYOUTS = {"fp8": "fp8-scaled", "nvfp4": "nvfp4", "gguf-q8_0": "gguf-q8_0", "gguf-q4_k": "gguf-q4_k"}


def quantize_pipeline(pipe, layout: str, device: str | torch.device | None = None) -> str:
    """Quantize the transformer of a loaded ltx pipeline (either family; weights in CPU memory) to `layout` in
    memory, then move every component to `device` (None: leave them). A transformer that is already quantized (a
    quantized checkpoint) is kept as loaded. Returns one line for the log."""
    from ltx.core.offload import pipeline_components

    components = pipeline_components(pipe)
    transformer = components["transformer"]
    if any(isinstance(m, QuantizedLinear) for m in transformer.modules()):
        note = f"quantize={layout}: the transformer is already quantized (its checkpoint's layout); kept as loaded"
    else:
        names = quantize_model(transformer, layout)
        held = resident_bytes(transformer)
        size = f"{held / 1e9:.2f} GB" if held >= 1e9 else f"{held / 1e6:.1f} MB"
        note = f"quantize={layout}: {len(names)} transformer Linears quantized in memory; the transformer holds {size}"
    if device is not None:
        for module in components.values():
            module.to(device)
        pipe.device = torch.device(device)
    return note
