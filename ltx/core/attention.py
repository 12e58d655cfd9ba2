"""The one attention function of ltx, with an explicitly chosen backend; both model families call it.

Every attention module of the 0.9.x DiT, the LTX-2 transformer and the LTX-2 text connectors is a
`ltx.core.nn.QKNormAttention`: it holds its backend as a plain attribute `attention_backend` ("sdpa" by default)
and calls `attention(q, k, v, bias, self.attention_backend)`. `set_attention_backend(model, name)` sets it from
outside, on any model, and returns how many modules it set.

Backends:
- "sdpa": `torch.nn.functional.scaled_dot_product_attention` (default; every device and dtype; PyTorch picks
  its own kernel: flash / memory-efficient / cuDNN on CUDA, the fused flash kernel on CPU). The bias reaches
  SDPA as given (cast to the query dtype, a no-op for the biases both families build), so "sdpa" gives the
  same numbers as calling SDPA directly, as the reference implementations do.
- "flash": the `flash-attn` package (optional extra `ltx[gpu]`). Needs CUDA tensors in fp16/bf16; masked
  calls (text padding, the LTX-2 self-attention mask) fall back to SDPA because flash-attn takes no bias.
- "auto": "flash" where it can run (installed, CUDA, half precision, no bias), else "sdpa".

Adding a backend: name it in `BACKENDS`, write its kernel as a function of (q, k, v) in the (B, T, H, Dh)
layout, say in a `_can_run_<name>` check when it applies, and dispatch it in `attention`; refuse it in
`set_attention_backend` when its package is missing. Nothing in the models changes.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BACKENDS = ("sdpa", "flash", "auto")


@functools.cache
def flash_available() -> bool:
    """flash-attn is installed and CUDA is present (checked once per process)."""
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def _can_run_flash(q: Tensor, bias: Tensor | None) -> bool:
    return bias is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> Tensor:
    # SDPA wants (B, H, T, Dh); a float bias must be in the query dtype, a bool mask (True = attend) passes as is
    if bias is not None and bias.dtype != torch.bool:
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
    return out.transpose(1, 2)  # (B, T, H, Dh)


def _flash(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    from flash_attn import flash_attn_func  # optional CUDA-only package

    return flash_attn_func(q, k, v)  # takes and returns (B, T, H, Dh)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, backend: str = "sdpa") -> Tensor:
    """Softmax attention with scale 1/sqrt(head_dim).

    q: (B, T, H, Dh), k/v: (B, S, H, Dh), bias: additive float (or bool, True = attend), broadcastable to
    (B, H, T, S). Returns (B, T, H, Dh).
    """
    use_flash = backend == "flash" or (backend == "auto" and flash_available())
    if use_flash and _can_run_flash(q, bias):
        return _flash(q, k, v)
    if backend == "flash" and bias is None:  # a bias is the documented fallback; anything else is a misuse
        raise ValueError(f"attention backend 'flash' needs CUDA fp16/bf16 tensors, got {q.device} {q.dtype}")
    return _sdpa(q, k, v, bias)


def set_attention_backend(model: nn.Module, backend: str) -> int:
    """Set the backend of every module with an `attention_backend` attribute; returns how many were set."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid: {BACKENDS}")
    if backend == "flash" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attention backend 'flash' needs the flash-attn package: pip install 'ltx[gpu]' (CUDA only)")
    modules = [m for m in model.modules() if hasattr(m, "attention_backend")]
    for m in modules:
        m.attention_backend = backend
    return len(modules)
