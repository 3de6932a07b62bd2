"""Quantile offsets (service.core.quantile_offsets): the table a frequency picks, the pooled
table otherwise, interpolation between levels, and the widening past a table's last step.

The tiny artifact's metadata (tests/conftest.py tiny_meta), in scaled space:

    pooled   0.1: -1.0, -1.5, -2.0          0.9: 1.0, 1.5, 2.0
    yearly   0.1: -2.0, -3.0                0.9: 2.5, 3.5
    monthly  0.1: -0.5, -0.6, -0.7, -0.8    0.9: 0.4, 0.45, 0.5
    quarterly, other: known names without a table of their own (pooled)

Expected values below are written out from that table by hand (past a row of S steps, step s
gets row[S-1] * sqrt((s + 1) / S)), not recomputed with the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from service_helpers import tiny_meta

from service.core import quantile_offsets

META = tiny_meta()


def f32(values) -> np.ndarray:
    return np.array(values, np.float32)


@pytest.mark.parametrize(
    ("frequency", "low", "high"),
    [
        ("yearly", [-2.0, -3.0], [2.5, 3.5]),
        ("monthly", [-0.5, -0.6], [0.4, 0.45]),
        ("quarterly", [-1.0, -1.5], [1.0, 1.5]),  # known, no table: pooled
        ("other", [-1.0, -1.5], [1.0, 1.5]),
        (None, [-1.0, -1.5], [1.0, 1.5]),
    ],
)
def test_frequency_picks_its_table(frequency, low, high):
    got = quantile_offsets(META, [0.1, 0.9], 2, frequency)
    assert list(got) == [0.1, 0.9]
    np.testing.assert_array_equal(got[0.1], f32(low))
    np.testing.assert_array_equal(got[0.9], f32(high))


def test_widening_past_the_table_follows_the_sqrt_rule():
    horizon = 9
    got = quantile_offsets(META, [0.1, 0.9], horizon, "monthly")
    # 0.1's row has 4 steps, 0.9's has 3: each widens from its own last step
    low = [-0.5, -0.6, -0.7, -0.8] + [-0.8 * math.sqrt((s + 1) / 4) for s in range(4, horizon)]
    high = [0.4, 0.45, 0.5] + [0.5 * math.sqrt((s + 1) / 3) for s in range(3, horizon)]
    np.testing.assert_array_equal(got[0.1], f32(low))
    np.testing.assert_array_equal(got[0.9], f32(high))
    assert got[0.9][5] == np.float32(0.5 * math.sqrt(2))  # step 6 of a 3-step row: x sqrt(2)
    assert got[0.1][3] == np.float32(-0.8)  # the last calibrated step itself is not widened
    pooled = quantile_offsets(META, [0.9], 12)[0.9]
    np.testing.assert_array_equal(
        pooled, f32([1.0, 1.5, 2.0] + [2.0 * math.sqrt((s + 1) / 3) for s in range(3, 12)])
    )
    yearly = quantile_offsets(META, [0.1], 8, "yearly")[0.1]
    assert yearly[7] == np.float32(-3.0 * 2.0)  # sqrt(8 / 2) = 2


def test_widening_keeps_growing_and_never_flattens():
    got = quantile_offsets(META, [0.1, 0.9], 40, "yearly")
    assert (np.diff(got[0.9]) > 0).all() and (np.diff(got[0.1]) < 0).all()


def test_levels_between_calibrated_ones_are_interpolated_in_the_frequency_table():
    got = quantile_offsets(META, [0.3, 0.5, 0.7], 6, "monthly")
    # 0.3 halfway between 0.1 and the median (0), 0.7 halfway between the median and 0.9
    np.testing.assert_allclose(
        got[0.3],
        [-0.25, -0.3, -0.35, -0.4, -0.4 * math.sqrt(5 / 4), -0.4 * math.sqrt(6 / 4)],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        got[0.7],
        [0.2, 0.225, 0.25, 0.25 * math.sqrt(4 / 3), 0.25 * math.sqrt(5 / 3), 0.25 * 2**0.5],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(got[0.5], np.zeros(6, np.float32))


def test_core_caches_offsets_per_frequency(client):
    core = client.app.state.service.core
    monthly = core.quantile_offsets([0.9], 4, "monthly")
    assert core.quantile_offsets([0.9], 4, "monthly") is monthly  # cached
    yearly = core.quantile_offsets([0.9], 4, "yearly")
    pooled = core.quantile_offsets([0.9], 4)
    np.testing.assert_array_equal(monthly[0.9], f32([0.4, 0.45, 0.5, 0.5 * math.sqrt(4 / 3)]))
    np.testing.assert_array_equal(yearly[0.9], f32([2.5, 3.5, 3.5 * math.sqrt(1.5), 3.5 * 2**0.5]))
    np.testing.assert_array_equal(pooled[0.9], f32([1.0, 1.5, 2.0, 2.0 * math.sqrt(4 / 3)]))
    assert core.quantile_offsets([0.9], 4, "quarterly") is pooled  # no table: the pooled entry
