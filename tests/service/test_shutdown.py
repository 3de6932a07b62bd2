"""Graceful shutdown of a real `gru-serve serve` process (service/shutdown.py): on SIGTERM or
SIGINT in-flight REST requests finish with 200, every stream gets its resume token before
close 1001, /readyz says 503, new connections are refused, and the exit status is 0 — also
when work outlives the grace period (it is cut)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
import uvicorn
from service_helpers import ServerProcess
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from service.shutdown import GracefulServer

BOUND_S = 60.0  # every scenario is cut off here: a hang fails, it does not block the suite
N_REQUESTS, SERIES_PER_REQUEST, HORIZON = 32, 4, 256
N_STREAMS, HIST = 6, 12
WAIT_US = 2_000_000  # the batch wait of the servers that get signalled


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND_S))


async def metric(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics")).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


async def wait_for_metric(client: httpx.AsyncClient, name: str, value: float) -> None:
    deadline = time.monotonic() + 20
    while (seen := await metric(client, name)) != value:
        assert time.monotonic() < deadline, f"{name} stayed at {seen}, expected {value}"
        await asyncio.sleep(0.01)


def wait_exit(server: ServerProcess, timeout_s: float) -> int:
    try:
        return server.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        raise AssertionError(
            f"still running {timeout_s} s after the signal:\n{server.log()}"
        ) from None


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def series(i: int, length: int) -> list[float]:
    t = np.arange(length)
    return (np.sin(t / (3 + i % 5)) * (1 + i % 3) + i).round(4).tolist()


def forecast_body(i: int) -> dict:
    return {
        "series": [series(i + k, 24) for k in range(SERIES_PER_REQUEST)],
        "horizon": HORIZON,
        "quantiles": [0.1, 0.9],
    }


async def open_streams(server: ServerProcess, n: int, history: bool = True) -> list:
    """n sessions started together (their warm-ups and first steps share batches)."""

    async def one(i: int):
        ws = await connect(server.ws_url + "/v1/stream")
        start: dict = {"type": "start"}
        if history:
            start["history"] = series(i, HIST + 8)[:HIST]
        await ws.send(json.dumps(start))
        assert json.loads(await ws.recv())["type"] == "ready"
        if history:
            await ws.send(json.dumps({"type": "step", "x": series(i, HIST + 8)[HIST]}))
            assert json.loads(await ws.recv())["step"] == HIST
        return ws

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def until_closed(ws) -> tuple[int | None, list[dict]]:
    seen = []
    with pytest.raises(ConnectionClosed) as e:
        for _ in range(1000):
            seen.append(json.loads(await ws.recv()))
    return (e.value.rcvd.code if e.value.rcvd else None), seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_requests_and_streams_then_exits_0(serve_process, sig):
    env = {"GRU_SERVE_TOKEN_SECRET": "shared-by-replicas"}
    # A batch waits up to WAIT_US for more rows: the requests are surely still in flight when
    # the signal comes, however fast the rollout itself is.
    server = serve_process(env=env, max_wait_us=WAIT_US, shutdown_grace_s=20)
    other = serve_process(env=env)  # where the streams resume

    async def scenario():
        limits = httpx.Limits(max_connections=N_REQUESTS + 4)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as c:
            streams = await open_streams(server, N_STREAMS)
            requests = [
                asyncio.create_task(c.post("/v1/forecast", json=forecast_body(i)))
                for i in range(N_REQUESTS)
            ]
            # Every request admitted (past the readiness check) and none answered yet.
            await wait_for_metric(c, "gru_inflight_rows", N_REQUESTS * SERIES_PER_REQUEST)
            assert not any(t.done() for t in requests)
            closes = [asyncio.create_task(until_closed(ws)) for ws in streams]
            server.proc.send_signal(sig)

            # While draining, readiness says 503 (or the listener is already closed).
            ready_codes = []
            with pytest.raises(httpx.TransportError):
                async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as probe:
                    for _ in range(2000):
                        ready_codes.append((await probe.get("/readyz")).status_code)
                        await asyncio.sleep(0.005)
            responses = await asyncio.gather(*requests)
            closed = await asyncio.gather(*closes)
            return responses, closed, ready_codes

    responses, closed, ready_codes = run(scenario())
    status = wait_exit(server, 30)
    log = server.log()

    assert status == 0, log
    assert set(ready_codes) <= {503}, ready_codes
    assert refused(server.port)
    for r in responses:
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["forecasts"]) == SERIES_PER_REQUEST
        for f in body["forecasts"]:
            assert len(f["mean"]) == HORIZON
            assert all(np.isfinite(f["mean"]))
            assert set(f["quantiles"]) == {"0.1", "0.9"}
    # The same request on a server that was never signalled gives the same numbers.
    again = httpx.post(other.base_url + "/v1/forecast", json=forecast_body(0), timeout=30).json()
    got = responses[0].json()
    assert np.allclose(
        [f["mean"] for f in again["forecasts"]], [f["mean"] for f in got["forecasts"]], atol=1e-5
    )

    for code, seen in closed:
        assert code == 1001, seen
        assert seen and seen[-1]["type"] == "state", seen
        assert seen[-1]["step"] == HIST + 1
        assert seen[-1]["token"]

    # A token resumes on another process exactly where an uninterrupted stream would be.
    async def resumed_and_uninterrupted(i: int, token: str):
        rest = series(i, HIST + 8)[HIST + 1 :]
        async with connect(other.ws_url + "/v1/stream") as ws:
            await ws.send(json.dumps({"type": "start", "resume": token}))
            assert json.loads(await ws.recv())["step"] == HIST + 1
            a = []
            for x in rest:
                await ws.send(json.dumps({"type": "step", "x": x}))
                a.append(json.loads(await ws.recv()))
        async with connect(other.ws_url + "/v1/stream") as ws:
            await ws.send(json.dumps({"type": "start", "history": series(i, HIST + 8)[:HIST]}))
            await ws.recv()
            b = []
            for x in series(i, HIST + 8)[HIST:]:
                await ws.send(json.dumps({"type": "step", "x": x}))
                b.append(json.loads(await ws.recv()))
        return a, b[1:]

    for i in (0, N_STREAMS - 1):
        a, b = run(resumed_and_uninterrupted(i, closed[i][1][-1]["token"]))
        assert [o["step"] for o in a] == [o["step"] for o in b] == list(range(HIST + 1, HIST + 8))
        assert max(abs(x["y"] - y["y"]) for x, y in zip(a, b, strict=True)) <= 1e-6

    assert f"closing {N_STREAMS} stream session(s) with code 1001" in log, log
    assert f"{sig.name} received" in log, log


def test_work_past_the_grace_period_is_cut_and_exit_is_0(serve_process):
    grace = 0.5
    # A batch waits 30 s for more rows: the forecast outlives the grace period by far.
    server = serve_process(max_wait_us=30_000_000, shutdown_grace_s=grace)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            (ws,) = await open_streams(server, 1, history=False)  # no run needed
            closing = asyncio.create_task(until_closed(ws))
            slow = asyncio.create_task(
                c.post("/v1/forecast", json={"series": [series(0, 24)], "horizon": 512})
            )
            await wait_for_metric(c, "gru_inflight_rows", 1)
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status = await asyncio.to_thread(wait_exit, server, grace + 10)
            exited_after = time.monotonic() - signalled
            slow_result = await asyncio.gather(slow, return_exceptions=True)
            return status, exited_after, slow_result[0], await closing

    status, exited_after, slow_result, (code, seen) = run(scenario())
    assert status == 0, server.log()
    assert exited_after < grace + 5  # bounded: cut at the grace period, not after 30 s
    # The cut request got no 200: the connection closed (or a 5xx) instead of a forecast.
    assert isinstance(slow_result, httpx.HTTPError) or slow_result.status_code >= 500
    log = server.log()
    assert "timeout graceful shutdown exceeded" in log  # uvicorn cut it at the grace period
    assert "exiting now" not in log  # not the last-resort watchdog
    assert code == 1001 and seen[-1]["type"] == "state"
    assert refused(server.port)


def test_arrivals_while_draining_are_turned_away(serve_process):
    """After the signal nothing new is taken on: a new REST request gets 503 or a refused
    connection, a new stream gets 1013 or a refused connection; the running request still
    finishes with 200."""
    server = serve_process(max_wait_us=WAIT_US, shutdown_grace_s=10)

    async def new_stream() -> str:
        try:
            async with connect(server.ws_url + "/v1/stream") as ws:
                code, _ = await until_closed(ws)
                return f"closed {code}"
        except (OSError, InvalidHandshake):
            return "refused"

    async def new_request(c: httpx.AsyncClient) -> str:
        try:
            r = await c.post("/v1/forecast", json={"series": [[1.0, 2.0, 3.0]], "horizon": 2})
            return str(r.status_code)
        except httpx.TransportError:
            return "refused"

    async def scenario():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
            (held,) = await open_streams(server, 1, history=False)
            slow = asyncio.create_task(
                c.post("/v1/forecast", json={"series": [series(0, 24)], "horizon": 300})
            )
            await wait_for_metric(c, "gru_inflight_rows", 1)
            server.proc.send_signal(signal.SIGTERM)
            code, seen = await until_closed(held)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as fresh:
                arrivals = [await new_request(fresh), await new_stream()]
            return code, seen, await slow, arrivals

    code, seen, slow, arrivals = run(scenario())
    assert code == 1001 and seen[-1]["type"] == "state"
    assert arrivals[0] in ("503", "refused"), arrivals
    assert arrivals[1] in ("closed 1013", "refused"), arrivals
    assert slow.status_code == 200 and len(slow.json()["forecasts"][0]["mean"]) == 300
    assert wait_exit(server, 20) == 0
    assert refused(server.port)


def test_drain_order_not_ready_then_streams_then_uvicorn(client):
    """In process, the steps in order: readiness is false before the streams are closed, and
    uvicorn is told to stop (and given what is left of the grace period) only after them."""
    app = client.app
    server = GracefulServer(uvicorn.Config(app), app, grace_s=3.0)
    seen_during_close = []
    close_all = app.state.service.streams.close_all

    async def spy(code: int = 1001, reason: str = "server shutting down") -> None:
        seen_during_close.append((app.state.service.ready, server.should_exit, code))
        await close_all(code, reason)

    app.state.service.streams.close_all = spy
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "history": [1.0, 2.0, 3.0, 2.0]})
        assert ws.receive_json()["type"] == "ready"

        async def drain() -> None:  # as on_signal, without the process-wide watchdog
            await server.start_drain()

        client.portal.call(drain)
        messages = []
        with pytest.raises(WebSocketDisconnect) as e:
            for _ in range(10):
                messages.append(ws.receive_json())
    assert e.value.code == 1001
    assert [(m["type"], m["step"]) for m in messages] == [("state", 4)]
    assert seen_during_close == [(False, False, 1001)]
    assert client.get("/readyz").status_code == 503
    assert server.should_exit and not server.force_exit
    assert 0 < server.config.timeout_graceful_shutdown <= 3.0
