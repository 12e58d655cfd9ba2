"""tools/bench_memory.py --dry-run: every row is produced (a layout the quant module lacks says so), block
streaming copies each block once per forward, the JSON is written."""

from __future__ import annotations

import json

from tools import bench_memory


def test_dry_run(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert bench_memory.main(["--dry-run", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    layouts = [r["layout"] for r in rows]
    assert layouts[: len(bench_memory.LAYOUTS)] == list(bench_memory.LAYOUTS)
    for r in rows[: len(bench_memory.LAYOUTS)]:
        assert "forward_s" in r or r["note"].startswith(("module missing", "error"))
    fp32 = next(r for r in rows if r["layout"] == "fp32")
    bf16 = next(r for r in rows if r["layout"] == "bf16")
    assert bf16["resident_MB"] < fp32["resident_MB"]
    streamed = rows[-1]
    assert streamed["note"] == "1 block copies in 1 forwards of 1 blocks"
    assert "| layout |" in capsys.readouterr().out
