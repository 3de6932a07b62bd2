"""The application's state, typed: what the lifespan builds and every front door reads.

One `ServiceState` per app (tests build many apps in one process), at `app.state.service`;
`state_of(request)` is the only way in. Fields set in the lifespan are None before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from service.errors import NotReady
from service.settings import Settings

if TYPE_CHECKING:
    from service.core import InferenceCore
    from service.metrics import Metrics
    from service.repository import ModelRepository, Served
    from service.runtime import Runtime
    from service.streaming.registry import SessionRegistry
    from service.tokens import TokenCodec


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    models: ModelRepository | None = None  # the served models (service/repository.py)
    streams: SessionRegistry | None = None
    ready: bool = False  # the models loaded at start-up are warmed up
    draining: bool = False  # shutdown began: never ready again
    warmup_error: str | None = None
    # Runtimes loaded before the app started (the CLI loads them first, so that a bad
    # artifact fails before the server binds); the lifespan serves them.
    preloaded: list[Runtime] = field(default_factory=list)

    # ---- the default model: what a request naming no model gets (None with several) ------
    @property
    def default(self) -> Served | None:
        return self.models.default if self.models is not None else None

    @property
    def core(self) -> InferenceCore | None:
        d = self.default
        return d.core if d is not None else None

    @property
    def sole_core(self) -> InferenceCore | None:
        """The core when exactly one model version is served: every request goes to it."""
        only = self.models.only if self.models is not None else None
        return only.core if only is not None else None

    @property
    def runtime(self) -> Runtime | None:
        d = self.default
        if d is not None:
            return d.runtime
        return self.preloaded[0] if len(self.preloaded) == 1 else None

    @property
    def tokens(self) -> TokenCodec | None:
        d = self.default
        return d.tokens if d is not None else None

    @property
    def digest(self) -> str:
        d = self.default
        return d.digest if d is not None else ""

    def served(self) -> list[Served]:
        return self.models.all() if self.models is not None else []

    def resolve(self, name: str | None, version: str | None) -> Served:
        """The model version a request names (service/repository.py: 404 for an unknown one);
        NotReady before the models are loaded."""
        if self.models is None:
            raise NotReady("the model is not ready yet", headers={"Retry-After": "1"})
        return self.models.resolve(name, version)

    # ---- readiness ---------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str | None]:
        """(ready, why not): warmed up, not shutting down, and every model's batcher running
        (a crashed batcher would answer every request with 503)."""
        served = self.served()
        several = len(served) > 1
        for s in served:
            crashed = s.core.batcher.crashed
            if crashed is not None:
                where = f" of {s.name} {s.version}" if several else ""
                return False, f"the batcher{where} crashed: {crashed!r}"
        if self.warmup_error is not None:
            return False, f"warm-up failed: {self.warmup_error}"
        if self.draining:
            return False, "shutting down"
        if not self.ready:
            return False, "warming up"
        for s in served:
            if s.ready and not s.core.batcher.alive:
                return False, "the batcher is not running"
        return True, None

    def check_ready(self) -> None:
        """NotReady (503) unless the server as a whole is ready (before any model is chosen)."""
        if not self.readiness()[0]:
            self._not_ready()

    def ready_core(self, served: Served | None = None) -> InferenceCore:
        """The core of `served` (default: the default model's), once it is warmed up; NotReady
        (503) before, while shutting down, or once its batcher has died."""
        s = served if served is not None else self.default
        if self.ready and s is not None and s.ready and s.core.batcher.alive:
            return s.core
        if s is None and self.ready:
            s = self.resolve(None, None)  # several models and none named: the 422 naming them
            if s.ready and s.core.batcher.alive:
                return s.core
        if s is not None and self.ready and not s.ready:
            raise NotReady(
                f"model {s.name} {s.version} is not ready yet", headers={"Retry-After": "1"}
            )
        self._not_ready()

    def _not_ready(self) -> NoReturn:
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
