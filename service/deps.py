"""FastAPI dependencies as Annotated aliases, so routes read `core: CoreDep`.

`async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
hop per request for what is an attribute lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core import InferenceCore
from service.state import state_of


async def get_core(request: Request) -> InferenceCore:
    """The core, once the model is warmed up; 503 before."""
    return state_of(request).ready_core()


CoreDep = Annotated[InferenceCore, Depends(get_core)]
