"""Prometheus metrics of the service, in a registry of its own (one per app).

Several server processes (the replicas of ``slm serve --engine ray``) share their numbers through
prometheus_client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is
imported, every process writes its values to files there and /metrics adds up all of them, whichever
process answers (gauges by their ``multiprocess_mode``: ``slm_ready`` is 1 once every process is ready,
``slm_replicas`` counts the processes). The ``process_*`` metrics then describe the process that
answered. Without the variable (one Uvicorn process) nothing changes.
"""

from __future__ import annotations

import os
import warnings

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    """The folder this process's metric values are written to, or None when they live in memory.

    prometheus_client decides once, when imported: files if ``PROMETHEUS_MULTIPROC_DIR`` was set then.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # prometheus_client copies the old lower-case name here


class _InfoGauge(Gauge):
    """A gauge whose ``remove`` also works across processes: there it sets the series to 0 instead.

    (prometheus_client cannot delete a series from the shared files; with ``livemax`` a series then
    reads 1 while any live process still has it.)
    """

    def remove(self, *labelvalues: str) -> None:
        if multiprocess_dir() is None:
            super().remove(*labelvalues)
            return
        self.labels(*labelvalues).set(0)
        with warnings.catch_warnings():  # "removal ... not implemented in multi-process mode": hence the 0
            warnings.simplefilter("ignore", UserWarning)
            super().remove(*labelvalues)


class ServiceMetrics:
    """Request counts by status, latency histograms, batch sizes, queue depth and model load info.

    An app adds its own metrics to :attr:`registry` (the support app: answers by decision).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        shared = multiprocess_dir()
        if shared is None:
            ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
            self._exposed = self.registry
        else:  # every process's files, added up, and the answering process's own process_* metrics
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, path=shared)
            ProcessCollector(registry=self._exposed)
        r = self.registry
        self.requests = Counter("slm_http_requests", "HTTP requests answered, by route and status.",
                                ["route", "method", "status"], registry=r)  # fmt: skip
        self.request_seconds = Histogram("slm_http_request_duration_seconds", "Time to answer an HTTP request.",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.in_flight = Gauge("slm_http_requests_in_flight", "HTTP requests being answered now.", registry=r,
                               multiprocess_mode="livesum")  # fmt: skip
        self.texts = Counter("slm_predicted_texts", "Texts predicted, by model.", ["model"], registry=r)
        self.rejected = Counter("slm_rejected_requests", "Predict requests refused, by model and reason.",
                                ["model", "reason"], registry=r)  # fmt: skip
        self.batch_size = Histogram("slm_batch_size_texts", "Texts per model batch.", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)  # fmt: skip
        self.batch_seconds = Histogram("slm_batch_duration_seconds", "Time to run one batch through the model.",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.queue_wait = Histogram("slm_queue_wait_seconds", "Time a request waited for its batch to start.",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.queue_depth = Gauge("slm_queue_depth_texts", "Texts waiting for a batch.", ["model"], registry=r,
                                 multiprocess_mode="livesum")  # fmt: skip
        self.model_info = _InfoGauge("slm_model_info", "A served model (value 1) and what it is.",
                                     ["model", "task", "labels", "backend", "base_model"], registry=r,
                                     multiprocess_mode="livemax")  # fmt: skip
        self.model_loaded = Gauge("slm_model_loaded_timestamp_seconds", "When the served version was loaded.",
                                  ["model"], registry=r, multiprocess_mode="livemax")  # fmt: skip
        self.reloads = Counter("slm_model_reloads", "Hot reloads of a bundle, by result.", ["model", "result"],
                               registry=r)  # fmt: skip
        self.ready = Gauge("slm_ready", "1 once every model is loaded and warmed.", registry=r,
                           multiprocess_mode="livemin")  # fmt: skip
        if shared is not None:
            self.replicas = Gauge("slm_replicas", "Server processes whose numbers this answer adds up.",
                                  registry=r, multiprocess_mode="livesum")  # fmt: skip
            self.replicas.set(1)

    def exposition(self) -> bytes:
        return generate_latest(self._exposed)

    def observer(self, model: str) -> BatchMetrics:
        return BatchMetrics(self, model)


class BatchMetrics:
    """The batcher's view of the metrics for one model (children resolved once, not per batch)."""

    def __init__(self, metrics: ServiceMetrics, model: str) -> None:
        self._size = metrics.batch_size.labels(model)
        self._seconds = metrics.batch_seconds.labels(model)
        self._wait = metrics.queue_wait.labels(model)
        self._depth = metrics.queue_depth.labels(model)
        self._texts = metrics.texts.labels(model)

    def batch(self, texts: int, seconds: float) -> None:
        self._size.observe(texts)
        self._seconds.observe(seconds)
        self._texts.inc(texts)

    def queue(self, texts: int) -> None:
        self._depth.set(texts)

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)
