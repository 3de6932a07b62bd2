"""Quick checks of the committed checkpoint and its reports."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from export.contract import Scaler
from model.bundled import CONTEXT_CANDIDATES
from model.checkpoint import load_checkpoint
from model.competitions import FREQUENCIES
from model.corpus import HORIZONS
from model.quantiles import METHOD
from model.windows import forecast

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "artifacts" / "checkpoint.pt"
ARTIFACT = ROOT / "artifacts" / "gru.onnx"
REPORTS = ROOT / "artifacts" / "report"


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint(CHECKPOINT)


def test_bundled_checkpoint_describes_itself(bundled):
    model, info = bundled
    assert (info["name"], info["version"]) == ("gru-forecaster", "2.3.0")
    assert model.config.input_size == model.config.output_size == 1
    assert model.config.variant == "cho2014"
    settings = info["train"]
    assert model.config.hidden_size == settings["members"] * settings["hidden_size"]
    assert info["scaler"] == {"rule": "standard", "min_scale": 1e-3}
    assert info["quantile_levels"] == [0.05, 0.1, 0.25, 0.75, 0.9, 0.95]
    assert info["quantile_calibration"]["method"] == METHOD
    assert info["frequencies"] == list(FREQUENCIES)
    tables = {"pooled": info["quantile_offsets"], **info["quantile_offsets_by_frequency"]}
    assert set(tables) == {"pooled", *FREQUENCIES}
    for name, rows in tables.items():
        offsets = np.asarray(rows)
        assert offsets.shape == (6, HORIZONS.get(name, info["horizon"])), name
        assert (np.diff(offsets, axis=0) >= 0).all()  # quantiles ordered at every step
        assert (offsets[0] < 0).all() and (offsets[-1] > 0).all()
        assert (np.diff(offsets[-1]) >= 0).all() and (np.diff(offsets[0]) <= 0).all()
    assert info["context_length"] in CONTEXT_CANDIDATES and info["horizon"] == 18
    assert set(info["data"]["datasets"]) == {"m1", "m3", "tourism"}
    assert sum(d["series"] for d in info["data"]["datasets"].values()) == 1001 + 3003 + 1311
    assert set(info["versions"]) >= {"torch", "numpy", "python"}


def test_bundled_model_forecasts_a_seasonal_series_sensibly(bundled):
    model, info = bundled
    t = np.arange(info["context_length"])
    history = 100 + 10 * np.sin(2 * np.pi * t / 12)
    pred, _, _ = forecast(model, [history], 12, Scaler(**info["scaler"]))
    assert np.isfinite(pred).all()
    assert np.abs(pred - 100).max() < 25  # stays within the series' range, roughly
    # and follows the season: the forecast correlates with the pattern's continuation
    ahead = 100 + 10 * np.sin(2 * np.pi * (t[-1] + 1 + np.arange(12)) / 12)
    assert np.corrcoef(pred[0], ahead)[0, 1] > 0.8


def test_statsmodels_report_shows_gru_beats_seasonal_naive_on_unseen_series(bundled):
    _, info = bundled
    report = json.loads((REPORTS / "evaluation.json").read_text())
    assert len(report["series"]) == 12
    assert not any(r["seen_in_training"] for r in report["series"].values())
    unseen = report["mean_mase_unseen"]
    assert unseen["gru"] < unseen["seasonal_naive"]
    assert report["checkpoint"]["context_length"] == info["context_length"]  # report in sync


@pytest.mark.parametrize("dataset", ["m3", "m1", "tourism"])
def test_benchmark_reports_score_the_committed_artifact(dataset):
    report = json.loads((REPORTS / f"benchmark-{dataset}.json").read_text())
    digest = hashlib.sha256(ARTIFACT.read_bytes()).hexdigest()
    assert (
        report["model"]["artifact_sha256"] == digest
    )  # written by this artifact, not an older one
    table = report["table"]
    assert table["all"]["series"] == {"m3": 3003, "m1": 1001, "tourism": 1311}[dataset]
    assert set(table["all"]["smape"]) == {"gru", "naive2", "seasonal_naive", "theta", "ets"}
