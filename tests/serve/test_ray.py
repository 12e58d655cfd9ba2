"""The Ray Serve backend on a local Ray cluster on this machine's CPU: the HTTP API as a Serve application (ingress
+ 2 generation replicas of the 0.9.x demo), 8 jobs all complete with their files and spread over both replicas,
and a replica killed mid-job: the job is re-queued, runs again on a live replica and completes exactly once."""

from __future__ import annotations

import os
import time

import httpx
import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from ltx.serve import ray_backend  # noqa: E402
from ltx.serve.settings import RaySettings, ServeSettings  # noqa: E402
from ltx.serve.store import JobStore  # noqa: E402
from tests.serve.conftest import TINY, serve_settings, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    """The application on a 2-CPU local Ray (one CPU per replica, the ingress takes none); shut down after."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings = serve_settings(tmp_path_factory.mktemp("ray"), ray=RaySettings(replicas=2, num_cpus=1), lease_s=5.0)
    url = ray_backend.deploy(settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
    client = httpx.Client(base_url=url, timeout=30)
    try:
        deadline = time.monotonic() + 180
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the Ray application did not get ready"
            time.sleep(0.2)
        yield client, settings, JobStore(settings.database)
    finally:
        client.close()
        ray_backend.shutdown()
    assert not ray.is_initialized()


def runs_of(store: JobStore, job_id: str) -> list[tuple[str, str]]:
    """(event, worker) of the job's starts and ends, in order."""
    return [(e["event"], e["worker_id"]) for e in store.events(job_id) if e["event"] not in ("queued",)]


@pytest.mark.slow
def test_eight_jobs_complete_on_two_replicas(ray_server):
    client, settings, store = ray_server
    ids = [client.post("/v1/jobs", json={**TINY, "prompt": "a red circle moves to the left", "seed": i}).json()["id"]
           for i in range(8)]
    jobs = [wait_for(client, i, timeout=240) for i in ids]
    assert [j["state"] for j in jobs] == ["complete"] * 8, [j["error"] for j in jobs]
    workers = set()
    for job_id in ids:
        video = client.get(f"/v1/jobs/{job_id}/video")
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert (settings.outputs / job_id / "video.mp4").is_file()
        events = runs_of(store, job_id)
        assert [e for e, _ in events] == ["started", "complete"], events  # ran once, completed once
        workers.add(events[0][1])
    assert len(workers) == 2 and all(w.startswith("SERVE_REPLICA::ltx#LTXGenerator#") for w in workers), workers
    metrics = client.get("/metrics").text
    assert 'ltx_generations_total{outcome="complete"} 8.0' in metrics
    assert 'ltx_generation_duration_seconds_count{model="ltx-demo",size="64x64x9"} 8.0' in metrics


@pytest.mark.slow
def test_killed_replica_job_is_retried_and_completes_once(ray_server):
    client, settings, store = ray_server
    job_id = client.post("/v1/jobs", json={**TINY, "steps": 60, "prompt": "a green square moves up"}).json()["id"]
    running = wait_for(client, job_id, states=("running",), until=lambda j: j["step"] >= 2, timeout=120)
    assert running["attempts"] == 1
    victim = store.get(job_id).worker_id
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    done = wait_for(client, job_id, timeout=240)
    assert done["state"] == "complete", done["error"]
    assert done["attempts"] == 2
    events = runs_of(store, job_id)
    assert [e for e, _ in events] == ["started", "requeued", "started", "complete"], events
    assert events[0][1] == victim and events[-1][1] != victim  # the second run is another replica's
    assert client.get(f"/v1/jobs/{job_id}/video").content[4:8] == b"ftyp"
    # Serve replaces the killed replica: two generators run again.
    deadline = time.monotonic() + 120
    while serve.status().applications["ltx"].deployments["LTXGenerator"].replica_states.get("RUNNING", 0) < 2:
        assert time.monotonic() < deadline, "Serve did not replace the killed replica"
        time.sleep(0.5)


def test_replica_bounds_from_settings():
    """Fixed replicas, or autoscaling between the bounds (no Ray needed: the deployment's options)."""
    fixed = ray_backend.generator_deployment(ServeSettings(ray=RaySettings(replicas=3, num_gpus=1, num_cpus=4)))
    assert fixed.num_replicas == 3 and fixed.ray_actor_options == {"num_gpus": 1, "num_cpus": 4}
    assert fixed.max_ongoing_requests == 1
    scaled = ray_backend.generator_deployment(ServeSettings(ray=RaySettings(replicas=1, min_replicas=1,
                                                                            max_replicas=4)))
    config = scaled._deployment_config.autoscaling_config
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (1, 4, 1)
    assert ray_backend.replica_bound(ServeSettings(ray=RaySettings(replicas=1, max_replicas=4))) == 4
    with pytest.raises(ValueError, match="min_replicas"):
        ray_backend.generator_deployment(ServeSettings(ray=RaySettings(min_replicas=3, max_replicas=2)))
