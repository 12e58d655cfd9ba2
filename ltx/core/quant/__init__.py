"""Quantized checkpoints (FP8, NVFP4, GGUF) for either family's transformer: detected from the file, kept
quantized in memory, dequantized per layer in the forward; written by tools/convert_weights.py.

Applied from outside the model, as compile, FSDP and LoRA are: `quantize_model(model, layout)` swaps the chosen
nn.Linear modules for `QuantizedLinear` (the model files know nothing of it). The family loaders
(ltx.ltxv.checkpoint, ltx.ltx2.checkpoint) call `prepare_for_file` on the model they build on `meta`, so a quantized
file loads through the same strict key / shape check as any other (its scale keys are the swapped modules' own).

Public API (also what tools/bench_memory.py uses):
- `LAYOUTS`, `detect(path) -> Detection` (layout name and the quantized layers, from the header; one-line errors)
- `quantize_model(model, layout, *, layers=None) -> list[str]`: quantize a float model in memory
- `dequantize_model(model)`: back to plain nn.Linear (fp32 or `dtype`)
- `load_quantized(model, path)`: fill a model from a quantized file's tensors (any layout, GGUF included)
- `resident_bytes(model)`: bytes of parameters and buffers (quantized storage counted as stored)
- `QuantizedLinear`, `Scheme`; GGUF: `read_gguf`, `write_gguf`; writers: `QuantizingView`, `select_layers`
"""

from ltx.core.quant.formats import QuantError
from ltx.core.quant.gguf_io import GGUFFile, read_gguf, write_gguf
from ltx.core.quant.layouts import (
    LAYOUTS,
    Detection,
    QuantizingView,
    detect,
    detect_infos,
    plan_from_infos,
    select_layers,
)
from ltx.core.quant.linear import QuantizedLinear, QuantizedLoRALinear, Scheme
from ltx.core.quant.model import (
    PLAN_LAYOUTS,
    dequantize_model,
    fixed_dtype_keys,
    load_quantized,
    prepare_for_file,
    prepare_model,
    quantize_model,
    quantize_pipeline,
    resident_bytes,
)

__all__ = [
    "LAYOUTS", "PLAN_LAYOUTS", "quantize_pipeline",
    "Detection", "GGUFFile", "QuantError", "QuantizedLinear", "QuantizedLoRALinear", "QuantizingView",
    "Scheme", "dequantize_model", "detect", "detect_infos", "fixed_dtype_keys", "load_quantized", "plan_from_infos",
    "prepare_for_file", "prepare_model", "quantize_model", "read_gguf", "resident_bytes", "select_layers",
    "write_gguf",
]  # fmt: skip
