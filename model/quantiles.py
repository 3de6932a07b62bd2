"""Prediction intervals from validation residuals, in the service's scaled space.

The service adds `quantile_offsets[level][step]` to the scaled point forecast and
unscales; so the offsets are empirical quantiles of scaled residuals
(actual - forecast) / scale, one per horizon step, since errors grow with the step.
"""

from __future__ import annotations

import numpy as np

LEVELS = (0.05, 0.1, 0.25, 0.75, 0.9, 0.95)


def calibrate_offsets(
    residuals: np.ndarray, levels: tuple[float, ...] = LEVELS
) -> list[list[float]]:
    """residuals (N, horizon) scaled -> offsets [level][step] (linear-interpolated quantiles)."""
    if residuals.ndim != 2 or len(residuals) == 0:
        raise ValueError("need residuals of shape (N >= 1, horizon)")
    q = np.quantile(residuals, levels, axis=0)  # (levels, horizon)
    return [[float(v) for v in row] for row in q]


def interval_pairs(levels: tuple[float, ...]) -> list[tuple[float, float]]:
    """Symmetric (low, high) pairs present in `levels`, widest first: (0.05, 0.95) -> 90%."""
    pairs = [(lo, round(1 - lo, 6)) for lo in levels if lo < 0.5 and round(1 - lo, 6) in levels]
    return sorted(pairs)


def coverage(
    actual: np.ndarray,
    point: np.ndarray,
    scale: np.ndarray,
    levels: tuple[float, ...],
    offsets: list[list[float]],
) -> dict[str, float]:
    """Share of actuals inside each symmetric interval. actual/point (N, H) raw, scale (N,)."""
    off = np.asarray(offsets)  # (levels, H)
    out = {}
    for lo, hi in interval_pairs(levels):
        low = point + off[levels.index(lo)][None, :] * scale[:, None]
        high = point + off[levels.index(hi)][None, :] * scale[:, None]
        inside = (actual >= low) & (actual <= high)
        out[f"{round((hi - lo) * 100)}%"] = float(inside.mean())
    return out
