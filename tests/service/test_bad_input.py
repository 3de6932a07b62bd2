"""Bad input: each case gets a 4xx, the one JSON error shape naming the field, and the server
answers a good request correctly right after."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import wait_ready

from service.app import create_app
from service.settings import Settings

LIMITS = dict(max_series_length=64, max_items=4, max_horizon=100, max_body_bytes=4096)
GOOD = {"series": [[1.0, 2.0, 3.0]], "horizon": 3, "quantiles": [0.9]}
H_OK = [[0.0] * 8, [0.0] * 8]  # the tiny model: 2 layers x 8 units


@pytest.fixture(scope="module")
def limited(tiny_artifact):
    """One server with small limits for every case; `expected` is its answer to GOOD."""
    settings = Settings(model_path=tiny_artifact, device="cpu", **LIMITS)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        expected = client.post("/v1/forecast", json=GOOD).json()
        yield client, expected


def ts(series, **options):
    options.setdefault("horizon", 2)
    return {"inputs": [{"name": "a", "series": series, "frequency": "D"}], "options": options}


def dumps(body) -> str:
    return body if isinstance(body, str) else json.dumps(body)


F = "/v1/forecast"
HID = "/v1/hidden"
TS = "/v1/timeseries/forecast"
LONG = [1.0] * (LIMITS["max_series_length"] + 1)

# (id, path, body (a JSON string when it isn't valid JSON), status, code, field or None)
CASES = [
    # non-finite numbers, as the JSON literals some encoders write
    ("nan", F, '{"series": [[1, NaN, 3]], "horizon": 2}', 422, "invalid_input", "series.0.1"),
    (
        "infinity",
        F,
        '{"series": [[1, 2, Infinity]], "horizon": 2}',
        422,
        "invalid_input",
        "series.0.2",
    ),
    ("-infinity", F, '{"series": [[-Infinity]], "horizon": 2}', 422, "invalid_input", "series.0.0"),
    (
        "nan-quantile",
        F,
        '{"series": [[1]], "horizon": 2, "quantiles": [NaN]}',
        422,
        "invalid_input",
        "quantiles.0",
    ),
    ("nan-hidden-x", HID, '{"inputs": [{"x": [[NaN]]}]}', 422, "invalid_input", "inputs.0.x.0.0"),
    (
        "nan-hidden-h",
        HID,
        '{"inputs": [{"x": [[1]], "h": [[NaN, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]]}]}',
        422,
        "invalid_input",
        "inputs.0.h.0.0",
    ),
    (
        "nan-timeseries",
        TS,
        '{"inputs": [{"name": "a", "series": [1, NaN], "frequency": "D"}], "options": {"horizon": 2}}',
        422,
        "invalid_input",
        "inputs.0.series.1",
    ),
    (
        "nan-state",
        F,
        '{"series": [[1]], "horizon": 2, "state": [{"h": [[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0]], "loc": [NaN], "scale": [1]}]}',
        422,
        "invalid_input",
        "state.0.loc.0",
    ),
    # empty things
    ("empty-series", F, {"series": [[]], "horizon": 2}, 422, "invalid_input", "series.0"),
    ("no-series", F, {"series": [], "horizon": 2}, 422, "invalid_input", "series"),
    ("empty-hidden-x", HID, {"inputs": [{"x": []}]}, 422, "invalid_input", "inputs.0.x"),
    ("no-inputs", HID, {"inputs": []}, 422, "invalid_input", "inputs"),
    ("empty-ts-series", TS, ts([]), 422, "invalid_input", "inputs.0.series"),
    # limits
    ("series-too-long", F, {"series": [LONG], "horizon": 2}, 422, "invalid_input", "series.0"),
    (
        "second-series-too-long",
        F,
        {"series": [[1.0], LONG], "horizon": 2},
        422,
        "invalid_input",
        "series.1",
    ),
    (
        "hidden-too-long",
        HID,
        {"inputs": [{"x": [[v] for v in LONG]}]},
        422,
        "invalid_input",
        "inputs.0.x",
    ),
    ("ts-too-long", TS, ts(LONG), 422, "invalid_input", "inputs.0.series"),
    ("too-many-series", F, {"series": [[1.0]] * 5, "horizon": 2}, 422, "invalid_input", "series"),
    ("too-many-items", HID, {"inputs": [{"x": [[1.0]]}] * 5}, 422, "invalid_input", "inputs"),
    (
        "too-many-ts",
        TS,
        {
            "inputs": [{"name": "a", "series": [1.0], "frequency": "D"}] * 5,
            "options": {"horizon": 2},
        },
        422,
        "invalid_input",
        "inputs",
    ),
    # horizon
    ("horizon-0", F, {"series": [[1.0]], "horizon": 0}, 422, "invalid_input", "horizon"),
    ("horizon-negative", F, {"series": [[1.0]], "horizon": -3}, 422, "invalid_input", "horizon"),
    ("horizon-over-max", F, {"series": [[1.0]], "horizon": 101}, 422, "invalid_input", "horizon"),
    ("ts-horizon-0", TS, ts([1.0], horizon=0), 422, "invalid_input", "options.horizon"),
    ("ts-horizon-over-max", TS, ts([1.0], horizon=101), 422, "invalid_input", "options.horizon"),
    # feature count and ragged rows
    (
        "rows-for-univariate",
        F,
        {"series": [[[1.0, 2.0], [3.0, 4.0]]], "horizon": 2},
        422,
        "invalid_input",
        "series.0",
    ),
    (
        "ragged-rows",
        F,
        {"series": [[[1.0], [2.0, 3.0]]], "horizon": 2},
        422,
        "invalid_input",
        "series.0",
    ),
    (
        "hidden-two-features",
        HID,
        {"inputs": [{"x": [[1.0, 2.0]]}]},
        422,
        "invalid_input",
        "inputs.0.x",
    ),
    ("hidden-no-features", HID, {"inputs": [{"x": [[]]}]}, 422, "invalid_input", "inputs.0.x"),
    # hidden state shape
    (
        "h-one-layer",
        HID,
        {"inputs": [{"x": [[1.0]], "h": [[0.0] * 8]}]},
        422,
        "invalid_input",
        "inputs.0.h",
    ),
    (
        "h-short-rows",
        HID,
        {"inputs": [{"x": [[1.0]], "h": [[0.0] * 7, [0.0] * 7]}]},
        422,
        "invalid_input",
        "inputs.0.h",
    ),
    (
        "h-ragged",
        HID,
        {"inputs": [{"x": [[1.0]], "h": [[0.0] * 8, [0.0] * 7]}]},
        422,
        "invalid_input",
        "inputs.0.h",
    ),
    (
        "h-flat",
        HID,
        {"inputs": [{"x": [[1.0]], "h": [0.0] * 16}]},
        422,
        "invalid_input",
        "inputs.0.h.0",
    ),
    (
        "state-h-shape",
        F,
        {
            "series": [[1.0]],
            "horizon": 2,
            "state": [{"h": [[0.0] * 3], "loc": [0.0], "scale": [1.0]}],
        },
        422,
        "invalid_input",
        "state.0.h",
    ),
    (
        "state-scale-zero",
        F,
        {"series": [[1.0]], "horizon": 2, "state": [{"h": H_OK, "loc": [0.0], "scale": [0.0]}]},
        422,
        "invalid_input",
        "state.0.scale",
    ),
    (
        "state-count",
        F,
        {"series": [[1.0], [2.0]], "horizon": 2, "state": [None]},
        422,
        "invalid_input",
        "state",
    ),
    # quantiles
    (
        "quantile-0",
        F,
        {"series": [[1.0]], "horizon": 2, "quantiles": [0.0]},
        422,
        "invalid_input",
        "quantiles",
    ),
    (
        "quantile-1",
        F,
        {"series": [[1.0]], "horizon": 2, "quantiles": [1.0]},
        422,
        "invalid_input",
        "quantiles",
    ),
    (
        "quantile-negative",
        F,
        {"series": [[1.0]], "horizon": 2, "quantiles": [0.5, -0.1]},
        422,
        "invalid_input",
        "quantiles",
    ),
    (
        "quantile-1.5",
        F,
        {"series": [[1.0]], "horizon": 2, "quantiles": [1.5]},
        422,
        "invalid_input",
        "quantiles",
    ),
    ("ts-quantile-1", TS, ts([1.0], quantiles=[1.0]), 422, "invalid_input", "options.quantiles"),
    # frequency: one of the model's names (GET /v1/models), a string
    (
        "unknown-frequency",
        F,
        {"series": [[1.0]], "horizon": 2, "frequency": "weekly"},
        422,
        "invalid_input",
        "frequency",
    ),
    (
        "kserve-letter-frequency",
        F,
        {"series": [[1.0]], "horizon": 2, "frequency": "M"},
        422,
        "invalid_input",
        "frequency",
    ),
    (
        "number-frequency",
        F,
        {"series": [[1.0]], "horizon": 2, "frequency": 12},
        422,
        "invalid_input",
        "frequency",
    ),
    (
        "list-frequency",
        F,
        {"series": [[1.0]], "horizon": 2, "frequency": ["monthly"]},
        422,
        "invalid_input",
        "frequency",
    ),
    # wrong JSON types
    (
        "string-number",
        F,
        {"series": [["1", 2.0]], "horizon": 2},
        422,
        "invalid_input",
        "series.0.0",
    ),
    ("bool-number", F, {"series": [[True, 2.0]], "horizon": 2}, 422, "invalid_input", "series.0.0"),
    ("null-number", F, {"series": [[None]], "horizon": 2}, 422, "invalid_input", "series.0.0"),
    ("string-series", F, {"series": "1,2,3", "horizon": 2}, 422, "invalid_input", "series"),
    ("object-series", F, {"series": [{"a": 1}], "horizon": 2}, 422, "invalid_input", "series.0"),
    ("too-deep", F, {"series": [[[[1.0]]]], "horizon": 2}, 422, "invalid_input", "series.0.0"),
    ("string-horizon", F, {"series": [[1.0]], "horizon": "3"}, 422, "invalid_input", "horizon"),
    ("float-horizon", F, {"series": [[1.0]], "horizon": 2.5}, 422, "invalid_input", "horizon"),
    ("bool-horizon", F, {"series": [[1.0]], "horizon": True}, 422, "invalid_input", "horizon"),
    (
        "string-return-state",
        F,
        {"series": [[1.0]], "horizon": 2, "return_state": "yes"},
        422,
        "invalid_input",
        "return_state",
    ),
    (
        "int-return-sequence",
        HID,
        {"inputs": [{"x": [[1.0]]}], "return_sequence": 1},
        422,
        "invalid_input",
        "return_sequence",
    ),
    (
        "string-in-h",
        HID,
        {"inputs": [{"x": [[1.0]], "h": [[0.0] * 7 + ["a"], [0.0] * 8]}]},
        422,
        "invalid_input",
        "inputs.0.h.0.7",
    ),
    ("nested-wrong-item", HID, {"inputs": [[[1.0]]]}, 422, "invalid_input", "inputs.0"),
    (
        "ts-number-name",
        TS,
        {"inputs": [{"name": 5, "series": [1.0], "frequency": "D"}], "options": {"horizon": 2}},
        422,
        "invalid_input",
        "inputs.0.name",
    ),
    (
        "ts-bad-frequency",
        TS,
        {
            "inputs": [{"name": "a", "series": [1.0], "frequency": "fortnight"}],
            "options": {"horizon": 2},
        },
        422,
        "invalid_input",
        "inputs.0.frequency",
    ),
    (
        "ts-bad-timestamp",
        TS,
        {
            "inputs": [
                {"name": "a", "series": [1.0], "frequency": "D", "start_timestamp": "yesterday"}
            ],
            "options": {"horizon": 2},
        },
        422,
        "invalid_input",
        "inputs.0.start_timestamp",
    ),
    (
        "ts-bad-type",
        TS,
        {
            "inputs": [{"type": "image", "name": "a", "series": [1.0], "frequency": "D"}],
            "options": {"horizon": 2},
        },
        422,
        "invalid_input",
        "inputs.0.type",
    ),
    (
        "ts-missing-options",
        TS,
        {"inputs": [{"name": "a", "series": [1.0], "frequency": "D"}]},
        422,
        "invalid_input",
        "options",
    ),
    ("missing-series", F, {"horizon": 2}, 422, "invalid_input", "series"),
    # unknown fields, anywhere
    (
        "unknown-top",
        F,
        {"series": [[1.0]], "horizon": 2, "horizn": 3},
        422,
        "invalid_input",
        "horizn",
    ),
    (
        "unknown-in-state",
        F,
        {
            "series": [[1.0]],
            "horizon": 2,
            "state": [{"h": H_OK, "loc": [0.0], "scale": [1.0], "c": 1}],
        },
        422,
        "invalid_input",
        "state.0.c",
    ),
    (
        "unknown-in-item",
        HID,
        {"inputs": [{"x": [[1.0]], "c": [[0.0]]}]},
        422,
        "invalid_input",
        "inputs.0.c",
    ),
    ("unknown-in-options", TS, ts([1.0], quantile=[0.9]), 422, "invalid_input", "options.quantile"),
    # malformed JSON: the body as a whole is to blame
    ("truncated", F, '{"series": [[1, 2]], "horizon": 2', 400, "malformed_request", None),
    ("trailing-comma", F, '{"series": [[1, 2],], "horizon": 2}', 400, "malformed_request", None),
    ("single-quotes", HID, "{'inputs': []}", 400, "malformed_request", None),
    ("not-json", TS, "inputs=1", 400, "malformed_request", None),
]


def assert_error_shape(r, status: int, code: str, field: str | None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "field"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and len(err["message"]) > 5, err
    assert err.get("field") == field, err
    return err


def assert_unharmed(client, expected) -> None:
    r = client.post("/v1/forecast", json=GOOD)
    assert r.status_code == 200
    assert r.json() == expected


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_bad_input_gets_clear_4xx(limited, path, body, status, code, field):
    client, expected = limited
    r = client.post(path, content=dumps(body), headers={"content-type": "application/json"})
    assert_error_shape(r, status, code, field)
    assert_unharmed(client, expected)


def test_messages_say_what_was_expected(limited):
    client, _ = limited
    r = client.post("/v1/forecast", json={"series": [LONG], "horizon": 2})
    assert "65" in r.json()["error"]["message"] and "64" in r.json()["error"]["message"]
    r = client.post("/v1/forecast", json={"series": [[1.0]], "horizon": 101})
    assert "100" in r.json()["error"]["message"]
    r = client.post("/v1/hidden", json={"inputs": [{"x": [[1.0]], "h": [[0.0] * 8]}]})
    assert "2 x 8" in r.json()["error"]["message"]
    r = client.post("/v1/forecast", json={"series": [[1.0]], "horizon": 2, "quantiles": [1.5]})
    assert "1.5" in r.json()["error"]["message"]


def test_body_over_limit_is_413(limited):
    client, expected = limited
    body = json.dumps({"series": [[1.0] * 2000], "horizon": 2})
    assert len(body) > LIMITS["max_body_bytes"]
    r = client.post("/v1/forecast", content=body, headers={"content-type": "application/json"})
    err = assert_error_shape(r, 413, "payload_too_large", None)
    assert "4096" in err["message"]
    assert_unharmed(client, expected)


def test_chunked_body_over_limit_is_413(limited):
    """No Content-Length: the limit holds while the body streams in."""
    client, expected = limited
    chunk = b"1.0," * 512

    def chunks():
        yield b'{"series": [['
        for _ in range(4):
            yield chunk
        yield b'1.0]], "horizon": 2}'

    r = client.post("/v1/forecast", content=chunks(), headers={"content-type": "application/json"})
    assert_error_shape(r, 413, "payload_too_large", None)
    assert_unharmed(client, expected)


def test_chunked_body_under_limit_is_served(limited):
    client, expected = limited

    def chunks():
        body = json.dumps(GOOD).encode()
        yield body[:10]
        yield body[10:]

    r = client.post("/v1/forecast", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json() == expected


def test_unknown_path_and_method_use_the_error_shape(limited):
    client, expected = limited
    assert_error_shape(client.get("/v1/nothing"), 404, "not_found", None)
    assert_error_shape(client.get("/v1/forecast"), 405, "method_not_allowed", None)
    assert_unharmed(client, expected)


def test_bad_input_over_real_http_leaves_server_unharmed(serve_process):
    """The same through uvicorn: malformed JSON, NaN, oversize, then a good request."""
    import httpx

    server = serve_process(max_body_bytes=2048)
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        good = c.post("/v1/forecast", json=GOOD)
        assert good.status_code == 200
        headers = {"content-type": "application/json"}
        r = c.post("/v1/forecast", content='{"series": [[1, NaN]], "horizon": 2}', headers=headers)
        assert_error_shape(r, 422, "invalid_input", "series.0.1")
        r = c.post("/v1/forecast", content='{"series": [[1', headers=headers)
        assert_error_shape(r, 400, "malformed_request", None)
        r = c.post("/v1/forecast", content=json.dumps({"series": [[1.0] * 1000]}), headers=headers)
        assert_error_shape(r, 413, "payload_too_large", None)
        after = c.post("/v1/forecast", json=GOOD)
        assert after.status_code == 200
        assert after.json() == good.json()


# ---- work bounds: quantile levels and hidden sequences ------------------------------------------
def test_too_many_quantile_levels_is_422_on_every_door(make_client):
    c = make_client(max_quantiles=3)
    many = [0.1, 0.2, 0.3, 0.4]
    r = c.post("/v1/forecast", json={"series": [[1.0, 2.0]], "horizon": 2, "quantiles": many})
    err = assert_error_shape(r, 422, "invalid_input", "quantiles")
    assert "4 quantile levels" in err["message"] and "limit of 3" in err["message"]
    r = c.post(TS, json=ts([1.0, 2.0], quantiles=many))
    assert_error_shape(r, 422, "invalid_input", "options.quantiles")
    ok = c.post("/v1/forecast", json={"series": [[1.0, 2.0]], "horizon": 2, "quantiles": many[:3]})
    assert ok.status_code == 200 and len(ok.json()["forecasts"][0]["quantiles"]) == 3
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "history": [1.0, 2.0], "options": {"quantiles": many}})
        err = ws.receive_json()
        assert (err["type"], err["code"], err["field"]) == (
            "error",
            "invalid_input",
            "options.quantiles",
        )
        ws.send_json({"type": "start", "history": [1.0, 2.0]})
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({"type": "forecast", "horizon": 2, "quantiles": many})
        err = ws.receive_json()
        assert (err["type"], err["field"]) == ("error", "quantiles"), err
        assert "limit of 3" in err["message"]


def test_default_quantile_limit_is_32():
    assert Settings.model_fields["max_quantiles"].default == 32


def test_hidden_return_sequence_over_value_limit_is_422(make_client):
    per_step = 2 * 8 + 1  # the tiny model: L x H + O numbers per returned step
    c = make_client(max_hidden_sequence_values=10 * per_step)
    ten = {"inputs": [{"x": [[0.5]] * 6}, {"x": [[0.5]] * 4}], "return_sequence": True}
    r = c.post(HID, json=ten)
    assert r.status_code == 200 and len(r.json()["outputs"][0]["h_seq"]) == 6
    eleven = {"inputs": [{"x": [[0.5]] * 6}, {"x": [[0.5]] * 5}], "return_sequence": True}
    err = assert_error_shape(c.post(HID, json=eleven), 422, "invalid_input", "return_sequence")
    assert str(11 * per_step) in err["message"] and str(10 * per_step) in err["message"]
    # without the sequences the answer is one state per item: not limited
    r = c.post(HID, json={**eleven, "return_sequence": False})
    assert r.status_code == 200 and r.json()["outputs"][1]["h_seq"] is None


@pytest.mark.parametrize(
    ("start", "frequency"),
    [("9999-12-30T00:00:00", "D"), ("9998-01-01", "Y"), ("9999-12-31T23:59:59", "second")],
)
def test_timeseries_start_past_year_9999_is_422(limited, start, frequency):
    client, expected = limited
    item = {
        "name": "a",
        "series": [1.0, 2.0, 3.0],
        "frequency": frequency,
        "start_timestamp": start,
    }
    r = client.post(TS, json={"inputs": [item], "options": {"horizon": 2}})
    err = assert_error_shape(r, 422, "invalid_input", "inputs.0.start_timestamp")
    assert "9999" in err["message"]
    item["start_timestamp"] = "9999-12-01T00:00:00"  # 3 days or seconds later still fits
    r = client.post(TS, json={"inputs": [item], "options": {"horizon": 2}})
    if frequency != "Y":
        content = r.json()["outputs"][0]["content"][0]
        want = {"D": "9999-12-04T00:00:00", "second": "9999-12-01T00:00:03"}[frequency]
        assert content["start_timestamp"] == want
    assert_unharmed(client, expected)
