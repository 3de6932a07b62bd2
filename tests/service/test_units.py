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
