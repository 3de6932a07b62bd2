"""REST API values against the independent NumPy reference: forecast, hidden, time series,
metadata, health, readiness, offline docs and the OpenAPI schema."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import ROOT, Reference, make_artifact, wait_ready

from service.app import create_app
from service.runtime import Runtime

TOL = 1e-5
SERIES = [
    [1.0, 2.0, 3.0, 2.5, 1.5, 2.0, 3.5],
    [10.0, 12.0, 11.0, 13.0],
    [0.5],  # a single observation: std 0, scale floored
    [-3.0, -1.0, 2.0, 4.0, 3.0, 1.0, -2.0, -4.0, -3.0, 0.0, 2.0, 5.0],
]


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def q_ref(ref: Reference, fc: dict, level: float, frequency: str | None = None) -> np.ndarray:
    """A quantile path re-derived here: scaled point forecast + offset, back to data units."""
    off = np.array([ref.offset(level, s, frequency) for s in range(len(fc["scaled"]))])[:, None]
    return (fc["scaled"] + off) * fc["scale"] + fc["loc"]


# ---- /v1/forecast ------------------------------------------------------------------------------
def test_forecast_matches_reference_for_many_series(client, tiny_reference):
    horizon = 5  # longer than the 3-step offset table: widened past it
    levels = [0.1, 0.3, 0.5, 0.9]
    r = client.post(
        "/v1/forecast", json={"series": SERIES, "horizon": horizon, "quantiles": levels}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"]) == ("tiny", "0.0.1")
    assert len(body["forecasts"]) == len(SERIES)
    for series, out in zip(SERIES, body["forecasts"], strict=True):
        fc = tiny_reference.forecast(series, horizon)
        assert len(out["mean"]) == horizon
        assert max_err(out["mean"], fc["mean"][:, 0]) <= TOL
        assert sorted(out["quantiles"]) == ["0.1", "0.3", "0.5", "0.9"]
        for level in levels:
            assert (
                max_err(out["quantiles"][f"{level:g}"], q_ref(tiny_reference, fc, level)[:, 0])
                <= TOL
            )
        # ordered: 0.1 <= 0.3 <= 0.5 == mean <= 0.9 at every step
        q = out["quantiles"]
        assert np.all(np.array(q["0.1"]) <= np.array(q["0.3"]))
        assert np.all(np.array(q["0.3"]) <= np.array(out["mean"]))
        assert max_err(q["0.5"], out["mean"]) <= TOL
        assert np.all(np.array(out["mean"]) <= np.array(q["0.9"]))
        assert out["state"] is None


HISTORY_LOC2_SCALE1 = [1.0, 3.0, 1.0, 3.0]  # loc 2, scale 1: quantile - mean = scaled offset


def spreads(client, horizon: int, levels, **extra) -> tuple[list[float], dict[str, np.ndarray]]:
    """(mean, {level: quantile - mean}) of one forecast of HISTORY_LOC2_SCALE1."""
    body = {"series": [HISTORY_LOC2_SCALE1], "horizon": horizon, "quantiles": levels, **extra}
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["forecasts"][0]
    mean = np.array(out["mean"])
    return out["mean"], {q: np.array(v) - mean for q, v in out["quantiles"].items()}


def test_forecast_quantile_offsets_follow_metadata(client, tiny_reference):
    """Quantile minus mean, divided by the scale (1 here), must be the metadata's offset for
    that step; past the 3-step table it widens as offset[2] * sqrt((s + 1) / 3)."""
    _, spread = spreads(client, 4, [0.1, 0.9])
    offsets = tiny_reference.meta.quantile_offsets
    assert offsets == ((-1.0, -1.5, -2.0), (1.0, 1.5, 2.0))
    assert max_err(spread["0.1"], [-1.0, -1.5, -2.0, -2.0 * (4 / 3) ** 0.5]) <= TOL
    assert max_err(spread["0.9"], [1.0, 1.5, 2.0, 2.0 * (4 / 3) ** 0.5]) <= TOL


# The tiny model's per-frequency tables (tests/conftest.py), written out by hand:
#   yearly  0.1: -2, -3              0.9: 2.5, 3.5
#   monthly 0.1: -0.5, -0.6, -0.7, -0.8    0.9: 0.4, 0.45, 0.5
# quarterly and other are known names without a table (pooled: +-1, 1.5, 2).
@pytest.mark.parametrize(
    ("frequency", "low", "high"),
    [
        (
            "yearly",
            [-2.0, -3.0, -3.0 * 1.5**0.5, -3.0 * 2.0**0.5],
            [2.5, 3.5, 3.5 * 1.5**0.5, 3.5 * 2**0.5],
        ),
        ("monthly", [-0.5, -0.6, -0.7, -0.8], [0.4, 0.45, 0.5, 0.5 * (4 / 3) ** 0.5]),
        (
            "quarterly",
            [-1.0, -1.5, -2.0, -2.0 * (4 / 3) ** 0.5],
            [1.0, 1.5, 2.0, 2.0 * (4 / 3) ** 0.5],
        ),
        (None, [-1.0, -1.5, -2.0, -2.0 * (4 / 3) ** 0.5], [1.0, 1.5, 2.0, 2.0 * (4 / 3) ** 0.5]),
    ],
)
def test_forecast_frequency_picks_its_quantile_table(client, frequency, low, high):
    extra = {} if frequency is None else {"frequency": frequency}
    mean, spread = spreads(client, 4, [0.1, 0.9], **extra)
    assert max_err(spread["0.1"], low) <= TOL
    assert max_err(spread["0.9"], high) <= TOL
    pooled_mean, _ = spreads(client, 4, [0.1, 0.9])
    assert mean == pooled_mean  # the point forecast does not depend on the frequency


def test_forecast_frequency_widens_past_its_table_by_the_sqrt_rule(client):
    horizon = 10
    _, spread = spreads(client, horizon, [0.1, 0.3, 0.9], frequency="monthly")
    low = [-0.5, -0.6, -0.7, -0.8] + [-0.8 * ((s + 1) / 4) ** 0.5 for s in range(4, horizon)]
    high = [0.4, 0.45, 0.5] + [0.5 * ((s + 1) / 3) ** 0.5 for s in range(3, horizon)]
    assert max_err(spread["0.1"], low) <= TOL
    assert max_err(spread["0.9"], high) <= TOL
    assert max_err(spread["0.3"], np.array(low) / 2) <= TOL  # halfway to the median
    assert spread["0.9"][-1] == pytest.approx(0.5 * (10 / 3) ** 0.5, abs=TOL)


def test_forecast_frequency_applies_to_every_series(client, tiny_reference):
    series = SERIES[:3]
    body = {"series": series, "horizon": 5, "quantiles": [0.1, 0.9], "frequency": "yearly"}
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == 200, r.text
    for s, out in zip(series, r.json()["forecasts"], strict=True):
        fc = tiny_reference.forecast(s, 5)
        assert max_err(out["mean"], fc["mean"][:, 0]) <= TOL
        for q in (0.1, 0.9):
            want = q_ref(tiny_reference, fc, q, "yearly")[:, 0]
            assert max_err(out["quantiles"][f"{q:g}"], want) <= TOL
            pooled = q_ref(tiny_reference, fc, q)[:, 0]
            assert max_err(want, pooled) >= 0.5 * fc["scale"][0]  # not the pooled numbers


@pytest.mark.parametrize("frequency", ["weekly", "Monthly", "", "M"])
def test_forecast_unknown_frequency_is_422_listing_the_known_names(client, frequency):
    body = {"series": [[1.0, 2.0]], "horizon": 2, "frequency": frequency}
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == 422
    assert r.json() == {
        "error": {
            "code": "invalid_input",
            "message": f"unknown frequency {frequency!r}; this model knows: yearly, quarterly, "
            "monthly, other",
            "field": "frequency",
        }
    }


def test_forecast_any_frequency_is_422_for_a_model_without_frequencies(make_client, tmp_path):
    path, _ = make_artifact(
        tmp_path / "pooled.onnx", frequencies=(), quantile_offsets_by_frequency={}
    )
    client = make_client(model_path=path)
    r = client.post("/v1/forecast", json={"series": [[1.0, 2.0]], "frequency": "monthly"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert (err["code"], err["field"]) == ("invalid_input", "frequency")
    assert err["message"] == (
        "unknown frequency 'monthly': this model knows no frequencies (its intervals are "
        "pooled); leave `frequency` out"
    )
    assert client.get("/v1/models").json()["models"][0]["frequencies"] == []
    assert client.post("/v1/forecast", json={"series": [[1.0, 2.0]]}).status_code == 200


def test_forecast_multivariate_matches_reference(make_client, tmp_path, monkeypatch):
    path, ref = make_artifact(tmp_path / "mv.onnx", seed=3, input_size=3, output_size=3)
    client = make_client(model_path=path)
    series = [
        [[1.0, 0.0, 5.0], [2.0, 1.0, 4.0], [3.0, 0.5, 6.0]],
        [[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]],
    ]
    r = client.post("/v1/forecast", json={"series": series, "horizon": 3, "quantiles": [0.9]})
    assert r.status_code == 200, r.text
    for s, out in zip(series, r.json()["forecasts"], strict=True):
        fc = ref.forecast(s, 3)
        assert np.array(out["mean"]).shape == (3, 3)  # rows of 3 features
        assert max_err(out["mean"], fc["mean"]) <= TOL
        assert max_err(out["quantiles"]["0.9"], q_ref(ref, fc, 0.9)) <= TOL


def test_forecast_state_round_trip_equals_longer_history(client, tiny_reference):
    first, second = SERIES[0], [2.0, 1.0, 0.5, 1.0]
    r1 = client.post(
        "/v1/forecast", json={"series": [first], "horizon": 2, "return_state": True}
    ).json()
    state = r1["forecasts"][0]["state"]
    fc1 = tiny_reference.forecast(first, 2)
    assert np.array(state["h"]).shape == (2, 8)
    assert max_err(state["h"], fc1["h"]) <= TOL
    assert max_err(state["loc"], fc1["loc"]) <= TOL
    assert max_err(state["scale"], fc1["scale"]) <= TOL

    r2 = client.post(
        "/v1/forecast",
        json={"series": [second], "horizon": 6, "state": [state], "return_state": True},
    ).json()
    # The whole history from zeros, scaled as the first call fitted it.
    longer = tiny_reference.forecast(
        first + second, 6, state=(tiny_reference.zeros(), fc1["loc"], fc1["scale"])
    )
    out = r2["forecasts"][0]
    assert max_err(out["mean"], longer["mean"][:, 0]) <= TOL
    assert max_err(out["state"]["h"], longer["h"]) <= TOL
    assert out["state"]["loc"] == state["loc"] and out["state"]["scale"] == state["scale"]


def test_forecast_state_may_be_given_for_some_series_only(client, tiny_reference):
    h = (np.arange(16).reshape(2, 8) / 20.0).tolist()
    state = {"h": h, "loc": [1.0], "scale": [2.0]}
    r = client.post(
        "/v1/forecast",
        json={"series": [[1.0, 2.0], [3.0, 5.0]], "horizon": 3, "state": [None, state]},
    )
    assert r.status_code == 200, r.text
    out = r.json()["forecasts"]
    assert max_err(out[0]["mean"], tiny_reference.forecast([1.0, 2.0], 3)["mean"][:, 0]) <= TOL
    fc = tiny_reference.forecast([3.0, 5.0], 3, state=(h, [1.0], [2.0]))
    assert max_err(out[1]["mean"], fc["mean"][:, 0]) <= TOL


# ---- /v1/hidden ---------------------------------------------------------------------------------
def test_hidden_matches_reference_with_and_without_state(client, tiny_reference):
    h = (np.linspace(-0.5, 0.5, 16).reshape(2, 8)).tolist()
    items = [{"x": [[0.1], [0.3], [-0.2]]}, {"x": [[1.0]], "h": h}]
    r = client.post("/v1/hidden", json={"inputs": items})
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    y0, h0, _ = tiny_reference.run([0.1, 0.3, -0.2])
    y1, h1, _ = tiny_reference.run([1.0], h)
    assert max_err(outs[0]["h"], h0) <= TOL and max_err(outs[0]["y"], y0[-1]) <= TOL
    assert max_err(outs[1]["h"], h1) <= TOL and max_err(outs[1]["y"], y1[-1]) <= TOL
    assert outs[0]["h_seq"] is None and outs[0]["y_seq"] is None


def test_hidden_return_sequence_gives_every_step(client, tiny_reference):
    x = [[0.2], [-0.4], [0.9], [0.0], [1.5]]
    r = client.post(
        "/v1/hidden", json={"inputs": [{"x": x}, {"x": x[:2]}], "return_sequence": True}
    )
    assert r.status_code == 200, r.text
    for out, n in zip(r.json()["outputs"], (5, 2), strict=True):
        y, h, h_seq = tiny_reference.run(x[:n])
        assert np.array(out["h_seq"]).shape == (n, 2, 8)
        assert np.array(out["y_seq"]).shape == (n, 1)
        assert max_err(out["h_seq"], h_seq) <= TOL
        assert max_err(out["y_seq"], y) <= TOL
        assert max_err(out["h_seq"][-1], out["h"]) == 0.0
        assert max_err(out["y_seq"][-1], out["y"]) == 0.0


def test_hidden_chained_calls_equal_one_call(client):
    x = [[0.3], [0.1], [-0.7], [0.4], [0.8], [-0.1]]
    whole = client.post("/v1/hidden", json={"inputs": [{"x": x}]}).json()["outputs"][0]
    h = None
    for part in (x[:2], x[2:3], x[3:]):
        item = {"x": part} if h is None else {"x": part, "h": h}
        out = client.post("/v1/hidden", json={"inputs": [item]}).json()["outputs"][0]
        h = out["h"]
    assert max_err(h, whole["h"]) <= 1e-6
    assert max_err(out["y"], whole["y"]) <= 1e-6


# ---- /v1/timeseries/forecast --------------------------------------------------------------------
def ts_body(series, frequency="M", start="2024-01-31T00:00:00", horizon=3, **extra):
    item = {"name": "s", "series": series, "frequency": frequency, "start_timestamp": start}
    return {"inputs": [item], "options": {"horizon": horizon, **extra}}


def test_timeseries_forecast_matches_reference(client, tiny_reference):
    body = ts_body(SERIES[0], horizon=4, quantiles=[0.1, 0.9])
    body["model"] = "tiny"
    r = client.post("/v1/timeseries/forecast", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "tiny" and out["status"] == "completed"
    content = out["outputs"][0]["content"][0]
    fc = tiny_reference.forecast(SERIES[0], 4)
    assert content["name"] == "s" and content["type"] == "univariate_time_series"
    assert max_err(content["mean_forecast"], fc["mean"][:, 0]) <= TOL
    for q in (0.1, 0.9):  # frequency M: the monthly table
        want = q_ref(tiny_reference, fc, q, "monthly")[:, 0]
        assert max_err(content["quantiles"][f"{q:g}"], want) <= TOL
    # the same numbers as /v1/forecast: one core behind both doors
    rest = client.post("/v1/forecast", json={"series": [SERIES[0]], "horizon": 4}).json()
    assert content["mean_forecast"] == rest["forecasts"][0]["mean"]


@pytest.mark.parametrize(
    ("frequency", "start", "n", "expected"),
    [
        ("M", "2024-01-31T00:00:00", 1, "2024-02-29T00:00:00"),  # clamped, leap year
        ("month", "2023-01-31T00:00:00", 1, "2023-02-28T00:00:00"),
        ("M", "2023-11-30T12:00:00", 3, "2024-02-29T12:00:00"),  # over a year end
        ("Q", "2024-11-30T00:00:00", 1, "2025-02-28T00:00:00"),
        ("Y", "2024-02-29T00:00:00", 1, "2025-02-28T00:00:00"),
        ("W", "2024-01-01T00:00:00", 4, "2024-01-29T00:00:00"),
        ("week", "2024-12-25T00:00:00", 2, "2025-01-08T00:00:00"),
        ("D", "2024-02-28T00:00:00", 2, "2024-03-01T00:00:00"),
        ("H", "2024-03-31T23:00:00", 3, "2024-04-01T02:00:00"),
        ("T", "2024-01-01T00:59:00", 2, "2024-01-01T01:01:00"),
        ("S", "2024-01-01T00:00:59", 1, "2024-01-01T00:01:00"),
    ],
)
def test_timeseries_forecast_start_follows_frequency(client, frequency, start, n, expected):
    """The forecast starts one period after the last observation (start + n periods)."""
    r = client.post(
        "/v1/timeseries/forecast", json=ts_body([1.0 + i for i in range(n)], frequency, start)
    )
    assert r.status_code == 200, r.text
    content = r.json()["outputs"][0]["content"][0]
    assert content["start_timestamp"] == expected
    assert content["frequency"] == frequency


# KServe frequency -> the tiny model's table: Y/year -> yearly, M/month -> monthly; quarterly
# has no table of its own; everything else is pooled.
YEARLY_LOW = [-2.0, -3.0, -3.0 * 1.5**0.5]
MONTHLY_LOW = [-0.5, -0.6, -0.7]
POOLED_LOW = [-1.0, -1.5, -2.0]


def low_spread(content: dict) -> np.ndarray:
    """A KServe forecast's 0.1 quantile minus its mean: the scaled offset when scale is 1."""
    return np.array(content["quantiles"]["0.1"]) - np.array(content["mean_forecast"])


@pytest.mark.parametrize(
    ("frequency", "low"),
    [
        ("Y", YEARLY_LOW),
        ("year", YEARLY_LOW),
        ("M", MONTHLY_LOW),
        ("month", MONTHLY_LOW),
        ("Q", POOLED_LOW),
        ("quarter", POOLED_LOW),
        ("W", POOLED_LOW),
        ("D", POOLED_LOW),
        ("H", POOLED_LOW),
        ("S", POOLED_LOW),
        ("minute", POOLED_LOW),
    ],
)
def test_timeseries_frequency_picks_the_calibrated_quantiles(client, frequency, low):
    body = ts_body(HISTORY_LOC2_SCALE1, frequency, horizon=3, quantiles=[0.1])
    r = client.post("/v1/timeseries/forecast", json=body)
    assert r.status_code == 200, r.text
    content = r.json()["outputs"][0]["content"][0]
    assert max_err(low_spread(content), low) <= TOL
    assert content["frequency"] == frequency


def test_timeseries_frequency_is_per_input(client):
    items = [
        {"name": n, "series": HISTORY_LOC2_SCALE1, "frequency": f}
        for n, f in zip("abc", "YMD", strict=True)
    ]
    body = {"inputs": items, "options": {"horizon": 3, "quantiles": [0.1]}}
    r = client.post("/v1/timeseries/forecast", json=body)
    assert r.status_code == 200, r.text
    content = r.json()["outputs"][0]["content"]
    for c, low in zip(content, (YEARLY_LOW, MONTHLY_LOW, POOLED_LOW), strict=True):
        assert max_err(low_spread(c), low) <= TOL
    assert content[0]["mean_forecast"] == content[1]["mean_forecast"] == content[2]["mean_forecast"]


def test_timeseries_frequency_the_model_does_not_know_is_pooled(make_client, tmp_path):
    path, _ = make_artifact(
        tmp_path / "yearly-only.onnx",
        frequencies=("yearly",),
        quantile_offsets_by_frequency={"yearly": ((-2.0, -3.0), (2.5, 3.5))},
    )
    client = make_client(model_path=path)
    for frequency, low in (("M", POOLED_LOW), ("Y", YEARLY_LOW)):
        body = ts_body(HISTORY_LOC2_SCALE1, frequency, horizon=3, quantiles=[0.1])
        r = client.post("/v1/timeseries/forecast", json=body)
        assert r.status_code == 200, r.text
        assert max_err(low_spread(r.json()["outputs"][0]["content"][0]), low) <= TOL


def test_timeseries_forecast_without_start_has_no_timestamp(client):
    r = client.post("/v1/timeseries/forecast", json=ts_body([1.0, 2.0], start=None))
    assert r.status_code == 200
    assert r.json()["outputs"][0]["content"][0]["start_timestamp"] is None


def test_timeseries_forecast_rejects_other_model_name(client):
    body = ts_body([1.0, 2.0])
    body["model"] = "not-this-one"
    r = client.post("/v1/timeseries/forecast", json=body)
    assert r.status_code == 404  # an unknown model, as on every door
    assert r.json()["error"]["field"] == "model"
    assert "not-this-one" in r.json()["error"]["message"]


# ---- metadata, health, readiness ----------------------------------------------------------------
def test_models_reports_sizes_and_provider(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    (m,) = r.json()["models"]
    assert m["name"] == "tiny" and m["version"] == "0.0.1" and m["variant"] == "cho2014"
    assert (m["input_size"], m["hidden_size"], m["num_layers"], m["output_size"]) == (1, 8, 2, 1)
    assert m["quantile_levels"] == [0.1, 0.9]
    assert (m["context_length"], m["horizon"]) == (16, 3)
    assert m["frequencies"] == ["yearly", "quarterly", "monthly", "other"]
    assert m["provider"] == "CPUExecutionProvider"
    assert m["recurrent_nodes"] == "CPUExecutionProvider"


def test_health_and_ready_bodies(client):
    assert client.get("/healthz").json()["status"] == "alive"
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["provider"] == "CPUExecutionProvider"
    assert (body["model"], body["version"]) == ("tiny", "0.0.1")


class GatedRuntime(Runtime):
    """A runtime whose warm-up waits for the test to open a gate."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()

    def warmup(self, rounds: int = 3) -> float:
        assert self.gate.wait(30), "the test never opened the gate"
        return super().warmup(rounds)


def test_ready_is_503_until_warm_up_finishes(make_settings):
    settings = make_settings()
    runtime = GatedRuntime(settings)
    app = create_app(settings, runtime)
    try:
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200  # alive while warming up
            r = client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["status"] == "not_ready"
            assert r.json()["provider"] == "CPUExecutionProvider"
            r = client.post("/v1/forecast", json={"series": [[1.0, 2.0]], "horizon": 2})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "not_ready"
            assert r.headers["retry-after"] == "1"
            runtime.gate.set()
            wait_ready(client)  # /readyz turns 200 once warm-up has run
            r = client.post("/v1/forecast", json={"series": [[1.0, 2.0]], "horizon": 2})
            assert r.status_code == 200
    finally:
        runtime.gate.set()


# ---- docs and OpenAPI ---------------------------------------------------------------------------
def test_docs_are_served_without_a_cdn(client):
    r = client.get("/docs")
    assert r.status_code == 200
    html = r.text
    assert "swagger" in html.lower()
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(
        r"""url: ?["']([^"']+)["']""", html
    )
    assert urls, html
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
    assert "cdn" not in html.lower()
    assets = [u for u in urls if u.startswith("/static/")]
    assert {a.rsplit(".", 1)[-1] for a in assets} >= {"js", "css"}
    for asset in assets:
        a = client.get(asset)
        assert a.status_code == 200, asset
        assert len(a.content) > 1000, asset
    assert client.get("/openapi.json").status_code == 200


def test_openapi_is_complete_with_examples(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/forecast", "post"),
        ("/v1/hidden", "post"),
        ("/v1/timeseries/forecast", "post"),
        ("/v1/models", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        op = paths[path][method]
        assert op.get("summary"), path  # handler docstrings become summaries
    schemas = spec["components"]["schemas"]
    for name in ("ForecastRequest", "HiddenRequest", "TimeSeriesRequest"):
        assert schemas[name].get("examples"), name
    assert "ErrorResponse" in schemas
    # the documented examples are themselves valid requests
    example = schemas["ForecastRequest"]["examples"][0]
    assert client.post("/v1/forecast", json=example).status_code == 200
    example = schemas["HiddenRequest"]["examples"][0]
    assert client.post("/v1/hidden", json=example).status_code == 200


# ---- the bundled trained artifact ----------------------------------------------------------------
BUNDLED = ROOT / "artifacts" / "gru.onnx"


@pytest.mark.skipif(not BUNDLED.is_file(), reason="artifacts/gru.onnx not built yet")
def test_bundled_artifact_serves_sane_forecasts(make_client):
    client = make_client(model_path=BUNDLED)
    (m,) = client.get("/v1/models").json()["models"]
    assert m["provider"] == "CPUExecutionProvider"
    assert m["input_size"] == m["output_size"]
    levels = sorted(q for q in m["quantile_levels"] if q != 0.5)
    series = [112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135]
    r = client.post("/v1/forecast", json={"series": [series], "horizon": 6, "quantiles": levels})
    assert r.status_code == 200, r.text
    out = r.json()["forecasts"][0]
    mean = np.array(out["mean"])
    assert mean.shape == (6,) and np.isfinite(mean).all()
    # a trained model stays within a few ranges of the history, not at random-weight values
    lo, hi, spread = min(series), max(series), max(series) - min(series)
    assert (mean > lo - 2 * spread).all() and (mean < hi + 2 * spread).all()
    qs = [np.array(out["quantiles"][f"{q:g}"]) for q in levels]
    for a, b in zip(qs, qs[1:], strict=False):
        assert (a <= b + 1e-6).all()  # ordered by level at every step
    assert (qs[0] <= mean + 1e-6).all() and (mean <= qs[-1] + 1e-6).all()


# ---- values near float32's limit ----------------------------------------------------------------
def test_forecast_scales_huge_finite_values(client):
    # float32 sums and squares of these overflow; the scaler fits them in float64
    r = client.post(
        "/v1/forecast", json={"series": [[1e30, -1e30]], "horizon": 2, "return_state": True}
    )
    assert r.status_code == 200, r.text
    fc = r.json()["forecasts"][0]
    assert fc["state"]["loc"] == [0.0]
    assert fc["state"]["scale"] == pytest.approx([1e30], rel=1e-6)
    assert all(abs(v) < 1e32 for v in fc["mean"])
    r = client.post("/v1/forecast", json={"series": [[3e38, -3e38, 3e38, 1]], "horizon": 2})
    assert r.status_code == 200, r.text
    assert all(abs(v) < 3.5e38 for v in r.json()["forecasts"][0]["mean"])


def test_forecast_past_float32_is_422_naming_the_series(client):
    state = {"h": [[0.0] * 8] * 2, "loc": [3e38], "scale": [3e38]}
    body = {"series": [[1.0, 2.0]], "horizon": 3, "quantiles": [0.9], "state": [state]}
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and err["field"] == "series.0"
    assert err["message"].startswith("values too large to scale")
    # scale 3.4e38 fits; the quantiles' offsets (+-1 scale at the first step) do not
    body = {"series": [[3.4e38, -3.4e38]], "horizon": 2, "quantiles": [0.1, 0.9]}
    r = client.post("/v1/forecast", json=body)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "series.0")
    del body["quantiles"]
    assert client.post("/v1/forecast", json=body).status_code == 200
    ts = {
        "inputs": [{"name": "a", "series": [3.4e38, -3.4e38], "frequency": "D"}],
        "options": {"horizon": 2, "quantiles": [0.9]},
    }
    r = client.post("/v1/timeseries/forecast", json=ts)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "inputs.0.series")


@pytest.mark.parametrize(
    "history", [[3e38, -3e38, 3e38, 1.0], [1e30, -1e30]], ids=["sum-overflows", "square-overflows"]
)
def test_scaler_fits_huge_finite_histories_in_float64(history):
    from export.contract import Scaler

    x = np.array(history, np.float32)[:, None]
    with np.errstate(over="ignore"):  # the float32 attempt overflows, as the service expects
        loc, scale = Scaler().fit(x)
    x64 = x.astype(np.float64)
    assert (loc.dtype, scale.dtype) == (np.float32, np.float32)
    np.testing.assert_allclose(loc, x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(scale, x64.std(0), rtol=1e-6)
    # ordinary histories keep the float32 fit, bit for bit
    small = np.array([[1.0], [2.5], [4.0]], np.float32)
    assert Scaler().fit(small)[0].tobytes() == np.float32(2.5).tobytes()


class FailingWarmupRuntime(Runtime):
    def warmup(self, rounds: int = 3) -> float:
        raise RuntimeError("no memory for the warm-up")


def test_failed_warm_up_is_logged_and_reported_by_readyz(make_settings, caplog):
    settings = make_settings()
    app = create_app(settings, FailingWarmupRuntime(settings))
    with caplog.at_level("ERROR", logger="gru_serve.app"), TestClient(app) as client:
        for _ in range(500):
            r = client.get("/readyz")
            if r.json()["reason"] != "warming up":
                break
            time.sleep(0.01)
        assert r.status_code == 503
        assert r.json()["status"] == "not_ready"
        assert r.json()["reason"] == "warm-up failed: RuntimeError: no memory for the warm-up"
        r = client.post("/v1/forecast", json={"series": [[1.0, 2.0]], "horizon": 2})
        assert r.status_code == 503 and "warm-up failed" in r.json()["error"]["message"]
    (rec,) = [r for r in caplog.records if r.name == "gru_serve.app" and r.levelname == "ERROR"]
    assert "warm-up failed" in rec.getMessage()
    assert rec.exc_info is not None and "no memory" in str(rec.exc_info[1])
