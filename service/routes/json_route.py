"""Routes that decode their JSON body once, in one pass.

FastAPI's own handler reads the body, `json.loads` it, validates the Python objects, then
solves the dependencies. A `JsonRoute` endpoint is declared the ordinary way,
`async def endpoint(req: Model, core: CoreDep) -> Response`, so OpenAPI and /docs describe
exactly what is validated; but its handler parses and validates the body with the model's
own `model_validate_json` (in Rust, no intermediate Python objects) and hands the endpoint
the ready core directly, as the route's own ASGI app. Errors keep FastAPI's order: a body that is not JSON is a 400
first, then a server that is not ready a 503, then invalid input a 422; a request already
late for the queue deadline is refused (503) before its body is decoded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from service.errors import InvalidInput, ServiceError, from_validation_errors
from service.state import ServiceState, state_of_scope

JSON_TYPES = ("application/json",)  # and any type ending in +json
_BOMS = (b"\xef\xbb", b"\xff\xfe", b"\xfe\xff", b"\x00\x00")


def is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or media.endswith("+json")


def decode(model: type[BaseModel], body: bytes, content_type: str | None, state: ServiceState):
    """The validated body, or the ServiceError it deserves (see the module doc for order)."""
    err: ServiceError
    if not is_json(content_type):
        err = InvalidInput(
            f"expected a JSON body with Content-Type: application/json, got "
            f"{content_type or 'no Content-Type'}"
        )
    elif not body:
        err = InvalidInput("the request body is empty: expected a JSON object")
    else:
        try:
            return model.model_validate_json(body)
        except ValidationError as e:
            err = from_validation_errors(e.errors(include_url=False))
        if err.status == 400 and body[:2] in _BOMS:
            # JSON in UTF-16/32 or behind a UTF-8 BOM (RFC 8259 allows parsers to accept
            # them): json.loads detects the encoding; the slow path, for these bodies only.
            try:
                return model.model_validate(json.loads(body))
            except ValueError as e:  # json's errors and pydantic's ValidationError
                if isinstance(e, ValidationError):
                    err = from_validation_errors(e.errors(include_url=False))
    if err.status == 400:
        raise err
    state.check_ready()  # NotReady before invalid input
    raise err


def json_response(answer: Any) -> Response:
    """An endpoint's answer: a Response as it is, a pydantic model as its JSON."""
    if isinstance(answer, Response):
        return answer
    return Response(answer.__pydantic_serializer__.to_json(answer), media_type="application/json")


class JsonRoute(APIRoute):
    """The route's ASGI app is `_serve` below, not FastAPI's request_response wrapper: no
    Request object, no per-request exception-handling wrapper, no dependency solving (the
    endpoint's only dependency is the ready core). A ServiceError is answered here in the
    REST error shape; anything else propagates to the app's 500 handler, as from any route."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        (param,) = self.dependant.body_params  # one body model, nothing else in the body
        model = param.field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{path}: the body must be one pydantic model")
        self.body_model: type[BaseModel] = model
        self.app = self._serve

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, parts = await _read_body(receive)
        if body is None:  # the client went away
            return
        state = state_of_scope(scope)
        try:
            started = scope.get("state", {}).get("started_at")
            waited = None
            sole = state.sole_core
            if parts == 1 and started is not None:
                # A body that came whole was ready when the request began: time since then
                # was spent waiting in a busy event loop, and counts against the deadline.
                # (A body sent in parts took the client's time: that is not counted.) With
                # one model served this is judged before decoding; else on the chosen one.
                waited = time.perf_counter() - started
                if sole is not None:
                    sole.check_deadline(waited)
            content_type = _header(scope, b"content-type")
            req = decode(self.body_model, body, content_type, state)
            # Every body model has optional `model` and `version`: one model and neither
            # given is the repository's fast path, a dictionary lookup otherwise.
            served = state.resolve(getattr(req, "model", None), getattr(req, "version", None))
            core = state.ready_core(served)
            if waited is not None and core is not sole:
                core.check_deadline(waited)  # the chosen model's own queue
            response = json_response(await self.endpoint(req, core))
        except ServiceError as e:
            response = JSONResponse(e.body(), status_code=e.status, headers=e.headers)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes | None, int]:
    """(the body, the messages it came in); None when the client went away."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, len(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), len(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
