"""Bad requests over HTTP: every field with a wrong type or out of range, unknown LoRAs, path traversal, oversized
bodies, malformed JSON and multipart: 422 (413 for size) naming the field and what is valid, and nothing
written (no job in the store, no file in the output folder)."""

from __future__ import annotations

import io
import os

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ltx.serve.runner import RequestChecker, Runner
from ltx.serve.server import start_in_thread
from tests.serve.conftest import TINY, Server, serve_settings

MAX_BODY = 256 * 1024  # serve_settings' limits.max_upload_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipelines):
    """One demo server for the module, with a LoRA folder holding a file that is not a LoRA."""
    root = tmp_path_factory.mktemp("validation")
    loras = root / "loras"
    loras.mkdir()
    save_file({"weight": torch.zeros(2, 2)}, loras / "junk.safetensors")
    (root / "secret.safetensors").write_bytes(b"outside the folder")
    settings = serve_settings(root, lora_dir=str(loras))
    pipe = pipelines("ltx-demo")
    running = start_in_thread(settings, runner=Runner(settings, pipe=pipe), checker=RequestChecker(settings, pipe=pipe))
    s = Server(running, settings)
    s.wait_ready()
    yield s
    s.stop()


def written(server) -> tuple:
    """What a request could have left behind: the store's jobs and the output folder's files (but the store's)."""
    files = sorted(str(p.relative_to(server.settings.outputs)) for p in server.settings.outputs.rglob("*")
                   if not p.name.startswith("jobs.sqlite"))
    return len(server.store.list(limit=10**6)), files


def expect_refused(server, response, field: str, *, status: int = 422, says: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"].startswith(f"{field}: ")
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in body["detail"][0]["loc"][1:]).lstrip(".")
    assert loc == ("" if field == "body" else field)
    assert says.lower() in body["error"].lower()


CASES = [  # (request fields over TINY, the field named, a piece of the message)
    ({"prompt": None}, "prompt", "required"),
    ({"prompt": 5}, "prompt", "must be a string"),
    ({"prompt": "   "}, "prompt", "empty"),
    ({"prompt": "x" * 5000}, "prompt", "limit is 4000"),
    ({"negative_prompt": ["a"]}, "negative_prompt", "string"),
    ({"height": "64"}, "height", "integer"),
    ({"height": 64.0}, "height", "integer"),
    ({"height": True}, "height", "integer"),
    ({"height": 0}, "height", "positive"),
    ({"height": 63}, "height", "nearest: 56 or 64"),
    ({"width": 70}, "width", "multiple of 8"),
    ({"width": [64]}, "width", "integer"),
    ({"num_frames": 10}, "num_frames", "8k + 1"),
    ({"num_frames": -9}, "num_frames", "positive"),
    ({"num_frames": 41}, "num_frames", "max_pixels_frames"),
    ({"height": 128, "width": 128, "num_frames": 17}, "num_frames", "over the server's limit"),
    ({"frame_rate": 0}, "frame_rate", "frames per second"),
    ({"frame_rate": "fast"}, "frame_rate", "frames per second"),
    ({"frame_rate": 1e9}, "frame_rate", "(0, 1000]"),
    ({"steps": 0}, "steps", "[1, 80]"),
    ({"steps": 81}, "steps", "max_steps"),
    ({"steps": 2.5}, "steps", "integer"),
    ({"steps": "3"}, "steps", "integer"),
    ({"guidance_scale": 0.5}, "guidance_scale", "[1, 100]"),
    ({"guidance_scale": "high"}, "guidance_scale", "cfg scale"),
    ({"stg_scale": -1}, "stg_scale", "[0, 100]"),
    ({"seed": -1}, "seed", "[0, 2**63 - 1]"),
    ({"seed": 2**63}, "seed", "[0, 2**63 - 1]"),
    ({"seed": "1"}, "seed", "integer"),
    ({"seed": 1.5}, "seed", "integer"),
    ({"loras": "junk"}, "loras", "must be a list"),
    ({"loras": [{"name": "a"}] * 3}, "loras", "max_loras"),
    ({"loras": ["junk"]}, "loras[0]", "object with name, strength"),
    ({"loras": [{"path": "/etc/passwd"}]}, "loras[0]", "unknown key"),
    ({"loras": [{"name": "nope"}]}, "loras[0].name", "unknown lora 'nope'; available: junk.safetensors"),
    ({"loras": [{"name": "../secret"}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": "../secret.safetensors"}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": "loras/junk"}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": "..\\secret"}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": ".."}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": "/etc/passwd"}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": "%2e%2e%2fsecret"}]}, "loras[0].name", "no paths"),
    ({"loras": [{"name": 7}]}, "loras[0].name", "string"),
    ({"loras": [{"name": "junk"}]}, "loras[0].name", "junk.safetensors"),
    ({"loras": [{"name": "junk", "strength": "strong"}]}, "loras[0].strength", "[-10, 10]"),
    ({"images": [{"file": "first"}]}, "images[0].file", "no uploaded file 'first'"),
    ({"images": "first.png"}, "images", "must be a list"),
    ({"images": [{"file": "a", "frame": 2, "size": 3}]}, "images[0]", "unknown key"),
    ({"audio": {"file": "song"}}, "audio", "only the ltx-2 models"),
    ({"audio_guidance_scale": 3.0}, "audio_guidance_scale", "only the ltx-2 models"),
    ({"num_steps": 3}, "num_steps", "unknown field; valid: prompt"),
]


@pytest.mark.parametrize("fields, field, says", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_a_bad_field_is_refused_by_name(server, fields, field, says):
    before = written(server)
    request = {"prompt": "a red circle moves to the left", **TINY, **fields}
    expect_refused(server, server.client.post("/v1/jobs", json={k: v for k, v in request.items() if v is not None}),
                   field, says=says)
    assert written(server) == before


@pytest.mark.parametrize("body, content_type, field, says", [
    (b'{"prompt": "a red', "application/json", "body", "malformed json"),
    (b"\xff\xfe", "application/json", "body", "malformed json"),
    (b'[1, 2]', "application/json", "body", "json object"),
    (b'"a red circle"', "application/json", "body", "json object"),
    (b'{"prompt": "a", "guidance_scale": NaN}', "application/json", "guidance_scale", "cfg scale"),
    (b'{"prompt": "a", "frame_rate": Infinity}', "application/json", "frame_rate", "frames per second"),
    (b"prompt=a", "text/plain", "body", "application/json"),
    (b"--x\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{}", "multipart/form-data; boundary=x",
     "request", "missing"),  # cut short: the parser finds no request field
])
def test_malformed_bodies_are_refused(server, body, content_type, field, says):
    before = written(server)
    response = server.client.post("/v1/jobs", content=body, headers={"content-type": content_type})
    expect_refused(server, response, field, says=says)
    assert written(server) == before


def png(size=(64, 64), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multipart_uploads_are_checked_and_oversized_bodies_refused(server):
    c = server.client
    before = written(server)
    ok_request = '{"prompt": "a red circle moves to the left", "images": [{"file": "first", "frame": 0}]}'
    expect_refused(server, c.post("/v1/jobs", files={"first": ("a.png", png(), "image/png")}), "request",
                   says="missing")
    expect_refused(server, c.post("/v1/jobs", data={"request": "{oops"}, files={"first": ("a.png", png())}), "request",
                   says="malformed json")
    expect_refused(server, c.post("/v1/jobs", data={"request": ok_request},
                                  files={"first": ("a.png", b"not an image at all", "image/png")}), "images[0]",
                   says="upload 'first'")
    expect_refused(server, c.post("/v1/jobs", data={"request": ok_request, "note": "hi"},
                                  files={"first": ("a.png", png())}), "note", says="unknown form field")
    big = os.urandom(MAX_BODY + 1)
    expect_refused(server, c.post("/v1/jobs", data={"request": ok_request}, files={"first": ("a.png", big)}), "body",
                   status=413, says="max_upload_bytes")
    expect_refused(server, c.post("/v1/jobs", json={"prompt": "a" * (MAX_BODY + 10)}), "body", status=413)

    def chunks():  # no Content-Length: refused while reading
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    expect_refused(server, c.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"}),
                   "body", status=413)
    assert written(server) == before
    # the same request with a real image runs, its upload kept only while the job needs it
    r = c.post("/v1/jobs", data={"request": ok_request}, files={"first": ("../../a.png", png(), "image/png")})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["request"]["images"][0]["file"].startswith("upload_")  # the server's name, not the client's
    done = server.wait(job["id"])
    assert done["state"] == "complete", done["error"]
    assert not (server.settings.outputs / "uploads" / job["id"]).exists()
    assert sorted(p.name for p in (server.settings.outputs / "uploads").iterdir()) == []
