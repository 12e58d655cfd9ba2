"""The library never imports Hydra/OmegaConf (apps do), and importing it pulls no GPU-only packages."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from conftest import REPO


def test_no_hydra_in_library_sources():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "ltx").rglob("*.py")
        if re.search(r"^\s*(import|from)\s+(hydra|omegaconf)\b", p.read_text(), re.M)
    ]
    assert offenders == []


def test_importing_every_module_pulls_no_app_or_gpu_packages():
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in pathlib.Path(REPO / "ltx").rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('hydra', 'omegaconf', 'flash_attn', 'triton', 'wandb') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
