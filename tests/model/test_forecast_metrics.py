"""MASE, sMAPE, MSIS, M3/M4 baselines and quantile calibration on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from model.baselines import (
    ets,
    interval_coverage,
    mase,
    mase_scale,
    msis,
    naive,
    naive2,
    seasonal_indices,
    seasonal_naive,
    seasonality_test,
    smape,
    theta,
)
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


# Monthly factors with mean 1 (uneven, so a phase error shows), used by the seasonal tests.
_FACTORS = np.array([0.8, 0.9, 1.0, 1.2, 1.3, 1.1, 1.0, 0.9, 0.85, 0.95, 1.0, 1.0])
_FACTORS = _FACTORS / _FACTORS.mean()


def test_smape_of_a_known_case_and_zero_over_zero():
    # 200*10/210, 0, 0/0 -> 0: mean of (9.5238..., 0, 0)
    assert smape([100.0, 50.0, 0.0], [110.0, 50.0, 0.0]) == pytest.approx(2000 / 210 / 3)
    assert smape([0.0, 0.0], [0.0, 5.0]) == pytest.approx(100.0)  # 0 and the maximum 200
    assert smape([0.0], [0.0]) == 0.0


def test_msis_of_a_known_case():
    history = np.array([1.0, 3.0, 2.0, 4.0, 3.0, 5.0])  # scale 1 at lag 2, 1.6 at lag 1
    actual = [5.0, 0.0, 10.0]  # inside, 2 below, 2 above
    lower, upper = [4.0, 2.0, 6.0], [6.0, 4.0, 8.0]
    # widths 2 each; misses cost 2/0.05 * 2 = 80 each -> (6 + 160) / 3
    assert msis(actual, lower, upper, history, 2, 0.05) == pytest.approx(166 / 3)
    assert msis(actual, lower, upper, history, 1, 0.05) == pytest.approx(166 / 3 / 1.6)
    assert msis([5.0], [4.0], [6.0], history, 2, 0.05) == pytest.approx(2.0)  # width only


def test_interval_coverage_counts_closed_intervals():
    # 1 on the upper edge counts, 2 on the lower edge counts, 3 below, 4 above
    assert interval_coverage([1.0, 2.0, 3.0, 4.0], [0, 2, 3.5, 0], [1, 3, 4, 3]) == 0.5


def test_seasonality_test_on_hand_computed_alternating_series():
    # Period 2, values 1,3,1,3,... (n even): r_1 = -(n-1)/n, r_2 = (n-2)/n under the M4 acf.
    # n = 12: |r_2| = 0.833 > 1.645*sqrt((1 + 2*(11/12)^2)/12) = 0.777 -> seasonal.
    # n = 10: |r_2| = 0.8 < 1.645*sqrt((1 + 2*0.9^2)/10) = 0.842 -> not. Without the factor 2
    # (statsmodels' ThetaModel test) the limit would be 0.700 and n = 10 would pass.
    assert seasonality_test(np.tile([1.0, 3.0], 6), 2)
    assert not seasonality_test(np.tile([1.0, 3.0], 5), 2)


def test_seasonality_test_true_on_seasonal_false_on_noise_short_or_flat():
    t = np.arange(72)
    monthly = (100 + 0.5 * t) * _FACTORS[t % 12]
    assert seasonality_test(monthly, 12)
    assert not seasonality_test(monthly, 1)  # period 1 is never seasonal
    assert not seasonality_test(monthly[:35], 12)  # under three cycles
    assert not seasonality_test(np.full(48, 7.0), 12)  # no variance, no autocorrelation
    # Fixed seed: at 10% size some noise draws do reject; this one does not.
    noise = np.random.default_rng(0).normal(10.0, 1.0, 120)
    assert not seasonality_test(noise, 12)


def test_seasonal_indices_recover_factors_of_a_constant_level():
    # Any full-cycle moving average of 50 * factors is exactly 50, so ratios are the factors.
    # 50 points (not a whole number of cycles) still has index i at t % 12 == i.
    t = np.arange(50)
    np.testing.assert_allclose(seasonal_indices(50 * _FACTORS[t % 12], 12), _FACTORS, atol=1e-12)
    # Odd period: the plain m-term average, same property.
    f5 = np.array([0.5, 1.5, 1.0, 0.7, 1.3])
    t5 = np.arange(23)
    np.testing.assert_allclose(seasonal_indices(8 * f5[t5 % 5], 5), f5, atol=1e-12)
    with pytest.raises(ValueError):
        seasonal_indices(np.ones(23), 12)  # under two cycles
    with pytest.raises(ValueError):
        seasonal_indices(np.r_[0.0, np.ones(47)], 12)  # not positive


def test_naive2_continues_a_pure_seasonal_series_and_is_naive_otherwise():
    t = np.arange(50)
    history = 50 * _FACTORS[t % 12]
    future = 50 * _FACTORS[np.arange(50, 64) % 12]
    np.testing.assert_allclose(naive2(history, 14, 12), future, rtol=1e-12)
    noise = np.random.default_rng(0).normal(10.0, 1.0, 120)  # not seasonal (test above)
    np.testing.assert_array_equal(naive2(noise, 5, 12), naive(noise, 5))
    with_zero = history.copy()
    with_zero[3] = 0.0  # multiplicative indices impossible: plain naive
    np.testing.assert_array_equal(naive2(with_zero, 5, 12), naive(with_zero, 5))


def test_theta_on_a_linear_trend_extrapolates_half_the_slope():
    # Hyndman & Billah (2003): Theta(2) is SES plus drift b/2. On an exact line the SES
    # weight goes to ~1, so the forecast is y_T + b*h/2, not the line (y_T + b*h).
    # Tolerance: statsmodels keeps alpha just under 1, which leaves an offset of ~1e-4.
    history = 10.0 + 2.0 * np.arange(40)
    h = np.arange(1, 7)
    np.testing.assert_allclose(theta(history, 6, 1), history[-1] + 1.0 * h, atol=1e-2)


def test_theta_continues_a_pure_seasonal_series():
    t = np.arange(50)
    future = 50 * _FACTORS[np.arange(50, 64) % 12]
    np.testing.assert_allclose(theta(50 * _FACTORS[t % 12], 14, 12), future, atol=1e-6)


_SHORT_YEARLY = 10.0 + np.cumsum(np.random.default_rng(1).normal(size=14))
_INTERMITTENT = np.tile([0.0, 3.0, 0.0, 0.0, 5.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 4.0], 4)


@pytest.mark.parametrize("method", [naive2, theta, ets, seasonal_naive])
@pytest.mark.parametrize(
    ("history", "horizon", "period"),
    [(_SHORT_YEARLY, 6, 1), (_SHORT_YEARLY, 18, 12), (_INTERMITTENT, 18, 12)],
    ids=["14-yearly", "14-monthly", "zeros-monthly"],
)
def test_baselines_are_finite_with_the_horizon_length(method, history, horizon, period):
    out = method(history, horizon, period)
    assert out.shape == (horizon,)
    assert np.isfinite(out).all()
