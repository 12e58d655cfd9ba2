"""The embedded backend: one worker thread in the server's process that loads the model once, then claims jobs
from the store and runs them one at a time.

A backend (this one, or ltx/serve/ray_backend.py) has `start()`, `stop()`, `wake()` (a job was queued or
cancelled) and `ready() -> bool` (model loaded, worker alive). The worker holds a lease on its job: each step
renews it (`store.progress`), and a heartbeat thread renews it between steps (prompt encoding, decoding). A step
that finds the job cancelled, or its lease lost, stops the job there (Runner raises Cancelled). At start, jobs
left `running` by a dead worker are re-queued: by lease expiry, or at once when the worker was a process on this
host that no longer exists (a server killed with -9 and started again).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid

from ltx.serve.metrics import ServeMetrics
from ltx.serve.runner import Cancelled, Runner, size_label, upload_dir
from ltx.serve.settings import ServeSettings
from ltx.serve.store import Job, JobStore

log = logging.getLogger("ltx.serve")
IDLE_POLL_S = 0.5  # how often an idle worker looks at the store (jobs queued by other processes, expired leases)
_LIVE_WORKERS: set[str] = set()  # worker ids of backends running in this process


def new_worker_id() -> str:
    """"host:pid:random": unique per backend, and says which process holds a job."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def dead_local_workers(worker_ids: list[str]) -> list[str]:
    """The workers among `worker_ids` known to be gone: on this host, and their process has exited (or it is this
    process and no backend here has that id any more)."""
    dead = []
    for w in worker_ids:
        host, _, rest = (w or "").partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            continue
        if int(pid) == os.getpid():
            if w not in _LIVE_WORKERS:
                dead.append(w)
        elif not _pid_alive(int(pid)):
            dead.append(w)
    return dead


def one_line(e: BaseException) -> str:
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class EmbeddedBackend:
    def __init__(self, settings: ServeSettings, store: JobStore | None = None, metrics: ServeMetrics | None = None,
                 runner: Runner | None = None):
        self.settings = settings
        self.store = store or JobStore(settings.database, max_attempts=settings.max_attempts)
        self.metrics = metrics
        self.runner = runner or Runner(settings)
        self.worker_id = new_worker_id()
        self.load_error: str | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the backend interface
    def start(self) -> None:
        _LIVE_WORKERS.add(self.worker_id)
        self._recover()
        self._thread = threading.Thread(target=self._loop, name=f"ltx-serve-worker-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the worker: a running job stops at its next step and goes back to the queue."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        _LIVE_WORKERS.discard(self.worker_id)

    def wake(self) -> None:
        self._wake.set()

    def ready(self) -> bool:
        return self.runner.loaded and self._thread is not None and self._thread.is_alive() and \
            not self._stopping.is_set()

    # --- the worker
    def _recover(self) -> None:
        for job_id, state in self.store.requeue_expired(dead_workers=dead_local_workers(self.store.running_workers())):
            job = self.store.get(job_id)
            log.warning("job %s was running on a worker that stopped: now %s (attempt %d of %d)%s", job_id, state,
                        job.attempts, self.settings.max_attempts, f": {job.error}" if job.error else "")
            if job.final:
                shutil.rmtree(upload_dir(self.settings, job_id), ignore_errors=True)

    def _loop(self) -> None:
        try:
            seconds = self.runner.load()
        except Exception as e:  # noqa: BLE001 - reported by /readyz and the log; the process stays up
            self.load_error = one_line(e)
            log.error("the model could not be loaded: %s", self.load_error)
            return
        if self.metrics is not None:
            self.metrics.model_loaded(seconds, str(self.runner.pipe.device))
        while not self._stopping.is_set():
            self._recover()
            job = self.store.claim(self.worker_id, self.settings.lease_s)
            if job is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> None:
        waited = job.started_at - job.created_at
        log.info("job %s started (attempt %d, waited %.2f s in the queue): %s", job.id, job.attempts, waited,
                 _describe(job.request))
        keep = threading.Event()  # cleared when the worker must stop this job (cancelled, lease lost, shutdown)
        keep.set()
        times: list[float] = []

        def on_step(step: int, total: int) -> None:
            now = time.perf_counter()
            if times and self.metrics is not None:
                self.metrics.observe_step(now - times[-1])
            times.append(now)
            per_step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
            eta = None if per_step is None else round(per_step * (total - step), 3)
            if not self.store.progress(job.id, self.worker_id, step, total, eta, self.settings.lease_s):
                keep.clear()

        def should_stop() -> bool:
            return not keep.is_set() or self._stopping.is_set()

        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(job.id, keep, beating), daemon=True)
        heart.start()
        try:
            paths = self.runner.run(job, on_step, should_stop)
        except Cancelled as e:
            self._stopped(job, str(e))
        except Exception as e:  # noqa: BLE001 - the job fails with one line; the worker goes on
            if self.store.finish(job.id, self.worker_id, "error", error=one_line(e)):
                log.error("job %s failed after %.2f s: %s", job.id, time.time() - job.started_at, one_line(e))
                shutil.rmtree(upload_dir(self.settings, job.id), ignore_errors=True)
        else:
            names = {kind: os.path.basename(p) for kind, p in paths.items()}
            if self.store.finish(job.id, self.worker_id, "complete", outputs=names):
                done = self.store.get(job.id)
                seconds = done.finished_at - done.started_at
                if self.metrics is not None:
                    self.metrics.observe_generation(size_label(job.request), seconds)
                log.info("job %s complete in %.2f s (%d steps): %s", job.id, seconds, len(times),
                         self.settings.outputs / job.id)
                shutil.rmtree(upload_dir(self.settings, job.id), ignore_errors=True)
            else:
                log.warning("job %s: this worker lost its lease while writing; the job's result is the other run's",
                            job.id)
        finally:
            beating.set()
            heart.join()

    def _stopped(self, job: Job, why: str) -> None:
        """The job stopped at a step: shutdown -> back to the queue; a cancel -> cancelled; a lost lease -> leave it
        (another worker has it now)."""
        if self._stopping.is_set() and not self.store.get(job.id).cancel_requested:
            if self.store.release(job.id, self.worker_id, f"server stopping ({why})"):
                log.info("job %s back in the queue: the server is stopping (%s)", job.id, why)
            return
        if self.store.finish(job.id, self.worker_id, "cancelled", error=None):
            log.info("job %s cancelled: %s", job.id, why)
            shutil.rmtree(upload_dir(self.settings, job.id), ignore_errors=True)
        else:
            log.warning("job %s: this worker lost its lease (%s); it is not this worker's any more", job.id, why)

    def _heartbeat(self, job_id: str, keep: threading.Event, done: threading.Event) -> None:
        while not done.wait(self.settings.lease_s / 3):
            if not self.store.heartbeat(job_id, self.worker_id, self.settings.lease_s):
                keep.clear()


def _describe(request: dict) -> str:
    prompt = request["prompt"] if len(request["prompt"]) <= 60 else request["prompt"][:57] + "..."
    return (f"{prompt!r} {request['height']}x{request['width']}x{request['num_frames']} seed {request['seed']}"
            + (f" loras {[x['name'] for x in request['loras']]}" if request.get("loras") else ""))
