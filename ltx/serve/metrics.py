"""Prometheus metrics of one server, in the app's own CollectorRegistry (GET /metrics):

    ltx_generations_total{outcome}                 counter: jobs that ended complete / error / cancelled (read
                                                   from the job store: every worker's jobs, across restarts)
    ltx_generation_duration_seconds{model,size}    histogram: start to finish of completed jobs (size "HxWxF")
    ltx_step_duration_seconds{model}               histogram: time between consecutive denoising steps
    ltx_queue_depth                                gauge: queued jobs (store)
    ltx_running_jobs                               gauge: running jobs (store)
    ltx_device_memory_bytes{device}                gauge: torch.cuda.memory_allocated on a GPU, the process RSS on CPU
    ltx_model_load_seconds{model}                  gauge: how long the resident model took to load

The histograms and the load time are observed by the worker in this process (the embedded backend).
"""

from __future__ import annotations

import os
import resource

import torch
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ltx.serve.store import FINAL, JobStore

DURATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def memory_bytes(device: str) -> float:
    """Device memory in use: allocated CUDA memory for a cuda device, else this process's resident set size."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return float(torch.cuda.memory_allocated(torch.device(device)))
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):  # not Linux: the peak RSS (KiB on Linux, bytes on macOS)
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


class _StoreCollector:
    """The counters and gauges that the job store knows exactly, read at each scrape."""

    def __init__(self, store: JobStore):
        self.store = store

    def collect(self):
        counts = self.store.counts()
        outcomes = CounterMetricFamily("ltx_generations", "Generation jobs that ended, by outcome",
                                       labels=["outcome"])
        for state in FINAL:
            outcomes.add_metric([state], counts[state])
        yield outcomes
        yield GaugeMetricFamily("ltx_queue_depth", "Jobs waiting in the queue", value=counts["queued"])
        yield GaugeMetricFamily("ltx_running_jobs", "Jobs being generated now", value=counts["running"])


class ServeMetrics:
    def __init__(self, store: JobStore, model: str, device: str = "cpu"):
        self.model = model
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(store))
        self.duration = Histogram("ltx_generation_duration_seconds", "Start to finish of completed generations",
                                  ["model", "size"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.step = Histogram("ltx_step_duration_seconds", "Time between consecutive denoising steps", ["model"],
                              buckets=STEP_BUCKETS, registry=self.registry)
        self.memory = Gauge("ltx_device_memory_bytes", "Device memory in use (CUDA allocated, or the process RSS)",
                            ["device"], registry=self.registry)
        self.load = Gauge("ltx_model_load_seconds", "Seconds the resident model took to load", ["model"],
                          registry=self.registry)
        self.set_device(device)

    def set_device(self, device: str) -> None:
        self.memory.clear()
        self.memory.labels(device=device).set_function(lambda: memory_bytes(device))

    def model_loaded(self, seconds: float, device: str) -> None:
        self.load.labels(model=self.model).set(seconds)
        self.set_device(device)

    def observe_step(self, seconds: float) -> None:
        self.step.labels(model=self.model).observe(seconds)

    def observe_generation(self, size: str, seconds: float) -> None:
        self.duration.labels(model=self.model, size=size).observe(seconds)
