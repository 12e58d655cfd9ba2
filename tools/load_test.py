#!/usr/bin/env python
"""Load-test an ltx-serve server: N concurrent clients on loopback submit, follow and cancel jobs.

Each client runs its jobs one after another (so N clients keep up to N jobs in flight): submit, poll until the job
is final, and for a `--cancel-fraction` of the jobs send DELETE (alternately at once, while the job is queued, and
once it is seen running). Per client count it prints jobs/min (completed jobs / wall time), p50 / p95 latency
(submit -> complete), the server's own p50 run time (its start -> finish: the rest of the latency is queueing,
HTTP and polling) and the cancels honoured. Then it checks every job: it ended in exactly one final state
(complete | error | cancelled, the same on a second read after all clients finished), a complete job's mp4 is
served (an ISO-BMFF file), a cancelled or failed job's is not; with `--spawn` (the server is ours alone) the
server's `ltx_generations_total` counters must have grown by exactly the outcomes the clients saw. Any failed check,
or a job not final by `--timeout`, exits 1.

  python tools/load_test.py --spawn --clients 1 4 16 --jobs-per-client 2 --cancel-fraction 0.25 --baseline
  python tools/load_test.py --url http://127.0.0.1:8000 --clients 4 --jobs-per-client 3 --key $KEY --json out.json

`--baseline` runs the same completed-job requests through `ltx.load_pipeline()` in a loop in this process (the
mp4 written as the server does) and prints the server's overhead: baseline jobs/min / server jobs/min at one client
(1.0 = no overhead) and the p50 latency ratio. `--spawn` starts `python -m infer.serve` (the embedded backend) on a
free loopback port with a fresh output folder and stops it at the end; its extra overrides go in `--server-arg`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINAL = ("complete", "error", "cancelled")
PROMPTS = ("a red circle moves to the left", "a green square moves up", "a blue triangle moves to the right",
           "a yellow circle moves down")
TINY = {"height": 64, "width": 64, "num_frames": 9, "steps": 8}  # the demo at its smallest useful size


class CheckFailed(Exception):
    pass


@dataclass
class JobRecord:
    id: str
    request: dict
    submitted: float
    cancel: str | None = None  # None, "queued" (DELETE right after submit) or "running" (once seen running)
    cancel_sent: bool = False
    state: str | None = None  # the first final state seen
    finished: float | None = None
    error: str | None = None
    run_s: float | None = None  # the server's own start -> finish of the job (its worker's time, files included)


@dataclass
class LevelResult:
    clients: int
    jobs: int
    wall_s: float
    states: dict[str, int]
    cancels_sent: int
    cancels_honoured: int
    jobs_per_min: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    run_p50_s: float | None  # the server's start -> finish: latency minus this is queueing, HTTP and polling
    failures: list[str] = field(default_factory=list)


class Client:
    """HTTP with the stdlib only (the load test runs where the server runs; nothing to install)."""

    def __init__(self, url: str, key: str | None, timeout: float = 30.0):
        self.url, self.key, self.timeout = url.rstrip("/"), key, timeout

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, method: str, path: str, body: dict | None = None, ok=(200, 201, 202)) -> dict:
        status, raw = self.call(method, path, body)
        if status not in ok:
            raise CheckFailed(f"{method} {path} -> {status}: {raw[:300].decode(errors='replace')}")
        return json.loads(raw) if raw else {}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def cancel_plan(total: int, fraction: float) -> list[str | None]:
    """Which of `total` jobs get a DELETE, spread evenly, alternating 'queued' and 'running' cancels."""
    plan: list[str | None] = [None] * total
    marked = 0
    for i in range(total):
        if math.floor((i + 1) * fraction) > math.floor(i * fraction):
            plan[i] = ("queued", "running")[marked % 2]
            marked += 1
    return plan


def run_client(client: Client, jobs: list[JobRecord], requests: list[dict], poll_s: float, deadline: float,
               errors: list[str]) -> None:
    for record, request in zip(jobs, requests, strict=True):
        try:
            record.submitted = time.perf_counter()
            created = client.json("POST", "/v1/jobs", request, ok=(200, 201))
            record.id = created["id"]
            if record.cancel == "queued":
                client.json("DELETE", f"/v1/jobs/{record.id}", ok=(200, 202, 204, 409))
                record.cancel_sent = True
            while time.perf_counter() < deadline:
                job = client.json("GET", f"/v1/jobs/{record.id}")
                if record.cancel == "running" and not record.cancel_sent and job["state"] == "running":
                    client.json("DELETE", f"/v1/jobs/{record.id}", ok=(200, 202, 204, 409))
                    record.cancel_sent = True
                if job["state"] in FINAL:
                    record.state, record.finished, record.error = job["state"], time.perf_counter(), job.get("error")
                    if job.get("started_at") and job.get("finished_at"):
                        record.run_s = job["finished_at"] - job["started_at"]
                    break
                time.sleep(poll_s)
            else:
                return  # past the deadline: the remaining jobs stay unfinished and fail the check
        except (CheckFailed, OSError, KeyError, ValueError) as e:
            errors.append(f"client error on job {record.id or '(not submitted)'}: {e}")
            return


def run_level(client_factory, clients: int, jobs_per_client: int, base_request: dict, cancel_fraction: float,
              poll_s: float, timeout_s: float, seed: int) -> tuple[LevelResult, list[JobRecord]]:
    total = clients * jobs_per_client
    plan = cancel_plan(total, cancel_fraction)
    rng = random.Random(seed)
    requests = [{**base_request, "prompt": PROMPTS[i % len(PROMPTS)], "seed": rng.randrange(2**31)}
                for i in range(total)]
    records = [JobRecord("", requests[i], 0.0, cancel=plan[i]) for i in range(total)]
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + timeout_s
    threads = [threading.Thread(target=run_client, daemon=True,
                                args=(client_factory(), records[c::clients], requests[c::clients], poll_s, deadline,
                                      errors))
               for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()) + 5)
    wall = time.perf_counter() - start
    states = {s: sum(r.state == s for r in records) for s in (*FINAL, None)}
    latencies = [r.finished - r.submitted for r in records if r.state == "complete"]
    result = LevelResult(
        clients=clients, jobs=total, wall_s=round(wall, 3),
        states={("unfinished" if s is None else s): n for s, n in states.items()},
        cancels_sent=sum(r.cancel_sent for r in records),
        cancels_honoured=sum(r.cancel_sent and r.state == "cancelled" for r in records),
        jobs_per_min=round(60 * states["complete"] / wall, 3),
        latency_p50_s=_round(percentile(latencies, 0.5)), latency_p95_s=_round(percentile(latencies, 0.95)),
        run_p50_s=_round(percentile([r.run_s for r in records if r.state == "complete" and r.run_s], 0.5)),
        failures=errors)
    return result, records


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def check_jobs(client: Client, records: list[JobRecord]) -> list[str]:
    """Each job: final, the same final state on a second read, its mp4 served iff complete."""
    failures = []
    for r in records:
        if not r.id:
            failures.append("a job was never submitted")
            continue
        if r.state is None:
            failures.append(f"job {r.id}: not final by the deadline")
            continue
        job = client.json("GET", f"/v1/jobs/{r.id}")
        if job["state"] != r.state:
            failures.append(f"job {r.id}: final state changed from {r.state} to {job['state']}")
        if r.state == "error" and not r.cancel_sent:
            failures.append(f"job {r.id}: error: {r.error}")
        status, body = client.call("GET", f"/v1/jobs/{r.id}/video")
        if r.state == "complete" and not (status == 200 and body[4:8] == b"ftyp"):
            failures.append(f"job {r.id}: complete but its video is not served as an mp4 (HTTP {status}, "
                            f"{len(body)} bytes)")
        if r.state != "complete" and status == 200:
            failures.append(f"job {r.id}: {r.state} but a video is served")
        if r.cancel_sent and r.state not in ("cancelled", "complete"):
            failures.append(f"job {r.id}: cancelled but ended {r.state}")
    return failures


OUTCOME_LINE = re.compile(r'^ltx_generations_total\{([^}]*)\}\s+([0-9.e+]+)$', re.M)


def outcome_counts(client: Client) -> dict[str, float]:
    """`ltx_generations_total` by its `outcome` label, summed over the other labels (model, size)."""
    status, raw = client.call("GET", "/metrics")
    if status != 200:
        raise CheckFailed(f"GET /metrics -> {status}")
    counts: dict[str, float] = {}
    for labels, value in OUTCOME_LINE.findall(raw.decode()):
        outcome = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("outcome")
        if outcome is not None:
            counts[outcome] = counts.get(outcome, 0.0) + float(value)
    return counts


def check_counters(before: dict, after: dict, records: list[JobRecord]) -> list[str]:
    failures = []
    for outcome in FINAL:
        seen = sum(r.state == outcome for r in records)
        grown = after.get(outcome, 0.0) - before.get(outcome, 0.0)
        if grown != seen:
            failures.append(f"ltx_generations_total{{outcome={outcome!r}}} grew by {grown:g}; the clients saw {seen}"
                            " (a job counted twice or lost)")
    return failures


# ---- the server (--spawn) and the in-process baseline ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(out_dir: Path, extra: list[str], key: str | None, ready_s: float = 180.0):
    port = free_port()
    cmd = [sys.executable, "-m", "infer.serve", "host=127.0.0.1", f"port={port}", f"output_dir={out_dir}",
           *([f"+api_keys.loadtest={key}"] if key else []), *extra]
    log = open(out_dir / "server.log", "wb")  # noqa: SIM115 (closed with the server)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    url = f"http://127.0.0.1:{port}"
    probe = Client(url, None, timeout=2)
    end = time.monotonic() + ready_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise CheckFailed(f"the server exited with {proc.returncode}; see {out_dir / 'server.log'}:\n"
                              + (out_dir / "server.log").read_text()[-2000:])
        try:
            if probe.call("GET", "/readyz")[0] == 200:
                return proc, log, url
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise CheckFailed(f"the server was not ready within {ready_s:.0f} s; see {out_dir / 'server.log'}")


def stop_server(proc, log) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def run_baseline(requests: list[dict], out_dir: Path, model: str | None, device: str) -> dict:
    """The same requests through the Python API in a loop: load once, then generate and write each mp4 (at the
    preset's frame rate when the request gives none, as the server does)."""
    import torch

    import ltx
    from ltx.core.media import write_mp4

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()
    pipe = ltx.load_pipeline(model=model, device=device)
    fps = ltx.api.preset_of(model).generation.fps
    load_s = time.perf_counter() - t0
    pipe(requests[0]["prompt"], seed=0, **pipeline_kwargs(requests[0]))  # warm-up, as the server's first job
    times = []
    start = time.perf_counter()
    for i, req in enumerate(requests):
        t = time.perf_counter()
        out = pipe(req["prompt"], seed=req["seed"], **pipeline_kwargs(req))
        write_mp4(out_dir / f"baseline_{i:03d}.mp4", out.frames[0], req.get("frame_rate", fps))
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"jobs": len(requests), "load_s": round(load_s, 3), "wall_s": round(wall, 3),
            "jobs_per_min": round(60 * len(requests) / wall, 3), "latency_p50_s": _round(percentile(times, 0.5)),
            "latency_p95_s": _round(percentile(times, 0.95))}


def pipeline_kwargs(req: dict) -> dict:
    """A request's sizes and sampling in the Python API's names."""
    names = {"height": "height", "width": "width", "num_frames": "num_frames", "frame_rate": "frame_rate",
             "steps": "num_inference_steps", "guidance_scale": "guidance_scale"}
    return {names[k]: v for k, v in req.items() if k in names}


# ---- the report -----------------------------------------------------------------------------------------------

def table(levels: list[LevelResult], baseline: dict | None) -> str:
    head = ("| clients | jobs | complete | cancelled | error | cancels honoured | wall s | jobs/min | p50 s | p95 s "
            "| server run p50 s |")
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for lv in levels:
        rows.append(f"| {lv.clients} | {lv.jobs} | {lv.states['complete']} | {lv.states['cancelled']} | "
                    f"{lv.states['error']} | {lv.cancels_honoured} / {lv.cancels_sent} | {lv.wall_s:.1f} | "
                    f"{lv.jobs_per_min:.1f} | {_fmt(lv.latency_p50_s)} | {_fmt(lv.latency_p95_s)} | "
                    f"{_fmt(lv.run_p50_s)} |")
    if baseline:
        rows.append(f"| in-process loop | {baseline['jobs']} | {baseline['jobs']} | - | - | - | "
                    f"{baseline['wall_s']:.1f} | {baseline['jobs_per_min']:.1f} | {_fmt(baseline['latency_p50_s'])} "
                    f"| {_fmt(baseline['latency_p95_s'])} | {_fmt(baseline['latency_p50_s'])} |")
    return "\n".join(rows)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def overhead(levels: list[LevelResult], baseline: dict) -> dict:
    """Baseline over server at one client: throughput ratio (> 1 = the server is slower) and p50 latency ratio."""
    one = next((lv for lv in levels if lv.clients == 1), levels[0])
    return {"clients": one.clients,
            "throughput_ratio": round(baseline["jobs_per_min"] / one.jobs_per_min, 3) if one.jobs_per_min else None,
            "latency_p50_ratio": (round(one.latency_p50_s / baseline["latency_p50_s"], 3)
                                  if one.latency_p50_s and baseline["latency_p50_s"] else None)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="the server (default: --spawn one)")
    p.add_argument("--spawn", action="store_true", help="start the embedded server (python -m infer.serve) here")
    p.add_argument("--server-arg", action="append", default=[], help="an extra Hydra override for --spawn")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="concurrent client counts, one run each")
    p.add_argument("--jobs-per-client", type=int, default=2)
    p.add_argument("--cancel-fraction", type=float, default=0.0, help="share of jobs cancelled, in [0, 1]")
    p.add_argument("--request", default=json.dumps(TINY), help="JSON fields of every request (prompt/seed are set)")
    p.add_argument("--key", help="an API key (bearer); with --spawn, the server is started with it")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between polls of a job")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per client count before jobs count as lost")
    p.add_argument("--max-jobs", type=int, default=400, help="refuse a run of more jobs in all than this")
    p.add_argument("--warmup", type=int, default=1, help="jobs run (and checked) before the timed runs: the first "
                   "generation of a process pays one-time costs")
    p.add_argument("--baseline", action="store_true", help="also run the completed requests in-process")
    p.add_argument("--model", help="the model the baseline loads (default: the demo; the server's `model`)")
    p.add_argument("--device", default="auto", help="the baseline's device (the server's `device`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    if bool(args.url) == bool(args.spawn):
        p.error("give exactly one of --url URL or --spawn")
    if not 0 <= args.cancel_fraction <= 1:
        p.error(f"--cancel-fraction must be in [0, 1], got {args.cancel_fraction}")
    if any(c < 1 for c in args.clients) or args.jobs_per_client < 1:
        p.error("--clients and --jobs-per-client must be >= 1")
    total = sum(args.clients) * args.jobs_per_client
    if total > args.max_jobs:
        p.error(f"{total} jobs in all is over --max-jobs {args.max_jobs}; lower --clients / --jobs-per-client")
    try:
        args.request = json.loads(args.request)
    except json.JSONDecodeError as e:
        p.error(f"--request must be a JSON object: {e}")
    if not isinstance(args.request, dict):
        p.error("--request must be a JSON object, e.g. '{\"height\": 64, \"width\": 64}'")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ltx_load_test_"))
    server = None
    results: dict = {"request": args.request, "levels": [], "failures": []}
    try:
        if args.spawn:
            same = [*([f"model={args.model}"] if args.model else []), f"device={args.device}"]  # as the baseline
            proc, log, url = spawn_server(workdir, [*same, *args.server_arg], args.key)
            server = (proc, log)
        else:
            url = args.url
        results["url"] = url
        probe = Client(url, args.key)
        all_records: list[JobRecord] = []
        if args.warmup:
            _, warm = run_level(lambda: Client(url, args.key), 1, args.warmup, args.request, 0.0, args.poll,
                                args.timeout, args.seed - 1)
            results["failures"] += check_jobs(probe, warm)
        before = outcome_counts(probe) if args.spawn else None
        for i, clients in enumerate(args.clients):
            level, records = run_level(lambda: Client(url, args.key), clients, args.jobs_per_client, args.request,
                                       args.cancel_fraction, args.poll, args.timeout, args.seed + i)
            level.failures += check_jobs(probe, records)
            results["levels"].append(level)
            all_records += records
            print(f"{clients} clients: {level.states} in {level.wall_s:.1f} s", flush=True)
        if args.spawn:
            results["failures"] += check_counters(before, outcome_counts(probe), all_records)
    except CheckFailed as e:
        results["failures"].append(str(e))
    finally:
        if server:
            stop_server(*server)
    levels = results["levels"]
    if args.baseline and levels:
        completed = [r.request for r in all_records if r.state == "complete"] or [all_records[0].request]
        results["baseline"] = run_baseline(completed, workdir, args.model, args.device)
        results["overhead"] = overhead(levels, results["baseline"])
    print(table(levels, results.get("baseline")))
    if "overhead" in results:
        o = results["overhead"]
        print(f"server overhead at {o['clients']} client(s): in-process jobs/min / server jobs/min = "
              f"{o['throughput_ratio']}, server p50 / in-process p50 = {o['latency_p50_ratio']}")
    failures = results["failures"] + [f for lv in levels for f in lv.failures]
    results["ok"] = not failures
    for f in failures:
        print(f"FAIL: {f}")
    if args.json:
        from ltx.core.checkpoint import write_json  # atomic; imports torch, so only when asked for

        write_json(args.json, {**results, "levels": [asdict(lv) for lv in levels]}, overwrite=True)
    print("ok: every job ended in exactly one final state with its file" if not failures else
          f"{len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
