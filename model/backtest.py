"""Rolling-origin backtests: forecast every origin of a tail, as a client would call us."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from export.contract import Scaler
from model.baselines import mase_scale
from model.data import Series, origins, split_series
from model.gru import GRUForecaster
from model.windows import forecast


@dataclass
class Backtest:
    series: Series
    origins: list[int]
    actual: np.ndarray  # (N, horizon) raw
    point: np.ndarray  # (N, horizon) raw GRU forecasts
    scale: np.ndarray  # (N,) the service's per-request scaler scale
    mase_scale: float  # in-sample seasonal-naive MAE before the tail
    preds: dict[str, np.ndarray] = field(default_factory=dict)  # every method's, for the plot

    @property
    def residuals(self) -> np.ndarray:
        """Scaled residuals (N, horizon): what quantile offsets are calibrated on."""
        return (self.actual - self.point) / self.scale[:, None]

    def mase(self) -> np.ndarray:
        """GRU MASE per horizon step (horizon,), averaged over origins."""
        return (np.abs(self.actual - self.point) / self.mase_scale).mean(axis=0)


def backtest(
    model: GRUForecaster,
    series: Series,
    tail: str,
    horizon: int,
    context_length: int,
    scaler: Scaler,
) -> Backtest:
    """Forecast each origin of the validation or test tail from the last `context_length` points."""
    sp = split_series(len(series.values), horizon)
    start, end = (sp.val_start, sp.test_start) if tail == "validation" else (sp.test_start, sp.n)
    return backtest_span(model, series, start, end, horizon, context_length, scaler, start)


def backtest_span(
    model: GRUForecaster,
    series: Series,
    start: int,
    end: int,
    horizon: int,
    context_length: int,
    scaler: Scaler,
    mase_end: int,
) -> Backtest:
    """Forecast every origin in [start, end) whose horizon ends by `end`.

    MASE is scaled by the seasonal-naive error on `values[:mase_end]`.
    """
    v = series.values
    orgs = origins(start, end, horizon)
    if not orgs:
        raise ValueError(f"no forecast origin in [{start}, {end}) for horizon {horizon}")
    hists = [v[max(0, o - context_length) : o] for o in orgs]
    point, _, scale = forecast(model, hists, horizon, scaler)
    actual = np.stack([v[o : o + horizon] for o in orgs])
    return Backtest(series, orgs, actual, point, scale, mase_scale(v[:mase_end], series.period))
