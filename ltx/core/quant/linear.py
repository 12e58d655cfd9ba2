"""`QuantizedLinear`: an nn.Linear whose weight stays in its stored (quantized) form and is dequantized per layer in
the forward, on any device; swapped in from outside the model by `quantize_model` / `prepare_model`.

Design (a module swap, not a parametrization or a tensor subclass): the module registers the file's tensors under
the file's own names (`weight` F8/U8, `weight_scale`, `input_scale`, `weight_scale_2`, ...), so its state dict keys
and shapes are exactly the checkpoint's and the loaders' strict check (ltx.core.checkpoint.load_strict) applies
unchanged; it stays an nn.Linear (in_features / out_features), so LoRA targeting and shape checks see it; and the
forward is one readable function per scheme. Quantized tensors are Parameters with requires_grad=False (they count
in `parameters()`, move with `.to(device)`), and `.to(dtype)` / `.half()` leave them and their fp32 scales alone
(`_apply`): only the bias follows the model's dtype.

Fast GPU paths, used when the hardware has them and otherwise skipped with one printed line per process:
- FP8 scaled on compute capability >= 8.9 (Ada, Hopper, Blackwell): `torch._scaled_mm` with ltx-core's static
  activation quantization, x_fp8 = clamp(x / input_scale, -448, 448).to(e4m3fn) (the clamp is ltx-core's fix for
  black frames: out-of-range activations would otherwise cast to NaN), scale_a = input_scale,
  scale_b = weight_scale, use_fast_accum=True.
- NVFP4 on compute capability >= 10.0 with ltx-kernels installed: its `linear_nvfp4` (cuBLASLt block-scaled FP4).
Elsewhere (CPU, older GPUs, fp32 activations, shapes the kernels refuse): dequantize the weight to the activation
dtype and F.linear.

LoRA: `QuantizedLoRALinear` (a ltx.core.lora.LoRALinear) is what `inject_lora` / `apply_lora_weights` wrap a
QuantizedLinear in (ltx.core.lora asks the module for `lora_wrapper`). Unmerged adapters add B A x on top of the
quantized base (training: frozen quantized base, fp32 adapters); merging dequantizes, adds the delta and
requantizes the tensor (ltx-core's `_fuse_delta_with_scaled_fp8` for FP8 scaled, bitwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.lora import LoRALinear
from ltx.core.quant import formats as fm
from ltx.core.quant.formats import QuantError

KINDS = ("fp8_scaled", "fp8_cast", "nvfp4", "gguf")


@dataclass(frozen=True)
class Scheme:
    """How one Linear's weight is stored. `kind`: fp8_scaled | fp8_cast | nvfp4 | gguf; `qtype`: the GGUF tensor
    type; `tensors`: {name: (shape, dtype)} of the stored tensors besides the bias (the file's names: weight,
    weight_scale / scale_weight, input_scale / scale_input, weight_scale_2, comfy_quant)."""

    kind: str
    tensors: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]
    qtype: int = 0

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _, _ in self.tensors)

    def describe(self) -> str:
        return f"gguf {fm.Q(self.qtype).name}" if self.kind == "gguf" else self.kind.replace("_", " ")


def _scale_names(scheme: Scheme) -> tuple[str | None, str | None]:
    names = scheme.names()
    weight_scale = next((n for n in ("weight_scale", "scale_weight") if n in names), None)
    input_scale = next((n for n in ("input_scale", "scale_input") if n in names), None)
    return weight_scale, input_scale


_noted: set[str] = set()


def _note_once(key: str, line: str) -> None:
    if key not in _noted:
        _noted.add(key)
        print(line)


def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else (0, 0)


class QuantizedLinear(nn.Linear):
    """y = x W^T + b with W stored as `scheme` says (see the module docstring). Build with `from_linear` (shells on
    any device, to be loaded) or `quantize` (from a float nn.Linear)."""

    fast_path = os.environ.get("LTX_QUANT_FAST", "1") != "0"  # class switch: 0 forces the dequantize path

    def __init__(self, in_features: int, out_features: int, scheme: Scheme, bias: Tensor | None,
                 tensors: Mapping[str, Tensor] | None = None, device: torch.device | str | None = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        for name, shape, dtype in scheme.tensors:
            t = tensors[name] if tensors is not None else torch.empty(shape, dtype=dtype, device=device)
            self.register_parameter(name, nn.Parameter(t, requires_grad=False))
        self.register_parameter("bias", None if bias is None else nn.Parameter(bias, requires_grad=bias.requires_grad))

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: Scheme) -> QuantizedLinear:
        """An empty shell (tensors on the Linear's device, e.g. `meta`) that keeps the Linear's bias Parameter."""
        return cls(linear.in_features, linear.out_features, scheme, linear.bias, device=linear.weight.device)

    @classmethod
    def quantize(cls, linear: nn.Linear, kind: str, qtype: int = 0) -> QuantizedLinear:
        scheme, tensors = quantize_weight(linear.weight, kind, qtype)
        return cls(linear.in_features, linear.out_features, scheme, linear.bias, tensors)

    # --- what LoRA and merging use
    @property
    def compute_dtype(self) -> torch.dtype:
        return self.bias.dtype if self.bias is not None else torch.float32

    def stored(self) -> dict[str, Tensor]:
        return {n: getattr(self, n) for n in self.scheme.names()}

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize(self.scheme, self.stored(), self.out_features, self.in_features).to(dtype)

    @torch.no_grad()
    def requantize_(self, weight: Tensor) -> None:
        """Store a new float weight in this module's scheme (fp8 scaled: a new per-tensor scale too)."""
        set_weight(self, weight)

    def forward(self, x: Tensor) -> Tensor:
        return quantized_forward(self, x)

    def _apply(self, fn: Callable, recurse: bool = True):
        return _apply_keeping_dtypes(self, fn, recurse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.scheme.describe()}"


def _apply_keeping_dtypes(module: nn.Module, fn: Callable, recurse: bool) -> nn.Module:
    """nn.Module._apply where the stored tensors change device, never dtype (`.to(bfloat16)` keeps fp8 and the
    fp32 scales as they are)."""
    keep = {id(getattr(module, n)) for n in module.scheme.names()}

    def move_only(t: Tensor) -> Tensor:
        out = fn(t)
        return t.to(device=out.device) if id(t) in keep and out.dtype != t.dtype else out

    return nn.Module._apply(module, move_only, recurse)


def quantize_weight(weight: Tensor, kind: str, qtype: int = 0) -> tuple[Scheme, dict[str, Tensor]]:
    """(scheme, stored tensors) of a float weight (out, in)."""
    weight = weight.detach()
    if kind == "fp8_scaled":
        q, scale = fm.fp8_quantize(weight)
        tensors = {"weight": q, "weight_scale": scale,
                   "input_scale": torch.ones((), dtype=torch.float32, device=weight.device)}  # uncalibrated: 1
    elif kind == "fp8_cast":
        tensors = {"weight": weight.to(torch.float8_e4m3fn)}
    elif kind == "nvfp4":
        packed, scales, scale_2 = fm.nvfp4_quantize(weight)
        tensors = {"weight": packed, "weight_scale": scales, "weight_scale_2": scale_2,
                   "input_scale": torch.ones((), dtype=torch.float32)}  # = ltx-core's fixed activation scale 1
    elif kind == "gguf":
        tensors = {"weight": fm.gguf_quantize(weight, qtype).to(weight.device)}
    else:
        raise QuantError(f"unknown quantization kind {kind!r}; choose from {KINDS}")
    tensors = {k: v.to(weight.device) for k, v in tensors.items()}
    scheme = Scheme(kind, tuple((n, tuple(t.shape), t.dtype) for n, t in tensors.items()), int(qtype))
    return scheme, tensors


def dequantize(scheme: Scheme, stored: Mapping[str, Tensor], out_features: int, in_features: int) -> Tensor:
    """fp32 (out, in) from the stored tensors (formats.py gives the arithmetic and its references)."""
    w = stored["weight"]
    if scheme.kind == "fp8_scaled":
        weight_scale, _ = _scale_names(scheme)
        return fm.fp8_dequantize(w, stored[weight_scale])
    if scheme.kind == "fp8_cast":
        return fm.fp8_dequantize(w, None)
    if scheme.kind == "nvfp4":
        return fm.nvfp4_dequantize(w, stored["weight_scale"], stored["weight_scale_2"], out_features)
    if scheme.kind == "gguf":
        return fm.gguf_dequantize(w, scheme.qtype, (out_features, in_features))
    raise QuantError(f"unknown quantization kind {scheme.kind!r}; choose from {KINDS}")


@torch.no_grad()
def set_weight(module: nn.Module, weight: Tensor) -> None:
    """Requantize `weight` into `module`'s scheme in place (same tensor names and shapes)."""
    scheme: Scheme = module.scheme
    _, tensors = quantize_weight(weight.to(module.weight.device), scheme.kind, scheme.qtype)
    if scheme.kind == "fp8_scaled":  # keep the module's own names (legacy ComfyUI: scale_weight) and input scale
        weight_scale, _ = _scale_names(scheme)
        tensors = {"weight": tensors["weight"], weight_scale: tensors["weight_scale"]}
    if scheme.kind == "nvfp4":
        tensors.pop("input_scale")
    for name, t in tensors.items():
        getattr(module, name).data = t.to(getattr(module, name).dtype).reshape(getattr(module, name).shape)


def _fp8_scaled_mm(module: nn.Module, x: Tensor) -> Tensor | None:
    """ltx-core's FP8Linear forward, or None where it cannot run (the caller dequantizes)."""
    _, input_scale = _scale_names(module.scheme)
    if input_scale is None or x.dtype not in (torch.bfloat16, torch.float16) or module.in_features % 16 or \
            module.out_features % 16:
        return None
    if _capability(x.device) < (8, 9):
        _note_once("fp8", f"fp8: no FP8 matmul on this device ({x.device}, compute capability "
                   f"{'.'.join(map(str, _capability(x.device)))} < 8.9): dequantizing per layer")
        return None
    scale_in = getattr(module, input_scale)
    weight_scale, _ = _scale_names(module.scheme)
    shape = x.shape
    q = torch.clamp(x.reshape(-1, shape[-1]) * scale_in.reciprocal(), -fm.FP8_MAX, fm.FP8_MAX).to(torch.float8_e4m3fn)
    out = torch._scaled_mm(q, module.weight.t(), scale_a=scale_in, scale_b=getattr(module, weight_scale),
                           out_dtype=x.dtype, use_fast_accum=True)
    if module.bias is not None:
        out = out + module.bias.to(out.dtype)
    return out.reshape(*shape[:-1], module.out_features)


def _nvfp4_mm(module: nn.Module, x: Tensor) -> Tensor | None:
    if x.device.type != "cuda" or module.in_features % 32 or module.out_features % 8:
        return None
    if _capability(x.device) < (10, 0):
        _note_once("nvfp4", f"nvfp4: FP4 kernels need compute capability >= 10.0 (Blackwell); this device has "
                   f"{'.'.join(map(str, _capability(x.device)))}: dequantizing per layer")
        return None
    try:
        from ltx_kernels import nvfp4  # optional: Lightricks' kernels package, built on Blackwell hosts
    except ImportError:
        _note_once("nvfp4", "nvfp4: ltx-kernels is not installed: dequantizing per layer")
        return None
    input_scale = getattr(module, "input_scale", None)
    bias = None if module.bias is None else module.bias.to(torch.bfloat16)
    out = nvfp4.linear_nvfp4(x, module.weight, module.weight_scale.view(torch.uint8), module.weight_scale_2,
                             bias=bias, act_scale=input_scale)
    return out.to(x.dtype)


def quantized_forward(module: nn.Module, x: Tensor) -> Tensor:
    if QuantizedLinear.fast_path and x.is_cuda:
        fast = {"fp8_scaled": _fp8_scaled_mm, "nvfp4": _nvfp4_mm}.get(module.scheme.kind)
        out = fast(module, x) if fast is not None else None
        if out is not None:
            return out
    weight = dequantize(module.scheme, {n: getattr(module, n) for n in module.scheme.names()},
                        module.out_features, module.in_features).to(x.dtype)
    return F.linear(x, weight, None if module.bias is None else module.bias.to(x.dtype))


# ------------------------------------------------------------------------------------------------------- LoRA


class QuantizedLoRALinear(LoRALinear):
    """LoRALinear over a quantized base: the same stored tensors (same names: the state dict keys do not change),
    adapters in their own dtype (default: the bias dtype, fp32 without bias), merged by dequantize + add +
    requantize. `unwrapped()` gives the QuantizedLinear back (ltx.core.lora.remove_lora uses it)."""

    def __init__(self, base: QuantizedLinear):
        LoRALinear.__init__(self, base)  # registers base.weight and base.bias, and the adapter containers
        self.scheme = base.scheme
        for n in base.scheme.names():
            if n != "weight":
                self.register_parameter(n, getattr(base, n))

    compute_dtype = QuantizedLinear.compute_dtype

    def _apply(self, fn: Callable, recurse: bool = True):
        return _apply_keeping_dtypes(self, fn, recurse)

    def add_adapter(self, name: str, rank: int, alpha: float, *, dtype: torch.dtype | None = None, **kw) -> None:
        super().add_adapter(name, rank, alpha, dtype=dtype or self.compute_dtype, **kw)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize(self.scheme, {n: getattr(self, n) for n in self.scheme.names()}, self.out_features,
                          self.in_features).to(dtype)

    def add_deltas(self, terms) -> None:
        add_deltas_quantized(self, terms)

    def _fold(self, name: str, factor: float) -> None:
        self.add_deltas([(self.lora_A[name].weight, self.lora_B[name].weight, factor)])

    def forward(self, x: Tensor) -> Tensor:
        return self.add_adapters(x, quantized_forward(self, x))

    def unwrapped(self) -> QuantizedLinear:
        return QuantizedLinear(self.in_features, self.out_features, self.scheme, self.bias,
                               {n: getattr(self, n) for n in self.scheme.names()})


QuantizedLinear.lora_wrapper = QuantizedLoRALinear


@torch.no_grad()
def add_deltas_quantized(module: nn.Module, terms) -> None:
    """W = requantize(dequantize(W) + sum of factor * B @ A), ltx-core's LoRA fusion into a scaled-fp8 weight:
    each delta (B * factor) @ A in the LoRA's dtype, rounded to bf16 (ltx-core's delta dtype for fp8 weights),
    summed, added in fp32 to the fp32 dequantized weight, and quantized again per tensor."""
    device = module.weight.device
    deltas = [torch.matmul(b.to(device) * factor, a.to(device)).to(torch.bfloat16) for a, b, factor in terms
              if factor != 0]
    if not deltas:
        return
    delta = deltas[0] if len(deltas) == 1 else torch.stack(deltas).sum(0)
    weight = dequantize(module.scheme, {n: getattr(module, n) for n in module.scheme.names()}, module.out_features,
                        module.in_features)
    set_weight(module, weight + delta.to(torch.float32))


QuantizedLinear.add_deltas = add_deltas_quantized  # fuse_loras on a QuantizedLinear without adapters

