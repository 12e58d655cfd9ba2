"""Loading a pipeline's weights for the generate apps (both families): in CPU memory first when offload or
quantize needs it, the transformer quantized in memory, offload applied; and where the prompt encoder runs."""

from __future__ import annotations

import torch

from ltx.core.offload import apply_offload
from ltx.core.quant import quantize_pipeline


def text_device(cfg, device: torch.device) -> torch.device:
    """Where the prompt encoder runs: `device`, or the CPU with text_encoder_device=cpu."""
    return torch.device("cpu") if cfg.text_encoder_device == "cpu" else device


def load_weights(pipe, cfg, device, *load_args) -> None:
    """Load the pipeline's weights: in CPU memory when offload or quantize needs it (the weights never sit on the
    card whole), then quantize the transformer in memory and / or apply offload."""
    on_cpu = cfg.offload != "none" or cfg.quantize is not None
    if load_args:  # 0.9.x: load(device, dtype)
        pipe.load("cpu" if on_cpu else device, *load_args)
    else:  # LTX-2: the device was given at open
        if on_cpu:
            pipe.device = torch.device("cpu")
        pipe.load()
    if cfg.quantize is not None:
        print(quantize_pipeline(pipe, cfg.quantize, device=device if cfg.offload == "none" else None))
    if cfg.offload != "none":
        apply_offload(pipe, cfg.offload, device=device, prefetch=cfg.offload_prefetch)
