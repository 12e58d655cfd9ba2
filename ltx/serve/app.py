"""The HTTP API (FastAPI): `create_app(settings, backend=None)`; the backend runs the jobs (default: the embedded
worker thread, ltx.serve.worker.EmbeddedBackend).

    POST   /v1/jobs                  a request: JSON, or multipart/form-data with a `request` JSON field and the
                                     uploaded files it names -> 201 {id, state, ...}; 422 {detail, error} naming the
                                     field and what is valid; 413 over limits.max_upload_bytes; 429 queue full
    GET    /v1/jobs                  the caller's jobs, newest first ({"jobs": [...]})
    GET    /v1/jobs/{id}             {id, state, queue_position, step, total_steps, eta_s, error, created_at,
                                     started_at, finished_at, request, attempts, cancel_requested, files}
    GET    /v1/jobs/{id}/events      server-sent events: `event: progress` (the same JSON) on each change, `event: end`
    DELETE /v1/jobs/{id}             cancel: a queued job at once, a running one at its next step
    GET    /v1/jobs/{id}/video       the mp4 (LTX-2: with sound); /contact_sheet (png), /config (yaml), /audio (wav)
    GET    /v1/info                  model, family, request defaults, limits, LoRA names
    GET    /healthz, /readyz         process up; model loaded and worker alive (503 until then)
    GET    /metrics                  Prometheus text (ltx.serve.metrics)
    GET    /, /static/*              the web page (ltx/serve/static)

Auth: with `settings.api_keys`, every /v1 call needs `Authorization: Bearer <key>` (401 without); a key sees and
cancels only its own jobs (another key's job ids answer 404). Without keys the server is open (a warning at start).
Files are served by job id only: the path is <output_dir>/<id>/<a name the worker wrote>; nothing a request says
reaches the filesystem (job ids must be 32 hex digits, LoRAs are names in lora_dir, uploads get server names).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ltx.serve.metrics import ServeMetrics
from ltx.serve.runner import RequestChecker, Runner, upload_dir
from ltx.serve.schema import RequestError
from ltx.serve.settings import ServeSettings, key_owner
from ltx.serve.store import Job, JobStore
from ltx.serve.worker import EmbeddedBackend

log = logging.getLogger("ltx.serve")
STATIC = Path(__file__).parent / "static"
JOB_ID = re.compile(r"[0-9a-f]{32}")
FILES = {"video": "video/mp4", "contact_sheet": "image/png", "config": "application/yaml", "audio": "audio/wav"}
UPLOAD_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac",
                   ".mp4", ".webm", ".mov", ".mkv"}
EVENT_POLL_S = 0.2


def job_view(job: Job) -> dict:
    """A job as the API shows it: the store's public fields and the URLs of its files."""
    view = job.public()
    view.pop("outputs")
    view["files"] = {kind: f"/v1/jobs/{job.id}/{kind}" for kind in job.outputs} if job.state == "complete" else {}
    return view


def create_app(settings: ServeSettings, backend=None, *, checker: RequestChecker | None = None,
               runner: Runner | None = None) -> FastAPI:
    """The app over `settings`' job store and output folder. `backend`: start() / stop() / wake() / ready();
    None = an EmbeddedBackend on the same store and metrics, running `runner` (None: a Runner(settings))."""
    store = JobStore(settings.database, max_attempts=settings.max_attempts)
    metrics = ServeMetrics(store, settings.model, device=settings.device)
    checker = checker or RequestChecker(settings)
    if backend is None:
        backend = EmbeddedBackend(settings, store, metrics, runner)
    elif getattr(backend, "metrics", False) is None:  # a backend that reports timings into the app's metrics (Ray)
        backend.metrics = metrics
    uploads_root = settings.outputs / "uploads"
    uploads_root.mkdir(parents=True, exist_ok=True)
    limits = settings.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.api_keys:
            log.warning("no api_keys configured: the server is open, every client sees and cancels every job")
        log.info("serving model %s (%s), jobs in %s, store %s", settings.model, "LTX-2" if checker.is_ltx2 else
                 "LTX-Video 0.9.x", settings.outputs, settings.database)
        backend.start()
        try:
            yield
        finally:
            await run_in_threadpool(backend.stop)

    app = FastAPI(title="ltx-serve", lifespan=lifespan)
    app.state.settings, app.state.store, app.state.metrics = settings, store, metrics
    app.state.backend, app.state.checker = backend, checker

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        return JSONResponse(e.body(), status_code=e.status)

    def owner_of(request: Request) -> str | None:
        """The caller's owner name (None: an open server, where everyone sees every job)."""
        if not settings.api_keys:
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        name = key_owner(settings, key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if name is None:
            raise HTTPException(401, "give a valid API key: Authorization: Bearer <key>",
                                headers={"WWW-Authenticate": "Bearer"})
        return name

    def find(job_id: str, owner: str | None) -> Job:
        job = store.get(job_id, owner) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    # ------------------------------------------------------------------------------------------ jobs

    @app.post("/v1/jobs", status_code=201)
    async def submit(request: Request):
        owner = owner_of(request)
        body = await _read_body(request, limits.max_upload_bytes)
        staging = uploads_root / f".tmp-{uuid.uuid4().hex}"
        try:
            payload, uploads = await _parse(request, body, staging, limits.max_images + 1)
            if store.counts()["queued"] >= limits.max_queued:
                raise HTTPException(429, f"the queue is full ({limits.max_queued} jobs, limits.max_queued): retry "
                                         "later", headers={"Retry-After": "30"})
            checked = await run_in_threadpool(checker.check, payload, uploads, staging)
            job_id = uuid.uuid4().hex
            if uploads:
                staging.rename(upload_dir(settings, job_id))
            job = await run_in_threadpool(store.submit, checked.request, owner or "", job_id, checked.total_steps)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        backend.wake()
        log.info("job %s queued (position %s, %d steps)%s", job.id, job.queue_position, checked.total_steps,
                 f" by {owner}" if owner else "")
        return job_view(job)

    @app.get("/v1/jobs")
    def list_jobs(request: Request, limit: int = 100):
        owner = owner_of(request)
        return {"jobs": [job_view(j) for j in store.list(owner, limit=max(1, min(limit, 1000)))]}

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, request: Request):
        return job_view(find(job_id, owner_of(request)))

    @app.delete("/v1/jobs/{job_id}")
    def cancel_job(job_id: str, request: Request):
        owner = owner_of(request)
        find(job_id, owner)
        job = store.cancel(job_id, owner)
        if job.state == "cancelled":
            shutil.rmtree(upload_dir(settings, job_id), ignore_errors=True)
        log.info("job %s: cancel asked (%s)", job_id, "cancelled" if job.state == "cancelled" else
                 "stops at its next step" if job.state == "running" else f"already {job.state}")
        backend.wake()
        return job_view(job)

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request):
        owner = owner_of(request)
        find(job_id, owner)

        async def stream():
            last, quiet_since = None, time.monotonic()
            while not await request.is_disconnected():
                job = await run_in_threadpool(store.get, job_id)
                data = json.dumps(job_view(job))
                if data != last:
                    yield f"event: progress\ndata: {data}\n\n"
                    last, quiet_since = data, time.monotonic()
                if job.final:
                    yield f"event: end\ndata: {data}\n\n"
                    return
                if time.monotonic() - quiet_since > 15:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(EVENT_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/{kind}")
    def job_file(job_id: str, kind: str, request: Request):
        job = find(job_id, owner_of(request))
        if kind not in FILES:
            raise HTTPException(404, f"no file kind {kind!r}; kinds: {', '.join(FILES)}")
        if job.state != "complete":
            raise HTTPException(404, f"job {job_id} is {job.state}: its files exist once it is complete")
        name = job.outputs.get(kind)
        if name is None:
            raise HTTPException(404, f"job {job_id} has no {kind} (the {settings.model} model does not make one)")
        path = settings.outputs / job.id / Path(name).name
        if not path.is_file():
            raise HTTPException(410, f"job {job_id}'s {kind} file is gone from the output folder")
        return FileResponse(path, media_type=FILES[kind], filename=f"{job.id}_{path.name}")

    # ------------------------------------------------------------------------------------------ service

    @app.get("/v1/info")
    def info(request: Request):
        owner_of(request)
        return {"model": settings.model, "family": "ltx2" if checker.is_ltx2 else "ltxv",
                "defaults": checker.defaults(), "limits": vars(limits).copy(), "loras": checker.loras.names(),
                "auth": bool(settings.api_keys), "audio": checker.is_ltx2}

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.get("/readyz")
    def readyz():
        if backend.ready():
            return {"ready": True}
        why = getattr(backend, "load_error", None) or "the model is loading or the worker is not running"
        return JSONResponse({"ready": False, "reason": why}, status_code=503)

    @app.get("/metrics")
    def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if (STATIC / "index.html").is_file():
        @app.get("/", include_in_schema=False)
        def index():
            return FileResponse(STATIC / "index.html", media_type="text/html")

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is over `limit` bytes (before it is all read)."""
    length = request.headers.get("content-length", "")
    too_big = RequestError("body", f"the request is over the server's limit of {limit} bytes "
                                   "(limits.max_upload_bytes): send smaller files", status=413)
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, body: bytes, staging: Path, max_files: int) -> tuple[object, dict[str, Path]]:
    """(the request JSON, {form field: uploaded file written under `staging`}) of a JSON or multipart body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async def replay():
            yield body

        try:
            form = await MultiPartParser(request.headers, replay(), max_files=max_files, max_fields=max_files + 1,
                                         max_part_size=len(body) + 1).parse()
        except MultiPartException as e:
            raise RequestError("body", f"malformed multipart/form-data: {e.message}") from None
        text, uploads = None, {}
        for k, (field, value) in enumerate(form.multi_items()):
            if field == "request" and isinstance(value, str):
                text = value
            elif isinstance(value, UploadFile):
                suffix = Path(value.filename or "").suffix.lower()
                suffix = suffix if suffix in UPLOAD_SUFFIXES else ".bin"
                staging.mkdir(parents=True, exist_ok=True)
                path = staging / f"upload_{k}{suffix}"  # the server's name, never the client's
                path.write_bytes(await value.read())
                uploads[field] = path
            else:
                raise RequestError(field, "unknown form field: send the request JSON as `request` and files as file "
                                          "fields")
        if text is None:
            raise RequestError("request", "missing: a multipart request carries its JSON in a `request` form field")
        return _json(text.encode(), "request"), uploads
    if kind not in ("application/json", ""):
        raise RequestError("body", f"content type {kind!r}: send application/json, or multipart/form-data with files")
    return _json(body, "body"), {}


def _json(data: bytes, field: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(field, f"malformed JSON ({e}); send an object such as {{\"prompt\": \"a red circle\"}}") \
            from None
