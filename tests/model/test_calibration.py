"""Quantile calibration: pooled-over-steps offsets on synthetic residuals, the origin sample."""

from __future__ import annotations

from math import erf, sqrt

import numpy as np
import pytest
import torch

from export.contract import Scaler
from model.calibrate import calibrate, calibration_backtests
from model.data import Series
from model.gru import GRUConfig, GRUForecaster
from model.quantiles import (
    calibrate_pooled,
    finite_sample_levels,
    series_weights,
    step_scale,
    weighted_quantile,
)


def test_weighted_quantile_known_values():
    x = np.array([3.0, 0.0, 2.0, 1.0])  # unsorted on purpose
    # equal weights: the sorted values sit at (i + 0.5) / n = 0.125, 0.375, 0.625, 0.875
    np.testing.assert_allclose(
        weighted_quantile(x, np.ones(4), [0.05, 0.25, 0.5, 0.875, 0.99]),
        [0.0, 0.5, 1.5, 3.0, 3.0],
    )
    np.testing.assert_allclose(
        weighted_quantile(np.arange(4.0), np.ones(4), [0.3, 0.7]),
        np.quantile(np.arange(4.0), [0.3, 0.7], method="hazen"),
    )
    # weights 1, 1, 1, 5 (of 8): midpoints 1/16, 3/16, 5/16, 11/16 -> median halfway 2..3
    assert weighted_quantile(np.arange(4.0), np.array([1, 1, 1, 5.0]), [0.5])[0] == 2.5
    with pytest.raises(ValueError):
        weighted_quantile(np.arange(3.0), np.array([1.0, 0.0, 1.0]), [0.5])


def test_series_weights_make_every_series_count_equally():
    np.testing.assert_allclose(series_weights([3, 0, 1]), [1 / 3, 1 / 3, 1 / 3, 1.0])


def test_step_scale_is_mean_abs_residual_made_non_decreasing():
    residuals = np.array([[1.0, -0.5, 3.0], [-1.0, 0.5, -1.0]])
    np.testing.assert_allclose(step_scale(residuals, np.ones(2)), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(step_scale(residuals, np.array([3.0, 1.0])), [1.0, 1.0, 2.5])


def test_pooled_offsets_from_synthetic_residuals():
    # Step k's residuals are k * base: after dividing by the step scale every step has the
    # same distribution, so each level's offsets are proportional to k, and the pooled
    # quantile is the 'hazen' quantile of base (each value appears once per step).
    base = np.linspace(-1.0, 1.0, 101)
    residuals = np.stack([k * base for k in (1, 2, 3)], axis=1)  # (101, 3)
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    off = np.asarray(calibrate_pooled(residuals, levels=levels))
    # three copies of each value, sorted value j (0-based) at (j + 0.5) / 303:
    # 0.05 -> j = 14.65, between base[4] = -0.92 and base[5] = -0.90 -> -0.907;
    # 0.25 -> j = 75.25, both copies of base[25] = -0.5; 0.5 -> base[50] = 0
    expected_z = np.array([-0.907, -0.5, 0.0, 0.5, 0.907])
    np.testing.assert_allclose(off[:, 0], expected_z, atol=1e-9)
    np.testing.assert_allclose(off, expected_z[:, None] * np.array([1, 2, 3]), atol=1e-9)


def test_finite_sample_levels_stretch_away_from_the_median():
    np.testing.assert_allclose(
        finite_sample_levels((0.1, 0.5, 0.9), 9), (0.5 - 0.4 * 10 / 9, 0.5, 0.5 + 0.4 * 10 / 9)
    )
    assert finite_sample_levels((0.05, 0.95), 4) == (0.001, 0.999)  # clipped inside (0, 1)
    np.testing.assert_allclose(finite_sample_levels((0.25, 0.75), 10**6), (0.25, 0.75), atol=1e-6)
    with pytest.raises(ValueError):
        finite_sample_levels((0.9,), 0)


def covered(table) -> float:
    """Share of a standard normal inside a (low, high) table, averaged over its steps."""
    lo, hi = np.asarray(table)
    inside = [erf(b / sqrt(2)) - erf(a / sqrt(2)) for a, b in zip(lo, hi, strict=True)]
    return 0.5 * float(np.mean(inside))


def test_stretched_levels_cover_their_nominal_share_on_average():
    """Tables from 19 normal draws, scored exactly on the normal distribution: the plain levels
    cover about 77% at 80% (the order statistics fall short on average), the stretched 80%."""
    rng = np.random.default_rng(0)
    levels, n = (0.1, 0.9), 19
    plain, stretched = [], []
    for _ in range(4000):
        residuals = rng.normal(size=(n, 1))
        plain.append(covered(calibrate_pooled(residuals, levels=levels)))
        stretched.append(
            covered(calibrate_pooled(residuals, levels=finite_sample_levels(levels, n)))
        )
    assert np.mean(plain) < 0.775
    assert np.mean(stretched) == pytest.approx(0.80, abs=0.005)


def test_stretch_overshoots_a_little_when_steps_are_independent():
    """38 windows of 8 independent normal steps pool 304 residuals: the plain table already
    covers close to 80%, the stretched one a little more (what the docstring says)."""
    rng = np.random.default_rng(1)
    levels = (0.1, 0.9)
    plain, stretched = [], []
    for _ in range(600):
        residuals = rng.normal(size=(38, 8))
        plain.append(covered(calibrate_pooled(residuals, levels=levels)))
        wider = finite_sample_levels(levels, 38)
        stretched.append(covered(calibrate_pooled(residuals, levels=wider)))
    assert 0.785 < np.mean(plain) < 0.80 < np.mean(stretched) < 0.825


def test_pooled_offsets_never_narrow_with_the_horizon():
    rng = np.random.default_rng(0)
    residuals = rng.normal(size=(400, 4)) * np.array([1.0, 2.0, 1.5, 3.0])  # step 3 calmer
    off = np.asarray(calibrate_pooled(residuals))
    assert (np.diff(off[-1]) >= 0).all() and (np.diff(off[0]) <= 0).all()
    np.testing.assert_allclose(off[:, 2], off[:, 1])  # the calm step takes step 2's width
    assert (np.diff(off, axis=0) > 0).all()  # levels ordered


def test_pooled_offsets_weight_series_not_rows():
    # 1000 origins of a calm series and 10 of a wild one: equal series weights let the wild
    # one decide the tails; unweighted rows would make it invisible.
    calm = np.tile([[-0.1], [0.1]], (500, 1))
    wild = np.tile([[-5.0], [5.0]], (5, 1))
    residuals = np.concatenate([calm, wild])
    weighted = calibrate_pooled(residuals, series_weights([1000, 10]), levels=(0.05, 0.95))
    unweighted = calibrate_pooled(residuals, levels=(0.05, 0.95))
    assert weighted[1][0] > 2.0 and unweighted[1][0] < 0.2


def _series(name: str, n: int) -> Series:
    t = np.arange(n, dtype=float)
    return Series(name, 10 + np.sin(2 * np.pi * t / 12) + 0.01 * t, 12, "synthetic")


def test_calibration_sample_uses_served_context_and_stops_before_the_tail():
    torch.manual_seed(0)
    model = GRUForecaster(GRUConfig(1, 4, 1, 1)).eval()
    h, ctx = 6, 36
    long, short = _series("long", 120), _series("short", 40)  # short: val at 16, test at 28
    bts = calibration_backtests(model, [long, short], h, ctx, Scaler())
    # long: val 96, test 108 -> origins 36 .. 102; short: min(36, 16) = 16 .. 22
    assert [(b.origins[0], b.origins[-1]) for b in bts] == [(36, 102), (16, 22)]
    pre = calibration_backtests(model, [long, short], h, ctx, Scaler(), before="validation")
    assert [(b.series.name, b.origins[0], b.origins[-1]) for b in pre] == [("long", 36, 90)]
    offsets, desc = calibrate(model, [long, short], h, ctx, Scaler(), (0.1, 0.9))
    assert desc["origins"] == {"long": 67, "short": 7}
    assert set(desc["validation_coverage"]) == {"80%"}
    assert np.asarray(offsets).shape == (2, h)


def test_pooled_offsets_skip_steps_a_shorter_window_does_not_have():
    rng = np.random.default_rng(1)
    long = rng.normal(size=(50, 3))
    short = rng.normal(size=(30, 2)) * 4.0  # only two steps
    padded = np.concatenate([long, np.pad(short, ((0, 0), (0, 1)), constant_values=np.nan)])
    scale = step_scale(padded, np.ones(80))
    both = np.concatenate([long[:, :2], short])
    expected = [np.abs(both[:, 0]).mean(), np.abs(both[:, 1]).mean(), np.abs(long[:, 2]).mean()]
    np.testing.assert_allclose(scale, np.maximum.accumulate(expected))
    z = np.concatenate([(long / scale).ravel(), (short / scale[:2]).ravel()])
    off = np.asarray(calibrate_pooled(padded, levels=(0.1, 0.9)))
    q = weighted_quantile(z, np.ones(len(z)), [0.1, 0.9])
    np.testing.assert_allclose(off, q[:, None] * scale[None, :])


def test_frequency_tables_and_their_holdout_coverage():
    from model.bundled import calibrate_tables, holdout_coverage
    from model.corpus import HORIZONS, Window
    from model.validation import WindowForecasts

    rng = np.random.default_rng(0)
    windows, points = [], []
    for f, spread in (("yearly", 3.0), ("monthly", 1.0)):
        h = HORIZONS[f]
        for i in range(600):
            actual = 100 + rng.normal(size=h) * spread * np.sqrt(np.arange(1, h + 1))
            windows.append(Window("m3", f"{f}{i}", f, np.ones(5), actual, 1.0))
            points.append(np.full(h, 100.0))
    fc = WindowForecasts(windows, points, np.ones(len(windows)))
    pooled, by_freq = calibrate_tables(fc)
    assert set(by_freq) == {"yearly", "monthly"}
    assert [len(r) for r in by_freq["yearly"]] == [6] * 6
    assert [len(r) for r in by_freq["monthly"]] == [18] * 6
    assert len(pooled[0]) == 18
    # the yearly table is three times wider, step for step (the same normal draws scaled)
    ratio = np.asarray(by_freq["yearly"])[-1] / np.asarray(by_freq["monthly"])[-1][:6]
    assert 2.6 < ratio.mean() < 3.4
    held = holdout_coverage(fc, seed=0)
    for f in ("yearly", "monthly"):
        assert held[f]["80%"] == pytest.approx(0.8, abs=0.03)
        assert held[f]["50%"] == pytest.approx(0.5, abs=0.03)
