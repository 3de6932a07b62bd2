"""The error answers each route declares in the OpenAPI schema (its `responses=`).

A client generated from the schema, and the fuzzing test (tests/service/test_fuzz_openapi.py),
take the declared statuses as the complete list: every status a route can answer is here,
with the body it comes with. 401 is listed wherever an API key can be required (only when
`api_keys` is set); 413 wherever a body is read; 503 (not ready, or overloaded) carries
Retry-After.
"""

from __future__ import annotations

from typing import Any

from service.oip import ModelReady, OipErrorBody
from service.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def _rest(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


def _oip(description: str) -> dict[str, Any]:
    return {"model": OipErrorBody, "description": description}


_KEY = "a missing or invalid API key (only when API keys are set)"
_UNAVAILABLE = "not ready (warming up, shutting down) or overloaded: try again after Retry-After"

# GET routes of the REST API and /metrics: the key check only.
REST_READ: Responses = {401: _rest(_KEY)}

# POST routes of the REST API (/v1/forecast, /v1/hidden, /v1/timeseries/forecast).
REST_BODY: Responses = {
    400: _rest("the body is not JSON (malformed_request)"),
    401: _rest(_KEY),
    404: _rest("an unknown model or version (not_found; `field` says which)"),
    413: _rest("the body is larger than max_body_bytes (payload_too_large)"),
    422: _rest("invalid input: `message` says what, `field` where (invalid_input)"),
    503: {**_rest(_UNAVAILABLE), "headers": RETRY_AFTER},
}

# The Open Inference Protocol's routes answer errors in its own {"error": "..."} shape.
OIP_READ: Responses = {401: _oip(_KEY)}
OIP_MODEL: Responses = {
    401: _oip(_KEY),
    404: _oip("unknown model or version"),
    503: {**_oip(_UNAVAILABLE), "headers": RETRY_AFTER},
}
OIP_READY: Responses = {
    **OIP_MODEL,
    503: {"model": ModelReady, "description": "the model is not ready yet (`ready` is false)"},
}
OIP_INFER: Responses = {
    **OIP_MODEL,
    400: _oip("a malformed or invalid request (the protocol answers 400 for both)"),
    413: _oip("the body is larger than max_body_bytes"),
}
# The model repository extension (index, load, unload).
OIP_REPOSITORY: Responses = {
    400: _oip("not a model repository server, a bad body, or a model that cannot be loaded"),
    401: _oip(_KEY),
    404: _oip("no such model in the repository"),
    413: _oip("the body is larger than max_body_bytes"),
    503: {**_oip(_UNAVAILABLE), "headers": RETRY_AFTER},
}
