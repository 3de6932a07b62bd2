"""The probe port (GRU_SERVE_PROBE_PORT): /healthz, /readyz and /metrics from a listener of
their own, answering in under a second while the main port holds 2,000 idle and slow
connections and the model is saturated; its liveness follows the main event loop's turns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from servers import ROOT, run_expecting_one_error_line
from service_helpers import serve_command, serve_env

from service.probes import ProbeServer
from service.schemas import Health

PROBE_BOUND = re.compile(r"probe listener on http://[^\s:\"]+:(\d+)")
ISSUE_BOUND_S = 1.0  # probes answer in under a second, whatever the main port is doing
HELD_CONNECTIONS = 2000


def probe_port(server) -> int:
    match = PROBE_BOUND.search(server.log())
    assert match, server.log()
    return int(match[1])


def test_probe_port_answers_probes_and_metrics_only(serve_process):
    server = serve_process(probe_port=0)
    base = f"http://127.0.0.1:{probe_port(server)}"
    with httpx.Client(base_url=base, timeout=5) as c:
        live = c.get("/healthz")
        assert live.status_code == 200 and live.json()["status"] == "alive"
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == httpx.get(f"{server.base_url}/readyz").json()  # the same answer
        assert ready.json()["model"] == "tiny"
        metrics = c.get("/metrics")
        assert metrics.status_code == 200 and "gru_stream_sessions_active" in metrics.text
        assert c.get("/v1/models").status_code == 404
        assert c.post("/healthz").status_code == 405
        assert c.head("/readyz").status_code == 200
    # The main port keeps its own probes.
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def test_probe_port_metrics_need_a_key_when_keys_are_set(serve_process):
    server = serve_process(probe_port=0, api_keys="k1")
    base = f"http://127.0.0.1:{probe_port(server)}"
    assert httpx.get(f"{base}/metrics").status_code == 401
    assert httpx.get(f"{base}/metrics", headers={"X-API-Key": "k1"}).status_code == 200
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200


def test_probe_port_taken_or_equal_to_the_main_port_is_one_line(tmp_path, tiny_artifact):
    flags = {"host": "127.0.0.1", "model_path": tiny_artifact, "device": "cpu"}
    line, _ = run_expecting_one_error_line(
        serve_command(port=18123, probe_port=18123, **flags), serve_env()
    )
    assert "--probe-port 18123 is the main port" in line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line, _ = run_expecting_one_error_line(
            serve_command(port=0, probe_port=port, **flags), serve_env()
        )
    assert f"cannot listen on 127.0.0.1:{port}" in line


def fake_state(draining: bool = False):
    return SimpleNamespace(draining=draining)


def answer(probes: ProbeServer, request: bytes) -> tuple[int, dict]:
    head, _, body = probes.respond(request).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_liveness_follows_the_main_loops_heartbeat(make_settings):
    probes = ProbeServer(fake_state(), make_settings(loop_stall_s=0.05))  # type: ignore[arg-type]
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    assert answer(probes, request) == (200, Health(status="alive").model_dump())
    time.sleep(0.1)  # no tick of the main loop for longer than loop_stall_s
    status, body = answer(probes, request)
    assert status == 503 and body["status"] == "stalled"
    assert "has not turned" in body["reason"]
    asyncio.run(probes.beat())  # the loop turned again
    assert answer(probes, request)[0] == 200
    probes.state = fake_state(draining=True)  # shutting down: alive, however long it takes
    time.sleep(0.1)
    assert answer(probes, request)[0] == 200


# ---- under load --------------------------------------------------------------------------------------
def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # the server inherits it


def hold_connections(port: int, count: int) -> list[socket.socket]:
    """`count` sockets on the main port: a third idle, a third with a request head that never
    ends, a third with a body that never ends."""
    held = []
    slow_body = (
        b"POST /v1/forecast HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 4096\r\n\r\n{"series": [[1, 2'
    )
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 3 == 1:
            s.sendall(b"POST /v1/forecast HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elif i % 3 == 2:
            s.sendall(slow_body)
        held.append(s)
    return held


SATURATE = """
import json, sys
from bench.load import run_load
body = json.dumps({"series": [[float(i % 7) for i in range(16)]] * 256, "horizon": 48}).encode()
r = run_load(int(sys.argv[1]), "/v1/forecast", body, clients=16, seconds=float(sys.argv[2]))
print(json.dumps({"ok": r.ok, "statuses": r.statuses}))
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc")
def test_probes_answer_within_a_second_under_connections_and_saturation(serve_process):
    raise_fd_limit(2 * HELD_CONNECTIONS + 1024)
    # Long timeouts: every held connection stays open for the whole test.
    server = serve_process(probe_port=0, keep_alive_timeout_s=120, request_timeout_s=120)
    probes = f"http://127.0.0.1:{probe_port(server)}"
    held = hold_connections(server.port, HELD_CONNECTIONS)
    load_s = 5.0
    saturate = subprocess.Popen(
        [sys.executable, "-c", SATURATE, str(server.port), str(load_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    answers: list[tuple[str, int, float]] = []
    fds_seen = 0
    try:
        time.sleep(1.0)  # the load is running
        deadline = time.monotonic() + load_s - 1.5
        with httpx.Client(timeout=ISSUE_BOUND_S) as c:
            while time.monotonic() < deadline:
                fds_seen = max(fds_seen, open_fds(server.proc.pid))
                for path in ("/healthz", "/readyz"):
                    t0 = time.monotonic()
                    r = c.get(probes + path)  # a timeout past the bound fails the test
                    answers.append((path, r.status_code, time.monotonic() - t0))
                time.sleep(0.1)
        out, _ = saturate.communicate(timeout=60)
    finally:
        if saturate.poll() is None:
            saturate.kill()
        for s in held:
            with contextlib.suppress(OSError):
                s.close()
    load = json.loads(out)
    assert load["ok"] > 0 and {int(s) for s in load["statuses"]} <= {200, 503}  # model busy
    assert fds_seen >= HELD_CONNECTIONS  # the server really held the connections
    assert len(answers) >= 10
    assert all(status == 200 for _, status, _ in answers), answers
    assert max(seconds for *_, seconds in answers) < ISSUE_BOUND_S
