"""Checks of a generation request's common arguments, shared by both families' Python APIs and the apps: each
bad value is refused with one line that names the argument and says what it takes."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes any int64 >= 0


def check_seed(seed: object, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return seed


def check_prompts(prompt: str | Sequence[str] | None, alternatives: str = "a list of prompts") -> list[str]:
    """`prompt` as a non-empty list of non-empty strings (one string is a batch of one)."""
    if prompt is not None and not isinstance(prompt, str | list | tuple):
        raise ValueError(f"prompt must be a string or a list of strings, got {prompt!r} ({type(prompt).__name__})")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
    if not prompts:
        raise ValueError(f"no prompt: pass prompt='...' (or {alternatives})")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt[{i}] must be a string, got {p!r}")
        if not p.strip():
            raise ValueError(f"prompt[{i}] is empty: the model would generate without a caption; write a prompt")
    return prompts


def check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        hint = f"; for a seed pass seed={generator!r}" if isinstance(generator, int) else ""
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}{hint}")
    return generator


def lora_specs(loras: object) -> list[tuple[str | os.PathLike, float]]:
    """`loras` of an API call as (path, strength) pairs. Each item: a path, a (path,) or (path, strength) pair, a
    {"path": ..., "strength": ...} dict, or any object with .path (and .strength)."""
    if isinstance(loras, str | os.PathLike) or not isinstance(loras, Sequence):
        raise ValueError(f"loras must be a list of paths or (path, strength) pairs, got {loras!r}; for one LoRA "
                         "pass loras=[path] or loras=[(path, 0.8)]")
    out = []
    for i, item in enumerate(loras):
        if isinstance(item, str | os.PathLike):
            path, strength = item, 1.0
        elif isinstance(item, tuple | list) and len(item) in (1, 2):
            path, strength = (*item, 1.0)[:2]
        elif isinstance(item, dict) and "path" in item and set(item) <= {"path", "strength"}:
            path, strength = item["path"], item.get("strength", 1.0)
        elif hasattr(item, "path"):
            path, strength = item.path, getattr(item, "strength", 1.0)
        else:
            raise ValueError(f"loras[{i}] must be a path, a (path, strength) pair or a {{path, strength}} dict, "
                             f"got {item!r}")
        if not isinstance(path, str | os.PathLike):
            raise ValueError(f"loras[{i}]: the path must be a str or os.PathLike, got {path!r}")
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength):
            raise ValueError(f"loras[{i}]: strength must be a finite number, got {strength!r}")
        out.append((path, float(strength)))
    return out
