"""The HTTP API over real sockets: submit -> progress (SSE) -> a playable mp4, cancellation (queued: at once;
running: within one step), per-job LoRAs, API keys, /metrics against the jobs run, the LTX-2 demo with sound."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from ltx.ltxv.lora import save_lora
from tests.serve.conftest import serve_settings, wait_for


def read_events(client, job_id: str) -> list[tuple[str, dict]]:
    """Every (event, JSON) of GET /v1/jobs/{id}/events until the stream ends."""
    events, name = [], None
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def decoded(data: bytes) -> tuple[np.ndarray, float, list[str]]:
    """(frames (F, H, W, 3) uint8, duration in seconds, stream types) of an mp4's bytes (PyAV)."""
    with av.open(io.BytesIO(data)) as container:
        kinds = [s.type for s in container.streams]
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        duration = float(stream.duration * stream.time_base)
    return frames, duration, kinds


def metric_samples(text: str) -> dict:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_submit_streams_progress_and_ends_in_a_playable_mp4(demo_server):
    c = demo_server.client
    job = demo_server.submit(prompt="a red circle moves to the left", seed=3, steps=12)
    assert job["state"] in ("queued", "running") and job["total_steps"] == 12
    assert job["request"]["seed"] == 3 and job["request"]["frame_rate"] == 8.0  # the preset's, resolved
    events = read_events(c, job["id"])
    names = [n for n, _ in events]
    assert names[-1] == "end" and set(names[:-1]) == {"progress"}
    steps = [e["step"] for _, e in events]
    assert steps == sorted(steps) and steps[-1] == 12
    running = [e for _, e in events if e["state"] == "running" and 0 < e["step"] < 12]
    assert running, "no progress event seen between the first and the last step"
    assert any(e["eta_s"] is not None and e["eta_s"] > 0 for e in running)
    final = events[-1][1]
    assert final["state"] == "complete" and final["error"] is None and final["attempts"] == 1
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]
    assert set(final["files"]) == {"video", "contact_sheet", "config"}

    video = c.get(f"/v1/jobs/{job['id']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    frames, duration, kinds = decoded(video.content)
    assert kinds == ["video"] and frames.shape == (9, 64, 64, 3)
    assert duration == pytest.approx(9 / 8, abs=1e-3)
    assert frames.std() > 5  # a picture, not a constant
    sheet = Image.open(io.BytesIO(c.get(f"/v1/jobs/{job['id']}/contact_sheet").content))
    assert sheet.format == "PNG" and sheet.width >= 64
    config = yaml.safe_load(c.get(f"/v1/jobs/{job['id']}/config").text)
    assert config["request"]["seed"] == 3 and config["model"] == "ltx-demo" and len(config["sigmas"][0]) == 13
    assert c.get(f"/v1/jobs/{job['id']}/audio").status_code == 404  # 0.9.x makes no sound
    folder = demo_server.settings.outputs / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "contact_sheet.png", "video.mp4"]
    assert [e["event"] for e in demo_server.store.events(job["id"])] == ["queued", "started", "complete"]


def test_cancel_queued_at_once_and_running_within_one_step(demo_server):
    c, out = demo_server.client, demo_server.settings.outputs
    long = demo_server.submit(prompt="a green square moves up", steps=24)
    queued = demo_server.submit(prompt="a blue circle moves down")
    wait_for(c, long["id"], ("running",), until=lambda j: j["step"] >= 2)
    r = c.delete(f"/v1/jobs/{queued['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    asked = c.delete(f"/v1/jobs/{long['id']}").json()
    assert asked["state"] in ("running", "cancelled") and asked["cancel_requested"]
    final = demo_server.wait(long["id"])
    assert final["state"] == "cancelled" and final["files"] == {}
    assert final["step"] <= asked["step"] + 1 < 24  # it stopped at the next step
    # an independent count of the steps the worker took: the step-latency histogram (one sample per step after
    # the first); the cancelled queued job never started
    samples = metric_samples(c.get("/metrics").text)
    assert samples[("ltx_step_duration_seconds_count", (("model", "ltx-demo"),))] == final["step"] - 1
    assert [e["event"] for e in demo_server.store.events(queued["id"])] == ["queued", "cancelled"]
    assert not (out / long["id"]).exists() and not (out / queued["id"]).exists()
    after = demo_server.wait(demo_server.submit(prompt="a red square moves right")["id"])  # the worker is free
    assert after["state"] == "complete"
    assert c.delete(f"/v1/jobs/{after['id']}").json()["state"] == "complete"  # a final job stays as it is


def _demo_lora(path, pipe) -> None:
    """A rank-4 LoRA on the demo transformer's first block's attention (random, strong enough to show)."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v", "transformer_blocks.1.ff.net.2"):
        linear = pipe.dit.get_submodule(name)
        tensors[f"{name}.lora_A.weight"] = torch.randn(4, linear.in_features, generator=g) * 0.3
        tensors[f"{name}.lora_B.weight"] = torch.randn(linear.out_features, 4, generator=g) * 0.3
    save_lora(path, tensors)


def test_a_lora_changes_its_job_only(start_server, pipelines, tmp_path):
    pipe = pipelines("ltx-demo")
    loras = tmp_path / "loras"
    loras.mkdir()
    _demo_lora(loras / "sharp.safetensors", pipe)
    before = {n: p.clone() for n, p in pipe.dit.state_dict().items()}
    server = start_server(serve_settings(tmp_path, lora_dir=str(loras)))
    assert server.client.get("/v1/info").json()["loras"] == ["sharp.safetensors"]
    videos = []
    for loras_of_job in ([], [{"name": "sharp", "strength": 1.0}], []):
        job = server.wait(server.submit(prompt="a red circle moves to the left", seed=5, loras=loras_of_job)["id"])
        assert job["state"] == "complete", job["error"]
        videos.append(decoded(server.client.get(f"/v1/jobs/{job['id']}/video").content)[0])
    assert np.abs(videos[1].astype(int) - videos[0]).mean() > 1  # the LoRA changed its video
    assert np.array_equal(videos[2], videos[0])  # and nothing after it: the same video as before, bit for bit
    after = pipe.dit.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[n], before[n]) for n in before)


def test_api_keys_isolate_jobs(start_server, tmp_path):
    keys = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
    server = start_server(serve_settings(tmp_path, api_keys=keys))
    alice, bob, nobody = server.as_key(keys["alice"]), server.as_key(keys["bob"]), server.as_key(None)
    wrong = server.as_key("not-a-key-at-all")
    assert nobody.post("/v1/jobs", json={"prompt": "a red circle"}).status_code == 401
    assert wrong.get("/v1/jobs").status_code == 401
    assert nobody.get("/v1/info").status_code == 401
    assert nobody.get("/healthz").status_code == 200  # health and metrics stay open
    job = server.submit(client=alice, prompt="a red circle moves to the left")
    assert bob.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert bob.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert bob.get(f"/v1/jobs/{job['id']}/events").status_code == 404
    assert bob.get("/v1/jobs").json()["jobs"] == []
    done = server.wait(job["id"], client=alice)
    assert done["state"] == "complete"  # bob's cancel did nothing
    assert bob.get(f"/v1/jobs/{job['id']}/video").status_code == 404
    assert alice.get(f"/v1/jobs/{job['id']}/video").status_code == 200
    mine = server.submit(client=bob, prompt="a blue square moves up")
    assert [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]] == [job["id"]]
    assert [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]] == [mine["id"]]
    assert server.store.get(job["id"]).owner == "alice"
    server.wait(mine["id"], client=bob)


def test_metrics_parse_and_count_the_jobs_run(start_server, tmp_path):
    server = start_server(serve_settings(tmp_path), shared_model=False)  # its own load: a real load time
    c = server.client
    jobs = [server.submit(prompt="a red circle moves to the left", steps=s)["id"] for s in (3, 4, 3)]
    c.delete(f"/v1/jobs/{jobs[2]}")
    final = [server.wait(j) for j in jobs]
    states = [j["state"] for j in final]
    assert states[:2] == ["complete", "complete"] and states[2] == "cancelled"
    samples = metric_samples(c.get("/metrics").text)
    for outcome in ("complete", "error", "cancelled"):
        assert samples[("ltx_generations_total", (("outcome", outcome),))] == states.count(outcome)
    assert samples[("ltx_generation_duration_seconds_count", (("model", "ltx-demo"), ("size", "64x64x9")))] == 2
    ran = sum(max(j["step"] - 1, 0) for j in final)  # the jobs' last steps, as the store recorded them
    assert samples[("ltx_step_duration_seconds_count", (("model", "ltx-demo"),))] == ran >= 2 + 3
    total = samples[("ltx_generation_duration_seconds_sum", (("model", "ltx-demo"), ("size", "64x64x9")))]
    assert total == pytest.approx(sum(j["finished_at"] - j["started_at"] for j in final[:2]), abs=0.05)
    assert samples[("ltx_queue_depth", ())] == 0 and samples[("ltx_running_jobs", ())] == 0
    assert samples[("ltx_model_load_seconds", (("model", "ltx-demo"),))] > 0
    assert samples[("ltx_device_memory_bytes", (("device", "cpu"),))] > 50e6  # the RSS of a process with torch


def test_service_endpoints(demo_server):
    c = demo_server.client
    assert c.get("/healthz").json() == {"ok": True}
    assert c.get("/readyz").json() == {"ready": True}
    info = c.get("/v1/info").json()
    assert info["model"] == "ltx-demo" and info["family"] == "ltxv" and not info["auth"]
    assert info["defaults"]["height"] == 64 and info["limits"]["max_steps"] == 80
    assert c.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert c.get("/v1/jobs/../../etc/passwd").status_code == 404
    a = demo_server.submit(prompt="a red circle moves to the left", steps=24)
    wait_for(c, a["id"], ("running",), until=lambda j: j["step"] >= 1)
    b = demo_server.submit(prompt="a blue circle moves to the left")
    queued = c.get(f"/v1/jobs/{b['id']}").json()
    assert (queued["state"], queued["queue_position"]) == ("queued", 0)  # next, behind the running one
    assert c.get(f"/v1/jobs/{b['id']}/video").status_code == 404
    assert [j["id"] for j in c.get("/v1/jobs").json()["jobs"]] == [b["id"], a["id"]]  # newest first
    assert demo_server.wait(b["id"])["state"] == "complete"
    assert c.get(f"/v1/jobs/{b['id']}/nonsense").status_code == 404


def test_the_ltx2_demo_makes_video_with_sound(start_server, tmp_path):
    server = start_server(serve_settings(tmp_path, model="ltx2-demo"))
    c = server.client
    info = c.get("/v1/info").json()
    assert info["family"] == "ltx2" and info["audio"]
    bad = c.post("/v1/jobs", json={"prompt": "a red circle", "audio_guidance_scale": "loud"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "audio_guidance_scale"]
    job = server.wait(server.submit(prompt="a red circle moves to the left", audio_guidance_scale=2.0)["id"])
    assert job["state"] == "complete", job["error"]
    assert set(job["files"]) == {"video", "contact_sheet", "config", "audio"}
    data = c.get(f"/v1/jobs/{job['id']}/video").content
    frames, duration, kinds = decoded(data)
    assert sorted(kinds) == ["audio", "video"] and frames.shape == (9, 64, 64, 3)
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        sound = np.concatenate([f.to_ndarray()[0] for f in container.decode(container.streams.audio[0])])
    assert sound.size > 0.9 * 9 / 8 * rate and np.abs(sound).max() > 1e-3  # a channel of the clip's length
    wav = c.get(f"/v1/jobs/{job['id']}/audio")
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
