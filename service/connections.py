"""Connection timeouts of the main listener, below the ASGI app (uvicorn's httptools protocol).

uvicorn closes an idle keep-alive connection only after a response: a socket that connects
and never sends a byte, or sends its request head or body a few bytes at a time, keeps its
connection (and, once the head is in, a task) for as long as it likes. This protocol adds:

- `keep_alive_timeout_s` from the moment a connection opens, so a socket that never sends a
  request is closed like one idle between requests;
- `request_timeout_s` from a request's first byte until its body is complete. Past it the
  client gets 408 (the error shape of its API), the connection is closed, and an endpoint
  still reading the body sees the client gone.

Websockets leave this protocol at the upgrade; their pings (`ws_ping_interval_s`,
`ws_ping_timeout_s`) are uvicorn's own.
"""

from __future__ import annotations

import json
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import RequestTimeout, error_body


class TimedHttpProtocol(HttpToolsProtocol):
    request_timeout_s: float = 30.0  # set per server by `timed_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: TimerHandle | None = None
        self._head_done = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # The same timer uvicorn arms after each response; the first byte cancels it.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_request_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False
        self._stop_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout_s, self._timed_out)

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_request_timer()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop_request_timer()
        super().handle_websocket_upgrade()

    def _stop_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._head_done else None  # before the head: the last request's
        if cycle is None or not cycle.response_started:
            path = self.scope.get("path", "") if self._head_done else ""
            err = RequestTimeout(
                f"the request did not arrive within {self.request_timeout_s:g} s "
                "(request_timeout_s)"
            )
            self.transport.write(_response_408(error_body(path, err)))
        if cycle is not None:
            cycle.disconnected = True  # the endpoint may no longer write; its receive ends
            cycle.message_event.set()
        self.transport.close()


def _response_408(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def timed_protocol(request_timeout_s: float) -> type[TimedHttpProtocol]:
    """The protocol class for uvicorn.Config(http=...), with this server's request timeout."""
    return type("TimedHttpProtocol", (TimedHttpProtocol,), {"request_timeout_s": request_timeout_s})
