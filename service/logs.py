"""Structured logs: one JSON object per line, a request id on every request, an access log.

`configure_logging` installs the JSON formatter on the root logger (uvicorn's loggers
propagate there, so its lines are JSON too). `RequestContext` is the pure ASGI middleware
that gives each request an id (the client's `X-Request-ID` when it is sane, else a fresh
one), echoes it in the response, records the request's metrics and writes the access line:
method, route template, path, status, duration. Bodies, query strings and headers are never
logged, so no input data reaches the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time

from fastapi.routing import APIWebSocketRoute
from starlette.routing import WebSocketRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_MAX_ID = 128
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
access_log = logging.getLogger("gru_serve.access")

# LogRecord attributes that are not user fields
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# json.dumps(out, default=str, separators=...) builds this encoder anew on every call
_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, request_id, extra fields."""

    _second = -1
    _stamp = ""

    def _ts(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # the date part changes once a second: format it once
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self._ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            out["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in _RESERVED and k[0] != "_":
                out[k] = v
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encode(out)


class WebsocketChatter(logging.Filter):
    """Drops the INFO lines logged on 'uvicorn.error' for each websocket: uvicorn's own
    ('"WebSocket /path" [accepted]', or a status, with the client's address) and those of the
    websockets library it hands that logger ('connection open', 'connection closed', and
    'connection rejected (403 Forbidden)' for a refused handshake). RequestContext's access
    log writes one line per websocket (route, status, duration, request id), and `access_log`
    false must silence websockets too. Warnings and errors pass."""

    _LINES = frozenset(
        {
            "connection open",
            "connection closed",
            "connection rejected (%d %s)",
            "HTTP response sent (%d %s)",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        return not (record.msg in self._LINES or record.msg.startswith('%s - "WebSocket %s"'))


def configure_logging(level: str = "info", stream=None) -> None:
    """JSON lines on stderr for every logger, uvicorn's included (run it with log_config=None)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    error_log = logging.getLogger("uvicorn.error")  # where uvicorn logs each websocket
    if not any(isinstance(f, WebsocketChatter) for f in error_log.filters):
        error_log.addFilter(WebsocketChatter())
    # warnings (numpy's RuntimeWarnings, deprecations) go through logging as JSON lines
    # (logger py.warnings) instead of plain text on stderr
    logging.captureWarnings(True)


def _clean_id(raw: bytes) -> str | None:
    """The client's id if it is short printable ASCII (it goes into logs and a header)."""
    if not raw or len(raw) > _MAX_ID:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() and '"' not in text else None


class RequestContext:
    """Request id, metrics and access log for every HTTP request and websocket handshake."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None, access: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access = access
        self._templates: list[tuple[re.Pattern, str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                rid = _clean_id(value)
                break
        rid = rid or os.urandom(16).hex()
        token = request_id.set(rid)
        started = time.perf_counter()
        scope.setdefault("state", {}).update(request_id=rid, started_at=started)
        status = 500
        header = (REQUEST_ID_HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            t = message["type"]
            if t == "http.response.start" or t == "websocket.http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            elif t == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", ()), header]
            elif t == "websocket.close" and status == 500:
                status = 403  # closed before accept: the handshake is refused
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope)
            if self.metrics is not None:
                self.metrics.observe_request(route, status, seconds if kind == "http" else None)
            if self.access and access_log.isEnabledFor(logging.INFO):
                # a bare record: Logger.info would walk the stack to find the caller
                rec = logging.LogRecord(access_log.name, logging.INFO, "", 0, "request", None, None)
                rec.method = scope.get("method", "WEBSOCKET")
                rec.route = route
                rec.path = scope["path"]
                rec.status = status
                rec.duration_ms = round(seconds * 1000, 3)
                access_log.handle(rec)
            request_id.reset(token)

    def _route(self, scope: Scope) -> str:
        """The matched route's template (bounded label values); for requests refused before
        routing (401, 413), the template that would have matched; else 'unmatched'."""
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path", "unmatched")
        if self._templates is None:
            self._templates = [(compile_path(p)[0], p) for p, _, _ in route_table(scope["app"])]
        path = scope["path"]
        for regex, template in self._templates:
            if regex.match(path):
                return template
        return "unmatched"


def route_table(app) -> list[tuple[str, frozenset[str], str]]:
    """Every route as (path template, methods, 'http' | 'websocket'), included routers
    flattened (FastAPI >= 0.120 wraps them; older ones list their routes directly)."""
    out = []
    for path, methods, original in route_objects(app.routes):
        if path is None:
            continue
        kind = "websocket" if isinstance(original, WebSocketRoute | APIWebSocketRoute) else "http"
        out.append((path, frozenset(methods or ()), kind))
    return out


def route_objects(routes) -> list[tuple[str | None, set[str] | None, object]]:
    """(path template, methods, route object) for every route, included routers flattened
    (FastAPI >= 0.120 wraps them; older ones list their routes directly)."""
    try:
        from fastapi.routing import iter_route_contexts

        return [(c.path, c.methods, c.original_route) for c in iter_route_contexts(routes)]
    except ImportError:
        return [(getattr(r, "path", None), getattr(r, "methods", None), r) for r in routes]
