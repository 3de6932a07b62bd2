"""Structured logs: JSON lines, request ids, the access log switch, no input data in logs."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings

import httpx
import numpy as np
import pytest

from service.logs import JsonFormatter, configure_logging, request_id

MARKER = 987.654321  # a value that must never reach the logs


@pytest.fixture
def captured():
    """Configure logging as `serve` does, into a buffer; restore the root logger afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    configure_logging("info", stream=buf)
    # The test's own client logs its URLs: httpx2 behind TestClient, httpx elsewhere.
    client_logs = [logging.getLogger(name) for name in ("httpx", "httpx2")]
    client_levels = [log.level for log in client_logs]
    for log in client_logs:
        log.setLevel("WARNING")
    try:
        yield buf
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for log, level in zip(client_logs, client_levels, strict=True):
            log.setLevel(level)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def access_lines(buf: io.StringIO) -> list[dict]:
    return [d for d in lines(buf) if d["logger"] == "gru_serve.access"]


def test_access_line_per_request_with_request_id(make_client, captured) -> None:
    c = make_client(access_log=True)
    captured.truncate(0)
    captured.seek(0)
    r = c.post("/v1/hidden", json={"inputs": [{"x": [[0.5]]}]}, headers={"X-Request-ID": "r-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "r-42"
    r2 = c.get("/v2/models/tiny")
    generated = r2.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    r3 = c.post("/v1/hidden", json={"inputs": [{"x": []}]})
    got = access_lines(captured)
    assert [(d["method"], d["route"], d["path"], d["status"]) for d in got] == [
        ("POST", "/v1/hidden", "/v1/hidden", 200),
        ("GET", "/v2/models/{name}", "/v2/models/tiny", 200),
        ("POST", "/v1/hidden", "/v1/hidden", 422),
    ]
    assert [d["request_id"] for d in got] == ["r-42", generated, r3.headers["x-request-id"]]
    for d in got:
        assert d["level"] == "info" and d["message"] == "request"
        assert isinstance(d["duration_ms"], float) and d["duration_ms"] >= 0
        assert d["ts"].endswith("+00:00")


@pytest.mark.parametrize("bad", ["x" * 200, "a\tb", 'q"uote'])
def test_unusable_request_id_is_replaced(client, bad: str) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": bad})
    assert r.headers["x-request-id"] != bad and len(r.headers["x-request-id"]) == 32


def test_access_log_switch(make_client, captured) -> None:
    c = make_client(access_log=False)
    r = c.get("/v1/models", headers={"X-Request-ID": "quiet"})
    assert r.headers["x-request-id"] == "quiet"  # the id is echoed either way
    assert access_lines(captured) == []
    c2 = make_client(access_log=True)
    c2.get("/v1/models")
    assert [d["route"] for d in access_lines(captured)][-1] == "/v1/models"


def test_no_input_data_in_logs(make_client, captured) -> None:
    c = make_client(access_log=True, log_level="debug")
    logging.getLogger().setLevel("DEBUG")
    c.post("/v1/hidden?secret=s3cr3t", json={"inputs": [{"x": [[MARKER]]}]})
    c.post("/v1/hidden", json={"inputs": [{"x": [[MARKER, MARKER]]}]})  # invalid: 2 features
    c.post("/v1/forecast", json={"series": [[MARKER, 1.0, 2.0]], "horizon": 2})
    x = {"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [MARKER]}
    c.post("/v2/models/tiny/infer", json={"inputs": [x]})
    text = captured.getvalue()
    assert len([d for d in access_lines(captured) if d["route"] != "/readyz"]) == 4
    assert str(MARKER) not in text and "987.65" not in text and "s3cr3t" not in text


def test_formatter_fields_and_exceptions() -> None:
    fmt = JsonFormatter()
    token = request_id.set("abc")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            rec = logging.getLogger("t").makeRecord(
                "t", logging.ERROR, __file__, 1, "failed %d", (3,), sys.exc_info(),
                extra={"rows": 5},
            )  # fmt: skip
        d = json.loads(fmt.format(rec))
    finally:
        request_id.reset(token)
    assert d["message"] == "failed 3" and d["level"] == "error" and d["logger"] == "t"
    assert d["request_id"] == "abc" and d["rows"] == 5
    assert "ValueError: boom" in d["exception"]
    assert "\n" not in fmt.format(rec)  # one object per line


def test_real_server_logs_are_json_lines(serve_process) -> None:
    server = serve_process(access_log="true")
    with httpx.Client(base_url=server.base_url) as c:
        r = c.get("/v1/models", headers={"X-Request-ID": "from-test"})
        assert r.headers["x-request-id"] == "from-test"
    server.stop()
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    loggers = {d["logger"] for d in records}
    assert "uvicorn.error" in loggers  # uvicorn's own lines are JSON too
    assert any(d["logger"] == "gru_serve.runtime" for d in records)
    hits = [d for d in records if d.get("request_id") == "from-test"]
    assert len(hits) == 1 and hits[0]["route"] == "/v1/models" and hits[0]["status"] == 200


def test_warnings_are_json_lines(captured) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        np.float32(3e38) * np.float32(10)  # numpy's RuntimeWarning: overflow
    got = [d for d in lines(captured) if d["logger"] == "py.warnings"]
    assert len(got) == 1, captured.getvalue()
    assert got[0]["level"] == "warning" and "RuntimeWarning" in got[0]["message"]
    assert "overflow" in got[0]["message"]


def test_uvicorn_websocket_lines_are_left_to_the_access_log(serve_process) -> None:
    """A real server: one access line per websocket (with its request id), accepted or refused
    at the handshake, and none of the per-connection lines of uvicorn and websockets; with the
    access log off, no per-connection line at all."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    for access in ("true", "false"):
        server = serve_process(access_log=access, api_keys="k1")
        url = server.base_url.replace("http://", "ws://") + "/v1/stream"
        key = {"Authorization": "Bearer k1"}
        with connect(url, additional_headers={**key, "X-Request-ID": f"ok-{access}"}) as ws:
            ws.send(json.dumps({"type": "start", "history": [1.0, 2.0, 3.0]}))
            assert json.loads(ws.recv())["type"] == "ready"
        with pytest.raises(InvalidStatus):  # no key: refused at the handshake
            connect(url, additional_headers={"X-Request-ID": f"no-{access}"})
        server.stop()
        records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
        chatter = [
            d for d in records
            if d["message"].startswith(("connection ", "HTTP response sent"))
            or "WebSocket" in d["message"]
        ]  # fmt: skip
        assert chatter == []
        mine = [(d["logger"], d["route"], d["status"]) for d in records
                if d.get("request_id") in (f"ok-{access}", f"no-{access}")]  # fmt: skip
        if access == "true":
            assert sorted(mine) == [
                ("gru_serve.access", "/v1/stream", 101),
                ("gru_serve.access", "/v1/stream", 403),
            ]
        else:
            assert mine == []
        assert any(d["logger"] == "uvicorn.error" for d in records)  # its other lines stay


def test_websocket_filter_passes_everything_else(captured) -> None:
    from service.logs import WebsocketChatter

    f = WebsocketChatter()

    def rec(msg: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", level, "", 0, msg, None, None)

    for line in ('%s - "WebSocket %s" [accepted]', '%s - "WebSocket %s" %d', "connection open",
                 "connection closed", "connection rejected (%d %s)"):  # fmt: skip
        assert not f.filter(rec(line))
    assert f.filter(rec("Application startup complete."))
    assert f.filter(rec("connection closed", logging.WARNING))  # not INFO: kept
    assert f.filter(rec('%s - "WebSocket %s" %d', logging.ERROR))
    configure_logging("info", stream=captured)  # configured again: still one filter
    filters = logging.getLogger("uvicorn.error").filters
    assert sum(isinstance(x, WebsocketChatter) for x in filters) == 1
