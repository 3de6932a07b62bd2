"""MASE, baselines and quantile calibration on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from model.baselines import ets, mase, mase_scale, naive, seasonal_naive
from model.quantiles import calibrate_offsets, coverage, interval_pairs


def test_mase_of_a_known_case():
    history = np.array([1.0, 3.0, 2.0, 4.0, 3.0, 5.0])
    # seasonal lag 2: |2-1|,|4-3|,|3-2|,|5-4| -> scale 1; lag 1: 2,1,2,1,2 -> 1.6
    assert mase_scale(history, 2) == pytest.approx(1.0)
    assert mase_scale(history, 1) == pytest.approx(1.6)
    assert mase_scale(history, 10) == pytest.approx(1.6)  # too short for the season: lag 1
    np.testing.assert_allclose(mase([4.0, 6.0], [5.0, 5.0], 0.5), [2.0, 2.0])


def test_naive_and_seasonal_naive():
    history = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    np.testing.assert_array_equal(naive(history, 3), [30.0, 30.0, 30.0])
    np.testing.assert_array_equal(seasonal_naive(history, 5, 3), [10.0, 20.0, 30.0, 10.0, 20.0])
    np.testing.assert_array_equal(seasonal_naive(history, 2, 1), [30.0, 30.0])


def test_ets_follows_a_clean_seasonal_pattern():
    t = np.arange(96)
    history = 10 + 0.1 * t + np.sin(2 * np.pi * t / 12)
    out = ets(history, 12, 12)
    truth = 10 + 0.1 * (96 + np.arange(12)) + np.sin(2 * np.pi * (96 + np.arange(12)) / 12)
    assert np.abs(out - truth).max() < 0.2


def test_quantile_offsets_from_synthetic_residuals():
    # Step k's residuals are k * (0, 0.01, ..., 1.0) - k/2: quantile q is k * (q - 0.5).
    base = np.linspace(0.0, 1.0, 101)
    residuals = np.stack([k * base - k / 2 for k in (1, 2, 3)], axis=1)  # (101, 3)
    levels = (0.1, 0.5, 0.9)
    off = calibrate_offsets(residuals, levels)
    np.testing.assert_allclose(
        off, [[-0.4, -0.8, -1.2], [0.0, 0.0, 0.0], [0.4, 0.8, 1.2]], atol=1e-12
    )


def test_coverage_counts_actuals_inside_intervals():
    levels = (0.1, 0.25, 0.75, 0.9)
    assert interval_pairs(levels) == [(0.1, 0.9), (0.25, 0.75)]
    offsets = [[-2.0], [-1.0], [1.0], [2.0]]
    point = np.zeros((4, 1))
    actual = np.array([[0.5], [1.5], [-1.5], [3.0]])
    cov = coverage(actual, point, np.ones(4), levels, offsets)
    assert cov == {"80%": 0.75, "50%": 0.25}
    cov_scaled = coverage(
        actual, point, np.full(4, 2.0), levels, offsets
    )  # offsets scale with the series
    assert cov_scaled == {"80%": 1.0, "50%": 0.75}
