"""Baseline forecasts and the MASE metric the GRU is judged by."""

from __future__ import annotations

import warnings

import numpy as np


def mase_scale(history: np.ndarray, period: int) -> float:
    """Mean absolute seasonal-naive error in-sample (M4 convention); lag 1 when too short."""
    m = period if len(history) > period else 1
    d = np.abs(history[m:] - history[:-m])
    return float(max(d.mean(), 1e-8))


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> np.ndarray:
    """Absolute errors divided by the series' MASE scale, per horizon step."""
    return np.abs(np.asarray(actual) - np.asarray(forecast)) / scale


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.full(horizon, history[-1], dtype=float)


def seasonal_naive(history: np.ndarray, horizon: int, period: int) -> np.ndarray:
    if period <= 1 or len(history) < period:
        return naive(history, horizon)
    last = history[-period:]
    return np.array([last[i % period] for i in range(horizon)], dtype=float)


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
