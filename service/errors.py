"""One domain exception carrying its HTTP status; one JSON error shape for every route.

REST: {"error": {"code": ..., "message": ..., "field": ...}}. The websocket sends the same
code and message in an `error` message; the OIP routes use the protocol's {"error": "..."}.
"""

from __future__ import annotations

OIP_PREFIX = "/v2"


def is_oip(path: str) -> bool:
    """Under /v2 the Open Inference Protocol's error shape applies."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_body(path: str, err: ServiceError) -> dict:
    """The one place that picks the error shape by path: {"error": "..."} under /v2 (the
    OIP's), {"error": {"code", "message", "field"}} elsewhere."""
    return {"error": err.message} if is_oip(path) else err.body()


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


class NotReady(ServiceError):
    status = 503
    code = "not_ready"


class BatcherStopped(NotReady):
    """The batcher is shutting down or crashed; the job never ran (503, retry elsewhere)."""

    def __init__(self, message: str = "the server is shutting down") -> None:
        super().__init__(message, headers={"Retry-After": "1"})
