"""Score a model on validation windows, forecasting them the way the service does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.contract import Scaler
from model.baselines import smape
from model.corpus import Window
from model.gru import GRUForecaster
from model.windows import forecast


@dataclass
class WindowForecasts:
    windows: list[Window]
    point: list[np.ndarray]  # per window (horizon,) raw
    scale: np.ndarray  # (N,) the scaler's scale of each history sent

    def residuals(self, horizon: int) -> np.ndarray:
        """Scaled residuals (N, horizon), NaN past each window's own horizon."""
        out = np.full((len(self.windows), horizon), np.nan)
        for i, (w, p) in enumerate(zip(self.windows, self.point, strict=True)):
            n = min(horizon, len(w.actual))
            out[i, :n] = (w.actual[:n] - p[:n]) / self.scale[i]
        return out

    def smape(self) -> np.ndarray:
        return np.array([smape(w.actual, p) for w, p in zip(self.windows, self.point, strict=True)])

    def mase(self) -> np.ndarray:
        return np.array(
            [
                float(np.mean(np.abs(w.actual - p)) / w.mase_scale)
                for w, p in zip(self.windows, self.point, strict=True)
            ]
        )


def forecast_windows(
    model: GRUForecaster, windows: list[Window], context_length: int, scaler: Scaler
) -> WindowForecasts:
    """Each window's history (its last `context_length` points) forecast over its horizon."""
    point: list[np.ndarray] = [np.empty(0)] * len(windows)
    scale = np.empty(len(windows))
    for horizon in sorted({len(w.actual) for w in windows}):
        idx = [i for i, w in enumerate(windows) if len(w.actual) == horizon]
        pred, _, sc = forecast(
            model, [windows[i].history[-context_length:] for i in idx], horizon, scaler
        )
        for j, i in enumerate(idx):
            point[i], scale[i] = pred[j].astype(np.float64), float(sc[j])
    return WindowForecasts(windows, point, scale)


def summary(fc: WindowForecasts) -> dict:
    """Mean sMAPE and MASE per dataset and frequency, per dataset, and over everything."""
    s, m = fc.smape(), fc.mase()
    groups: dict[str, list[int]] = {}
    for i, w in enumerate(fc.windows):
        for key in ("all", w.dataset, f"{w.dataset}/{w.frequency}"):
            groups.setdefault(key, []).append(i)
    return {
        k: {"smape": float(s[idx].mean()), "mase": float(m[idx].mean()), "windows": len(idx)}
        for k, idx in sorted(groups.items())
    }


def criterion(table: dict) -> float:
    """What model selection minimises: mean sMAPE over the M3 validation windows."""
    return table["m3"]["smape"] if "m3" in table else table["all"]["smape"]
