"""FastAPI dependencies as Annotated aliases, so routes read `core: CoreDep`.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool,
a thread hop per request for what is an attribute lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core import InferenceCore
from service.errors import NotReady
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def readiness(state) -> tuple[bool, str | None]:
    """(ready, why not): warmed up, not shutting down, and the batcher running (a crashed
    batcher would answer every request with 503). Shared by /readyz, the OIP probes and
    every route that needs the core."""
    core = getattr(state, "core", None)
    batcher = getattr(core, "batcher", None)
    if batcher is not None and batcher.crashed is not None:
        return False, f"the batcher crashed: {batcher.crashed!r}"
    error = getattr(state, "warmup_error", None)
    if error is not None:
        return False, f"warm-up failed: {error}"
    if getattr(state, "draining", False):
        return False, "shutting down"
    if not state.ready:
        return False, "warming up"
    if batcher is not None and not batcher.alive:
        return False, "the batcher is not running"
    return True, None


async def get_core(request: Request) -> InferenceCore:
    """The core, once the model is warmed up; 503 before (and while shutting down, or once
    the batcher has died)."""
    return core_of(request.app.state)


def core_of(state) -> InferenceCore:
    """`get_core` on the app's state (the hot path in service.fastpath calls it directly)."""
    if state.ready and state.core.batcher.alive:
        return state.core
    _, why = readiness(state)
    message = "the model is not ready yet" if why in (None, "warming up") else f"not ready: {why}"
    raise NotReady(message, headers={"Retry-After": "1"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
CoreDep = Annotated[InferenceCore, Depends(get_core)]
