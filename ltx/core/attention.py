"""The one attention function of ltx, with an explicitly chosen backend.

Backends:
- "sdpa": `torch.nn.functional.scaled_dot_product_attention` (default; every device and dtype; PyTorch picks
  its own kernel: flash / memory-efficient / cuDNN on CUDA, the fused flash kernel on CPU).
- "flash": the `flash-attn` package (optional extra `ltx[gpu]`). Needs CUDA tensors in fp16/bf16; masked
  calls (the text cross-attention with padding) fall back to SDPA because flash-attn takes no additive bias.
- "auto": "flash" where it can run (installed, CUDA, half precision, no mask), else "sdpa".

A module holds its backend as a plain attribute; `set_attention_backend(model, name)` sets it from outside.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BACKENDS = ("sdpa", "flash", "auto")


def flash_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def _flash_ok(q: Tensor, bias: Tensor | None) -> bool:
    return bias is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, backend: str = "sdpa") -> Tensor:
    """Softmax attention with scale 1/sqrt(head_dim).

    q: (B, T, H, Dh), k/v: (B, S, H, Dh), bias: additive, broadcastable to (B, H, T, S). Returns (B, T, H, Dh).
    """
    if backend == "flash" or (backend == "auto" and flash_available() and _flash_ok(q, bias)):
        if _flash_ok(q, bias):
            from flash_attn import flash_attn_func

            return flash_attn_func(q, k, v)
        if backend == "flash" and bias is None:
            raise ValueError(f"attention backend 'flash' needs CUDA fp16/bf16 tensors, got {q.device} {q.dtype}")
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=None if bias is None else bias.to(q.dtype)
    )  # (B, H, T, Dh)
    return out.transpose(1, 2)


def set_attention_backend(model: nn.Module, backend: str) -> int:
    """Set the backend of every module with an `attention_backend` attribute; returns how many were set."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; valid: {BACKENDS}")
    if backend == "flash" and importlib.util.find_spec("flash_attn") is None:
        raise ValueError("attention backend 'flash' needs the flash-attn package: pip install 'ltx[gpu]' (CUDA only)")
    n = 0
    for m in model.modules():
        if hasattr(m, "attention_backend"):
            m.attention_backend = backend
            n += 1
    return n
