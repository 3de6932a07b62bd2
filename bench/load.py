"""A lean closed-loop load generator: N keep-alive HTTP/1.1 connections over raw asyncio
streams, each sending the next request as soon as the previous answer arrived.

Lean on purpose: the client shares the machine's cores with the server, so it must cost far
less per request than the server does (no httpx, no per-request allocation of headers)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    clients: int
    seconds: float
    ok: int
    errors: int
    statuses: dict[int, int]
    latencies_s: np.ndarray  # of the 200 answers
    refused_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the 503 answers

    @property
    def rps(self) -> float:
        return self.ok / self.seconds

    def pct_ms(self, q: float) -> float:
        return (
            float(np.percentile(self.latencies_s, q) * 1000)
            if len(self.latencies_s)
            else float("nan")
        )


def build_request(path: str, body: bytes, port: int) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length is None:
        raise RuntimeError("response without Content-Length")
    body = await reader.readexactly(length)
    return status, body


async def _client(port, request, t_measure, t_stop, records, statuses) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= t_stop:
                break
            writer.write(request)
            status, _ = await _read_response(reader)
            t1 = time.perf_counter()
            if t0 >= t_measure and t1 <= t_stop:
                records.append((status, t1 - t0))
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _run(port, request, clients, warmup_s, seconds) -> LoadResult:
    t_measure = time.perf_counter() + warmup_s
    t_stop = t_measure + seconds
    records: list[tuple[int, float]] = []
    statuses: dict[int, int] = {}
    await asyncio.gather(
        *[_client(port, request, t_measure, t_stop, records, statuses) for _ in range(clients)]
    )
    lat = np.array([lat for status, lat in records if status == 200])
    errors = sum(1 for status, _ in records if status != 200)
    refused = np.array([lat for status, lat in records if status == 503])
    return LoadResult(clients, seconds, len(lat), errors, statuses, lat, refused)


def run_load(
    port: int, path: str, body: bytes, clients: int, seconds: float, warmup_s: float = 0.5
) -> LoadResult:
    """Closed loop: `clients` connections for warmup_s + seconds; only the measured window counts."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    return runner(_run(port, build_request(path, body, port), clients, warmup_s, seconds))
