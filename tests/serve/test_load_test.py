"""tools/load_test.py: one command against a server it spawns (2 clients x 2 jobs, a cancel) exits 0 with a full
JSON report; its checks catch a job whose file is gone and counters that do not match what the clients saw."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import serve_settings
from tools import load_test

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_spawned_server_two_clients_with_a_cancel(tmp_path):
    out = tmp_path / "load.json"
    cmd = [sys.executable, "tools/load_test.py", "--spawn", "--clients", "2", "--jobs-per-client", "2",
           "--cancel-fraction", "0.5", "--json", str(out), "--device", "cpu", "--timeout", "240"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| clients | jobs |" in run.stdout and "ok: every job ended" in run.stdout
    report = json.loads(out.read_text())
    assert report["ok"] and report["failures"] == []
    (level,) = report["levels"]
    assert level["clients"] == 2 and level["jobs"] == 4 and level["failures"] == []
    assert level["states"]["unfinished"] == 0
    assert sum(level["states"][s] for s in ("complete", "error", "cancelled")) == 4
    assert level["states"]["error"] == 0
    assert level["cancels_sent"] == 2  # half the jobs: one cancelled while queued, one once seen running
    assert level["states"]["cancelled"] == level["cancels_honoured"] >= 1  # the queued cancel always lands
    assert level["states"]["complete"] >= 2 and level["latency_p50_s"] > 0 and level["jobs_per_min"] > 0


def test_checks_catch_a_missing_file_and_miscounted_outcomes(start_server, tmp_path):
    server = start_server(serve_settings(tmp_path))
    before = load_test.outcome_counts(load_test.Client(server.url, None))
    result, records = load_test.run_level(lambda: load_test.Client(server.url, None), 1, 2, dict(load_test.TINY),
                                          0.0, 0.05, 120.0, seed=0)
    client = load_test.Client(server.url, None)
    assert [r.state for r in records] == ["complete", "complete"] and result.failures == []
    assert load_test.check_jobs(client, records) == []
    after = load_test.outcome_counts(client)
    assert load_test.check_counters(before, after, records) == []

    (server.settings.outputs / records[0].id / "video.mp4").unlink()
    failures = load_test.check_jobs(client, records)
    assert len(failures) == 1 and records[0].id in failures[0] and "not served" in failures[0]
    records[1].state = "cancelled"  # as if the client had seen it cancelled: the server says complete
    failures = load_test.check_jobs(client, records[1:])
    assert any("changed from cancelled to complete" in f for f in failures)
    assert any("grew by" in f for f in load_test.check_counters(before, after, records))

    # docs/grafana_ltx_serve.json queries only series this server exports (after jobs ran, so histograms exist).
    scraped = {s.name for f in text_string_to_metric_families(server.client.get("/metrics").text) for s in f.samples}
    dashboard = json.loads((REPO / "docs" / "grafana_ltx_serve.json").read_text())
    queried = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"ltx_\w+", t["expr"])}
    assert len(queried) == 7 and queried <= scraped, queried - scraped


def test_cancel_plan_spreads_and_alternates():
    assert load_test.cancel_plan(4, 0.5) == [None, "queued", None, "running"]
    assert load_test.cancel_plan(3, 0.0) == [None] * 3
    assert load_test.cancel_plan(2, 1.0) == ["queued", "running"]
    assert load_test.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0 and load_test.percentile([], 0.5) is None
