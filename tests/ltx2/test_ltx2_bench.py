"""tools/bench_ltx2.py: a smoke run at the smallest sizes prints the markdown table; bad arguments fail fast."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "tools/bench_ltx2.py"
_spec = importlib.util.spec_from_file_location("bench_ltx2", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_quick_transformer_prints_table():
    r = _run("--quick", "--only", "transformer", "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| module | case | ours ms | ref ms | time ours/ref")
    assert len(lines) == 5  # header, rule, one pass, guided step (separate calls, batched)
    for row in lines[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[4].endswith("x") and cells[7].endswith("x")
        assert float(cells[8]) < 1e-4  # ours and the reference computed the same thing


@pytest.mark.parametrize("args, message", [
    (["--only", "transformer,foo"], "error: --only transformer,foo: give a comma list of transformer, vae, audio"),
    (["--threads", "0"], "error: --threads 0: give an integer >= 1"),
    (["--repeats", "0"], "error: --repeats 0: give an integer >= 1"),
    (["--variant", "13b"], "error: --variant 13b: give one of 19b, 2.3"),
    (["--threads", "x"], "error: argument --threads: invalid int value: 'x'"),
])
def test_bad_arguments_fail_in_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(args)  # argument checks come before any work
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(message), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_gpu_mode_without_cuda_fails_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--gpu"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: --gpu needs a CUDA device") and err.count("\n") == 1
