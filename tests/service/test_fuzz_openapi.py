"""Property-based fuzzing of the served OpenAPI schema (schemathesis), in-process over ASGI.

For every operation the schema lists, schemathesis generates requests from the schema (valid
ones, and for operations with a body invalid ones too) and checks each answer: never a 5xx,
its status declared on the operation, its content type and body matching what is declared
there. With API keys on, a second pass sends no key: every protected operation must answer
its declared 401. Bounded: a fixed number of examples per operation, derandomised so that CI
runs the same requests each time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.auth import OPEN_PATHS
from service.settings import DEFAULT_MODEL, Settings

KEY = "fuzz-key"
EXAMPLES = 25
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# The operations, from the schema itself (building the app loads no model).
SCHEMA = create_app(Settings(model_path=DEFAULT_MODEL, device="cpu")).openapi()
OPERATIONS = [
    pytest.param(method.upper(), path, "requestBody" in op, id=f"{method.upper()} {path}")
    for path, item in SCHEMA["paths"].items()
    for method, op in item.items()
]


def ready_schema(tiny_artifact: Path, **overrides):
    """The schema of a fresh app on the tiny artifact, its lifespan started and warmed up.
    (schemathesis' pytest plugin ends the lifespan when the test ends; a fresh app per test.)"""
    app = create_app(
        Settings(model_path=tiny_artifact, device="cpu", access_log=False, **overrides)
    )
    headers = {"X-API-Key": KEY}
    with asgi.get_client(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.01)
        assert client.get("/openapi.json", headers=headers).status_code == 200
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)


def fuzz(
    operation,
    mode: GenerationMode,
    headers: dict[str, str],
    checks: list,
    examples: int = EXAMPLES,
    status: int | None = None,
) -> None:
    """`examples` generated requests, each answer checked (and its status, when given)."""

    @given(case=operation.as_strategy(mode, headers=headers))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        response = case.call_and_validate(checks=checks)
        assert status is None or response.status_code == status, response.text

    run()


@pytest.mark.parametrize("method, path, has_body", OPERATIONS)
def test_answers_conform_to_the_schema(tiny_artifact, method, path, has_body):
    operation = ready_schema(tiny_artifact, api_keys=KEY)[path][method]
    headers = {"X-API-Key": KEY}
    fuzz(operation, GenerationMode.POSITIVE, headers, CONFORMANCE)
    if has_body:  # invalid bodies must be refused with a declared 4xx, never a 5xx
        fuzz(operation, GenerationMode.NEGATIVE, headers, [*CONFORMANCE, negative_data_rejection])


@pytest.mark.parametrize(
    "method, path, has_body", [p for p in OPERATIONS if p.values[1] not in OPEN_PATHS]
)
def test_without_a_key_every_protected_operation_answers_its_declared_401(
    tiny_artifact, method, path, has_body
):
    operation = ready_schema(tiny_artifact, api_keys=KEY)[path][method]
    fuzz(operation, GenerationMode.POSITIVE, {}, CONFORMANCE, examples=5, status=401)
