"""The application's state, typed: what the lifespan builds and every front door reads.

One `ServiceState` per app (tests build many apps in one process), at `app.state.service`;
`state_of(request)` is the only way in. Fields set in the lifespan are None before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.errors import NotReady
from service.settings import Settings

if TYPE_CHECKING:
    from service.core import InferenceCore
    from service.metrics import Metrics
    from service.runtime import Runtime
    from service.streaming.registry import SessionRegistry
    from service.tokens import TokenCodec


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    runtime: Runtime | None = None
    core: InferenceCore | None = None
    tokens: TokenCodec | None = None
    digest: str = ""  # the served weights' SHA-256 (service/identity.py)
    streams: SessionRegistry | None = None
    ready: bool = False  # warmed up
    draining: bool = False  # shutdown began: never ready again
    warmup_error: str | None = None

    def readiness(self) -> tuple[bool, str | None]:
        """(ready, why not): warmed up, not shutting down, and the batcher running (a
        crashed batcher would answer every request with 503)."""
        batcher = self.core.batcher if self.core is not None else None
        if batcher is not None and batcher.crashed is not None:
            return False, f"the batcher crashed: {batcher.crashed!r}"
        if self.warmup_error is not None:
            return False, f"warm-up failed: {self.warmup_error}"
        if self.draining:
            return False, "shutting down"
        if not self.ready:
            return False, "warming up"
        if batcher is not None and not batcher.alive:
            return False, "the batcher is not running"
        return True, None

    def ready_core(self) -> InferenceCore:
        """The core, once the model is warmed up; NotReady (503) before, while shutting
        down, or once the batcher has died."""
        core = self.core
        if self.ready and core is not None and core.batcher.alive:
            return core
        _, why = self.readiness()
        message = (
            "the model is not ready yet" if why in (None, "warming up") else f"not ready: {why}"
        )
        raise NotReady(message, headers={"Retry-After": "1"})


def app_state(app: Any) -> ServiceState:
    """The state of a FastAPI app built by create_app."""
    return app.state.service


def state_of_scope(scope: Any) -> ServiceState:
    """The state of the app serving an ASGI scope (Starlette puts the app in it)."""
    return scope["app"].state.service


def state_of(conn: Any) -> ServiceState:
    """The state of the app serving `conn` (a Request or a WebSocket)."""
    return conn.app.state.service
