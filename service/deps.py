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


async def get_core(request: Request) -> InferenceCore:
    """The core, once the model is warmed up; 503 before (and while shutting down)."""
    state = request.app.state
    if not state.ready:
        raise NotReady("the model is not ready yet", headers={"Retry-After": "1"})
    return state.core


SettingsDep = Annotated[Settings, Depends(get_settings)]
CoreDep = Annotated[InferenceCore, Depends(get_core)]
