"""Bundled and CSV data: lengths, filled gaps, time-ordered splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.data import DataError, load_bundled, load_csv, origins, split_series


@pytest.fixture(scope="module")
def bundled():
    return {s.name: s for s in load_bundled()}


def test_bundled_series_lengths_and_filled_gaps(bundled):
    assert bundled["co2"].missing_filled == 59  # the weekly CO2 record's missing weeks
    assert len(bundled["co2"].values) == 2284
    assert len(bundled["elnino"].values) == 61 * 12  # wide table unstacked to months
    assert len(bundled["nile"].values) == 100
    assert len(bundled["macro_realgdp"].values) == 203
    assert all(np.isfinite(s.values).all() for s in bundled.values())
    assert sum(s.missing_filled for s in bundled.values()) == 59


def test_bundled_holds_out_unseen_series(bundled):
    unseen = {n for n, s in bundled.items() if not s.seen}
    assert unseen == {"macro_unemp", "nile", "interest_R"}
    assert bundled["co2"].period == 52 and bundled["elec_equip"].period == 12


def test_co2_gap_is_time_interpolated(bundled):
    import statsmodels.api as sm

    raw = sm.datasets.co2.load_pandas().data["co2"].to_numpy()
    i = int(np.flatnonzero(np.isnan(raw))[0])
    j = i + 1
    while np.isnan(raw[j]):
        j += 1
    # A regular grid: time interpolation is linear between the neighbours.
    expected = raw[i - 1] + (raw[j] - raw[i - 1]) * (1 / (j - i + 1))
    assert bundled["co2"].values[i] == pytest.approx(expected)


def test_split_is_time_ordered_and_disjoint():
    sp = split_series(100, 12)
    assert (sp.val_start, sp.test_start, sp.n) == (52, 76, 100)
    train, val, test = set(range(0, 52)), set(range(52, 76)), set(range(76, 100))
    assert not (train & val) and not (val & test) and not (train & test)
    assert max(train) < min(val) and max(val) < min(test)
    test_origins = origins(sp.test_start, sp.n, 12)
    assert test_origins == list(range(76, 89))  # 13 origins, each with 12 steps inside the tail
    assert test_origins[-1] + 12 == 100


def test_csv_with_missing_rows_and_nan_is_filled(tmp_path):
    days = pd.date_range("2024-01-01", periods=10, freq="D")
    values = np.arange(10, dtype=float) * 2.0
    df = pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "y": values})
    df.loc[4, "y"] = np.nan
    df = df.drop(index=[6, 7]).sample(frac=1.0, random_state=0)  # shuffled, two rows gone
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    s = load_csv(path, "y", "day")
    assert s.missing_filled == 3
    assert s.freq == "D" and s.period == 7
    np.testing.assert_allclose(s.values, values)


def test_csv_errors(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"a": [np.nan, np.nan], "b": ["x", "1"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "none.csv", "a")
    with pytest.raises(DataError, match="column 'c' not in"):
        load_csv(path, "c")
    with pytest.raises(DataError, match="no numeric values"):
        load_csv(path, "a")
    with pytest.raises(DataError, match="non-numeric"):
        load_csv(path, "b")


def test_csv_numeric_time_column_orders_rows(tmp_path):
    path = tmp_path / "years.csv"
    pd.DataFrame({"year": [2003, 2001, 2002], "v": [3.0, 1.0, np.nan]}).to_csv(path, index=False)
    s = load_csv(path, "v", "year")
    np.testing.assert_allclose(s.values, [1.0, 2.0, 3.0])  # sorted by year, the gap interpolated
    assert s.missing_filled == 1 and s.freq == "" and s.period == 1
