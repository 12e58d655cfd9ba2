"""The memory planner (ltx.plan / ltx.core.memory_plan): its trace against measured peak RSS on the CPU, its
choices for a few budgets, its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltx.core.memory_plan import GB, parse_budget, traced_peak
from ltx.plan import plan_memory

REPO = Path(__file__).resolve().parents[1]
# measured / predicted on the CPU, with glibc returning every block >= 64 KiB to the OS on free (so RSS follows the
# live bytes): the DiT forward 0.99 - 1.00; the VAE decode 1.39 - 1.43 (oneDNN's reordered copies of the conv
# inputs and its workspaces, which the trace of torch's tensors does not see; a GPU has cuDNN workspaces instead)
BANDS = {"dit": (0.9, 1.1), "vae": (1.0, 1.6)}


def _probe(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "memory_probe.py"), *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [("dit", "8192"), ("vae", "33", "256")])
def test_trace_predicts_the_measured_peak_rss(case):
    r = _probe(*case)
    ratio = r["measured"] / r["predicted"]
    assert r["predicted"] > 50e6  # big enough that allocator noise (a few MB) does not decide
    low, high = BANDS[case[0]]
    assert low <= ratio <= high, f"{case}: measured {r['measured'] / 1e6:.0f} MB, predicted {r['predicted'] / 1e6:.0f}"


def test_trace_counts_allocations_not_views():
    w = torch.empty(1000, 1000, device="meta")  # made outside: not counted, nor its transpose
    peak = traced_peak(lambda: torch.empty(10, 1000, device="meta") @ w.t())
    assert peak == 2 * 10 * 1000 * 4  # the input and the product


def test_budget_strings():
    assert parse_budget("24GB") == 24 * 10**9 == parse_budget("24 gb") == parse_budget(24)
    assert parse_budget("22.5GiB") == int(22.5 * 2**30)
    for bad in ("24 bananas", "-3GB", "GB", "", "0"):
        with pytest.raises(ValueError, match="budget .* (is not a memory size|must be a positive memory size)"):
            parse_budget(bad)


def test_bad_arguments_are_one_clear_line():
    with pytest.raises(ValueError, match=r"mode='full' is not supported \(supported: inference, lora\)"):
        plan_memory("ltx-demo", mode="full")
    with pytest.raises(ValueError, match=r"weights='int3' is not supported"):
        plan_memory("ltx-demo", weights="int3")


def test_choices_are_sensible_and_deterministic():
    size = dict(height=512, width=768, num_frames=121)
    big = plan_memory("ltxv-13b-0.9.8-distilled", budget="80GB", **size)
    assert big.fits and (big.settings.weights, big.settings.offload) == ("bf16", "none")
    small = plan_memory("ltxv-13b-0.9.8-distilled", budget="16GB", **size)
    assert small.fits and small.settings.offload != "none"  # 26 GB of bf16 weights cannot stay on a 16 GB card
    assert str(small) == str(plan_memory("ltxv-13b-0.9.8-distilled", budget="16GB", **size))
    assert small.peak <= big.peak
    tiny = plan_memory("ltxv-13b-0.9.8-distilled", budget="2GB", **size)
    assert not tiny.fits and "no setting fits" in str(tiny)
    lora = plan_memory("ltx-2-19b-distilled", mode="lora", budget="32GB", **size)
    assert lora.fits and lora.stages[0].name.startswith("LoRA step")
    assert lora.settings.offload == "blocks" or lora.settings.weights != "bf16"  # 38 GB of bf16 base weights


def test_demo_plans():
    for name in ("ltx-demo", "ltx2-demo"):
        plan = plan_memory(name, budget="24GB")
        assert plan.fits and plan.settings.offload == "none"
        assert 0 < plan.peak < 1 * GB
        assert "denoise" in str(plan) and "VAE decode" in str(plan)


def test_ltx_2_5_presets_plan_the_2_5_transformer():
    """A 2.5 preset is planned with the 2.5 architecture (not the 19B one its model_version prefix once picked):
    the same widths as 2.3, 2.5's flags, the Gemma 4 label and the notes on what is approximated."""
    from ltx.plan import _ltx2_parts
    from ltx.presets import load_preset

    build, metas, _, notes = _ltx2_parts(load_preset("ltx-2.5-22b-distilled"))
    transformer = build()  # on meta
    assert transformer.cfg.version == "2.5" and transformer.cfg.inner_dim == 4096
    assert any("Gemma 4 text encoder is counted at Gemma 3 12B's size" in n for n in notes)
    assert _ltx2_parts(load_preset("ltx-2.3-22b-distilled"))[0]().cfg.version == "2.3"
    assert "text encoder (Gemma 4)" in str(plan_memory("ltx-2.5-22b-distilled", budget="24GB"))
