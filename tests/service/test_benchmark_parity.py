"""The M3 benchmark's forecasts are what a real server answers on POST /v1/forecast."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import start_server

from model.benchmark import LEVELS, request_for, serve_forecasts
from model.competitions import load
from service.runtime import Runtime
from service.settings import Settings

BUNDLED = Path(__file__).resolve().parents[2] / "artifacts" / "gru.onnx"


@pytest.fixture(scope="module")
def sample():
    """Three series of every M3 frequency, spread over the set."""
    everything = load("m3")
    out = []
    for f in ("yearly", "quarterly", "monthly", "other"):
        idx = [i for i, s in enumerate(everything) if s.frequency == f]
        out += [everything[i] for i in idx[:: max(1, len(idx) // 3)][:3]]
    return out


def test_benchmark_forecasts_equal_real_forecast_answers(sample, tmp_path):
    meta = Runtime(Settings(model_path=BUNDLED, device="cpu")).meta
    benchmark = serve_forecasts(BUNDLED, sample)
    server = start_server(tmp_path, model_path=BUNDLED)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for s, b in zip(sample, benchmark, strict=True):
                body = request_for(s, meta)
                assert len(body["series"][0]) == min(len(s.x), meta.context_length or len(s.x))
                r = client.post("/v1/forecast", json=body)
                assert r.status_code == 200, r.text
                (answer,) = r.json()["forecasts"]
                mean = np.asarray(answer["mean"])
                assert mean.shape == (s.horizon,)
                np.testing.assert_allclose(b.mean, mean, rtol=1e-5, atol=1e-4 * np.abs(mean).max())
                for q in LEVELS:
                    np.testing.assert_allclose(
                        b.quantiles[q],
                        answer["quantiles"][f"{q:g}"],
                        rtol=1e-5,
                        atol=1e-4 * np.abs(mean).max(),
                    )
    finally:
        server.stop()
