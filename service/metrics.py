"""Prometheus metrics, named in the style of Triton's, on a per-app registry.

Each app owns a `Metrics` (tests build many apps, so nothing is registered globally). The
request middleware (service/logs.py) calls `observe_request`, the batcher calls
`observe_batch` after each onnxruntime run, and the stream handler calls the session hooks.
Label children are cached, so a request costs two dictionary lookups and three updates.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from service.batching import BatchStats
from service.routes.documented import REST_READ
from service.state import state_of

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_STEP_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.request_success = Counter(
            "gru_request_success_total",
            "HTTP requests answered with a status below 400, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.request_failure = Counter(
            "gru_request_failure_total",
            "HTTP requests answered with a status of 400 or above, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gru_request_duration_seconds",
            "Time from request start to the end of the response, by route (HTTP only)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_rejected = Counter(
            "gru_request_rejected_total",
            "Requests refused with 503 (queue full or model not ready), by route",
            ["route"],
            registry=r,
        )
        self.queue_duration = Histogram(
            "gru_queue_duration_seconds",
            "Time a row waited in the batcher queue before its onnxruntime run",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "gru_compute_duration_seconds",
            "Duration of one onnxruntime run (all rows of a batch)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "gru_batch_rows",
            "Rows per onnxruntime run (count = runs, sum = rows)",
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.batch_steps = Histogram(
            "gru_batch_steps",
            "Padded time steps per onnxruntime run",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.queue_rows = Gauge(
            "gru_queue_rows", "Rows waiting in the batcher queue now", registry=r
        )
        self.inflight_rows = Gauge(
            "gru_inflight_rows", "Rows of admitted requests not yet answered", registry=r
        )
        self.sessions_active = Gauge(
            "gru_stream_sessions_active", "Open websocket stream sessions", registry=r
        )
        self.sessions_opened = Counter(
            "gru_stream_sessions_opened_total", "Stream sessions opened", registry=r
        )
        self.sessions_closed = Counter(
            "gru_stream_sessions_closed_total",
            "Stream sessions ended by the client or the connection",
            registry=r,
        )
        self.sessions_evicted = Counter(
            "gru_stream_sessions_evicted_total",
            "Stream sessions ended by the server (idle timeout, shutdown, 1008 errors, 1011 failure)",
            registry=r,
        )
        self.model_info = Gauge(
            "gru_model_info",
            "The served model (always 1)",
            ["name", "version", "variant", "provider"],
            registry=r,
        )
        labels = ["model", "version"]
        self.model_rows = Counter(
            "gru_model_rows_total", "Rows run by onnxruntime, per model version", labels, registry=r
        )
        self.model_runs = Counter(
            "gru_model_runs_total", "onnxruntime runs, per model version", labels, registry=r
        )
        self.model_compute = Counter(
            "gru_model_compute_seconds_total",
            "Seconds spent in onnxruntime runs, per model version",
            labels,
            registry=r,
        )
        self.model_queue_rows = Gauge(
            "gru_model_queue_rows",
            "Rows waiting in a model version's queue now",
            labels,
            registry=r,
        )
        self.model_inflight_rows = Gauge(
            "gru_model_inflight_rows",
            "Rows of admitted requests not yet answered, per model version",
            labels,
            registry=r,
        )
        self._bound: dict[tuple[str, str], tuple] = {}  # (name, version) -> (runtime, core)
        self._ok: dict[tuple[str, int], Callable[[], None]] = {}
        self._fail: dict[tuple[str, int], Callable[[], None]] = {}
        self._duration: dict[str, Callable[[float], None]] = {}

    # ---- wiring -----------------------------------------------------------------------------------
    def bind(self, runtime, core) -> None:
        """Attach a served model version: its info, and gauges read at scrape time (free per
        request). The server-wide gauges sum over every bound version."""
        m = runtime.meta
        self._bound[(m.name, m.version)] = (runtime, core)
        self.model_info.labels(m.name, m.version, m.variant, runtime.placement.provider).set(1)
        self.model_queue_rows.labels(m.name, m.version).set_function(lambda: core.batcher.queued)
        self.model_inflight_rows.labels(m.name, m.version).set_function(lambda: core.inflight_rows)
        # tuple(): the probe port's thread may scrape while the event loop loads a model
        bound = self._bound
        self.queue_rows.set_function(
            lambda: sum(c.batcher.queued for _, c in tuple(bound.values()))
        )
        self.inflight_rows.set_function(
            lambda: sum(c.inflight_rows for _, c in tuple(bound.values()))
        )

    def unbind(self, runtime) -> None:
        """A model version was unloaded: its gauges go (its counters keep their totals)."""
        m = runtime.meta
        if self._bound.pop((m.name, m.version), None) is None:
            return
        self.model_info.remove(m.name, m.version, m.variant, runtime.placement.provider)
        self.model_queue_rows.remove(m.name, m.version)
        self.model_inflight_rows.remove(m.name, m.version)

    def batch_observer(self, name: str, version: str) -> Callable[[BatchStats], None]:
        """The batcher observer of one model version: the server-wide histograms, and that
        version's counters (label children looked up once, here)."""
        rows = self.model_rows.labels(name, version).inc
        runs = self.model_runs.labels(name, version).inc
        compute = self.model_compute.labels(name, version).inc
        observe_batch = self.observe_batch

        def observe(stats: BatchStats) -> None:
            observe_batch(stats)
            rows(stats.rows)
            runs()
            compute(stats.compute_s)

        return observe

    # ---- hot path -----------------------------------------------------------------------------------
    def observe_request(self, route: str, status: int, seconds: float | None) -> None:
        """One finished request; `seconds` None leaves the latency histogram alone (a
        websocket's lifetime is not a request latency)."""
        key = (route, status)
        table = self._ok if status < 400 else self._fail
        inc = table.get(key)
        if inc is None:
            family = self.request_success if status < 400 else self.request_failure
            inc = table[key] = family.labels(route, str(status)).inc
        inc()
        if seconds is not None:
            observe = self._duration.get(route)
            if observe is None:
                observe = self._duration[route] = self.request_duration.labels(route).observe
            observe(seconds)
        if status == 503:
            self.request_rejected.labels(route).inc()

    def observe_batch(self, stats: BatchStats) -> None:
        """The batcher's observer: called on the event loop after each onnxruntime run."""
        for wait in stats.queue_wait_s:
            self.queue_duration.observe(wait)
        self.compute_duration.observe(stats.compute_s)
        self.batch_rows.observe(stats.rows)
        self.batch_steps.observe(stats.steps)

    # ---- stream sessions (called by the websocket handler) ---------------------------------------
    def session_opened(self) -> None:
        self.sessions_opened.inc()
        self.sessions_active.inc()

    def session_closed(self, evicted: bool = False) -> None:
        (self.sessions_evicted if evicted else self.sessions_closed).inc()
        self.sessions_active.dec()

    def stream_rejected(self, route: str = "/v1/stream") -> None:
        """A stream refused for capacity (the websocket's 503)."""
        self.request_rejected.labels(route).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses=REST_READ)
async def get_metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
