"""The probe port: a second, minimal HTTP listener for /healthz, /readyz and /metrics.

On the main port, probes share the accept queue, the event loop and the middleware with
every client: with thousands of connections arriving or the loop busy with requests, a
liveness probe waits behind them and the orchestrator restarts a pod that is only busy.
With `probe_port` set, `ProbeServer` listens there from a thread of its own, with its own
event loop, so a probe never queues behind client work. It answers:

- `GET /healthz`: 200 while the main event loop turns. uvicorn's tick stamps a heartbeat
  about once a second; once none came for `loop_stall_s` the answer is 503 (a wedged loop
  is the one state a restart cures). A server shutting down counts as alive.
- `GET /readyz`: the main port's answer (`readiness_answer`), from the same state.
- `GET /metrics`: the same registry as the main port's; with API keys set it needs one.

One answer per connection, then close: kubelet opens a fresh connection per probe anyway,
and nothing is held between probes. The head must arrive within `request_timeout_s` and fit
in `MAX_HEAD_BYTES`, and at most `MAX_CONNECTIONS` are served at once (more are closed), so
the port cannot be held open by the clients it exists to ignore.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST

from service.auth import ApiKeyAuth, presented_key
from service.routes.health import readiness_answer
from service.schemas import Health
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger("gru_serve.probes")

MAX_HEAD_BYTES = 8192
MAX_CONNECTIONS = 64
BACKLOG = 128
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


class ProbeServer:
    def __init__(self, state: ServiceState, settings: Settings) -> None:
        self.state = state
        self.host = settings.host
        self.port = settings.probe_port or 0
        self.stall_s = settings.loop_stall_s
        self.head_timeout_s = settings.request_timeout_s
        self.keys = ApiKeyAuth(_no_app, settings.api_key_list) if settings.api_key_list else None
        self.last_beat = time.monotonic()
        self._open = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- the main loop's heartbeat ----------------------------------------------------------------
    async def beat(self) -> None:
        """uvicorn's `callback_notify`: runs on the main event loop at each of its ticks."""
        self.last_beat = time.monotonic()

    def liveness(self) -> tuple[Health, int]:
        stalled = time.monotonic() - self.last_beat
        if stalled > self.stall_s and not self.state.draining:
            reason = f"the main event loop has not turned for {stalled:.1f} s"
            return Health(status="stalled", reason=reason), 503
        return Health(status="alive"), 200

    # ---- life cycle ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind (an OSError if the port is taken), serve from a daemon thread; the bound port."""
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock, self.port = sock, sock.getsockname()[1]
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="gru-serve-probes", daemon=True
        )
        self._thread.start()
        started.wait(5)
        log.info(
            "probe listener on http://%s:%d (/healthz, /readyz, /metrics)", self.host, self.port
        )
        return self.port

    def _run(self, started: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        server = loop.run_until_complete(
            asyncio.start_server(self._handle, sock=self._sock, limit=MAX_HEAD_BYTES)
        )
        started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2)

    # ---- one connection -----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._open += 1
        try:
            async with asyncio.timeout(self.head_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(self.respond(head))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a slow, oversized or vanished client: nothing to answer
        finally:
            self._open -= 1
            writer.close()

    def respond(self, head: bytes) -> bytes:
        """The whole HTTP/1.1 response to a request head."""
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target = (request_line.split(" ") + ["", ""])[:2]
        path = target.split("?", 1)[0]
        extra = ""
        if path not in ("/healthz", "/readyz", "/metrics"):
            status, ctype, body = _json(
                404, {"error": {"code": "not_found", "message": "Not Found"}}
            )
        elif method not in ("GET", "HEAD"):
            status, ctype, body = _json(405, {"error": {"code": "method_not_allowed",
                                                        "message": "Method Not Allowed"}})  # fmt: skip
            extra = "allow: GET, HEAD\r\n"
        elif path == "/healthz":
            status, ctype, body = _health(*self.liveness())
        elif path == "/readyz":
            status, ctype, body = _health(*readiness_answer(self.state))
        elif self.keys is not None and not self.keys.allowed(presented_key(_headers(header_lines))):
            status, ctype, body = _json(401, {"error": {"code": "unauthorized",
                                                        "message": "missing or invalid API key"}})  # fmt: skip
            extra = 'www-authenticate: Bearer realm="gru-serve"\r\n'
        else:
            status, ctype, body = 200, CONTENT_TYPE_LATEST, self.state.metrics.render()
        head_out = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(body)}\r\ncache-control: no-store\r\n{extra}"
            "connection: close\r\n\r\n"
        ).encode("latin-1")
        return head_out if method == "HEAD" else head_out + body


def _json(status: int, payload: dict) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload).encode()


def _health(body: Health, status: int) -> tuple[int, str, bytes]:
    return status, "application/json", body.model_dump_json().encode()


def _headers(lines: list[str]) -> list[tuple[bytes, bytes]]:
    """Header lines as ASGI-style (lower-case name, value) byte pairs, for the key check."""
    pairs = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            pairs.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
    return pairs


async def _no_app(scope, receive, send) -> None:  # ApiKeyAuth is used here for its key check only
    raise RuntimeError("not an ASGI app")
