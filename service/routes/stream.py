"""WS /v1/stream: stateful streams (the protocol and the connection loop: service/streaming/)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from starlette import status as ws_status

from service.errors import SessionFull
from service.state import state_of
from service.streaming.connection import Connection

router = APIRouter(prefix="/v1", tags=["stream"])


@router.websocket("/stream")
async def stream_session(ws: WebSocket) -> None:
    """A stateful stream: per-step outputs, forecast forks, resume tokens (docs/protocol.md)."""
    state = state_of(ws)
    await ws.accept()
    if not state.readiness()[0] or state.streams is None:
        await ws.close(ws_status.WS_1013_TRY_AGAIN_LATER, "the model is not ready yet")
        return
    if not state.served():
        await ws.close(ws_status.WS_1013_TRY_AGAIN_LATER, "no model is loaded")
        return
    try:
        await Connection(ws, state).serve()
    except SessionFull as e:
        state.metrics.stream_rejected()
        await ws.close(ws_status.WS_1013_TRY_AGAIN_LATER, e.message[:120])
