"""Durability: a restart keeps the queue (jobs queued or running at shutdown run afterwards, each to completion
once), and a server killed with -9 mid-job loses nothing (the job is re-queued and completed, or marked error
with a reason after max_attempts). Runs are counted from the store's transition log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ltx.serve.store import JobStore
from tests.serve.conftest import TINY, serve_settings, wait_for

REPO = Path(__file__).resolve().parents[2]


def history(store: JobStore, job_id: str) -> list[str]:
    return [e["event"] for e in store.events(job_id)]


def test_a_restart_runs_the_queued_and_interrupted_jobs_once_each(start_server, tmp_path):
    settings = serve_settings(tmp_path)
    first = start_server(settings)
    long = first.submit(prompt="a green square moves up", steps=24)
    queued = [first.submit(prompt=f"a red circle moves to the left {i}")["id"] for i in range(2)]
    wait_for(first.client, long["id"], ("running",), until=lambda j: j["step"] >= 2)
    first.stop()  # the running job stops at its next step and goes back to the queue
    store = JobStore(settings.database)
    assert store.get(long["id"]).state == "queued" and store.get(long["id"]).step == 0
    assert [store.get(j).state for j in queued] == ["queued", "queued"]
    assert not (settings.outputs / long["id"]).exists()

    second = start_server(settings)
    done = [second.wait(j) for j in [long["id"], *queued]]
    assert [j["state"] for j in done] == ["complete"] * 3
    assert history(store, long["id"]) == ["queued", "started", "requeued", "started", "complete"]
    assert done[0]["attempts"] == 2
    for j in queued:
        assert history(store, j) == ["queued", "started", "complete"]
    assert all((settings.outputs / j["id"] / "video.mp4").is_file() for j in done)


class ServerProcess:
    """`python -m infer.serve` in a subprocess (its output in a file), on a free port it prints."""

    def __init__(self, folder: Path, *overrides: str):
        self.log = folder / f"server_{time.monotonic_ns()}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "infer.serve", "device=cpu", "port=0",
                                          f"output_dir={folder / 'serve'}", "lease_s=2", *overrides],
                                         cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not (m := re.search(r"on (http://127\.0\.0\.1:\d+)", self.log.read_text())):
            assert self.proc.poll() is None, f"the server exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, "the server printed no URL"
            time.sleep(0.1)
        self.url = m.group(1)
        self.client = httpx.Client(base_url=self.url, timeout=120)  # generous: CI machines may be loaded
        while self.client.get("/readyz").status_code != 200:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def submit(self, **request) -> str:
        r = self.client.post("/v1/jobs", json={**TINY, **request})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.client.close()


@pytest.mark.slow
def test_kill_9_mid_job_requeues_or_fails_with_a_reason_never_loses_it(tmp_path):
    store = JobStore(tmp_path / "serve" / "jobs.sqlite")
    first = ServerProcess(tmp_path, "max_attempts=2")
    killed = first.submit(prompt="a green square moves up", steps=24)
    wait_for(first.client, killed, ("running",), until=lambda j: j["step"] >= 2)
    first.kill()
    assert store.get(killed).state == "running"  # as the dead process left it

    second = ServerProcess(tmp_path, "max_attempts=2")  # the dead worker's job is re-queued at start
    try:
        done = wait_for(second.client, killed)
        assert (done["state"], done["attempts"]) == ("complete", 2)
        assert history(store, killed) == ["queued", "started", "requeued", "started", "complete"]
        assert "stopped" in store.events(killed)[2]["detail"]
        assert second.client.get(f"/v1/jobs/{killed}/video").status_code == 200
        doomed = second.submit(prompt="a blue circle moves down", steps=24)
        behind = second.submit(prompt="a red circle moves to the left")
        wait_for(second.client, doomed, ("running",), until=lambda j: j["step"] >= 2)
    finally:
        second.kill()

    third = ServerProcess(tmp_path, "max_attempts=1")  # no attempts left for the killed one
    try:
        failed = wait_for(third.client, doomed)
        assert failed["state"] == "error" and "max_attempts=1" in failed["error"]
        assert "stopped" in failed["error"]
        assert history(store, doomed) == ["queued", "started", "error"]
        assert wait_for(third.client, behind)["state"] == "complete"  # queued behind it: never lost
        assert history(store, behind) == ["queued", "started", "complete"]
        assert not (tmp_path / "serve" / doomed).exists()
    finally:
        third.stop()
    assert [e for e in store.events() if e["event"] == "complete"].__len__() == 2  # no job completed twice
