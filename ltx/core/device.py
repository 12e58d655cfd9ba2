"""Where and in which dtype a model runs: one resolution of `device="auto"` / `dtype=None` for every API and app."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto", dtype: str | torch.dtype | None = None
                   ) -> tuple[torch.device, torch.dtype]:
    """"auto" = cuda if available else cpu; dtype None/"auto" = bfloat16 on CUDA (official), float32 on CPU.
    An unavailable device is an error here, before anything is loaded."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device} is not a device name; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} was asked for but this machine has no CUDA GPU (torch "
                             f"{torch.__version__}, cuda {torch.version.cuda}); use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps is not available here; use device=cpu or device=auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device} is not supported; use cpu, cuda[:N], mps or auto")
    names = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(names)}")
        dtype = names[dtype]
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype
