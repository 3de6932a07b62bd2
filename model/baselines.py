"""Baseline forecasts and accuracy metrics: MASE for the GRU, plus the M3/M4 benchmark set.

The M3/M4 comparisons score sMAPE, MASE and MSIS against Naive2, Theta and damped ETS, so
those live here beside the existing baselines. numpy + statsmodels only: the benchmark
scripts import this without the training stack (no torch).
"""

from __future__ import annotations

import warnings

import numpy as np

# One-sided 95% normal quantile: the M3/M4 seasonality test is a 90% two-sided test on r_m.
_Z90 = 1.645


def mase_scale(history: np.ndarray, period: int) -> float:
    """Mean absolute seasonal-naive error in-sample (M4 convention); lag 1 when too short."""
    m = period if len(history) > period else 1
    d = np.abs(history[m:] - history[:-m])
    return float(max(d.mean(), 1e-8))


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> np.ndarray:
    """Absolute errors divided by the series' MASE scale, per horizon step."""
    return np.abs(np.asarray(actual) - np.asarray(forecast)) / scale


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """M3 symmetric MAPE in percent: mean of 200|y-f| / (|y|+|f|), with 0/0 counted as 0."""
    y = np.asarray(actual, dtype=float)
    f = np.asarray(forecast, dtype=float)
    den = np.abs(y) + np.abs(f)
    # den == 0 only when y == f == 0: a perfect forecast, so it scores 0 rather than NaN.
    ratio = np.divide(np.abs(y - f), den, out=np.zeros_like(den), where=den > 0)
    return float(200.0 * ratio.mean())


def msis(
    actual: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    history: np.ndarray,
    period: int,
    alpha: float,
) -> float:
    """M4 mean scaled interval score of a (1 - alpha) interval; lower is better.

    Width plus 2/alpha times each miss, averaged over the horizon and divided by the same
    in-sample seasonal-difference scale as MASE, so the two metrics are comparable per series.
    """
    y = np.asarray(actual, dtype=float)
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    penalty = (2.0 / alpha) * ((lo - y) * (y < lo) + (y - hi) * (y > hi))
    score = (hi - lo) + penalty
    return float(score.mean() / mase_scale(np.asarray(history, dtype=float), period))


def interval_coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actuals inside the closed interval [lower, upper]."""
    y = np.asarray(actual, dtype=float)
    inside = (np.asarray(lower) <= y) & (y <= np.asarray(upper))
    return float(inside.mean())


def _acf(x: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelations r_0..r_nlags as the M4 benchmark defines them.

    Every lag is divided by the full-series sum of squares (not the overlap's), which
    shrinks long lags; the test's critical value assumes exactly this estimator.
    """
    d = x - x.mean()
    total = float(d @ d)
    return np.array([float(d[k:] @ d[: len(d) - k]) / total for k in range(nlags + 1)])


def seasonality_test(history: np.ndarray, period: int) -> bool:
    """M3/M4 protocol: 90% test that the lag-`period` autocorrelation is non-zero.

    Needs three full cycles, as the protocol does; a constant series has no autocorrelation
    to test and counts as non-seasonal.
    """
    x = np.asarray(history, dtype=float)
    n = len(x)
    if period <= 1 or n < 3 * period or np.ptp(x) == 0:
        return False
    r = _acf(x, period)
    # Bartlett's variance of r_m under "MA(m-1), no seasonality": (1 + 2 sum r_k^2) / n.
    limit = _Z90 * np.sqrt((1.0 + 2.0 * float(np.sum(r[1:period] ** 2))) / n)
    return bool(abs(r[period]) > limit)


def seasonal_indices(history: np.ndarray, period: int) -> np.ndarray:
    """Classical multiplicative seasonal indices, shape (period,), mean 1.

    Index i belongs to positions t with t % period == i, t counted from history[0]. The
    trend is a centred moving average (2 x m for even m, so it stays centred on a point);
    ratios to it are averaged per position. Raises ValueError when the data are not positive
    (ratios would be meaningless) or shorter than two cycles (some positions get no ratio).
    """
    x = np.asarray(history, dtype=float)
    if period <= 1:
        return np.ones(1)
    if len(x) < 2 * period:
        raise ValueError(f"need at least {2 * period} points for period {period}, got {len(x)}")
    if (x <= 0).any():
        raise ValueError("multiplicative decomposition needs strictly positive data")
    if period % 2:
        weights = np.full(period, 1.0 / period)
    else:
        weights = np.full(period + 1, 1.0 / period)
        weights[[0, -1]] = 0.5 / period
    trend = np.convolve(x, weights, mode="valid")
    # Both kernels centre trend[j] on position j + period // 2.
    t = np.arange(len(trend)) + period // 2
    ratios = x[t] / trend
    idx = np.array([ratios[t % period == i].mean() for i in range(period)])
    return idx / idx.mean()


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.full(horizon, history[-1], dtype=float)


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    if period <= 1 or len(history) < period:
        return naive(history, horizon)
    last = history[-period:]
    return np.array([last[i % period] for i in range(horizon)], dtype=float)


def naive2(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """M3/M4 Naive2: naive on the seasonally adjusted series when the seasonality test says so.

    Non-positive data skip adjustment (multiplicative indices need positive values).
    """
    x = np.asarray(history, dtype=float)
    if (x <= 0).any() or not seasonality_test(x, period):
        return naive(x, horizon)
    idx = seasonal_indices(x, period)
    n = len(x)
    level = x[-1] / idx[(n - 1) % period]
    return level * idx[np.arange(n, n + horizon) % period]


def theta(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Standard Theta (theta = 2) via statsmodels' ThetaModel; Naive2 if it fails.

    statsmodels runs its own 90% seasonality test and decomposition (multiplicative when the
    data are positive, else additive) when deseasonalising is allowed, which we allow under
    the same length rule as `seasonality_test` (three cycles).
    """
    from statsmodels.tsa.forecasting.theta import ThetaModel

    x = np.asarray(history, dtype=float)
    seasonal = period > 1 and len(x) >= 3 * period
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SES optimiser chatter on short or flat series
        try:
            model = ThetaModel(
                x,
                period=period if seasonal else None,
                deseasonalize=seasonal,
                use_test=seasonal,
                method="auto",
            )
            out = np.asarray(model.fit().forecast(horizon), dtype=float)
        except Exception:  # statsmodels raises assorted errors on degenerate series
            return naive2(x, horizon, period)
    return out if np.isfinite(out).all() and len(out) == horizon else naive2(x, horizon, period)


def ets(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """statsmodels Holt-Winters: additive damped trend, additive season when two full cycles fit.

    Falls back to the naive forecast if the optimiser fails, and says so via a NaN-free result.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal = "add" if period > 1 and len(history) >= 2 * period + 2 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on short series
        try:
            fit = ExponentialSmoothing(
                history,
                trend="add",
                damped_trend=True,
                seasonal=seasonal,
                seasonal_periods=period if seasonal else None,
                initialization_method="estimated",
            ).fit()
            out = np.asarray(fit.forecast(horizon), dtype=float)
        except Exception:  # statsmodels raises assorted errors on degenerate series
            return naive(history, horizon)
    return out if np.isfinite(out).all() else naive(history, horizon)
