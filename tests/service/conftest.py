"""Fixtures for service tests: settings on a tiny artifact, an in-process TestClient that waits
for readiness, a real `gru-serve serve` subprocess on a free loopback port, and the NumPy
reference of the tiny artifact. Plain helpers live in service_helpers.py.

Reusable by every service test module (REST, streaming, ops): nothing here is REST-specific.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import Reference, ServerProcess, start_server, tiny_meta, wait_ready

from service.app import create_app
from service.settings import Settings


# ---- settings and in-process clients ------------------------------------------------------------
@pytest.fixture
def make_settings(tiny_artifact: Path) -> Callable[..., Settings]:
    """Settings on the tiny artifact, on the CPU; keyword arguments override any field."""

    def make(**overrides) -> Settings:
        fields = {"model_path": tiny_artifact, "device": "cpu", "access_log": False}
        fields.update(overrides)
        return Settings(**fields)

    return make


@pytest.fixture
def make_client(make_settings) -> Iterator[Callable[..., TestClient]]:
    """Factory: `make_client(**settings_overrides)` -> a started, ready TestClient (lifespan run);
    every client made is closed at teardown."""
    stack = contextlib.ExitStack()

    def make(ready: bool = True, **overrides) -> TestClient:
        app = create_app(make_settings(**overrides))
        client = stack.enter_context(TestClient(app))
        if ready:
            wait_ready(client)
        return client

    with stack:
        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    """A ready TestClient on the tiny artifact with default settings."""
    return make_client()


# ---- a real server process ------------------------------------------------------------------------
@pytest.fixture
def serve_process(tmp_path: Path, tiny_artifact: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: `serve_process(env=None, wait=True, **flags)` -> a ready ServerProcess serving the
    tiny artifact on the CPU by default; every process started is stopped at teardown."""
    servers: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, wait: bool = True, **flags) -> ServerProcess:
        flags.setdefault("model_path", tiny_artifact)
        server = start_server(tmp_path, env=env, wait=wait, **flags)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


# ---- the independent reference ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_reference() -> Reference:
    """The reference of the `tiny_artifact` fixture (seed 0, cho2014)."""
    return Reference(tiny_meta(), seed=0)
