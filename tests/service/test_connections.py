"""Connections that hold a socket without finishing anything are closed by their settings, on a
real server: idle sockets (keep_alive_timeout_s), slow request heads and bodies
(request_timeout_s: 408, then close) and half-open websockets (ws_ping_interval_s,
ws_ping_timeout_s). Well-behaved clients just under the same limits are served."""

from __future__ import annotations

import json
import re
import socket
import struct
import time

import httpx
import pytest
from websockets.sync.client import connect

from bench.stream import client_frame

SHORT = {
    "keep_alive_timeout_s": 0.5,
    "request_timeout_s": 1.0,
    "ws_ping_interval_s": 0.3,
    "ws_ping_timeout_s": 0.3,
}
WAIT_S = 8.0  # how long a test waits for the server to act (a bound, not a measurement)
FORECAST = json.dumps({"series": [[1.0, 2.0, 3.0, 4.0]], "horizon": 2}).encode()


@pytest.fixture
def server(serve_process):
    return serve_process(**SHORT)


def open_socket(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    s.settimeout(WAIT_S)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes; socket.timeout if it never does."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_socket_that_never_sends_is_closed(server):
    with open_socket(server.port) as s:
        assert read_until_closed(s) == b""  # closed without a word, not left open
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def test_idle_keep_alive_connection_is_closed_after_a_response(server):
    with open_socket(server.port) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, body = status_and_body(read_until_closed(s))
    assert status == 200 and body["status"] == "alive"


def test_request_head_that_never_completes_gets_408(server):
    with open_socket(server.port) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line, ever
        status, body = status_and_body(read_until_closed(s))
    assert status == 408 and body["error"]["code"] == "request_timeout"


@pytest.mark.parametrize(
    "path, shape",
    [("/v1/forecast", "rest"), ("/v1/hidden", "rest"), ("/v2/models/tiny/infer", "oip")],
)
def test_body_that_never_completes_gets_408_in_the_api_shape(server, path, shape):
    with open_socket(server.port) as s:
        s.sendall(post_head(path, len(FORECAST)) + FORECAST[:10])  # then nothing
        status, body = status_and_body(read_until_closed(s))
    assert status == 408
    if shape == "oip":
        assert "request_timeout_s" in body["error"]
    else:
        assert body["error"]["code"] == "request_timeout"
    # The endpoint that was reading saw its client go: no 500, no traceback in the log.
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    r = httpx.post(f"{server.base_url}/v1/forecast", content=FORECAST, headers=JSON)
    assert r.status_code == 200


JSON = {"content-type": "application/json"}


def test_body_sent_in_parts_within_the_timeout_is_served(server):
    with open_socket(server.port) as s:
        s.sendall(post_head("/v1/forecast", len(FORECAST)) + FORECAST[:10])
        time.sleep(0.3)
        s.sendall(FORECAST[10:])
        head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 200 ")


def read_frames(s: socket.socket) -> list[int]:
    """Opcodes of the server's frames until it closes the connection (EOF or a close frame)."""
    buf, opcodes = b"", []
    while True:
        while len(buf) < 2 or len(buf) < _frame_length(buf):
            chunk = s.recv(65536)
            if not chunk:
                return opcodes
            buf += chunk
        n = _frame_length(buf)
        opcodes.append(buf[0] & 0x0F)
        buf = buf[n:]
        if opcodes[-1] == 8:
            return opcodes


def _frame_length(buf: bytes) -> int:
    n = buf[1] & 0x7F
    if n == 126:
        return 4 + struct.unpack("!H", buf[2:4])[0] if len(buf) >= 4 else 1 << 30
    if n == 127:
        return 10 + struct.unpack("!Q", buf[2:10])[0] if len(buf) >= 10 else 1 << 30
    return 2 + n


def active_sessions(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    return float(re.search(r"^gru_stream_sessions_active (\S+)$", text, re.M)[1])


def test_half_open_websocket_is_closed_and_its_session_ends(server):
    with open_socket(server.port) as s:
        s.sendall(
            b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ")
        s.sendall(client_frame(json.dumps({"type": "start", "history": [1, 2, 3]}).encode()))
        # From here on the client answers nothing, as a peer that vanished would.
        opcodes = read_frames(s)
    assert opcodes[0] == 1  # the ready message
    assert 9 in opcodes  # pinged, never answered, then closed
    deadline = time.monotonic() + WAIT_S
    while active_sessions(server.base_url) != 0:
        assert time.monotonic() < deadline, "the session outlived its connection"
        time.sleep(0.05)


def test_websocket_that_answers_pings_stays_open(server):
    with connect(f"{server.ws_url}/v1/stream") as ws:  # the client library answers pings
        ws.send(json.dumps({"type": "start", "history": [1, 2, 3]}))
        assert json.loads(ws.recv(WAIT_S))["type"] == "ready"
        time.sleep(1.5)  # five ping intervals
        ws.send(json.dumps({"type": "step", "x": 4.0}))
        assert json.loads(ws.recv(WAIT_S))["type"] == "output"
