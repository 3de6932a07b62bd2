"""Benchmark scoring on hand-made forecasts with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from model.benchmark import BASELINES, LEVELS, Served, cached_baselines, score, to_markdown
from model.competitions import CompetitionSeries


def _series(name, frequency, x, xx):
    return CompetitionSeries(
        "m3", name, frequency, 1, len(xx), np.asarray(x, float), np.asarray(xx, float)
    )


def test_scores_per_frequency_and_overall():
    a = _series("a", "yearly", [1, 2, 3, 4], [10, 10])  # MASE scale: mean |diff| = 1
    b = _series("b", "other", [2, 4, 6], [10, 10, 10, 10])  # MASE scale 2
    served = [
        Served(np.array([10.0, 30.0]), {q: np.array([9.0, 29.0]) + 2 * (q > 0.5) for q in LEVELS}),
        Served(np.full(4, 10.0), {q: np.full(4, 5.0 if q < 0.5 else 15.0) for q in LEVELS}),
    ]
    base = [
        {m: np.array([10.0, 10.0]) for m in ("naive2", "seasonal_naive", "theta", "ets")},
        {m: np.full(4, 5.0) for m in ("naive2", "seasonal_naive", "theta", "ets")},
    ]
    result = score([a, b], served, base)
    t = result["table"]
    # a: sMAPE (0 + 200 * 20 / 40) / 2 = 50; b: 0
    assert t["yearly"]["smape"]["gru"] == pytest.approx(50.0)
    assert t["other"]["smape"]["gru"] == pytest.approx(0.0)
    assert t["all"]["smape"]["gru"] == pytest.approx(25.0)
    # naive2 on b: 200 * 5 / 15 at every step
    assert t["other"]["smape"]["naive2"] == pytest.approx(200 * 5 / 15)
    # MASE: a (0 + 20) / 2 / 1 = 10; b's naive2 5 / 2 = 2.5
    assert t["yearly"]["mase"]["gru"] == pytest.approx(10.0)
    assert t["other"]["mase"]["naive2"] == pytest.approx(2.5)
    # a: [9, 11] holds 10 at step 1, [29, 31] misses it at step 2; b's [5, 15] holds all four:
    # pooled over the 6 held-out points -> 5/6
    assert t["yearly"]["coverage"]["80%"] == pytest.approx(0.5)
    assert t["all"]["coverage"]["80%"] == pytest.approx(5 / 6)
    # MSIS (90%): a: width 2, [29, 31] misses 10 by 19 -> (2 + 2 + 2 / 0.1 * 19) / 2 / 1 = 192
    assert t["yearly"]["msis_90"] == pytest.approx(192.0)
    result.update(
        benchmark="m3",
        model={"name": "m", "version": "1", "artifact_sha256": "ab" * 32, "context_length": 4},
        published_smape={"Theta": 13.01},
        protocol="p",
    )
    md = to_markdown(result)
    assert "| GRU (served) | 50.00 | **0.00** | **25.00** |" in md  # best in bold
    assert "| Theta (published) |  |  | 13.01 |" in md


def test_baselines_are_computed_once_per_key(tmp_path):
    """The second run reads the saved forecasts; other data (a new key) computes again."""
    series = [
        _series("a", "yearly", [1.0, 2.0, 3.0], [4.0, 5.0]),
        _series("b", "other", [7.0], [8.0]),
    ]
    calls = []

    def compute(ss):
        calls.append(len(ss))
        return [
            {m: s.x[-1] + np.arange(s.horizon) + k for k, m in enumerate(BASELINES)} for s in ss
        ]

    first = cached_baselines("m3", series, compute, tmp_path)
    again = cached_baselines("m3", series, compute, tmp_path)
    assert calls == [2]
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[m], b[m]) for m in a)
    assert again[0]["ets"].tolist() == [6.0, 7.0]  # x[-1] = 3, + step, + 3 (ets is 4th)
    series[1].x[0] = 7.5
    cached_baselines("m3", series, compute, tmp_path)
    assert calls == [2, 2]
    assert len(list(tmp_path.iterdir())) == 2  # one file per key, no temporary left
