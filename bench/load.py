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


def _seconds(value: bytes) -> float | None:
    """A Retry-After in seconds; None for an HTTP date or anything else (a date is never sent
    by the service, and the client then simply does not wait)."""
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, float | None]:
    """(status, body, the Retry-After seconds when a 503 carries one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, retry_after = None, None
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
        elif status == 503 and line[:12].lower() == b"retry-after:":
            retry_after = _seconds(line[12:])
    if length is None:
        raise RuntimeError("response without Content-Length")
    body = await reader.readexactly(length)
    return status, body, retry_after


async def _client(port, request, t_measure, t_stop, records, statuses, backoff) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= t_stop:
                break
            writer.write(request)
            status, _, retry_after = await _read_response(reader)
            t1 = time.perf_counter()
            if t0 >= t_measure and t1 <= t_stop:
                records.append((status, t1 - t0))
            statuses[status] = statuses.get(status, 0) + 1
            if backoff and retry_after is not None:  # a client that waits as it is told
                await asyncio.sleep(max(0.0, min(retry_after, t_stop - t1)))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _run(port, request, clients, warmup_s, seconds, backoff) -> LoadResult:
    t_measure = time.perf_counter() + warmup_s
    t_stop = t_measure + seconds
    records: list[tuple[int, float]] = []
    statuses: dict[int, int] = {}
    await asyncio.gather(
        *[
            _client(port, request, t_measure, t_stop, records, statuses, backoff)
            for _ in range(clients)
        ]
    )
    lat = np.array([lat for status, lat in records if status == 200])
    errors = sum(1 for status, _ in records if status != 200)
    refused = np.array([lat for status, lat in records if status == 503])
    return LoadResult(clients, seconds, len(lat), errors, statuses, lat, refused)


def run_load(
    port: int,
    path: str,
    body: bytes,
    clients: int,
    seconds: float,
    warmup_s: float = 0.5,
    honour_retry_after: bool = False,
) -> LoadResult:
    """Closed loop: `clients` connections for warmup_s + seconds; only the measured window
    counts. With `honour_retry_after`, a client refused with 503 + Retry-After waits that long
    before its next request (else it sends the next one at once)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    request = build_request(path, body, port)
    return runner(_run(port, request, clients, warmup_s, seconds, honour_retry_after))
