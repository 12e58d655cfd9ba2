"""The Ray Serve backend (`ltx-serve backend=ray`): the same HTTP API as a Ray Serve application.

    ingress (1 replica, 0 CPUs)   create_app(settings, RayBackend(settings, generator)): the FastAPI app of
                                  ltx/serve/app.py behind Ray Serve's HTTP proxy; its RayBackend dispatches work
    LTXGenerator (N replicas)     each holds the resident model (ltx.serve.runner.Runner) on `ray.num_gpus` GPUs /
                                  `ray.num_cpus` CPUs and runs one job at a time (max_ongoing_requests=1)

The job queue is the shared JobStore (SQLite at settings.database), not Ray's: the ingress writes jobs there, and
the generators claim them with a lease (ltx/serve/store.py). The ingress's dispatcher keeps one `work()` request in
flight per claimable job, up to the replica bound; a `work()` claims the next job in the store's fair order (not
a particular one) and runs it. So Ray Serve's request metrics see the queue (autoscaling between `min_replicas`
and `max_replicas` follows it, target one job per replica), and the store's transitions keep every job run once:

- a replica killed mid-job: its request fails, its lease stops being renewed; the dispatcher re-queues the job at
  once when the replica's actor is gone from the cluster (else when the lease expires), and another replica
  claims it (attempt 2). The dead replica cannot finish it: `finish` succeeds only for the worker holding the job.
  After `max_attempts` runs the job ends `error` with the reason.
- back-pressure: more than `limits.max_queued` queued jobs -> 429 at submit (app.py); requests beyond the replicas
  wait in the store, not in memory.
- cancel: a queued job is cancelled by the store at once; a running one sees `cancel_requested` at its next step.

The ingress's /metrics: the store's counters and gauges (every replica's jobs), and the histograms of the steps
and generations the replicas report back with each `work()` result (a killed replica's partial job reports
nothing); `ltx_device_memory_bytes{device="<device> <replica>"}` per generation replica.

Single node:  ltx-serve backend=ray ray.replicas=2 ray.num_gpus=1             (starts a local Ray)
Multi-node:   on the head:    ray start --head --port=6379
              on each worker: ray start --address=<head ip>:6379
              then, on the head: ltx-serve backend=ray ray.address=auto host=0.0.0.0 ray.num_gpus=1 \
                                   ray.min_replicas=1 ray.max_replicas=8 \
                                   output_dir=/shared/ltx-serve db_path=/shared/ltx-serve/jobs.sqlite
Every node needs the same code and venv, and `output_dir` / `db_path` on one shared filesystem (the replicas write
the videos, the ingress serves them). SQLite needs working POSIX locks on that filesystem (a local disk for one
node; NFSv4 with locking, or CephFS / Lustre, for several); for many nodes, swap JobStore for a database server
(PostgreSQL with `SELECT ... FOR UPDATE SKIP LOCKED` for `claim`): the backend only calls the JobStore methods.

`RayBackend(settings)` alone (no generator handle) can also be the backend of a plain uvicorn server
(`create_app(settings, RayBackend(settings))`): it then deploys the generators as their own Serve application on
start, and the HTTP API is that one process's (no Serve proxy, no ingress replica). `python -m infer.serve
backend=ray` runs the full Serve application (`run`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from ltx.serve.app import create_app
from ltx.serve.metrics import memory_bytes
from ltx.serve.settings import ServeSettings
from ltx.serve.store import JobStore
from ltx.serve.worker import EmbeddedBackend

log = logging.getLogger("ltx.serve")
APP = "ltx"  # the Serve application (ingress + generators)
GENERATORS_APP = "ltx-generators"  # the generators alone, when RayBackend deploys them itself
GENERATOR = "LTXGenerator"
REPLICA_PREFIX = "SERVE_REPLICA::"  # Serve names each replica's actor "SERVE_REPLICA::<app>#<deployment>#<id>"
DISPATCH_POLL_S = 0.5  # how often the dispatcher looks at the store without being woken
STATUS_EVERY_S = 2.0  # how often it asks Serve whether a generator replica is up (/readyz)


# ---- the generation replicas ----------------------------------------------------------------------------------

class _Report:
    """Stands in for ServeMetrics inside a replica: what the worker observed during one job, sent back with the
    `work()` result to the ingress, whose /metrics it goes to."""

    def __init__(self):
        self.steps: list[float] = []
        self.generation: tuple[str, float] | None = None
        self.load: tuple[float, str] | None = None

    def observe_step(self, seconds: float) -> None:
        self.steps.append(seconds)

    def observe_generation(self, size: str, seconds: float) -> None:
        self.generation = (size, seconds)

    def model_loaded(self, seconds: float, device: str) -> None:
        self.load = (seconds, device)


class Generator:
    """One generation replica: loads the model once, then each `work()` claims and runs one job from the store.

    The job runs in a thread (the replica's event loop keeps answering Serve's health checks); its worker id is
    the replica's actor name, so the dispatcher can tell when the replica holding a job is gone."""

    def __init__(self, settings: ServeSettings):
        self.name = serve.get_replica_context().replica_id.to_full_id_str()
        self.report = _Report()
        self.worker = EmbeddedBackend(settings, metrics=self.report)  # its job loop, not its thread
        self.worker.worker_id = self.name
        self.report.model_loaded(self.worker.runner.load(), str(self.worker.runner.pipe.device))

    async def work(self) -> dict | None:
        """Claim the next queued job and run it to its end; None when the queue was empty. Returns what the
        ingress's metrics need: {job, state, steps, generation, load, memory, replica}."""
        return await asyncio.to_thread(self._claim_and_run)

    def _claim_and_run(self) -> dict | None:
        store, settings = self.worker.store, self.worker.settings
        job = store.claim(self.name, settings.lease_s)
        if job is None:
            return None
        report, self.report = self.report, _Report()
        self.worker.metrics = report
        self.worker.run_job(job)
        device = str(self.worker.runner.pipe.device)
        return {"job": job.id, "state": store.get(job.id).state, "steps": report.steps,
                "generation": report.generation, "load": report.load, "replica": self.name,
                "memory": (device, memory_bytes(device))}

    def check_health(self) -> None:
        if not self.worker.runner.loaded:
            raise RuntimeError("the model is not loaded")

    def __del__(self):
        # Serve stops a replica (scale-down, redeploy, shutdown) after its graceful wait: a job still running stops
        # at its next step and goes back to the queue (the worker releases it when stopping).
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop(timeout=0)


def generator_deployment(settings: ServeSettings) -> serve.Deployment:
    """The generators' deployment: resources and replica bounds from `settings.ray`."""
    r = settings.ray
    if r.min_replicas is None and r.max_replicas is None:
        scaling = {"num_replicas": r.replicas}
    else:
        low = r.min_replicas if r.min_replicas is not None else 1
        high = r.max_replicas if r.max_replicas is not None else max(low, r.replicas)
        if not 0 <= low <= high or high < 1:
            raise ValueError(f"ray.min_replicas / ray.max_replicas must satisfy 0 <= min <= max and max >= 1, got "
                             f"{r.min_replicas} / {r.max_replicas}")
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                          "initial_replicas": min(max(r.replicas, low), high),
                                          "target_ongoing_requests": 1}}
    if r.replicas < 1:
        raise ValueError(f"ray.replicas must be >= 1, got {r.replicas}")
    return serve.deployment(
        Generator, name=GENERATOR, max_ongoing_requests=1,
        ray_actor_options={"num_gpus": r.num_gpus, "num_cpus": r.num_cpus},
        graceful_shutdown_timeout_s=max(30.0, settings.lease_s), **scaling)


def replica_bound(settings: ServeSettings) -> int:
    """The most generator replicas there can be: the dispatcher keeps at most this many jobs in flight."""
    r = settings.ray
    return max(r.replicas, r.max_replicas or 0, r.min_replicas or 0, 1)


# ---- the dispatcher (the ingress's backend) -------------------------------------------------------------------

class RayBackend:
    """The app's backend on Ray: keeps one `work()` request in flight per claimable job (up to the replica bound),
    re-queues the jobs of dead replicas, and reports readiness (a generator replica is running)."""

    def __init__(self, settings: ServeSettings, generator: DeploymentHandle | None = None, app_name: str | None = None):
        self.settings = settings
        self.store = JobStore(settings.database, max_attempts=settings.max_attempts)
        self.generator = generator
        self.app_name = app_name or (APP if generator is not None else GENERATORS_APP)
        self.metrics = None  # the app's ServeMetrics (set after create_app): replicas' reports go there
        self.load_error: str | None = None
        self.bound = replica_bound(settings)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = False
        self._status_at = 0.0
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(self.bound, thread_name_prefix="ltx-serve-work")
        self._deployed = False  # True when start() deployed the generators (they are deleted on stop)

    # --- the backend interface
    def start(self) -> None:
        if self.generator is None:  # the front is this process's uvicorn: deploy the generators ourselves
            connect(self.settings)
            self.generator = serve.run(generator_deployment(self.settings).bind(self.settings),
                                       name=GENERATORS_APP, route_prefix=None)
            self._deployed = True
        self._thread = threading.Thread(target=self._dispatch_loop, name="ltx-serve-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop dispatching (jobs running on replicas finish there; queued ones stay in the store)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._deployed:
            serve.delete(GENERATORS_APP)

    def wake(self) -> None:
        self._wake.set()

    def ready(self) -> bool:
        return self._ready and self._thread is not None and self._thread.is_alive()

    # --- the loop
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._requeue_dead()
                self._dispatch()
                if time.monotonic() - self._status_at > STATUS_EVERY_S:
                    self._check_generators()
                    self._status_at = time.monotonic()
            except Exception as e:  # noqa: BLE001 - a store or Serve hiccup: log it, try again next round
                log.warning("ray dispatcher: %s: %s", type(e).__name__, e)
            self._wake.wait(DISPATCH_POLL_S)
            self._wake.clear()

    def _dispatch(self) -> None:
        counts = self.store.counts()
        with self._lock:
            # Requests in flight that have not claimed a job yet: in flight minus the running jobs.
            waiting = max(0, self._in_flight - counts["running"])
            new = min(counts["queued"] - waiting, self.bound - self._in_flight)
            self._in_flight += max(0, new)
        for _ in range(max(0, new)):
            self._pool.submit(self._one_request)

    def _one_request(self) -> None:
        try:
            result = self.generator.work.remote().result()
            if result is not None:
                self._record(result)
        except Exception as e:  # noqa: BLE001 - a replica died or was stopped mid-job
            log.warning("a generation replica stopped during a work request (%s: %s); its job goes back to the "
                        "queue", type(e).__name__, " ".join(str(e).split())[:200])
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()

    def _record(self, result: dict) -> None:
        m = self.metrics
        if m is None:
            return
        for seconds in result["steps"]:
            m.observe_step(seconds)
        if result["generation"] is not None:
            m.observe_generation(*result["generation"])
        if result["load"] is not None:
            m.load.labels(model=m.model).set(result["load"][0])
        device, used = result["memory"]
        m.memory.labels(device=f"{device} {result['replica']}").set(used)

    def _requeue_dead(self) -> None:
        """Running jobs of generator replicas whose actor is gone go back to the queue now (the lease would do it
        too, after lease_s); jobs past their lease likewise."""
        running = [w for w in self.store.running_workers() if w and w.startswith(REPLICA_PREFIX)]
        dead = []
        if running:
            alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
            dead = [w for w in running if w not in alive]
        for job_id, state in self.store.requeue_expired(dead_workers=dead):
            log.warning("job %s: its generation replica is gone; now %s", job_id, state)

    def _check_generators(self) -> None:
        """Ready: a generator replica runs (or none need to: min_replicas=0, scaled to zero, starts on demand);
        a deployment that failed (the model does not load) gives /readyz Serve's reason."""
        app = serve.status().applications.get(self.app_name)
        status = app.deployments.get(GENERATOR) if app is not None else None
        if status is None:
            self._ready = False
            return
        running = status.replica_states.get("RUNNING", 0)
        self._ready = running > 0 or self.settings.ray.min_replicas == 0
        failed = str(status.status).rsplit(".", 1)[-1] in ("UNHEALTHY", "DEPLOY_FAILED")
        self.load_error = " ".join(status.message.split())[:500] if failed and status.message else None


# ---- the Serve application ------------------------------------------------------------------------------------

@serve.ingress()
class Ingress:
    """The HTTP API (ltx/serve/app.py) as the application's ingress deployment."""

    def __init__(self, settings: ServeSettings, generator: DeploymentHandle):
        self.settings = settings
        self.backend = RayBackend(settings, generator, app_name=serve.get_replica_context().app_name)

    def __serve_build_asgi_app__(self):
        app = create_app(self.settings, self.backend)
        self.backend.metrics = app.state.metrics
        return app


def build_app(settings: ServeSettings) -> serve.Application:
    """The Serve application: the ingress (0 CPUs: it waits on I/O) bound to the generators."""
    generators = generator_deployment(settings).bind(settings)
    ingress = serve.deployment(Ingress, name="LTXIngress", num_replicas=1, ray_actor_options={"num_cpus": 0},
                               max_ongoing_requests=256)
    return ingress.bind(settings, generators)


def connect(settings: ServeSettings, **init_options) -> None:
    """Join `settings.ray.address` ("auto": the cluster `ray start` made here) or start a local Ray."""
    if not ray.is_initialized():
        ray.init(address=settings.ray.address, **init_options)


def deploy(settings: ServeSettings, **init_options) -> str:
    """Start Serve's HTTP proxy on settings.host:port (port 0: a free one) and deploy the application; returns
    its URL once the ingress answers (the generators may still be loading: /readyz)."""
    connect(settings, **init_options)
    port = settings.port
    if port == 0:  # Serve's proxy takes a fixed port: pick a free one
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as sock:
            sock.bind((settings.host, 0))
            port = sock.getsockname()[1]
    serve.start(http_options={"host": settings.host, "port": port})
    serve.run(build_app(settings), name=APP, route_prefix="/")
    shown = "127.0.0.1" if settings.host == "0.0.0.0" else settings.host
    return f"http://{shown}:{port}"


def shutdown() -> None:
    """Delete the Serve applications and disconnect from Ray (a local Ray started by `connect` stops)."""
    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def run(settings: ServeSettings) -> None:
    """`ltx-serve backend=ray`: deploy, print the URL, serve until Ctrl-C / SIGTERM, then shut down."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    url = deploy(settings)
    r = settings.ray
    bounds = (f"{r.replicas} replicas" if r.min_replicas is None and r.max_replicas is None else
              f"{r.min_replicas or 1}..{replica_bound(settings)} replicas (autoscaled)")
    print(f"ltx-serve (Ray Serve): {settings.model} on {url}  ({bounds}, {r.num_gpus} GPU / {r.num_cpus} CPU each; "
          f"jobs in {settings.outputs})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        print("ltx-serve: shutting down Ray Serve", flush=True)
        shutdown()
