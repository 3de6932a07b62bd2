"""The playground in headless Chromium against a real server on the bundled model: it loads
with no failed request, draws what the server streams (checked against REST forecasts chained
by their state, another door to the same model), forks a forecast, pauses and resumes with
the resume token, shows the server's errors, and works with API keys on."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from playground_page import ARTIFACTS, KEY, ROOT, PlaygroundPage
from servers import ServerProcess

EXAMPLES = json.loads((ROOT / "service" / "playground" / "examples.json").read_text())["series"]
N1907 = next(s for s in EXAMPLES if s["id"] == "m3-N1907")
QUANTILES = [0.1, 0.9]  # the page's default interval: 80%


def rest_reference(
    server: ServerProcess, values: list[float], history: int, horizon: int, headers=None
) -> tuple[list[tuple[float, float, float]], dict]:
    """What the stream must answer, through REST: the history's forecast with its state, then
    one observation at a time from the returned state. Returns the one-step (y, lo, hi) after
    each streamed observation and the last call's forecast of `horizon` steps."""
    common = {"quantiles": QUANTILES, "frequency": "monthly", "return_state": True}
    out = []
    with httpx.Client(base_url=server.base_url, timeout=10, headers=headers) as c:
        r = c.post("/v1/forecast", json={"series": [values[:history]], "horizon": 1, **common})
        state = r.json()["forecasts"][0]["state"]
        for i, x in enumerate(values[history:], start=history):
            h = horizon if i == len(values) - 1 else 1
            body = {"series": [[x]], "state": [state], "horizon": h, **common}
            r = c.post("/v1/forecast", json=body)
            assert r.status_code == 200, r.text
            fc = r.json()["forecasts"][0]
            q = fc["quantiles"]
            out.append((fc["mean"][0], q["0.1"][0], q["0.9"][0]))
            state = fc["state"]
    return out, fc


def assert_drawn(points: list[dict], expected: list[tuple[float, float, float]]) -> None:
    assert [(p["y"], p["lo"], p["hi"]) for p in points] == [
        pytest.approx(e, rel=1e-5) for e in expected
    ]
    # drawn where the values are: a higher value sits higher (smaller cy)
    by_value = sorted(points, key=lambda p: p["y"])
    assert [p["cy"] for p in by_value] == sorted((p["cy"] for p in by_value), reverse=True)


def start_stream(page: PlaygroundPage, series_id: str, history: int, speed: str) -> None:
    page.choose("series", series_id)
    page.fill("history", str(history))
    page.choose("speed", speed)
    page.click("start")


def test_the_page_loads_with_no_failed_request_and_shows_the_model_card(
    page: PlaygroundPage, server: ServerProcess
) -> None:
    model = httpx.get(server.base_url + "/v1/models").json()["models"][0]
    card = page.card()
    assert card["name"] == model["name"] == "gru-forecaster"
    assert card["version"] == model["version"]
    assert card["variant"] == "cho2014"
    assert card["sizes"] == "input 1, hidden 168 x 1 layer(s), output 1"
    assert card["provider"] == model["provider"] == "CPUExecutionProvider"
    assert card["context length"] == str(model["context_length"])
    # the validation figures of the artifact's metadata
    rows = page.driver.execute_script(
        "return [...document.querySelectorAll('table.metrics tr')].map((r) => r.innerText)"
    )
    m3 = model["metrics"]["validation"]["m3"]
    assert f"m3\t{m3['smape']:.2f}\t{m3['mase']:.3f}\t{m3['windows']}" in rows
    options = page.driver.execute_script(
        "return [...document.querySelectorAll('#series option')].map((o) => o.value)"
    )
    assert options == [s["id"] for s in EXAMPLES] + ["paste"]
    assert page.text("#key-note") == "This server needs no key."
    assert page.errors() == ""
    assert page.failed_requests() == []
    assert page.console_problems() == []
    # nothing from another origin: the page needs no network beyond its server
    urls = page.requested_urls()
    assert urls and all(u.startswith((server.base_url + "/", "data:")) for u in urls), urls


def test_a_stream_of_n_steps_draws_n_points_and_the_forecast_its_horizon(
    page: PlaygroundPage, server: ServerProcess
) -> None:
    values, n = N1907["values"], 20
    history = len(values) - n
    start_stream(page, "m3-N1907", history, "max")
    page.wait_phase("done")
    points = page.predictions()
    assert len(points) == n
    assert [p["step"] for p in points] == list(range(history, len(values)))
    page.fill("horizon", "7")
    page.click("forecast")
    forecast = page.wait(page.forecast_points, "the forecast")

    expected, final = rest_reference(server, values, history, horizon=7)
    assert_drawn(points, expected)
    assert [f["index"] for f in forecast] == list(range(len(values), len(values) + 7))
    q = final["quantiles"]
    assert_drawn(forecast, list(zip(final["mean"], q["0.1"], q["0.9"], strict=True)))
    assert page.attribute("#status", "data-read") == str(len(values))
    (ws,) = page.websockets()
    assert ws["sent"][0] == {
        "type": "start",
        "history": values[:history],
        "options": {"quantiles": QUANTILES, "frequency": "monthly"},
    }
    assert [m["x"] for m in ws["sent"] if m["type"] == "step"] == values[history:]
    assert page.failed_requests() == [] and page.console_problems() == []
    page.screenshot(ARTIFACTS / "playground.png")


def test_pause_and_resume_continue_from_the_resume_token_and_reset_clears(
    page: PlaygroundPage, server: ServerProcess
) -> None:
    values, n = N1907["values"], 12
    history = len(values) - n
    start_stream(page, "m3-N1907", history, "10")
    page.wait(lambda: len(page.predictions()) >= 3, "three predictions")
    page.click("pause")
    page.wait_phase("paused")
    k = len(page.predictions())
    assert 3 <= k < n
    assert page.attribute("#status", "data-read") == str(history + k)
    assert page.text("#token").startswith(f"Resume token at step {history + k} (")
    page.choose("speed", "max")
    page.click("resume")
    page.wait_phase("done")
    assert not page.element("#token").is_displayed()  # that token's step is behind

    expected, _ = rest_reference(server, values, history, horizon=1)
    assert_drawn(page.predictions(), expected)  # the resumed state is the paused one, exactly
    first, second = page.websockets()
    assert first["sent"][-1] == {"type": "close"}
    token = first["received"][-1]
    assert token["type"] == "state" and token["step"] == history + k
    assert token["reason"] == "closed by client"
    assert second["sent"][0] == {
        "type": "start",
        "resume": token["token"],
        "options": {"quantiles": QUANTILES, "frequency": "monthly"},
    }
    assert second["received"][0]["step"] == history + k
    assert page.failed_requests() == [] and page.console_problems() == []

    page.click("reset")
    page.wait_phase("idle")
    assert page.predictions() == [] and page.forecast_points() == []


async def _server_answer(server: ServerProcess, start: dict, step: float | None = None) -> dict:
    async with websockets.connect(server.ws_url + "/v1/stream") as ws:
        await ws.send(json.dumps(start))
        answer = json.loads(await ws.recv())
        if step is not None:
            await ws.send(json.dumps({"type": "step", "x": step}))
            answer = json.loads(await ws.recv())
        return answer


def test_a_bad_paste_shows_the_servers_error(page: PlaygroundPage, server: ServerProcess) -> None:
    # two numbers per line: observations of two features, which this model does not take
    page.choose("series", "paste")
    page.fill("paste", "1 2\n3 4\n5 6\n7 8")
    page.fill("history", "2")
    page.click("start")
    page.wait(page.errors, "an error on the page")
    answer = asyncio.run(
        _server_answer(server, {"type": "start", "history": [[1, 2], [3, 4]], "options": {}})
    )
    assert answer["type"] == "error" and answer["field"] == "history"
    assert page.errors() == f"{answer['code']} (history): {answer['message']}"
    assert "each observation must have 1 value(s)" in answer["message"]
    assert page.wait_phase("idle") and page.predictions() == []

    # a value beyond float32: the server refuses the step, the page stops there
    page.fill("paste", "10, 12, 11, 1e39, 13")
    page.fill("history", "3")
    page.click("start")
    page.wait_phase("stopped")
    answer = asyncio.run(
        _server_answer(server, {"type": "start", "history": [10, 12, 11]}, step=1e39)
    )
    assert answer["type"] == "error" and answer["field"] == "x"
    assert page.errors() == f"{answer['code']} (x): {answer['message']}"
    assert page.predictions() == []

    # text that is no number at all never reaches the server: the page says which token
    sockets = len(page.websockets())
    page.fill("paste", "10, 12, eleven")
    page.click("start")
    page.wait(lambda: "eleven" in page.errors(), "the page's own error")
    assert page.errors() == "not started: the pasted series, line 1: 'eleven' is not a number"
    assert len(page.websockets()) == sockets
    assert page.console_problems() == []


def test_with_api_keys_the_page_takes_a_key_and_streams_with_it(
    driver, keyed_server: ServerProcess
) -> None:
    page = PlaygroundPage(driver, keyed_server.base_url)
    page.open()  # the page and its files need no key
    refused = httpx.get(keyed_server.base_url + "/v1/models").json()["error"]
    assert page.errors() == f"{refused['code']}: {refused['message']}"
    assert page.text("#key-note") == "This server needs an API key."

    page.fill("key", "not-the-key")
    page.click("use-key")
    page.wait(lambda: len(page.failed_requests()) == 2, "a second GET /v1/models")
    page.wait(lambda: refused["message"] in page.errors(), "the server's 401 message")
    assert page.card() == {}

    page.fill("key", KEY)
    page.click("use-key")
    page.wait(lambda: page.card().get("name") == "gru-forecaster", "the model card")
    assert page.errors() == "" and page.text("#key-note") == "Key accepted."

    values, n = N1907["values"], 5
    history = len(values) - n
    start_stream(page, "m3-N1907", history, "max")
    page.wait_phase("done")
    headers = {"Authorization": f"Bearer {KEY}"}
    expected, _ = rest_reference(keyed_server, values, history, horizon=1, headers=headers)
    assert_drawn(page.predictions(), expected)
    (ws,) = page.websockets()
    offered = ws["request_headers"]["Sec-WebSocket-Protocol"]
    assert offered.startswith("gru-serve, gru-serve.key.")
    assert ws["response_headers"]["Sec-WebSocket-Protocol"] == "gru-serve"  # never the key
    # only the keyless GET /v1/models calls failed, with 401
    failed = page.failed_requests()
    assert failed and set(failed) == {f"401 {keyed_server.base_url}/v1/models"}
