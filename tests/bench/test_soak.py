"""The soak's verdicts from its per-interval rows (bench/soak.py), on rows made up here."""

from __future__ import annotations

from bench.soak import drift, summarise


def rows(rss: list[float], p99: list[float], errors: int = 0) -> list[dict]:
    return [
        {
            "t_s": 10.0 * (i + 1),
            "rss_mb": m,
            "rest_p50_ms": 10.0,
            "rest_p99_ms": q,
            "rest_errors": errors if i == 0 else 0,
            "stream_p50_ms": 5.0,
            "stream_p99_ms": 20.0,
            "stream_errors": 0,
        }
        for i, (m, q) in enumerate(zip(rss, p99, strict=True))
    ]


def test_steady_run_meets_every_goal():
    s = summarise(rows([90, 100, 100, 101, 101, 102], [50, 50, 60, 50, 55, 50]), warmup_s=10)
    assert s["rss_after_warmup_mb"] == 100 and s["rss_end_mb"] == 102
    assert s["rss_growth_pct"] == 2.0  # the warm-up's 90 MB is not counted
    assert s["errors"] == 0
    assert s["met"] == {"rss_growth_pct": True, "errors": True, "flat_latency": True}


def test_growth_errors_and_drift_are_each_caught():
    s = summarise(rows([100, 100, 104, 106, 108, 110], [50, 50, 60, 90, 100, 120], errors=3), 0)
    assert s["rss_growth_pct"] == 10.0
    assert s["errors"] == 3
    assert s["drift"]["rest_p99_ms"] == 2.2  # median(100, 120) / median(50, 50)
    assert s["met"] == {"rss_growth_pct": False, "errors": False, "flat_latency": False}


def test_drift_skips_intervals_without_answers_and_needs_three():
    assert drift([{"k": 1.0}, {"k": None}, {"k": 2.0}, {"k": 3.0}], "k") == 3.0
    assert drift([{"k": 1.0}, {"k": 2.0}], "k") is None
