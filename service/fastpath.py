"""The hot path for `POST /v1/forecast`: pure ASGI, ahead of FastAPI's request handling.

FastAPI's route stays declared (OpenAPI, docs, and every request this path does not take).
This middleware, the innermost one (inside request id/metrics/access log, API keys, CORS and
the body limit), answers the common case itself: a JSON body that `ForecastRequest`
validates in one pass (`model_validate_json`: parsing and validation in Rust, no json.loads,
no routing through the included routers, no dependency solving). Anything else, an invalid
body included, is replayed unchanged to the FastAPI app, so every error answer (status, code,
message, field) is FastAPI's own by construction. On a valid body the answer is the route's
(`forecast_json`), and a ServiceError gets the app's error response; any other exception
propagates to the app's 500 handler, as it would from the route.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import core_of
from service.errors import ServiceError, error_body
from service.logs import route_objects
from service.routes.forecast import forecast_json
from service.schemas import ForecastRequest

FORECAST_PATH = "/v1/forecast"
_JSON = {b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"}
# (clients such as Java's and .NET's add the charset; its only valid JSON value is UTF-8)


class ForecastFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: object | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != FORECAST_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-type":
                if value.lower() in _JSON:
                    break
                await self.app(scope, receive, send)  # other media types: FastAPI decides
                return
        else:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # client went away: FastAPI's behaviour
                await self._replay(messages, scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            req = ForecastRequest.model_validate_json(body)
        except ValidationError:
            await self._replay(messages, scope, receive, send)  # FastAPI's own error answer
            return
        route = self._route or self._find_route(scope)
        if route is not None:
            scope["route"] = route  # the metrics' and access log's route label
        response: Response
        try:
            response = Response(
                await forecast_json(req, core_of(scope["app"].state)),
                media_type="application/json",
            )
        except ServiceError as exc:  # the app's ServiceError handler, same body and headers
            response = JSONResponse(
                error_body(scope["path"], exc), status_code=exc.status, headers=exc.headers
            )
        await response(scope, receive, send)

    async def _replay(
        self, messages: list[Message], scope: Scope, receive: Receive, send: Send
    ) -> None:
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _find_route(self, scope: Scope) -> object | None:
        """The route object FastAPI's router puts in the scope for this path and method."""
        for path, methods, route in route_objects(scope["app"].routes):
            if path == FORECAST_PATH and methods and "POST" in methods:
                self._route = route
                return route
        return None
