"""The hot path for POST /v1/forecast (service.fastpath) answers exactly as the FastAPI route
does: same status, body and headers for valid and invalid bodies alike. A JSON media type
other than application/json (`application/vnd.gru+json`) is left to FastAPI, so the same body
through both is compared."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import wait_ready

import service.fastpath
from service.app import create_app
from service.settings import Settings

FAST = {"content-type": "application/json"}
ROUTE = {"content-type": "application/vnd.gru+json"}
H_OK = [[0.0] * 8, [0.0] * 8]  # the tiny model: 2 layers x 8 units

BODIES = [
    {"series": [[1.0, 2.0, 3.0]], "horizon": 3, "quantiles": [0.9]},
    {"series": [[1, 2, 3, 4], [5.5, 6.25]], "horizon": 2, "quantiles": [0.1, 0.5, 0.9]},
    {"series": [[1, 2]], "return_state": True},
    {"series": [[1, 2]], "state": [{"h": H_OK, "loc": [0.0], "scale": [1.0]}], "horizon": 2},
    {"series": [[1, 2]], "state": [None], "quantiles": []},
    {"series": [[1, 2, 3], [4, 2]], "horizon": 5, "quantiles": [0.1, 0.3], "frequency": "monthly"},
    {"series": [[1, 2]], "quantiles": [0.9], "frequency": "quarterly"},
    {"series": [[1, 2]], "quantiles": [0.9], "frequency": None},
    {"series": [[1, 2]], "frequency": "weekly"},
    {"series": [[1, 2]], "frequency": 12},
    {"series": [[1, 2]], "frequency": ["yearly"]},
    {"series": [[1, 2]], "horizon": 0},
    {"series": [[1, 2]], "horizon": 101},
    {"series": [[1, 2]], "quantiles": [1.5]},
    {"series": [[1, 2]], "state": [{"h": [[0.0]], "loc": [0.0], "scale": [1.0]}]},
    {"series": [[1, 2]], "state": []},
    {"series": [[1.0]] * 5},
    {"series": [[1.0] * 65]},
    {"series": [[1e38, -1e38, 3e38]], "horizon": 3},
    {"series": [[1, 2]], "horizon": 2.0},
    {"series": [[1, "2"]]},
    {"series": [[1, 2]], "extra": 1},
    {"series": []},
    {"horizon": 3},
    [],
]
RAW = [
    b'{"series": [[1, NaN, 3]], "horizon": 2}',
    b'{"series": [[1e400]]}',
    b'{"series": [[1' + b"0" * 400 + b"]]}",
    b'{"series": [[1, 2]], "series": [[3, 4, 5]]}',
    b'{"\\u0073eries": [[1, 2]]}',
    b'{"series": [[1, 2]]',
    b'\xef\xbb\xbf{"series": [[1, 2]]}',
    '{"series": [[1, 2]]}'.encode("utf-16"),
    b'{"series": [[1, 2]], "x\xff": 1}',
    b"",
]


@pytest.fixture(scope="module")
def limited(tiny_artifact):
    settings = Settings(
        model_path=tiny_artifact, device="cpu", max_series_length=64, max_items=4, max_horizon=100
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def hot_path_calls(monkeypatch) -> list[int]:
    """Grows by one each time the hot path answers a request itself."""
    taken: list[int] = []
    answer = service.fastpath.forecast_json

    async def spy(req, core):
        taken.append(1)
        return await answer(req, core)

    monkeypatch.setattr(service.fastpath, "forecast_json", spy)
    return taken


@pytest.mark.parametrize("body", [json.dumps(b).encode() for b in BODIES] + RAW)
def test_same_answer_as_the_route(limited, body, hot_path_calls):
    taken = hot_path_calls
    fast = limited.post("/v1/forecast", content=body, headers=FAST)
    route = limited.post("/v1/forecast", content=body, headers=ROUTE)
    assert fast.status_code == route.status_code
    assert fast.content == route.content
    for name in ("content-type", "content-length", "retry-after"):
        assert fast.headers.get(name) == route.headers.get(name)
    assert len(taken) <= 1  # the FastAPI route (vnd.gru+json) never goes through the hot path
    if fast.status_code == 200 and body.startswith(b"{"):  # not a BOM or UTF-16 body
        assert taken == [1]  # a valid UTF-8 body was answered by the hot path


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_json_with_utf8_charset_takes_the_hot_path(make_client, hot_path_calls, content_type):
    client = make_client()
    taken = hot_path_calls
    body = json.dumps(BODIES[0]).encode()
    fast = client.post("/v1/forecast", content=body, headers={"content-type": content_type})
    route = client.post("/v1/forecast", content=body, headers=ROUTE)
    assert taken == [1] and fast.status_code == 200 and fast.content == route.content


def test_not_ready_is_the_same(make_client):
    client = make_client()  # warmed up: nothing sets `ready` again
    client.app.state.ready = False
    body = json.dumps(BODIES[0]).encode()
    fast = client.post("/v1/forecast", content=body, headers=FAST)
    route = client.post("/v1/forecast", content=body, headers=ROUTE)
    assert fast.status_code == route.status_code == 503
    assert fast.content == route.content
    assert fast.headers["retry-after"] == route.headers["retry-after"] == "1"
