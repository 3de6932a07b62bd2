"""API keys on every route (enumerated from the app, so new routes are covered), the websocket
refused before a session opens, constant-time comparison, CORS."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re

import pytest
import tritonclient.http as triton
import websockets
from starlette.testclient import WebSocketDisconnect
from tritonclient.utils import InferenceServerException

from service import auth
from service.auth import OPEN_PATHS
from service.logs import route_table

KEYS = "alpha-key,beta-key"
PARAMS = {"name": "tiny", "version": "0.0.1"}
BODIES = {  # a valid body where one is needed; any other POST gets {} (a 4xx, never 401)
    "/v1/hidden": {"inputs": [{"x": [[0.1]]}]},
    "/v2/models/{name}/infer": {
        "inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [0.1]}]
    },
}


def concrete(template: str) -> str:
    path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS.get(m.group(1), "x"), template)
    return path + "/swagger-ui.css" if template.startswith("/static") else path


def http_cases(app) -> list[tuple[str, str, str]]:
    cases = []
    for template, methods, kind in route_table(app):
        if kind != "http":
            continue
        for method in sorted(methods - {"HEAD"}) or ["GET"]:
            cases.append((method, template, concrete(template)))
    return cases


@pytest.fixture
def secured(make_client):
    return make_client(api_keys=KEYS)


def test_every_http_route_refuses_without_and_accepts_with_a_key(secured) -> None:
    cases = http_cases(secured.app)
    templates = {t for _, t, _ in cases}
    assert {"/v1/hidden", "/v2/models/{name}/infer", "/metrics", "/docs"} <= templates
    for method, template, path in cases:
        body = BODIES.get(template, {}) if method == "POST" else None
        bare = secured.request(method, path, json=body)
        if template in OPEN_PATHS:
            assert bare.status_code == 200, (template, bare.status_code)
            continue
        assert bare.status_code == 401, (method, template, bare.status_code)
        assert bare.headers["www-authenticate"].startswith("Bearer")
        err = bare.json()["error"]
        message = err if template.startswith("/v2") else err["message"]
        assert "API key" in message, template
        if not template.startswith("/v2"):
            assert err["code"] == "unauthorized"
        for headers in ({"Authorization": "Bearer alpha-key"}, {"X-API-Key": "beta-key"}):
            ok = secured.request(method, path, json=body, headers=headers)
            assert ok.status_code != 401, (method, template, headers)
            if template in BODIES or method == "GET" and not template.startswith("/static"):
                assert ok.status_code == 200, (method, template, ok.status_code, ok.text)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer alpha"},  # a prefix of a key
        {"Authorization": "Bearer alpha-key-and-more"},
        {"Authorization": "Basic alpha-key"},
        {"Authorization": "alpha-key"},
        {"X-API-Key": ""},
        {"X-Api-Key": "ALPHA-KEY"},
    ],
)
def test_wrong_keys_are_refused(secured, headers) -> None:
    assert secured.get("/v1/models", headers=headers).status_code == 401


def test_every_websocket_route_refuses_before_accept(secured) -> None:
    ws_routes = [t for t, _, kind in route_table(secured.app) if kind == "websocket"]
    assert "/v1/stream" in ws_routes
    for template in ws_routes:
        with (
            pytest.raises(WebSocketDisconnect) as e,
            secured.websocket_connect(concrete(template)) as ws,
        ):
            ws.receive_text()
        assert e.value.code == auth.WS_1008_POLICY_VIOLATION
        with secured.websocket_connect(concrete(template), headers={"X-API-Key": "alpha-key"}):
            pass  # accepted: the handshake completed


def test_keys_are_compared_in_constant_time_over_all_keys(monkeypatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    mw = auth.ApiKeyAuth(app=None, keys=["k1", "k2", "k3"])
    assert mw.allowed(b"k1")  # matches the first key, and still compares with every key
    assert [b for _, b in calls] == [hashlib.sha256(k).digest() for k in (b"k1", b"k2", b"k3")]
    calls.clear()
    assert not mw.allowed(None) and len(calls) == 3
    assert not mw.allowed(b"")


def test_key_comparison_does_not_depend_on_the_key_length(monkeypatch) -> None:
    """compare_digest returns early on a length mismatch: it only ever sees 32-byte digests."""
    lengths = []
    real = hmac.compare_digest

    def spy(a, b):
        lengths.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    mw = auth.ApiKeyAuth(app=None, keys=["short", "a-much-longer-configured-key-" * 4])
    assert mw.allowed(b"short") and mw.allowed(b"a-much-longer-configured-key-" * 4)
    assert not mw.allowed(b"x") and not mw.allowed(b"short" * 100)
    assert not mw.allowed(b"shor") and not mw.allowed(b"short ")
    assert lengths and set(lengths) == {(32, 32)}


def test_auth_is_off_without_keys(client) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_real_server_refuses_websocket_and_oip_client_without_a_key(serve_process) -> None:
    server = serve_process(api_keys=KEYS)

    async def attempt(headers):
        async with websockets.connect(
            f"{server.ws_url}/v1/stream", additional_headers=headers, open_timeout=5
        ) as ws:
            await ws.send('{"type": "start"}')
            return await asyncio.wait_for(ws.recv(), 5)

    with pytest.raises(websockets.InvalidStatus) as e:
        asyncio.run(attempt({}))
    assert e.value.response.status_code == 403
    reply = asyncio.run(attempt({"Authorization": "Bearer beta-key"}))
    assert '"ready"' in reply

    # the official OIP client: probes open, everything else needs the header
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert c.is_server_live() and c.is_server_ready()
        with pytest.raises(InferenceServerException) as e:
            c.get_server_metadata()
        assert e.value.status() == "401" and "API key" in e.value.message()
        assert c.get_server_metadata(headers={"X-API-Key": "alpha-key"})["name"] == "gru-serve"
    finally:
        c.close()


# ---- CORS -----------------------------------------------------------------------------------------
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}


def test_no_cors_by_default(client) -> None:
    r = client.get("/v1/models", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/v1/hidden", headers={"Origin": "https://app.example", **PREFLIGHT})
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_configured_origins_only(make_client) -> None:
    c = make_client(cors_origins="https://app.example, https://b.example", api_keys=KEYS)
    # the preflight carries no key and must still succeed
    r = c.options("/v1/hidden", headers={"Origin": "https://b.example", **PREFLIGHT})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://b.example"
    assert "x-api-key" in r.headers["access-control-allow-headers"].lower()
    r = c.get("/v1/models", headers={"Origin": "https://app.example", "X-API-Key": "alpha-key"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    r = c.options("/v1/hidden", headers={"Origin": "https://evil.example", **PREFLIGHT})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = c.get("/v1/models", headers={"Origin": "https://evil.example", "X-API-Key": "alpha-key"})
    assert "access-control-allow-origin" not in r.headers
