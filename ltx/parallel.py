"""How a model is run, applied from outside the model (torchtitan style).

These act on the repeated blocks of a model (`transformer_blocks` of the DiT), so the model files never
branch on "am I compiled / checkpointed".
"""

from __future__ import annotations

import torch
from torch import nn


def _blocks(model: nn.Module, attr: str) -> nn.ModuleList:
    blocks = getattr(model, attr, None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no ModuleList {attr!r} to wrap")
    return blocks


def apply_compile(model: nn.Module, *, attr: str = "transformer_blocks", **compile_kwargs) -> nn.Module:
    """Compile each block separately (`fullgraph=True` by default): one graph per block keeps compile time
    small and reuses it across identical blocks."""
    compile_kwargs.setdefault("fullgraph", True)
    blocks = _blocks(model, attr)
    for i, block in enumerate(blocks):
        blocks[i] = torch.compile(block, **compile_kwargs)
    return model
