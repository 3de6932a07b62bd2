"""Quantile offsets for a trained model, from many rolling origins before the test tail.

Calibration sample: every origin of every series (seen in training or not) that has at
least `min(context_length, val_start)` points of history, i.e. as much context as the
model gets on the held-out tails, and whose horizon ends before the test tail: the late
train span plus the validation tail (co2: ~2100 origins; the quarterly series: 64; the two
shortest series: their 13 validation origins). Origins with shorter histories are left
out: their errors are larger than the served model's (a 24-point context forecasts worse
than a 104-point one) and made the intervals far too wide.

Honesty check, stored with the offsets: the same method calibrated only on origins whose
horizon ends before the validation tail, scored on the validation tails of all series
(origins it never saw). The test tails take no part in any choice.

The network has seen the train span of the seen series, so part of the sample is
in-sample; the validation check shows whether that makes the intervals too narrow.
"""

from __future__ import annotations

import numpy as np

from export.contract import Scaler
from model.backtest import Backtest, backtest, backtest_span
from model.data import Series, split_series
from model.gru import GRUForecaster
from model.quantiles import LEVELS, METHOD, calibrate_pooled, coverage, series_weights


def calibration_backtests(
    model: GRUForecaster,
    series: list[Series],
    horizon: int,
    context_length: int,
    scaler: Scaler,
    before: str = "test",
) -> list[Backtest]:
    """Rolling-origin backtests over each series' span before its test (or validation) tail.

    Series without such an origin (too short) are skipped.
    """
    out = []
    for s in series:
        sp = split_series(len(s.values), horizon)
        end = sp.test_start if before == "test" else sp.val_start
        start = min(context_length, sp.val_start)
        if start + horizon <= end:
            out.append(
                backtest_span(model, s, start, end, horizon, context_length, scaler, sp.val_start)
            )
    return out


def _offsets(backtests: list[Backtest], levels) -> list[list[float]]:
    residuals = np.concatenate([b.residuals for b in backtests])
    weights = series_weights([len(b.origins) for b in backtests])
    return calibrate_pooled(residuals, weights, levels)


def _coverage(backtests: list[Backtest], levels, offsets) -> dict[str, float]:
    return coverage(
        np.concatenate([b.actual for b in backtests]),
        np.concatenate([b.point for b in backtests]),
        np.concatenate([b.scale for b in backtests]),
        levels,
        offsets,
    )


def calibrate(
    model: GRUForecaster,
    series: list[Series],
    horizon: int,
    context_length: int,
    scaler: Scaler,
    levels: tuple[float, ...] = LEVELS,
) -> tuple[list[list[float]], dict]:
    """-> (offsets [level][step] for the checkpoint, a description with the validation check)."""
    bts = calibration_backtests(model, series, horizon, context_length, scaler, "test")
    offsets = _offsets(bts, levels)
    pre_val = calibration_backtests(model, series, horizon, context_length, scaler, "validation")
    val_cov = None
    if pre_val:
        val = [backtest(model, s, "validation", horizon, context_length, scaler) for s in series]
        val_cov = _coverage(val, levels, _offsets(pre_val, levels))
    return offsets, {
        "method": METHOD,
        "sample": "rolling origins with >= min(context_length, validation start) points of "
        "history whose horizon ends before the test tail (train span + validation tail), "
        "all series",
        "origins": {b.series.name: len(b.origins) for b in bts},
        "validation_coverage": val_cov,
        "validation_check": "same method calibrated only on origins before the validation "
        "tails, scored on the validation tails of all series",
    }


def coverage_on_test(
    model: GRUForecaster,
    series: list[Series],
    horizon: int,
    context_length: int,
    scaler: Scaler,
    levels,
    offsets,
) -> dict[str, float]:
    """Coverage of `offsets` on the test tails of all series (reported, never used to choose)."""
    test = [backtest(model, s, "test", horizon, context_length, scaler) for s in series]
    return _coverage(test, levels, offsets)
