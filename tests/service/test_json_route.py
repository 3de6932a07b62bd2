"""REST bodies are decoded once: the route's model validates the raw JSON in one pass
(service/routes/json_route.py). The answers keep FastAPI's statuses and the one error shape;
what the body or its content type is wrong about is said in the message."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from service_helpers import wait_ready

from service.app import create_app
from service.schemas import ForecastRequest, HiddenRequest
from service.settings import Settings

GOOD = {"series": [[1.0, 2.0, 3.0]], "horizon": 3, "quantiles": [0.9]}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tiny_artifact):
    settings = Settings(model_path=tiny_artifact, device="cpu", max_items=4)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def test_the_body_is_parsed_and_validated_once(client, monkeypatch):
    calls: list[bytes] = []
    original = ForecastRequest.model_validate_json.__func__  # type: ignore[attr-defined]

    def spy(cls, data, *args, **kwargs):
        calls.append(data)
        return original(cls, data, *args, **kwargs)

    monkeypatch.setattr(ForecastRequest, "model_validate_json", classmethod(spy))
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("json.loads on the hot path"))
    body = json.dumps(GOOD).encode()
    r = client.post("/v1/forecast", content=body, headers=JSON)
    assert r.status_code == 200 and len(loads(r.content)["forecasts"][0]["mean"]) == 3
    assert calls == [body]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/vnd.gru+json",
    ],
)
def test_json_media_types_give_the_same_answer(client, content_type):
    body = json.dumps(GOOD).encode()
    plain = client.post("/v1/forecast", content=body, headers=JSON)
    other = client.post("/v1/forecast", content=body, headers={"content-type": content_type})
    assert other.status_code == 200 and other.content == plain.content


@pytest.mark.parametrize("path", ["/v1/forecast", "/v1/hidden", "/v1/timeseries/forecast"])
@pytest.mark.parametrize(
    ("headers", "phrase"),
    [
        (
            {"content-type": "application/x-www-form-urlencoded"},
            "got application/x-www-form-urlencoded",
        ),
        ({}, "got no Content-Type"),
        ({"content-type": "text/plain"}, "got text/plain"),
    ],
)
def test_a_body_that_is_not_json_typed_names_the_content_type(client, path, headers, phrase):
    # `curl -d` sends a form type: the answer says what to send instead
    r = client.post(path, content=json.dumps(GOOD).encode(), headers=headers)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert "Content-Type: application/json" in err["message"] and phrase in err["message"]


@pytest.mark.parametrize("path", ["/v1/forecast", "/v1/hidden", "/v1/timeseries/forecast"])
def test_an_empty_body_says_it_is_empty(client, path):
    r = client.post(path, content=b"", headers=JSON)
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "invalid_input",
        "message": "the request body is empty: expected a JSON object",
    }


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"series": [[1, 2]]', 400, "malformed_request", None),
        (b'{"series": [[1, 2]], "x\xff": 1}', 400, "malformed_request", None),
        (b'{"series": [[1, NaN, 3]], "horizon": 2}', 422, "invalid_input", "series.0.1"),
        (b'{"series": [[1e400]]}', 422, "invalid_input", "series.0.0"),
        (b'{"series": [[1, 2]], "extra": 1}', 422, "invalid_input", "extra"),
        (b"[]", 422, "invalid_input", None),
        (b'{"series": [[1.0]], "horizon": 2.5}', 422, "invalid_input", "horizon"),
        (json.dumps({"series": [[1.0]] * 5}).encode(), 422, "invalid_input", "series"),
    ],
)
def test_bad_bodies_keep_their_status_code_and_field(client, body, status, code, field):
    r = client.post("/v1/forecast", content=body, headers=JSON)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err.get("field") == field


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_json_in_utf16_or_behind_a_bom_is_accepted(client, encoding):
    plain = client.post("/v1/forecast", json=GOOD)
    r = client.post("/v1/forecast", content=json.dumps(GOOD).encode(encoding), headers=JSON)
    assert r.status_code == 200 and r.content == plain.content


def test_not_ready_comes_before_invalid_input_but_after_malformed_json(client):
    state = client.app.state.service
    state.ready = False
    try:
        bad = client.post("/v1/forecast", content=b'{"series": []}', headers=JSON)
        broken = client.post("/v1/forecast", content=b"{", headers=JSON)
    finally:
        state.ready = True
    assert bad.status_code == 503 and bad.headers["retry-after"] == "1"
    assert bad.json()["error"]["code"] == "not_ready"
    assert broken.status_code == 400


def test_openapi_still_declares_the_body_models(client):
    spec = client.get("/openapi.json").json()
    for path, model in (("/v1/forecast", ForecastRequest), ("/v1/hidden", HiddenRequest)):
        body = spec["paths"][path]["post"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model.__name__}" and body["required"] is True


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/forecast", {"series": [[1.0, 2.0, 1e39]]}, "series.0"),
        ("/v1/hidden", {"inputs": [{"x": [[1e39]]}]}, "inputs.0.x"),
    ],
)
def test_a_number_past_float32_is_too_large_not_infinite(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == field and err["message"].startswith("values too large to scale")
