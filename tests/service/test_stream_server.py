"""WS /v1/stream against real `gru-serve serve` processes on loopback ports, with a real
websocket client: concurrent sessions batched together, resume on another replica, limits
enforced by the server's own websocket layer."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest
from service_helpers import batch_rows
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.stream import WsClient, client_frame

BOUND_S = 60.0  # every scenario is cut off here (a hang fails, it does not block the suite)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND_S))


async def start(ws, **fields) -> dict:
    await ws.send(json.dumps({"type": "start", **fields}))
    msg = json.loads(await ws.recv())
    assert msg["type"] == "ready", msg
    return msg


async def steps(ws, xs) -> list[dict]:
    outs = []
    for x in xs:
        await ws.send(json.dumps({"type": "step", "x": float(x)}))
        outs.append(json.loads(await ws.recv()))
    return outs


async def close_code(ws) -> tuple[int, list]:
    seen = []
    with pytest.raises(ConnectionClosed) as e:
        for _ in range(1000):
            seen.append(await ws.recv())
    return e.value.rcvd.code if e.value.rcvd else None, seen


def batch_totals(server) -> tuple[float, float]:
    return batch_rows(httpx.get(server.base_url + "/metrics", timeout=5).text)


def series(n_sessions: int, length: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return np.stack(
        [
            np.sin(t / (3 + i % 5)) * (1 + i % 3) + 0.2 * rng.standard_normal(length) + i
            for i in range(n_sessions)
        ]
    )


def test_concurrent_sessions_equal_running_alone_and_share_runs(serve_process):
    server = serve_process()
    n, hist, n_steps = 32, 12, 20
    data = series(n, hist + n_steps)

    async def session(i: int) -> list[dict]:
        async with connect(server.ws_url + "/v1/stream") as ws:
            await start(ws, history=data[i, :hist].tolist(), options={"return_hidden": True})
            return await steps(ws, data[i, hist:])

    async def alone() -> list[list[dict]]:
        return [await session(i) for i in range(n)]

    async def together() -> list[list[dict]]:
        return list(await asyncio.gather(*(session(i) for i in range(n))))

    solo = run(alone())
    before = batch_totals(server)
    concurrent = run(together())
    after = batch_totals(server)
    rows, runs = after[0] - before[0], after[1] - before[1]
    assert rows == n * (1 + n_steps)  # every history and step was one row
    assert rows / runs > 1  # sessions' waiting steps shared onnxruntime runs
    for a, b in zip(concurrent, solo, strict=True):
        assert [o["step"] for o in a] == [o["step"] for o in b] == list(range(hist, hist + n_steps))
        assert max(abs(x["y"] - y["y"]) for x, y in zip(a, b, strict=True)) <= 1e-6
        h_err = max(
            np.abs(np.array(x["h"]) - np.array(y["h"])).max() for x, y in zip(a, b, strict=True)
        )
        assert h_err <= 1e-6


def test_stream_resumes_on_other_replica(serve_process):
    env = {"GRU_SERVE_TOKEN_SECRET": "replicas-share-this"}
    a, b = serve_process(env=env), serve_process(env=env)
    data = series(1, 40, seed=7)[0]
    hist, cut = data[:16].tolist(), 28
    opts = {"quantiles": [0.1, 0.9], "return_hidden": True}

    async def uninterrupted() -> list[dict]:
        async with connect(a.ws_url + "/v1/stream") as ws:
            await start(ws, history=hist, options=opts)
            return await steps(ws, data[16:])

    async def interrupted() -> list[dict]:
        async with connect(a.ws_url + "/v1/stream") as ws:
            await start(ws, history=hist, options=opts)
            first = await steps(ws, data[16:cut])
            await ws.send(json.dumps({"type": "state"}))
            token = json.loads(await ws.recv())["token"]
        async with connect(b.ws_url + "/v1/stream") as ws:  # another process
            ready = await start(ws, resume=token)
            assert ready["step"] == cut
            return first + await steps(ws, data[cut:])

    whole, split = run(uninterrupted()), run(interrupted())
    assert [o["step"] for o in split] == [o["step"] for o in whole] == list(range(16, 40))
    y_err = max(abs(x["y"] - y["y"]) for x, y in zip(split, whole, strict=True))
    h_err = max(
        np.abs(np.array(x["h"]) - np.array(y["h"])).max() for x, y in zip(split, whole, strict=True)
    )
    q_err = max(
        abs(x["quantiles"][q] - y["quantiles"][q])
        for x, y in zip(split, whole, strict=True)
        for q in ("0.1", "0.9")
    )
    assert max(y_err, h_err, q_err) <= 1e-6


def test_token_from_replica_with_other_secret_is_refused(serve_process):
    a = serve_process(env={"GRU_SERVE_TOKEN_SECRET": "one"})
    b = serve_process(env={"GRU_SERVE_TOKEN_SECRET": "two"})

    async def scenario():
        async with connect(a.ws_url + "/v1/stream") as ws:
            await start(ws, history=[1.0, 2.0, 3.0])
            await ws.send(json.dumps({"type": "state"}))
            token = json.loads(await ws.recv())["token"]
        async with connect(b.ws_url + "/v1/stream") as ws:
            await ws.send(json.dumps({"type": "start", "resume": token}))
            err = json.loads(await ws.recv())
            ready = await start(ws, history=[1.0, 2.0, 3.0])  # still usable
            return err, ready

    err, ready = run(scenario())
    assert (err["type"], err["code"]) == ("error", "invalid_token")
    assert "signature" in err["message"]
    assert ready["step"] == 3


def test_real_server_limits(serve_process):
    server = serve_process(max_sessions=2, max_message_bytes=2048, max_queued_steps=8)

    async def scenario():
        async with connect(server.ws_url + "/v1/stream") as one:
            await start(one)
            async with connect(server.ws_url + "/v1/stream") as two:
                await start(two)
                async with connect(server.ws_url + "/v1/stream") as three:
                    full = await close_code(three)
                # a pipelining client: 300 steps sent before reading any output
                for i in range(300):
                    await two.send(json.dumps({"type": "step", "x": float(i % 7)}))
                outs = [json.loads(await two.recv()) for _ in range(300)]
                await one.send(json.dumps({"type": "step", "x": [1.0] * 600}))  # > 2048 bytes
                big = await close_code(one)
            return full, outs, big

    full, outs, big = run(scenario())
    assert full[0] == 1013
    assert [o["step"] for o in outs] == list(range(300))
    # the app, not uvicorn, refuses the frame: the session's token comes first, then 1009
    code, seen = big
    assert code == 1009
    last = json.loads(seen[-1])
    assert (last["type"], last["step"]) == ("state", 0)
    assert len(last["token"]) > 40 and "exceeds 2048" in last["reason"]


def metric(server, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=5).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_client_that_never_reads_is_dropped_and_others_continue(serve_process):
    server = serve_process(session_idle_timeout_s=1.0, max_queued_steps=64)

    async def scenario():
        # A raw client that never reads: its socket buffers fill, then the server's sends block.
        stuck = await WsClient.connect(server.port, "/v1/stream")
        opts = {"return_hidden": True, "token": True}  # ~600 bytes per output
        stuck.writer.write(client_frame(json.dumps({"type": "start", "options": opts}).encode()))
        step = client_frame(json.dumps({"type": "step", "x": [0.5] * 256}).encode())
        for _ in range(400):  # 100k steps, ~60 MB of outputs: far beyond the socket buffers
            stuck.writer.write(step)
        for _ in range(300):  # the watchdog drops it one idle period after its sends stall
            if metric(server, "gru_stream_sessions_active") == 0:
                break
            await asyncio.sleep(0.1)
        active = metric(server, "gru_stream_sessions_active")
        stuck.writer.transport.abort()
        async with connect(server.ws_url + "/v1/stream") as ok:
            await start(ok)
            outs = await steps(ok, [1.0, 2.0])
        return active, outs

    active, outs = run(scenario())
    assert active == 0
    assert [o["step"] for o in outs] == [0, 1]
    assert "stopped reading" in server.log()
