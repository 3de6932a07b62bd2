"""The application factory: routers, error handlers, middleware and the model's life cycle."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Mapping
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service import metrics
from service.auth import ApiKeyAuth
from service.errors import ServiceError, error_body, from_validation_errors
from service.logs import RequestContext
from service.metrics import Metrics
from service.middleware import BodyLimit
from service.repository import ModelRepository, Served, load_runtime, scan
from service.routes import forecast, health, hidden, models, oip, playground, stream, timeseries
from service.runtime import Runtime
from service.schemas import ErrorResponse
from service.settings import Settings
from service.state import ServiceState
from service.streaming.registry import SessionRegistry
from service.tokens import resolve_secret

log = logging.getLogger("gru_serve.app")

# FastAPI releases with native OpenTelemetry check the global providers on every request;
# the service exports its own Prometheus metrics, so that check is switched off where it exists.
NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    runtimes: list[Runtime] | None = None,
) -> FastAPI:
    """Build the app. The models load in the lifespan unless loaded runtimes are handed in:
    `runtime` for one file, `runtimes` for a model repository's versions (the CLI loads them
    first so that a bad artifact fails before the server binds)."""
    settings = settings or Settings()

    state = ServiceState(settings, Metrics())  # per app: tests build many apps in one process
    state.preloaded = list(runtimes or ([runtime] if runtime is not None else []))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        secret = settings.token_secret.get_secret_value() if settings.token_secret else None
        root = Path(settings.model_path)
        models = ModelRepository(
            settings,
            resolve_secret(secret),
            observer=state.metrics.batch_observer,
            root=root if root.is_dir() else None,
        )
        models.on_add.append(lambda s: state.metrics.bind(s.runtime, s.core))
        models.on_remove.append(lambda s: state.metrics.unbind(s.runtime))
        models.on_remove.append(lambda s: _close_streams(state, s))
        for rt in state.preloaded or load_runtimes(settings):
            models.insert(models.prepare(rt))
        state.preloaded = []
        state.models = models
        state.streams = SessionRegistry(settings.max_sessions)
        for served in models.all():
            await served.core.start()
        # Warm up off the event loop so /healthz answers (and /readyz says 503) meanwhile.
        warm = asyncio.create_task(_warm_up(state))
        try:
            yield
        finally:
            state.draining = True
            state.ready = False
            warm.cancel()
            await state.streams.close_all()  # each stream gets its resume token, then 1001
            await models.stop_all()

    app = FastAPI(
        title="gru-serve",
        summary="GRU forecasts, next-step hidden states and streams on onnxruntime",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: /docs must work without internet
        redoc_url=None,
        responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        **NO_TELEMETRY,
    )
    app.state.service = state
    _install_error_handlers(app)
    _install_docs(app)
    _install_middleware(app, settings, state.metrics)
    # Routes go into the app's own list, hot ones first: the router tries them in order, and
    # include_router would wrap each in a per-request inclusion context.
    routers = (forecast, stream, hidden, timeseries, oip, health, models, metrics, playground)
    app.router.routes[:0] = [r for module in routers for r in module.router.routes]
    return app


def _install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """All middleware, in one place. Starlette runs the last added outermost, so they are
    added innermost first; a request passes them in this order:

    1. RequestContext: request id, metrics and the access log (sees every answer);
    2. CORS: answers preflights (before the key check, which they cannot pass);
    3. ApiKeyAuth: 401 without a configured key (probes and /docs stay open);
    4. BodyLimit: 413 for bodies over max_body_bytes, before anything reads them.
    """
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key_list:
        app.add_middleware(ApiKeyAuth, keys=settings.api_key_list)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "X-Request-ID",
                "Inference-Header-Content-Length",
            ],
            expose_headers=["X-Request-ID", "Retry-After", "Inference-Header-Content-Length"],
        )
    app.add_middleware(RequestContext, metrics=metrics, access=settings.access_log)


def load_runtimes(settings: Settings) -> list[Runtime]:
    """The runtimes `model_path` names: one file, or every version of a model repository
    (blocking; raises ArtifactError, DeviceError or RepositoryError)."""
    path = Path(settings.model_path)
    if not path.is_dir():
        return [Runtime(settings)]
    return [
        load_runtime(settings, file, name, version)
        for name, versions in scan(path).items()
        for version, file in versions.items()
    ]


_CLOSING: set[asyncio.Task] = set()


def _close_streams(state: ServiceState, served: Served) -> None:
    """A model version is unloading: its streams get their resume tokens, then 1001."""
    if state.streams is None:
        return
    for handle in state.streams.handles():
        if handle.session.core is served.core:
            task = asyncio.get_running_loop().create_task(
                handle.server_close(1001, f"model {served.name} {served.version} unloaded")
            )
            _CLOSING.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(_CLOSING.discard)


async def _warm_up(state: ServiceState) -> None:
    for served in state.served():
        try:
            seconds = await asyncio.to_thread(served.runtime.warmup)
        except Exception as e:  # else lost in the task: the server would stay not ready, silently
            log.exception("warm-up failed; the server stays not ready")
            state.warmup_error = f"{type(e).__name__}: {e}"  # /readyz reports it
            served.warmup_error = state.warmup_error
            return
        served.ready = True
        log.info("warm-up of %s %s done in %.0f ms", served.name, served.version, seconds * 1000)
    if state.draining:  # a shutdown began during warm-up: stay not ready
        return
    state.ready = True
    log.info("ready")


def _error(status: int, body: dict, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, error_body(request.url.path, exc), exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client left mid-body, or request_timeout_s cut it off (it got a 408): nobody
        # reads this answer; 499 is what the access log and metrics record.
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = from_validation_errors(list(exc.errors()))
        return _error(err.status, error_body(request.url.path, err))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = ServiceError(str(exc.detail))
        err.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, error_body(request.url.path, err), exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, error_body(request.url.path, ServiceError("internal server error")))


def _install_docs(app: FastAPI) -> None:
    # Swagger UI's assets ship in the fastapi-offline wheel; we only serve its static folder.
    app.mount(
        "/static/docs",
        StaticFiles(directory=str(files("fastapi_offline") / "static")),
        name="docs-assets",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="gru-serve API",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        )
