"""Sequence parallelism, guidance rows split across ranks and the tile-parallel VAE decode
(ltx.core.sequence_parallel) on real gloo process groups of 2 and 4 processes, against the single-process run.

tests/sp_worker.py runs every case in one group per world size (spawning is the expensive part): each case
computes the plain single-process output and the distributed one in the same process, and reports the max abs
difference, bitwise equality and whether all ranks returned the same tensor.

Tolerance: 1e-6 x max(1, max |ref|) in fp32, i.e. 1e-6 relative to the output's scale (these random tiny models
output up to ~4, where one fp32 ulp is 4.8e-7; the measured absolute differences are in the README).
Bitwise where the reduction order is unchanged: Ulysses runs each head's attention over the full sequence as one
process does, so it is bitwise unless a per-token GEMM runs with another row count and the BLAS picks another
blocking for it (seen: Linear(256 -> 64) at 51 vs 99 rows); ring attention and the CFG split (other batch
shapes) are exact up to rounding only; the tiled decode is bitwise by construction.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6

CASES_2 = ["dit_ulysses", "dit_ring", "dit_even", "dit_ulysses_lora", "dit_cfg", "av_ulysses", "av_ring",
           "av23_ulysses", "av_cfg", "av_one_audio_token", "vae_ltxv", "vae_ltx2", "bad_vae"]
CASES_4 = ["dit_ulysses", "dit_ring", "dit_ring_lora", "dit_cfg_ulysses", "dit_cfg_ring", "av_ulysses", "av_ring",
           "av23_ring", "av_ulysses_lora", "av_cfg_ulysses", "av_cfg_ring", "av_one_audio_token", "vae_ltxv",
           "bad_heads"]
# bitwise by construction (the same tiles, blended in the same order); the others are reported (README)
BITWISE = {"vae_ltxv", "vae_ltx2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(world: int, cases: list[str], tmp: Path) -> list[dict]:
    out = tmp / f"sp_{world}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "sp_worker.py"), str(world), str(_free_port()),
                           str(out), *cases], env=env, capture_output=True, text=True, timeout=600)
    crashes = "".join(p.read_text() for p in sorted(tmp.glob(f"{out.name}.rank*.crash")))
    assert proc.returncode == 0 and out.exists(), crashes or proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[int, list[dict]]:
    tmp = tmp_path_factory.mktemp("sp")
    return {2: _run(2, CASES_2, tmp), 4: _run(4, CASES_4, tmp)}


def _outputs(results, world: int, name: str) -> list[list[dict]]:
    per_rank = [r[name] for r in results[world]]
    for r in per_rank:
        assert "crash" not in r, r.get("crash")
        assert "error" not in r, r["error"]
    return [r["outputs"] for r in per_rank]


@pytest.mark.slow
@pytest.mark.parametrize("world, name", [(2, n) for n in CASES_2 if not n.startswith("bad")]
                         + [(4, n) for n in CASES_4 if not n.startswith("bad")])
def test_distributed_output_equals_the_single_process_one(results, world, name):
    for rank, outputs in enumerate(_outputs(results, world, name)):
        assert outputs, "the case compared nothing"
        for o in outputs:
            assert o["same_on_all_ranks"], f"rank {rank} returned another tensor than rank 0"
            bound = TOLERANCE * max(1.0, o["ref_max"])
            assert o["max_abs_diff"] <= bound, f"rank {rank}: max abs diff {o['max_abs_diff']:.3g} > {bound:.3g}"
            if name in BITWISE:
                assert o["bitwise"], f"rank {rank}: not bitwise (max abs diff {o['max_abs_diff']:.3g})"


@pytest.mark.slow
def test_uneven_and_short_streams_keep_their_lengths(results):
    """33 DiT tokens on 2 and 4 ranks, 13 video + 3 audio tokens on 4 ranks (T_audio < N), 1 audio token."""
    assert _outputs(results, 2, "dit_ulysses")[0][0]["shape"] == [3, 33, 16]
    assert [o["shape"] for o in _outputs(results, 4, "av_ring")[0]] == [[4, 13, 12], [4, 3, 6]]
    assert _outputs(results, 4, "av_one_audio_token")[0][1]["shape"] == [4, 1, 6]


@pytest.mark.slow
def test_bad_configurations_are_refused_in_one_line(results):
    heads = {r["bad_heads"]["error"] for r in results[4]}
    assert heads == {"sequence parallel 'ulysses' splits the 6 attention heads over 4 processes; use [2, 3, 6] "
                     "processes or parallel_mode=ring"}
    vae = {r["bad_vae"]["error"] for r in results[2]}
    assert len(vae) == 1 and "injects noise tile by tile" in vae.pop()


def test_span_layout():
    from ltx.core.sequence_parallel import Span

    s = Span(33, 4)
    assert (s.base, s.per_rank, s.padded, [s.valid(r) for r in range(4)]) == (9, 9, 36, [9, 9, 9, 6])
    assert s.is_prefix
    s = Span(3, 4)  # fewer tokens than ranks: the last rank holds only padding
    assert [s.valid(r) for r in range(4)] == [1, 1, 1, 0]
    s = Span(5, 2, extra=2)
    assert s.real_index("cpu").tolist() == [0, 1, 2, 5, 6]


def test_without_a_process_group_it_says_what_to_do():
    from ltx.core.sequence_parallel import apply_sequence_parallel
    from ltx.ltxv.transformer import DiT, DiTConfig

    with pytest.raises(ValueError, match="init_distributed"):
        apply_sequence_parallel(DiT(DiTConfig(num_layers=1, num_heads=2, head_dim=8, caption_channels=8)))


@pytest.mark.slow
def test_torchrun_generate_parallel_sp_writes_the_single_process_video(tmp_path):
    """`torchrun --nproc_per_node 2 -m infer.generate parallel=sp vae_tiling=true` on the bundled 0.9.x demo
    (sequence parallel transformer, tile-parallel decode): the same mp4 as one process, byte for byte."""
    from ltx.core.media import read_video

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    common = ['prompts=["a red circle moves to the left"]', "vae_tiling=true", f"output_dir={tmp_path}"]
    runs = {"sp": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(_free_port()), "-m", "infer.generate", *common, "name=sp", "parallel=sp"],
            "single": [sys.executable, "-m", "infer.generate", *common, "name=single"]}
    for name, cmd in runs.items():
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{name}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        assert ("parallel: 2 processes = 1 guidance group(s) x 2 sequence shard(s)" in r.stdout) == (name == "sp")
    sp, single = (tmp_path / n / "00_a_red_circle_moves_to_the_left.mp4" for n in ("sp", "single"))
    assert sorted(p.name for p in sp.parent.iterdir()) == sorted(p.name for p in single.parent.iterdir())
    assert torch.equal(read_video(sp)[0], read_video(single)[0])
    assert sp.read_bytes() == single.read_bytes()
