"""Shared test fixtures: tiny configs, reference-model builders, weight randomization, token positions."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest
import torch

# LTX-2 parity tests (tests/ltx2): the reference ltx-core 1.0.0 imports torchaudio at module level, and no
# torchaudio wheel loads beside torch 2.13; an import stub (tests/ltx2/stubs/torchaudio) makes it importable,
# and anything that would call it fails loudly. ltx_core.loader is imported first: ltx_core.quantization alone
# has a circular import.
if importlib.util.find_spec("torchaudio") is None:
    sys.path.insert(0, str(Path(__file__).parent / "ltx2" / "stubs"))
if importlib.util.find_spec("ltx_core") is not None:
    import ltx_core.loader  # noqa: F401

from ltx.ltxv.keys_official import DIT_PREFIX, dit_config_to_official
from ltx.ltxv.transformer import DiTConfig

REPO = Path(__file__).resolve().parents[1]

# inner width 64 (64 % 6 = 4, like 13B) and 32 (32 % 6 = 2, like 2B): both RoPE padding cases
TINY = {
    "w64": DiTConfig(num_layers=2, num_heads=8, head_dim=8, in_channels=16, out_channels=16, caption_channels=48),
    "w32": DiTConfig(num_layers=3, num_heads=2, head_dim=16, in_channels=8, out_channels=8, caption_channels=24,
                     causal_temporal_positioning=True),
}


@pytest.fixture(autouse=True)
def _threads_and_seeds():
    """Every test runs on 2 threads from fixed global seeds (torch's and Python's), so an unseeded draw gives the
    same numbers whichever tests ran before it (a selection with -k, a new test earlier in the file, ...)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread (opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`): 64x64 clips
    are too small to gain from more, and extra threads stall on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, module: str, *args: str) -> None:
    """Run `python -m module args` on n local gloo processes (torchrun), 1 thread each, wandb offline; a failure
    shows the error lines of every process first."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", module, *args]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "LTX_DEBUG": "1"})
    errors = [line for line in r.stderr.splitlines() if "Error" in line or "error:" in line][:20]
    assert r.returncode == 0, "\n".join(errors) + "\n" + r.stderr[-3000:]


def run_losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    """{step: metric} of a training run's metrics.jsonl."""
    return {r["step"]: r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def load_tool(name: str):
    """Import tools/<name>.py (once) as a module."""
    import importlib.util
    import sys

    key = f"_tools_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before running it: dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[key]


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, norms around 1 and AdaLN tables at O(1): default init hides wiring bugs
    (zero gates or unit norms make many orderings compute the same thing)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if "norm" in name:
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif "scale_shift_table" in name:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return module


def official_dit(cfg: DiTConfig):
    """The reference `Transformer3DModel` for a DiTConfig (through our own config writer)."""
    from ltx_video.models.transformers.transformer3d import Transformer3DModel

    return Transformer3DModel.from_config(dit_config_to_official(cfg))


def save_official(path: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Save like the released single files: prefixed keys and a JSON config in the metadata."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"config": json.dumps(config)})
    return path


def official_dit_file(path: Path, ref, extra: dict | None = None) -> Path:
    sd = {DIT_PREFIX + k: v for k, v in ref.state_dict().items()}
    return save_official(path, sd, {"transformer": dict(ref.config), **(extra or {})})


def token_positions(batch: int, frames: int, height: int, width: int, fps: float = 25.0, causal: bool = False):
    """(B, 3, T) float positions in (seconds, px, px) of a latent grid, as the official pipeline builds them:
    latent index * (8, 32, 32), frame index shifted to max(0, 8f - 7) when `causal`, then frames / fps."""
    f, h, w = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    grid = torch.stack([f, h, w]).flatten(1).float() * torch.tensor([8.0, 32.0, 32.0])[:, None]
    if causal:
        grid[0] = (grid[0] + 1 - 8).clamp(min=0)
    grid[0] = grid[0] / fps
    return grid[None].expand(batch, -1, -1).contiguous()


def dit_inputs(cfg: DiTConfig, batch: int, grid=(2, 3, 4), text_len: int = 7, dtype=torch.float32, seed: int = 1):
    """Random latents, text states, a padded text mask (row b keeps text_len - b tokens) and grid positions."""
    g = torch.Generator().manual_seed(seed)
    T = grid[0] * grid[1] * grid[2]
    x = torch.randn(batch, T, cfg.in_channels, generator=g).to(dtype)
    context = torch.randn(batch, text_len, cfg.caption_channels, generator=g).to(dtype)
    mask = torch.ones(batch, text_len)
    for b in range(batch):
        mask[b, max(1, text_len - b) :] = 0
    positions = token_positions(batch, *grid, causal=cfg.causal_temporal_positioning)
    return x, context, mask, positions
