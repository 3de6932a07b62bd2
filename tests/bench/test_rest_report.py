"""The REST section's report: where the service's CPU per request goes (bench/rest.py)."""

from __future__ import annotations

from bench.rest import markdown


def _row(clients: int, cpu: float, loop: float, batch: float | None) -> dict:
    return {"clients": clients, "rps": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0,
            "mean_batch_rows": batch, "server_cpu_ms_per_req": cpu,
            "loop_cpu_ms_per_req": loop}  # fmt: skip


def test_report_splits_the_cpu_per_request_at_the_most_clients():
    levels = [64, 1]  # not sorted: the sentence is about the most clients
    res = {
        "model": "m",
        "request": {"path": "/v1/forecast", "series_length": 48, "horizon": 12},
        "seconds_per_level": 4.0,
        "levels": {
            "service": [_row(64, 0.279, 0.169, 32.0), _row(1, 0.7, 0.25, 1.0)],
            "floor": [_row(64, 0.092, 0.091, None), _row(1, 0.1, 0.1, None)],
            "naive": [_row(64, 1.3, 0.28, None), _row(1, 0.7, 0.27, None)],
        },
        "memory_mb": {n: {"VmRSS": 100.0, "VmHWM": 101.0} for n in ("service", "floor", "naive")},
        "start_to_ready_s": {"median": 0.4, "runs": [0.4]},
        "goals": {},
    }
    ratios = {c: {"vs_floor_rps": 1.0, "vs_naive_rps": 1.0, "p99_vs_floor": 1.0} for c in levels}
    md = markdown(res, levels, ratios)
    assert "| service | 64 | 1.0 | 1.0 | 2.0 | 32.0 | 0.279 | 0.169 | 0 |" in md
    assert (
        "At 64 clients the service spends 0.279 ms of CPU per request: 0.169 ms on the event "
        "loop (HTTP, JSON, validation, batching) and 0.110 ms off it" in md
    )
    assert (
        "The floor, which runs no model, spends 0.092 ms, 0.091 ms of it on its event loop." in md
    )
