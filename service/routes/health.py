"""Kubernetes-style probes: /healthz (the process answers) and /readyz (model warmed up).

The probe port (service/probes.py) gives the same answers through `readiness_answer`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.schemas import Health
from service.state import ServiceState, state_of

router = APIRouter(tags=["health"])


def readiness_answer(state: ServiceState) -> tuple[Health, int]:
    """The /readyz body and status (200 or 503) for `state`."""
    rt = state.runtime
    ready, reason = state.readiness()
    body = Health(
        status="ready" if ready else "not_ready",
        provider=rt.placement.provider if rt is not None else None,
        model=rt.meta.name if rt is not None else None,
        version=rt.meta.version if rt is not None else None,
        reason=reason,
    )
    return body, 200 if ready else 503


@router.get("/healthz", response_model=Health)
async def get_liveness() -> Health:
    """Liveness: the process is up and its event loop answers."""
    return Health(status="alive")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def get_readiness(request: Request) -> JSONResponse:
    """Readiness: the model is loaded and warmed up (503 before, once shutdown begins, after a
    failed warm-up or a batcher crash; `reason` says which)."""
    body, status = readiness_answer(state_of(request))
    return JSONResponse(body.model_dump(), status_code=status)
