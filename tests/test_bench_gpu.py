"""tools/bench_gpu.py: the CPU dry run goes through every case and writes the table and the JSON; its FLOP formulas
agree with torch.utils.flop_counter; bad arguments fail in one line.

The dry run only shows that every case runs (and that each reference is built from the same weights as ours: their
outputs agree); its times are not measurements. Parity itself is tested in tests/parity and tests/ltx2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import REPO, load_tool
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ltx.ltxv.patchify import token_positions
from ltx.ltxv.transformer import DiT, DiTConfig

bench = load_tool("bench_gpu")
bench_ltx2 = load_tool("bench_ltx2")
HEADER = "| case | model | size | impl | ms | TFLOP | TFLOP/s | MFU | ratios | peak GiB | max abs diff | note |"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run of every case (a subprocess, one thread): (stdout, the JSON report)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(REPO / "tools/bench_gpu.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_dry_run_table_and_json(dry_run):
    stdout, report = dry_run
    assert report["schema"] == "ltx.bench_gpu/1" and report["mode"] == "dry"
    versions = {"torch", "cuda", "diffusers", "ltx-video", "ltx-core", "flash-attn", "ltx_commit"}
    assert versions <= set(report["versions"])
    assert {"name", "type", "peak_bf16_tflops"} <= set(report["device"])
    assert {"warmup", "reps", "statistic", "timer", "dtype", "budget_s"} <= set(report["protocol"])
    assert report["constants"]["fa3_hdim128_tflops"] and report["flops"]["dit"]
    assert set(report["cases"]) == set(bench.CASES)
    assert all(c["status"] == "ok" for c in report["cases"].values()), report["cases"]

    rows = report["rows"]
    assert not [r for r in rows if r["status"] == "failed"], [r for r in rows if r["status"] == "failed"]
    for case in bench.CASES:  # every case measured something
        assert any(r["case"] == case and r["status"] == "ok" and r["ms"] is not None for r in rows), case
    # the printed table holds exactly the JSON's rows, with the same cells
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert lines[0] == HEADER and len(lines) == 2 + len(rows)
    for line, row in zip(lines[2:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 12 and cells[:4] == [row["case"], row["model"], row["size"], row["impl"]], line
    assert "CPU DRY RUN" in stdout  # never mistaken for measurements

    dit = {(r["model"], r["impl"]): r for r in rows if r["case"] == "dit" and r["status"] == "ok"}
    for model in ("0.9.x 2B", "0.9.x 13B"):
        assert {"official", "diffusers"} <= set(dit[(model, "ours[sdpa]")]["ratios"])
        flops = dit[(model, "ours[sdpa]")]["tflop"]
        assert all(dit[(model, impl)]["tflop"] == flops for impl in ("official", "diffusers"))


@pytest.mark.slow
def test_dry_run_references_use_our_weights(dry_run):
    """Each reference computes what ours computes (fp32): the bench really built it from the same weights."""
    rows = dry_run[1]["rows"]
    refs = {("dit", "official"), ("dit", "diffusers"), ("dit", "ours[compile]"), ("vae", "official"),
            ("vae", "diffusers"), ("vae", "ltx-core"), ("ltx2_block", "ltx-core per block"), ("sp", "ulysses x2")}
    checked = [r for r in rows if (r["case"], r["impl"]) in refs and r["status"] == "ok"]
    assert {(r["case"], r["impl"]) for r in checked} == refs
    for r in checked:
        print(f"{r['case']:11} {r['model']:22} {r['impl']:20} max |diff| {r['max_abs_diff']:.1e}")
        assert r["max_abs_diff"] < 1e-4, r
    # the sampling loops under a cache policy that skips nothing computed the uncached result exactly
    cache = [r for r in rows if r["case"] == "step_cache" and r["status"] == "ok"]
    assert cache and all(r["max_abs_diff"] == 0 for r in cache if r["cache_stats"]["skipped"] == 0)


def test_dit_flops_match_flop_counter():
    """dit_forward_flops against FlopCounterMode on meta tensors (SDPA decomposes into counted matmuls there): a tiny
    DiT, and the released 2B at 6,144 tokens (performance.md: 29.1 TFLOP)."""
    for cfg, grid, text in ((DiTConfig(num_layers=2, num_heads=4, head_dim=16, caption_channels=64), (2, 4, 6), 8),
                            (DiTConfig(), (16, 16, 24), 128)):
        with torch.device("meta"):
            model = DiT(cfg)
            F, H, W = grid
            x = torch.randn(1, F * H * W, cfg.in_channels)
            context, mask = torch.randn(1, text, cfg.caption_channels), torch.ones(1, text)
            pos = token_positions(F, H, W, fps=25.0, causal=True, device="meta")
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                model(x, torch.full((1, 1), 0.5), context, mask, pos)
        formula = bench.dit_forward_flops(cfg, F * H * W, text)
        assert abs(formula / counter.get_total_flops() - 1) < 0.01, (formula, counter.get_total_flops())
    assert abs(formula / 29.11e12 - 1) < 0.005


@pytest.mark.parametrize("variant", ["19b", "2.3"])
def test_ltx2_block_flops_match_flop_counter(variant):
    """ltx2_forward_flops per block (the difference of 2 and 1 blocks, as the ltx2_block rows report) against
    FlopCounterMode on our AVTransformer (tiny width, real tensors, SDPA forced to its math path so the counter
    sees the attention matmuls)."""
    if bench.ltx_core_ready():
        pytest.skip("ltx-core not installed (bench_ltx2.build_transformer builds the reference too)")

    def count(layers: int) -> float:
        spec = bench.ltx2_spec(_dry_ctx(), variant, layers, (4, 8, 12), 26, 64)
        with torch.inference_mode():
            ours, _, _ = bench_ltx2.build_transformer(spec, torch.device("cpu"), torch.float32)
            with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
                ours()
        return counter.get_total_flops()

    cfg = bench_ltx2.transformer_config(bench.ltx2_spec(_dry_ctx(), variant, 2, (4, 8, 12), 26, 64))
    per_block = (bench.ltx2_forward_flops(cfg, 384, 26, 64)
                 - bench.ltx2_forward_flops(replace(cfg, num_layers=1), 384, 26, 64))
    counted = count(2) - count(1)
    assert abs(per_block / counted - 1) < 0.01, (per_block, counted)


def _dry_ctx():
    return bench.Ctx(None, torch.device("cpu"), torch.float32, "dry", 0, 1, None)


def test_peaks_and_fa3_ceiling():
    assert bench.bf16_peak("NVIDIA H100 80GB HBM3")[0] == 989.4
    assert bench.bf16_peak("NVIDIA H100 PCIe")[0] == 756.5
    assert bench.bf16_peak("NVIDIA H100 NVL")[0] == 835.5
    assert bench.bf16_peak("NVIDIA H200")[0] == 989.4
    assert bench.bf16_peak("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert bench.bf16_peak("NVIDIA L40S")[0] == 362.05 and bench.bf16_peak("NVIDIA L4")[0] == 121.0
    assert bench.bf16_peak("NVIDIA GeForce RTX 4090")[0] == 165.2
    peak, note = bench.bf16_peak("Some Future GPU")
    assert peak is None and "MFU left blank" in note
    assert bench.fa3_ceiling(6144, 128, "NVIDIA H100 80GB HBM3") == 638.0
    assert bench.fa3_ceiling(24576, 128, "NVIDIA H200") == 648.0
    assert bench.fa3_ceiling(6144, 64, "NVIDIA H100 80GB HBM3") is None
    assert bench.fa3_ceiling(6144, 128, "NVIDIA A100-SXM4-80GB") is None


@pytest.mark.parametrize("args, message", [
    (["--dry-run", "--cases", "dit,foo"], "error: --cases dit,foo: give a comma list of gemm, attention, dit"),
    (["--dry-run", "--reps", "0"], "error: --reps 0: give an integer >= 1"),
    (["--dry-run", "--quick"], "error: --dry-run and --quick do not go together"),
    (["--dry-run", "--budget-s", "0"], "error: --budget-s 0.0: give a number of seconds > 0"),
])
def test_bad_arguments_fail_in_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(args)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(message), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_no_gpu_without_dry_run_fails_in_one_line(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--cases", "gemm"])
    err = capsys.readouterr().err
    assert err.startswith("error: no CUDA device") and err.count("\n") == 1
