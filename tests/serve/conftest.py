"""Fixtures for the HTTP tests: real servers (uvicorn on a free loopback port, in a thread) on the bundled demos
at tiny sizes, and a helper that waits for a job's final state.

    def test_x(demo_server):                 # a running server on the 0.9.x demo, its own folder and store
        job = demo_server.submit(prompt="a red circle moves to the left")
        done = demo_server.wait(job["id"])   # the final job JSON (complete / error / cancelled)

    def test_y(start_server, tmp_path):      # any settings; stopped at teardown
        server = start_server(serve_settings(tmp_path, api_keys={...}))

The loaded demo pipelines are shared by every server of the session (each server still has its own Runner,
store and output folder): loading once keeps the tests fast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import pytest
import torch

from ltx.serve.runner import RequestChecker, Runner, open_model
from ltx.serve.server import RunningServer, start_in_thread
from ltx.serve.settings import Limits, ServeSettings

FINAL = ("complete", "error", "cancelled")
TINY = {"height": 64, "width": 64, "num_frames": 9, "steps": 3}  # a demo job in well under a second of compute
_PIPES: dict[str, object] = {}


def serve_settings(tmp_path, **changes) -> ServeSettings:
    """Settings for a test server: CPU, a free port, its own folder, short leases, small limits."""
    options = dict(model="ltx-demo", device="cpu", output_dir=str(tmp_path / "serve"), port=0, lease_s=3.0,
                   max_attempts=2, limits=Limits(max_pixels_frames=64 * 64 * 33, max_steps=80,
                                                 max_upload_bytes=256 * 1024, max_images=2, max_loras=2))
    options.update(changes)
    return ServeSettings(**options)


def loaded_pipeline(model: str):
    """The demo `model` loaded once per session (CPU, float32)."""
    if model not in _PIPES:
        torch.set_num_threads(1)
        pipe = open_model(ServeSettings(model=model, device="cpu"))
        if model == "ltx2-demo":
            _PIPES[model] = pipe.load()
        else:
            _PIPES[model] = pipe.load("cpu", None)
            _PIPES[model].prompt_views(["warm up"])  # T5 resident too, as Runner.load does
    return _PIPES[model]


@dataclass
class Server:
    """A running test server and an httpx client on it (`headers`: sent with every call, e.g. an API key)."""

    running: RunningServer
    settings: ServeSettings
    headers: dict = field(default_factory=dict)

    def __post_init__(self):
        self.client = httpx.Client(base_url=self.running.url, timeout=30, headers=self.headers)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def store(self):
        return self.running.app.state.store

    def as_key(self, key: str | None) -> httpx.Client:
        """A client that sends `key` as its bearer token (None: no Authorization header)."""
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.running.url, timeout=30, headers=headers)

    def submit(self, client: httpx.Client | None = None, **request) -> dict:
        """POST a tiny request (TINY, then `request`); asserts 201 and returns the job JSON."""
        r = (client or self.client).post("/v1/jobs", json={**TINY, **request})
        assert r.status_code == 201, r.text
        return r.json()

    def wait(self, job_id: str, states=FINAL, timeout: float = 120, client: httpx.Client | None = None) -> dict:
        return wait_for(client or self.client, job_id, states, timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.running.stop()


def wait_for(client: httpx.Client, job_id: str, states=FINAL, timeout: float = 120,
             until=lambda job: True) -> dict:
    """Poll GET /v1/jobs/{id} until its state is in `states` (and `until(job)` holds); returns the job JSON."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in states and until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} (step {job['step']}) after {timeout} s"
        time.sleep(0.1)  # faster polling competes with the worker for the GIL (same process)


@pytest.fixture(scope="session")
def pipelines():
    """pipelines(model) -> the demo pipeline loaded once per session. Use this fixture, not an import of
    `loaded_pipeline`: pytest imports this conftest under its own module name, and a second import (tests.serve.
    conftest) would hold a second cache."""
    return loaded_pipeline


@pytest.fixture
def start_server():
    """start_server(settings, headers=None, shared_model=True) -> a running Server, stopped at teardown."""
    servers = []

    def start(settings: ServeSettings, headers: dict | None = None, shared_model: bool = True) -> Server:
        options = {}
        if shared_model:
            pipe = loaded_pipeline(settings.model)
            options = {"runner": Runner(settings, pipe=pipe), "checker": RequestChecker(settings, pipe=pipe)}
        server = Server(start_in_thread(settings, **options), settings, headers or {})
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def demo_server(start_server, tmp_path) -> Server:
    """A running server on the 0.9.x demo (CPU), its own output folder and store, no API keys."""
    return start_server(serve_settings(tmp_path))
