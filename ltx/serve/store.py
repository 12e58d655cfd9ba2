"""The job store: one SQLite file (WAL) and the only place a job's state changes.

States: queued -> running -> complete | error | cancelled, and queued -> cancelled. Every transition is one
`BEGIN IMMEDIATE` transaction whose UPDATE names the state it leaves (and, for a running job, the worker holding
it), so it happens exactly once even with several processes on the same file (the embedded worker, Ray replicas).

A running job holds a lease (`lease_until`) that its worker renews (`heartbeat` / `progress`). `requeue_expired`
puts a job whose lease ran out (its worker died) back in the queue with its attempt count kept, or marks it
`error` with a reason after `max_attempts`; `finish` succeeds only for the worker holding the job, so a job is
never completed twice.

Fair queueing (`claim`): the next job goes to the owner served least recently (owners never served first, ties
by the earliest submission); within one owner, first in first out. With API keys an owner is a key; without,
every job has the owner "" and the queue is plain FIFO.

Every transition also appends a row to `events` (job, event, worker, time): the history a test (or an operator)
counts runs with.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATES = ("queued", "running", "complete", "error", "cancelled")
FINAL = ("complete", "error", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    eta_s REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    outputs TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, last_served INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    worker_id TEXT,
    at REAL NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
"""


@dataclass
class Job:
    id: str
    owner: str
    state: str
    request: dict
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    total_steps: int | None = None
    eta_s: float | None = None
    error: str | None = None
    attempts: int = 0
    worker_id: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    outputs: dict = field(default_factory=dict)  # {"video": "video.mp4", ...}: file names in <output_dir>/<id>/
    queue_position: int | None = None  # 0 = the next job to run (queued jobs only; set by get / list)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def public(self) -> dict:
        """The API's view (GET /v1/jobs/{id}): no worker, lease or owner internals."""
        d = asdict(self)
        for k in ("worker_id", "lease_until", "owner"):
            d.pop(k)
        return d


class JobStore:
    """SQLite job store at `path` (created with its folder); safe across threads and processes."""

    def __init__(self, path: str | Path, *, max_attempts: int = 3):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, kept open: closing the last connection of a WAL database checkpoints it
        (an fsync, ~30 ms), which a per-step progress write must not pay. A forked child opens its own."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
            local.db.row_factory = sqlite3.Row
            local.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a killed process
            local.pid = os.getpid()
        yield local.db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before anything is read (BEGIN IMMEDIATE: no lost updates)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state of the database (a deferred read transaction: WAL readers never block
        the writer). Without it a job claimed between reading its row and the queue order was "queued" and
        missing from the queue at once."""
        with self._connect() as db:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    @staticmethod
    def _event(db: sqlite3.Connection, job_id: str, event: str, worker_id: str | None = None,
               detail: str | None = None) -> None:
        db.execute("INSERT INTO events (job_id, event, worker_id, at, detail) VALUES (?, ?, ?, ?, ?)",
                   (job_id, event, worker_id, time.time(), detail))

    # ------------------------------------------------------------------------------------------ transitions

    def submit(self, request: dict, owner: str = "", job_id: str | None = None,
               total_steps: int | None = None) -> Job:
        """A new queued job for `request` (a JSON-able dict, already validated) of `total_steps` steps."""
        job_id = job_id or uuid.uuid4().hex
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, owner, state, request, created_at, total_steps) VALUES "
                       "(?, ?, 'queued', ?, ?, ?)", (job_id, owner, json.dumps(request), time.time(), total_steps))
            self._event(db, job_id, "queued")
        return self.get(job_id)

    def claim(self, worker_id: str, lease_s: float) -> Job | None:
        """The next queued job (the fair order in the module docstring), now running for `worker_id` with a lease
        of `lease_s` seconds and its attempt count + 1; None when nothing is queued."""
        with self._transaction() as db:
            order = _fair_order(db, limit=1)
            if not order:
                return None
            job_id, owner = order[0]
            now = time.time()
            db.execute("UPDATE jobs SET state='running', worker_id=?, lease_until=?, started_at=?, attempts=attempts+1,"
                       " step=0, eta_s=NULL WHERE id=? AND state='queued'", (worker_id, now + lease_s, now, job_id))
            served = db.execute("SELECT COALESCE(MAX(last_served), 0) + 1 FROM owners").fetchone()[0]
            db.execute("INSERT INTO owners (owner, last_served) VALUES (?, ?) ON CONFLICT(owner) DO UPDATE SET "
                       "last_served=excluded.last_served", (owner, served))
            self._event(db, job_id, "started", worker_id)
        return self.get(job_id)

    def heartbeat(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Renew the lease; False when the worker should stop: it no longer holds the job (the lease expired and
        the job went back to the queue) or a cancel was requested."""
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET lease_until=? WHERE id=? AND state='running' AND worker_id=?",
                             (time.time() + lease_s, job_id, worker_id))
            return cur.rowcount == 1 and not self._cancel_requested(db, job_id)

    def progress(self, job_id: str, worker_id: str, step: int, total_steps: int | None, eta_s: float | None,
                 lease_s: float) -> bool:
        """Record step / total / ETA and renew the lease; False when the worker should stop (as `heartbeat`)."""
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET step=?, total_steps=?, eta_s=?, lease_until=? WHERE id=? AND "
                             "state='running' AND worker_id=?",
                             (step, total_steps, eta_s, time.time() + lease_s, job_id, worker_id))
            return cur.rowcount == 1 and not self._cancel_requested(db, job_id)

    @staticmethod
    def _cancel_requested(db: sqlite3.Connection, job_id: str) -> bool:
        return bool(db.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()[0])

    def finish(self, job_id: str, worker_id: str, state: str, *, outputs: dict | None = None,
               error: str | None = None) -> bool:
        """running -> `state` (complete, error or cancelled) for the worker holding the job; False (nothing
        changed) when it does not hold it any more."""
        if state not in FINAL:
            raise ValueError(f"finish: state must be one of {FINAL}, got {state!r}")
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET state=?, finished_at=?, outputs=?, error=?, eta_s=NULL, lease_until="
                             "NULL WHERE id=? AND state='running' AND worker_id=?",
                             (state, time.time(), json.dumps(outputs or {}), error, job_id, worker_id))
            if cur.rowcount == 1:
                self._event(db, job_id, state, worker_id, error)
            return cur.rowcount == 1

    def release(self, job_id: str, worker_id: str, reason: str = "worker stopped") -> bool:
        """running -> queued for the worker holding it (a clean shutdown mid-job: the job runs again later)."""
        with self._transaction() as db:
            cur = db.execute("UPDATE jobs SET state='queued', worker_id=NULL, lease_until=NULL, step=0, eta_s=NULL "
                             "WHERE id=? AND state='running' AND worker_id=?", (job_id, worker_id))
            if cur.rowcount == 1:
                self._event(db, job_id, "requeued", worker_id, reason)
            return cur.rowcount == 1

    def cancel(self, job_id: str, owner: str | None = None) -> Job | None:
        """A queued job -> cancelled now; a running one gets `cancel_requested` (its worker stops at the next
        step and finishes it as cancelled); a final one is left as it is. None: no such job (for `owner`)."""
        with self._transaction() as db:
            row = db.execute("SELECT owner, state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or (owner is not None and row["owner"] != owner):
                return None
            if row["state"] == "queued":
                db.execute("UPDATE jobs SET state='cancelled', finished_at=? WHERE id=? AND state='queued'",
                           (time.time(), job_id))
                self._event(db, job_id, "cancelled")
            elif row["state"] == "running":
                cur = db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=? AND state='running' AND "
                                 "cancel_requested=0", (job_id,))
                if cur.rowcount:
                    self._event(db, job_id, "cancel_requested")
        return self.get(job_id)

    def requeue_expired(self, now: float | None = None, dead_workers: Iterable[str] = ()) -> list[tuple[str, str]]:
        """Running jobs whose lease ran out (or whose worker is in `dead_workers`, known to be gone): back to
        queued, or `error` with a reason once they have had max_attempts runs, or `cancelled` when a cancel was
        requested. Returns [(job id, new state)]."""
        now = time.time() if now is None else now
        dead = list(dead_workers)
        changed = []
        with self._transaction() as db:
            marks = ",".join("?" * len(dead))
            rows = db.execute("SELECT id, attempts, worker_id, cancel_requested FROM jobs WHERE state='running' AND "
                              f"(lease_until < ? OR worker_id IN ({marks}))", (now, *dead)).fetchall()
            for r in rows:
                why = f"its worker {r['worker_id']} stopped (lease expired) during attempt {r['attempts']}"
                if r["cancel_requested"]:
                    state, detail = "cancelled", why
                elif r["attempts"] >= self.max_attempts:
                    state = "error"
                    detail = (f"{why}; not retried: {r['attempts']} of max_attempts={self.max_attempts} attempts "
                              "used")
                else:
                    state, detail = "queued", why
                db.execute("UPDATE jobs SET state=?, worker_id=NULL, lease_until=NULL, step=0, eta_s=NULL, "
                           "finished_at=?, error=? WHERE id=? AND state='running' AND worker_id IS ?",
                           (state, None if state == "queued" else now, detail if state == "error" else None,
                            r["id"], r["worker_id"]))
                self._event(db, r["id"], "requeued" if state == "queued" else state, r["worker_id"], detail)
                changed.append((r["id"], state))
        return changed

    # ------------------------------------------------------------------------------------------ reading

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job (None if absent, or not `owner`'s when an owner is given), with its queue position."""
        with self._snapshot() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or (owner is not None and row["owner"] != owner):
                return None
            job = _job(row)
            if job.state == "queued":
                job.queue_position = [i for i, _ in _fair_order(db)].index(job_id)
            return job

    def list(self, owner: str | None = None, limit: int = 100, states: Iterable[str] | None = None) -> list[Job]:
        """Jobs newest first (all owners when `owner` is None)."""
        where, args = [], []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if states is not None:
            states = list(states)
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY seq DESC LIMIT ?"
        with self._snapshot() as db:
            jobs = [_job(r) for r in db.execute(sql, (*args, limit)).fetchall()]
            if any(j.state == "queued" for j in jobs):
                position = {job_id: i for i, (job_id, _) in enumerate(_fair_order(db))}
                for j in jobs:
                    j.queue_position = position.get(j.id)
        return jobs

    def queue_order(self) -> list[str]:
        """Queued job ids in the order they will run."""
        with self._connect() as db:
            return [i for i, _ in _fair_order(db)]

    def counts(self) -> dict[str, int]:
        """{state: number of jobs} for every state."""
        with self._connect() as db:
            found = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {s: found.get(s, 0) for s in STATES}

    def running_workers(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT worker_id FROM jobs WHERE state='running'")]

    def events(self, job_id: str | None = None) -> list[dict]:
        """The transition history, oldest first: {job_id, event, worker_id, at, detail}."""
        sql = "SELECT job_id, event, worker_id, at, detail FROM events" + (" WHERE job_id=?" if job_id else "")
        with self._connect() as db:
            return [dict(r) for r in db.execute(sql + " ORDER BY n", (job_id,) if job_id else ())]


def _job(row: sqlite3.Row) -> Job:
    d = dict(row)
    d.pop("seq")
    d["request"] = json.loads(d["request"])
    d["outputs"] = json.loads(d["outputs"]) if d["outputs"] else {}
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)


def _fair_order(db: sqlite3.Connection, limit: int | None = None) -> list[tuple[str, str]]:
    """Queued (job id, owner) in run order: repeatedly the owner served least recently (never served = 0; ties:
    the owner whose oldest queued job is oldest) gives its oldest queued job, and counts as served last."""
    rows = db.execute("SELECT id, owner, seq FROM jobs WHERE state='queued' ORDER BY seq").fetchall()
    served = dict(db.execute("SELECT owner, last_served FROM owners").fetchall())
    queues: dict[str, list[tuple[str, int]]] = {}
    for r in rows:
        queues.setdefault(r["owner"], []).append((r["id"], r["seq"]))
    heap = [(served.get(owner, 0), jobs[0][1], owner) for owner, jobs in queues.items()]
    heapq.heapify(heap)
    counter = max(served.values(), default=0)
    order = []
    while heap and (limit is None or len(order) < limit):
        _, _, owner = heapq.heappop(heap)
        job_id, _ = queues[owner].pop(0)
        order.append((job_id, owner))
        counter += 1
        if queues[owner]:
            heapq.heappush(heap, (counter, queues[owner][0][1], owner))
    return order
