"""Replica loss: a server killed with SIGKILL mid-stream. A client that asked for a resume
token with every output resumes on another replica from the last token it received; its
outputs equal an uninterrupted stream's, with no step lost or doubled (two real processes)."""

from __future__ import annotations

import asyncio
import json
import signal

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

BOUND_S = 60.0
SECRET = {"GRU_SERVE_TOKEN_SECRET": "replicas-share-this"}
OPTIONS = {"quantiles": [0.1, 0.9], "token": True}  # a token with every output


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND_S))


def data(n: int = 40) -> list[float]:
    rng = np.random.default_rng(11)
    return (10 + np.cumsum(rng.normal(size=n))).round(4).tolist()


async def ready(ws, **fields) -> dict:
    await ws.send(json.dumps({"type": "start", **fields}))
    msg = json.loads(await ws.recv())
    assert msg["type"] == "ready", msg
    return msg


async def uninterrupted(url: str, xs: list[float]) -> list[dict]:
    async with connect(url) as ws:
        await ready(ws, history=xs[:10], options=OPTIONS)
        outs = []
        for x in xs[10:]:
            await ws.send(json.dumps({"type": "step", "x": x}))
            outs.append(json.loads(await ws.recv()))
        return outs


def test_sigkill_mid_stream_resumes_on_another_replica_from_the_last_token(serve_process):
    a, b = serve_process(env=SECRET), serve_process(env=SECRET)
    xs = data()
    expected = run(uninterrupted(b.ws_url + "/v1/stream", xs))

    async def killed_then_resumed() -> tuple[list[dict], int, int]:
        received: list[dict] = []
        async with connect(a.ws_url + "/v1/stream") as ws:
            await ready(ws, history=xs[:10], options=OPTIONS)
            # Pipelined: every step is sent at once, then the server dies after 12 outputs,
            # with steps it had taken (and maybe run) whose outputs never arrived.
            for x in xs[10:]:
                await ws.send(json.dumps({"type": "step", "x": x}))
            try:
                while True:
                    received.append(json.loads(await ws.recv()))
                    if len(received) == 12:
                        a.proc.send_signal(signal.SIGKILL)
            except ConnectionClosed:
                pass
        assert a.proc.wait(timeout=10) == -signal.SIGKILL
        before_kill = len(received)
        token = received[-1]["token"]  # the last token this client holds
        async with connect(b.ws_url + "/v1/stream") as ws:
            resumed = await ready(ws, resume=token)
            for x in xs[resumed["step"] :]:
                await ws.send(json.dumps({"type": "step", "x": x}))
                received.append(json.loads(await ws.recv()))
        return received, resumed["step"], before_kill

    outs, resumed_at, before_kill = run(killed_then_resumed())
    assert 12 <= before_kill < len(xs)  # the kill landed mid-stream
    assert resumed_at == 10 + before_kill  # right after the last output received
    assert [o["step"] for o in outs] == list(range(10, len(xs)))  # none lost, none doubled
    for got, want in zip(outs, expected, strict=True):
        assert got["y"] == want["y"] and got["quantiles"] == want["quantiles"]
