"""The overload section's verdicts when a figure has nothing to time (bench/overload.py)."""

from __future__ import annotations

import numpy as np

from bench.overload import _markdown, _pct, _within


def test_no_refusal_is_not_measured_rather_than_missed():
    assert _pct(np.array([]), 99) is None
    assert _pct(np.array([0.010, 0.020, 0.030]), 50) == 20.0  # seconds in, ms out
    assert _within(None, 50.0) is None
    assert _within(49.0, 50.0) is True and _within(51.0, 50.0) is False


def test_report_says_none_refused_instead_of_a_number():
    data = {
        "model": "m",
        "rest": {
            "clients": {"normal": 64, "overload": 640},
            "normal": {"rps": 100.0, "p50_ms": 1.0, "p99_ms": 2.0},
            "overload": {
                "answers_per_s": 100.0,
                "accepted_per_s": 100.0,
                "refused": 0,
                "other_errors": 0,
                "accepted_p99_ms": 4.0,
                "refusal_p50_ms": None,
                "refusal_p99_ms": None,
            },
            "rss_mb": {"before": 110.002176, "after": 163.536896, "peak": 163.536896},
            "recovery_s": 0.1,
        },
        "accepted_p99_vs_normal": 2.0,
        "sessions": {
            "sessions_tried": 320,
            "ready": 32,
            "refused_1013": 0,
            "other": 288,
            "refusal_p99_ms": None,
            "refusal_p99_rounds_ms": [None, None, None],
            "echo_handshake_p99_ms": 61.5,
            "echo_handshake_p99_rounds_ms": [61.5, 40.25, 70.0],
        },  # fmt: skip
        "goals": {"refusals answered within 50 ms (p99)": None, "sessions refused": False},
    }
    md = _markdown(data, 4.0)
    assert "| refusal p50 / p99 ms | - | - |" in md
    assert "| refusals answered within 50 ms (p99) | not measured: no request was refused |" in md
    assert "| sessions refused | **no** |" in md
    assert "0 closed with 1013 (p99 - ms) in the last of 3 rounds, 288 otherwise in all" in md
    assert "rounds - / - / - ms" in md
    assert "echo, in turn: p99 61.5 ms (rounds 61.5 / 40.25 / 70 ms)" in md
    assert "RSS 110.0 MB before the overload, 163.5 MB after (peak 163.5 MB)" in md
    assert "None" not in md
