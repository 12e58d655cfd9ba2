"""LTX-2 tests: make the reference `ltx-core` importable (torchaudio stub, see stubs/torchaudio)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("torchaudio") is None:
    sys.path.insert(0, str(Path(__file__).parent / "stubs"))

import ltx_core.loader  # noqa: E402,F401  (import first: ltx_core.quantization alone has a circular import)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
