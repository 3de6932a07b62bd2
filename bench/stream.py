"""Stream section: WS /v1/stream on the service vs a websocket echo floor, each a real uvicorn
process on 127.0.0.1, at 1, 16 and 256 concurrent sessions; each session sends its next step
as soon as it got the previous output (closed loop).

The floor is a bare ASGI endpoint answering every frame with a same-sized frame (the cost of
uvicorn's websocket layer and of this client). The client is a lean raw-socket websocket
client (it shares the cores with the server, so it must cost little per frame).

`python -m bench.stream [--seconds S] [--stream-levels 1,16,256]`, or `python -m bench` once
"stream" is listed in bench/__main__.py's SECTIONS. `python -m bench.stream echo --port N`
runs the floor server itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import struct
import sys
import time

import numpy as np

from bench import procs
from bench.results import table

PATH = "/v1/stream"
GOALS = {"vs_floor_steps": 0.7, "p99_vs_floor": 1.5, "mean_rows_per_run": 32}
HISTORY = [round(10 + 3 * np.sin(i / 4), 3) for i in range(24)]


# ---- the floor server ------------------------------------------------------------------------------
async def echo_app(scope, receive, send) -> None:
    """Bare ASGI: GET /readyz -> 200; any websocket -> every frame answered with its like."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})


def serve_echo(port: int) -> None:
    import uvicorn

    uvicorn.run(echo_app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- a lean websocket client -------------------------------------------------------------------------
def start_echo() -> procs.Server:
    """The websocket echo floor in a uvicorn process of its own, on a free port."""
    port = procs.free_port()
    cmd = [sys.executable, "-m", "bench.stream", "echo", "--port", str(port)]
    return procs.start("ws-echo", cmd, port, "/")


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame. The mask key is zero, so the payload goes out as is (masking
    with zeros is the identity): the client spends nothing on masking."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


class Closed(Exception):
    pass


class WsClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str) -> WsClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        return cls(reader, writer)

    async def recv(self) -> bytes:
        """The next data frame; a ping is answered (a long run outlives ws_ping_interval_s,
        and a client that never answers is closed as half-open), a pong skipped."""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005)
            if opcode == 9:
                self.writer.write(client_frame(payload, opcode=0xA))
            elif opcode != 0xA:
                return payload

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(client_frame(struct.pack("!H", 1000), opcode=8))
            await asyncio.wait_for(self.recv(), 2)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def _session_window(port, start_frame, step_frames, box, lat, ready, sessions) -> None:
    ws = await WsClient.connect(port, PATH)
    try:
        if start_frame is not None:
            ws.writer.write(start_frame)
            await ws.recv()  # ready
        ready.append(1)
        if len(ready) == sessions:  # the last one in opens the window for everyone
            now = time.perf_counter()
            box["m"] = now + box["warmup"]
            box["s"] = box["m"] + box["seconds"]
            box["event"].set()
        await box["event"].wait()
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= box["s"]:
                break
            ws.writer.write(step_frames[i % len(step_frames)])
            await ws.recv()
            t1 = time.perf_counter()
            if t0 >= box["m"] and t1 <= box["s"]:
                lat.append(t1 - t0)
            i += 1
            box["all"] += 1
    finally:
        await ws.close()


async def _load(port, sessions, with_start, warmup_s, seconds) -> np.ndarray:
    start_frame = (
        client_frame(json.dumps({"type": "start", "history": HISTORY}).encode())
        if with_start
        else None
    )
    step_frames = [
        client_frame(json.dumps({"type": "step", "x": round(10 + 3 * np.sin(i / 4), 3)}).encode())
        for i in range(16)
    ]
    box = {"warmup": warmup_s, "seconds": seconds, "event": asyncio.Event(), "m": 0.0, "s": 0.0}
    box["all"] = 0
    lat: list[float] = []
    ready: list[int] = []
    await asyncio.gather(
        *(
            _session_window(port, start_frame, step_frames, box, lat, ready, sessions)
            for _ in range(sessions)
        )
    )
    return np.array(lat), box["all"]


def run_load(port: int, sessions: int, with_start: bool, seconds: float, warmup_s=0.5):
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(_load(port, sessions, with_start, warmup_s, seconds))


# ---- measuring ------------------------------------------------------------------------------------------
def _pct_ms(lat: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(lat, q) * 1000), 2) if len(lat) else None


def measure(server: procs.Server, levels, seconds: float, is_service: bool) -> list[dict]:
    rows = []
    for sessions in levels:
        before = server.batch_counters() if is_service else None
        cpu0 = server.cpu_s()
        lat, answered = run_load(server.port, sessions, is_service, seconds)
        cpu = server.cpu_s() - cpu0  # connects and warm-up included: divided by every step
        mean_rows = procs.mean_rows(before, server.batch_counters()) if before else None
        rows.append(
            {
                "sessions": sessions,
                "steps_per_s": round(len(lat) / seconds, 1),
                "p50_ms": _pct_ms(lat, 50),
                "p99_ms": _pct_ms(lat, 99),
                "steps": len(lat),
                "server_cpu_us_per_step": round(1e6 * cpu / max(1, answered), 1),
                "mean_rows_per_run": round(mean_rows, 2) if mean_rows is not None else None,
            }
        )
        print(f"  {server.name:8s} {sessions:4d} sessions: {rows[-1]}", flush=True)
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream-levels", default="1,16,256", help="concurrent stream sessions")


def run(args) -> tuple[dict, str]:
    levels = [int(x) for x in str(args.stream_levels).split(",")]
    model, model_desc = procs.artifact(args.model)
    results: dict = {"model": model_desc, "seconds": args.seconds, "levels": levels, "goals": {}}
    # Both servers up at once, measured level by level in turn (floor, then service), so a
    # change in the machine's load hits both sides of a ratio alike.
    floor = start_echo()
    service = None
    try:
        port = procs.free_port()
        cmd = procs.serve_cmd(
            model, port, access_log="false", log_level="warning", max_sessions=max(levels) + 64
        )
        service = procs.start("service", cmd, port, "/readyz")
        results["floor"], results["service"] = [], []
        for level in levels:
            results["floor"] += measure(floor, [level], args.seconds, False)
            results["service"] += measure(service, [level], args.seconds, True)
    finally:
        floor.stop()
        if service is not None:
            service.stop()
    rows = []
    for f, s in zip(results["floor"], results["service"], strict=True):
        ratio = s["steps_per_s"] / f["steps_per_s"] if f["steps_per_s"] else None
        p99 = s["p99_ms"] / f["p99_ms"] if s["p99_ms"] and f["p99_ms"] else None
        s["vs_floor_steps"] = round(ratio, 3) if ratio else None
        s["p99_vs_floor"] = round(p99, 3) if p99 else None
        rows.append(
            [
                s["sessions"],
                f["steps_per_s"],
                s["steps_per_s"],
                s["vs_floor_steps"],
                f["p50_ms"],
                s["p50_ms"],
                f["p99_ms"],
                s["p99_ms"],
                s["p99_vs_floor"],
                s["mean_rows_per_run"],
                f["server_cpu_us_per_step"],
                s["server_cpu_us_per_step"],
            ]
        )
    top = results["service"][-1]
    results["goals"] = {
        "sessions": top["sessions"],
        "vs_floor_steps": {
            "goal": f">= {GOALS['vs_floor_steps']}",
            "measured": top["vs_floor_steps"],
        },
        "p99_vs_floor": {"goal": f"<= {GOALS['p99_vs_floor']}", "measured": top["p99_vs_floor"]},
        "mean_rows_per_run": {
            "goal": f">= {GOALS['mean_rows_per_run']}",
            "measured": top["mean_rows_per_run"],
        },
    }
    md = [
        f"WS {PATH}, closed loop (each session sends its next step when the previous output "
        f"arrived), {args.seconds:g} s measured per level after 0.5 s warm-up; model: {model_desc}. "
        "Floor: bare uvicorn websocket echo (same-sized answer). Client: a lean raw-socket "
        "websocket client in one process on the same cores. Server CPU per step (utime+stime "
        "of the server process, connects and warm-up included) is the figure least moved by "
        "other load on the machine.",
        "",
        table(
            [
                "sessions",
                "floor steps/s",
                "service steps/s",
                "service/floor",
                "floor p50 ms",
                "service p50 ms",
                "floor p99 ms",
                "service p99 ms",
                "p99 service/floor",
                "mean rows per run",
                "floor server CPU us/step",
                "service server CPU us/step",
            ],
            rows,
        ),
        "",
        f"Goals at {top['sessions']} sessions: steps/s >= {GOALS['vs_floor_steps']} x floor "
        f"(measured {top['vs_floor_steps']}), p99 <= {GOALS['p99_vs_floor']} x floor "
        f"(measured {top['p99_vs_floor']}), mean rows per onnxruntime run >= "
        f"{GOALS['mean_rows_per_run']} (measured {top['mean_rows_per_run']}).",
    ]
    return results, "\n".join(md)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "echo":
        p = argparse.ArgumentParser(prog="python -m bench.stream echo")
        p.add_argument("echo")
        p.add_argument("--port", type=int, required=True)
        serve_echo(p.parse_args().port)
        return
    from bench.results import write_section

    p = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__)
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per level")
    p.add_argument("--model", help="ONNX artifact to serve (default: artifacts/gru.onnx)")
    add_arguments(p)
    args = p.parse_args()
    data, markdown = run(args)
    write_section("stream", data, markdown)
    print(markdown)
    print(json.dumps(data["goals"], indent=2))


if __name__ == "__main__":
    main()
