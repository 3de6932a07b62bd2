"""Quick checks of the committed checkpoint and its evaluation report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from export.contract import Scaler
from model.checkpoint import load_checkpoint
from model.quantiles import METHOD
from model.windows import forecast

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "artifacts" / "checkpoint.pt"
REPORT = ROOT / "artifacts" / "report" / "evaluation.json"


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint(CHECKPOINT)


def test_bundled_checkpoint_describes_itself(bundled):
    model, info = bundled
    assert (info["name"], info["version"]) == ("gru-forecaster", "1.0.0")
    assert model.config.input_size == model.config.output_size == 1
    assert model.config.variant == "cho2014"
    assert info["scaler"] == {"rule": "standard", "min_scale": 1e-3}
    assert info["quantile_levels"] == [0.05, 0.1, 0.25, 0.75, 0.9, 0.95]
    offsets = np.asarray(info["quantile_offsets"])
    assert offsets.shape == (6, info["horizon"])
    assert (np.diff(offsets, axis=0) >= 0).all()  # quantiles ordered at every step
    assert (offsets[0] < 0).all() and (offsets[-1] > 0).all()
    # calibrated with the current method: intervals never narrow with the horizon
    assert info["quantile_calibration"]["method"] == METHOD
    assert (np.diff(offsets[-1]) >= 0).all() and (np.diff(offsets[0]) <= 0).all()
    assert set(info["metrics"]["validation_interval_coverage"]) == {"90%", "80%", "50%"}
    names = {s["name"] for s in info["data"]["series"]}
    assert {"co2", "nile", "elec_equip"} <= names
    assert info["data"]["missing_values_filled"] == 59
    assert info["context_length"] == 104 and info["horizon"] == 12
    assert set(info["versions"]) >= {"torch", "numpy", "python"}


def test_bundled_model_forecasts_a_seasonal_series_sensibly(bundled):
    model, info = bundled
    t = np.arange(104)
    history = 100 + 10 * np.sin(2 * np.pi * t / 12)
    pred, _, _ = forecast(model, [history], info["horizon"], Scaler(**info["scaler"]))
    assert np.isfinite(pred).all()
    assert np.abs(pred - 100).max() < 25  # stays within the series' range, roughly


def test_report_shows_gru_beats_seasonal_naive_on_average():
    report = json.loads(REPORT.read_text())
    mean = report["mean_mase"]
    assert mean["gru"] < mean["seasonal_naive"]
    assert set(report["coverage"]) == {"90%", "80%", "50%"}
    _, info = load_checkpoint(CHECKPOINT)
    assert report["coverage"] == info["metrics"]["test_interval_coverage"]  # report in sync
    assert report["validation_coverage"] == info["metrics"]["validation_interval_coverage"]
    assert len(report["series"]) == 12
