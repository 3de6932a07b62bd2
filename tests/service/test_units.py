"""service/units.py: the stacked float32 path gives the general path's numbers, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from service import units
from service.errors import InvalidInput


def _inputs(rng, steps=12):
    mean = rng.normal(size=(steps, 1)).astype(np.float32)
    offsets = {q: rng.normal(size=steps).astype(np.float32) for q in (0.1, 0.9)}
    loc, scale = np.float32([3.5]), np.float32([0.25])
    return mean, offsets, loc, scale


def test_float32_inputs_take_the_stacked_path_with_the_general_paths_bits(monkeypatch):
    mean, offsets, loc, scale = _inputs(np.random.default_rng(0))
    assert units._all_f32(mean, offsets, loc, scale)  # float32 everywhere: one stacked array
    stacked = units.to_data_units(mean, offsets, loc, scale, "f")
    monkeypatch.setattr(units, "_all_f32", lambda *a: False)
    general = units.to_data_units(mean, offsets, loc, scale, "f")
    assert stacked[0].tobytes() == general[0].tobytes()
    for q in offsets:
        assert stacked[1][q].tobytes() == general[1][q].tobytes()
    np.testing.assert_allclose(stacked[0], mean * scale + loc, rtol=1e-6)


def test_a_float64_input_takes_the_general_path():
    mean, offsets, loc, scale = _inputs(np.random.default_rng(1))
    assert not units._all_f32(mean.astype(np.float64), offsets, loc, scale)


def test_results_past_float32_are_refused():
    mean, offsets, loc, scale = _inputs(np.random.default_rng(2))
    with pytest.raises(InvalidInput, match="too large to scale"):
        units.to_data_units(mean, offsets, loc, np.float32([3e38]), "series.0")


@pytest.mark.parametrize("value", [0.1, -2.5, 1e30, 3.3e-7])
def test_the_one_value_step_equals_numpy_float32(value):
    x, loc, scale = np.float32([[value]]), np.float32([0.3]), np.float32([1.7])
    z = units.scale_in_one(x, loc, scale)
    assert z is not None and z.tobytes() == ((x - loc) / scale).tobytes()


def _meta():
    from tests.conftest import tiny_meta

    return tiny_meta()


def test_batch_units_equal_the_one_row_functions_bit_for_bit():
    meta = _meta()
    rng = np.random.default_rng(3)
    xs = [
        (rng.normal(size=(T, 1)) * s + m).astype(np.float32)
        for T, s, m in [(48, 3.0, 10.0), (48, 0.001, -4.0), (7, 1e4, 2e5), (48, 1.0, 0.0)]
    ]
    xs.append(np.full((5, 1), 3e38, np.float32))  # its float32 fit overflows: float64 redo
    given = (np.float32([1.5]), np.float32([2.0]))  # a row with a state's scaling
    table = {0.1: rng.normal(size=4).astype(np.float32), 0.9: rng.normal(size=4).astype(np.float32)}
    rows = [units.Row(f"series.{i}", table) for i in range(len(xs))]
    rows[3].loc, rows[3].scale = given
    batch = units.BatchUnits(meta)
    zs = batch.scale(rows, xs)
    for i, (x, z) in enumerate(zip(xs, zs, strict=True)):
        loc, scale = given if i == 3 else units.fit_scaler(meta, x, "f")
        assert rows[i].loc.tobytes() == loc.tobytes() and rows[i].scale.tobytes() == scale.tobytes()
        assert z.tobytes() == units.scale_in(x, loc, scale, "f").tobytes()
    paths = [rng.normal(size=(4, 1)).astype(np.float32) for _ in xs]
    assert batch.unscale(rows, paths) == [None] * len(xs)
    for row, path in zip(rows, paths, strict=True):
        mean, qs = units.to_data_units(path, table, row.loc, row.scale, "f")
        assert row.mean.tobytes() == mean.tobytes()
        assert all(row.quantiles[q].tobytes() == qs[q].tobytes() for q in table)


def test_a_row_past_float32_fails_alone_with_its_field():
    meta = _meta()
    xs = [np.float32([[1.0], [2.0]]), np.float32([[1.0], [1e38]])]
    # the second row continues from a state whose tiny scale blows its values past float32
    rows = [
        units.Row("series.0", {}),
        units.Row("series.1", {}, np.float32([0]), np.float32([1e-3])),
    ]
    zs = units.BatchUnits(meta).scale(rows, xs)
    assert isinstance(zs[0], np.ndarray)
    assert isinstance(zs[1], InvalidInput) and zs[1].field == "series.1"
    rows = [units.Row("a", {}, np.float32([0.0]), np.float32([1.0])) for _ in range(2)]
    paths = [np.float32([[1.0]]), np.float32([[1e38]])]
    rows[1].scale = np.float32([1e5])
    errors = units.BatchUnits(meta).unscale(rows, paths)
    assert errors[0] is None and rows[0].mean.tolist() == [[1.0]]
    assert isinstance(errors[1], InvalidInput) and "too large to scale" in errors[1].message
