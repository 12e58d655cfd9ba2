"""The plain (non-meta) way to build what the LTX-2 trainer trains: the reference of its meta build."""

from __future__ import annotations

import re

import torch

from ltx.core.lora import LoRAConfig, freeze_base, inject_lora
from ltx.ltx2 import checkpoint as ltx2_checkpoint
from ltx.ltx2.training import AVTrainModel


def loaded_reference(path, cfg, lora_modules) -> dict[str, torch.Tensor]:
    """The state dict of transformer + connectors loaded by `ltx2_checkpoint.load` (float32 on the CPU), with the
    run's LoRA injected by `inject_lora` from the run's seed."""
    modules = ltx2_checkpoint.load(path, ("transformer", "text"), dtype=torch.float32)
    modules["text"].feature_extractor = None
    model = AVTrainModel(modules["transformer"], modules["text"])
    names = lora_modules(model.transformer)
    inject_lora(model.transformer, LoRAConfig(rank=cfg.lora.rank, alpha=cfg.lora.alpha,
                                              targets=tuple(f"re:{re.escape(n)}" for n in names)),
                generator=torch.Generator().manual_seed(cfg.seed), dtype=torch.float32)
    freeze_base(model)
    return model.state_dict()
