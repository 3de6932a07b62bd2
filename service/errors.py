"""One domain exception carrying its HTTP status; one JSON error shape for every route.

REST: {"error": {"code": ..., "message": ..., "field": ...}}. The websocket sends the same
code and message in an `error` message; the OIP routes answer in the protocol's
{"error": "..."} themselves (service/routes/oip.py, invalid input there is a 400).

Every ServiceError subclass lives here, so this module is the one table of codes
(docs/protocol.md and README.md list them for clients):

    status  code                 raised by
    400     malformed_request    REST/OIP bodies that are not JSON
    400     malformed_message    websocket: a frame that is not a JSON object
    400     unknown_type         websocket: `type` missing or unknown
    400     invalid_token        tokens: a resume token that does not verify
    401     unauthorized         auth
    404     not_found            unknown model or route
    408     request_timeout      connections: head and body not in within request_timeout_s
    409     not_started          sessions: a command before `start`
    409     already_started      sessions: a second `start`
    409     no_observation       sessions: a forecast before any observation
    409     token_mismatch       tokens: a genuine token for another model
    413     payload_too_large    REST/OIP bodies over the limit
    413     too_many_steps       websocket: more steps in one message than allowed
    422     invalid_input        validation everywhere
    503     overloaded           core admission (Retry-After)
    503     not_ready            warming up, shutting down, batcher stopped (Retry-After)
    503     too_many_sessions    sessions: the registry is full (websocket close 1013)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OIP_PREFIX = "/v2"


def is_oip(path: str) -> bool:
    """Under /v2 the Open Inference Protocol's error shape applies."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_body(path: str, err: ServiceError) -> dict:
    """The shape of an error raised before any route runs (unknown path, API keys, body
    limit, an unexpected 500): {"error": "..."} under /v2, where OIP clients expect it,
    {"error": {"code", "message", "field"}} elsewhere."""
    return {"error": err.message} if is_oip(path) else err.body()


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> ServiceError:
    """pydantic's validation errors (of a body) -> the first one as MalformedRequest (not
    JSON at all) or InvalidInput (the message and the field's dotted path)."""
    first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": ""}
    if first.get("type") == "json_invalid":
        return MalformedRequest(f"request body is not valid JSON: {first.get('msg')}")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # pydantic names union members in loc (e.g. 'list[float]'); keep the user's path only
    path = [p for p in loc if not p.startswith(("list[", "function-", "union["))]
    return InvalidInput(str(first.get("msg", "invalid value")), ".".join(path) or None)


class ServiceError(Exception):
    status = 500
    code = "internal"

    def __init__(
        self, message: str, field: str | None = None, *, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict:
        err: dict = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


class InvalidInput(ServiceError):
    status = 422
    code = "invalid_input"


class MalformedRequest(ServiceError):
    status = 400
    code = "malformed_request"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(ServiceError):
    status = 408
    code = "request_timeout"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Overloaded(ServiceError):
    """The bounded queue is full: answered at once, never queued."""

    status = 503
    code = "overloaded"

    def __init__(
        self, message: str = "the server is at capacity; retry shortly", retry_after_s: int = 1
    ):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class MalformedMessage(ServiceError):
    status = 400
    code = "malformed_message"


class UnknownType(ServiceError):
    status = 400
    code = "unknown_type"


class InvalidToken(ServiceError):
    status = 400
    code = "invalid_token"


class NotStarted(ServiceError):
    status = 409
    code = "not_started"


class AlreadyStarted(ServiceError):
    status = 409
    code = "already_started"


class NoObservation(ServiceError):
    status = 409
    code = "no_observation"


class TokenMismatch(ServiceError):
    """A genuine token, but for another model (name, version or shape)."""

    status = 409
    code = "token_mismatch"


class TooManySteps(ServiceError):
    status = 413
    code = "too_many_steps"


class SessionFull(ServiceError):
    status = 503
    code = "too_many_sessions"


class NotReady(ServiceError):
    status = 503
    code = "not_ready"


class BatcherStopped(NotReady):
    """The batcher is shutting down or crashed; the job never ran (503, retry elsewhere)."""

    def __init__(self, message: str = "the server is shutting down") -> None:
        super().__init__(message, headers={"Retry-After": "1"})
