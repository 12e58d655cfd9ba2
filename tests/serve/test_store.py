"""The SQLite job store: each transition happens once, leases, re-queueing after a dead worker, fair order."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from ltx.serve.store import JobStore


def test_a_job_goes_through_its_states_once(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.submit({"prompt": "a"}, owner="alice", total_steps=4)
    assert (job.state, job.queue_position, job.total_steps, job.attempts) == ("queued", 0, 4, 0)
    claimed = store.claim("w1", lease_s=30)
    assert (claimed.id, claimed.state, claimed.attempts, claimed.worker_id) == (job.id, "running", 1, "w1")
    assert store.claim("w2", lease_s=30) is None  # nothing else queued
    assert store.progress(job.id, "w1", 2, 4, 1.5, lease_s=30)
    assert (store.get(job.id).step, store.get(job.id).eta_s) == (2, 1.5)
    assert not store.progress(job.id, "w2", 3, 4, 1.0, lease_s=30)  # not w2's job: nothing recorded
    assert store.get(job.id).step == 2
    assert store.finish(job.id, "w1", "complete", outputs={"video": "video.mp4"})
    assert not store.finish(job.id, "w1", "complete")  # a second finish changes nothing
    assert not store.finish(job.id, "w1", "error", error="late")
    done = store.get(job.id)
    assert (done.state, done.outputs, done.error) == ("complete", {"video": "video.mp4"}, None)
    assert [e["event"] for e in store.events(job.id)] == ["queued", "started", "complete"]
    with pytest.raises(ValueError, match="state must be one of"):
        store.finish(job.id, "w1", "done")


def test_the_store_is_the_same_after_reopening(tmp_path):
    path = tmp_path / "jobs.sqlite"
    ids = [JobStore(path).submit({"prompt": str(i)}).id for i in range(3)]
    reopened = JobStore(path)
    assert reopened.queue_order() == ids
    assert [j.id for j in reopened.list()] == ids[::-1]  # newest first
    assert reopened.counts() == {"queued": 3, "running": 0, "complete": 0, "error": 0, "cancelled": 0}


def test_cancel_queued_is_immediate_and_running_is_requested(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a, b = store.submit({"prompt": "a"}, owner="alice"), store.submit({"prompt": "b"}, owner="alice")
    assert store.cancel(b.id, owner="bob") is None  # another owner's job: not found
    assert store.cancel(b.id, owner="alice").state == "cancelled"
    running = store.claim("w1", 30)
    assert running.id == a.id  # the cancelled job is never claimed
    assert store.claim("w1", 30) is None
    after = store.cancel(a.id)
    assert (after.state, after.cancel_requested) == ("running", True)
    assert not store.heartbeat(a.id, "w1", 30)  # the worker is told to stop
    assert not store.progress(a.id, "w1", 1, 4, None, 30)
    assert store.finish(a.id, "w1", "cancelled")
    assert store.cancel(a.id).state == "cancelled"  # final: unchanged
    assert [e["event"] for e in store.events(a.id)] == ["queued", "started", "cancel_requested", "cancelled"]


def test_an_expired_lease_requeues_then_fails_after_max_attempts(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite", max_attempts=2)
    job = store.submit({"prompt": "a"})
    store.claim("dead-1", lease_s=0.05)
    assert store.requeue_expired() == []  # the lease still holds
    time.sleep(0.1)
    assert store.requeue_expired() == [(job.id, "queued")]
    assert not store.finish(job.id, "dead-1", "complete")  # the dead worker cannot complete it any more
    again = store.claim("dead-2", lease_s=30)
    assert (again.id, again.attempts) == (job.id, 2)
    assert store.requeue_expired(dead_workers=["dead-2"]) == [(job.id, "error")]  # known dead: no waiting
    failed = store.get(job.id)
    assert failed.state == "error"
    assert "dead-2" in failed.error and "max_attempts=2" in failed.error
    assert [e["event"] for e in store.events(job.id)] == ["queued", "started", "requeued", "started", "error"]


def test_a_cancel_requested_job_of_a_dead_worker_ends_cancelled(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.submit({"prompt": "a"})
    store.claim("w", 30)
    store.cancel(job.id)
    assert store.requeue_expired(dead_workers=["w"]) == [(job.id, "cancelled")]


def test_release_puts_a_running_job_back_first_in_line(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a, b = store.submit({"prompt": "a"}), store.submit({"prompt": "b"})
    store.claim("w", 30)
    assert store.release(a.id, "w")
    assert not store.release(a.id, "w")
    assert store.queue_order() == [a.id, b.id]


def test_fair_order_round_robin_over_owners_fifo_within(tmp_path):
    """alice queues 4 jobs, then bob 2 and carol 1: after alice's first, the owners take turns, each in order."""
    store = JobStore(tmp_path / "jobs.sqlite")
    jobs = {}
    for owner, n in (("alice", 4), ("bob", 2), ("carol", 1)):
        for i in range(n):
            jobs[store.submit({"prompt": f"{owner}{i}"}, owner=owner).id] = f"{owner}{i}"
    expected = ["alice0", "bob0", "carol0", "alice1", "bob1", "alice2", "alice3"]
    assert [jobs[i] for i in store.queue_order()] == expected
    assert [store.get(i).queue_position for i in jobs] == [expected.index(jobs[i]) for i in jobs]
    ran = []
    while (job := store.claim("w", 30)) is not None:
        ran.append(job.request["prompt"])
        store.finish(job.id, "w", "complete")
        if job.request["prompt"] == "alice0":  # bob's job, queued while alice's first runs, goes next
            late = store.submit({"prompt": "dave0"}, owner="dave").id
            jobs[late] = "dave0"
    assert ran == ["alice0", "bob0", "carol0", "dave0", "alice1", "bob1", "alice2", "alice3"]


def test_an_owner_served_recently_waits_for_the_others(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    store.submit({"prompt": "a0"}, owner="alice")
    store.finish(store.claim("w", 30).id, "w", "complete")
    a1 = store.submit({"prompt": "a1"}, owner="alice")  # alice was served last
    b0 = store.submit({"prompt": "b0"}, owner="bob")  # bob never: he goes first though he queued later
    assert store.queue_order() == [b0.id, a1.id]


def _claim_all(path: str, worker: str, out) -> None:
    store = JobStore(path)
    while (job := store.claim(worker, 30)) is not None:
        assert store.finish(job.id, worker, "complete")
        out.put(job.id)


def test_workers_in_threads_and_processes_claim_each_job_exactly_once(tmp_path):
    path = str(tmp_path / "jobs.sqlite")
    store = JobStore(path)
    ids = {store.submit({"prompt": str(i)}, owner=f"o{i % 3}").id for i in range(40)}
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(path, f"p{k}", out)) for k in range(2)]
    threads = [threading.Thread(target=_claim_all, args=(path, f"t{k}", out)) for k in range(2)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join(60)
    claimed = [out.get(timeout=10) for _ in range(len(ids))]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    assert store.counts()["complete"] == len(ids)
    started = [e["job_id"] for e in store.events() if e["event"] == "started"]
    assert sorted(started) == sorted(ids)


def test_reading_a_job_claimed_meanwhile_sees_one_state(tmp_path, monkeypatch):
    """GET /v1/jobs/{id} reads the job, then the queue order for its position. A worker claiming the job between
    the two reads made it "queued" and absent from the queue at once (a 500 under load); both reads now see one
    snapshot. The claim is forced in between, from another thread (another connection)."""
    import ltx.serve.store as store_module

    store = JobStore(tmp_path / "jobs.db")
    a = store.submit({"prompt": "a"}, owner="x")
    store.submit({"prompt": "b"}, owner="x")
    real = store_module._fair_order

    def claim_in_between(db, limit=None):
        monkeypatch.setattr(store_module, "_fair_order", real)
        worker = threading.Thread(target=lambda: store.claim("w1", lease_s=60))
        worker.start()
        worker.join()
        return real(db, limit)

    monkeypatch.setattr(store_module, "_fair_order", claim_in_between)
    job = store.get(a.id)
    assert job.state == "queued" and job.queue_position == 0  # the state before the claim, consistently
    assert store.get(a.id).state == "running"  # the claim did happen
    monkeypatch.setattr(store_module, "_fair_order", claim_in_between)
    listed = {j.id: j for j in store.list()}
    assert listed[a.id].state == "running" and all(j.queue_position in (None, 0) for j in listed.values())
