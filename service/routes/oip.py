"""KServe Open Inference Protocol v2 REST routes: health, metadata, readiness and infer.

Endpoints only translate (service/oip.py holds the codec): infer goes through the same core
and dynamic batcher as /v1/hidden, so both answer the same numbers. Errors use the protocol's
own `{"error": "..."}` body: `OipRoute` answers every ServiceError raised under these routes
in that shape (invalid input is a 400 in this protocol).
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service import oip
from service.errors import InvalidInput, NotReady, ServiceError
from service.repository import ModelRepository, RepositoryError, Served, scan, version_key
from service.routes.documented import (
    OIP_INFER,
    OIP_MODEL,
    OIP_READ,
    OIP_READY,
    OIP_REPOSITORY,
)
from service.runtime import ArtifactError, DeviceError
from service.state import state_of


def oip_error(e: ServiceError) -> JSONResponse:
    status = 400 if e.status == 422 else e.status
    field = f" ({e.field})" if e.field else ""
    return JSONResponse({"error": e.message + field}, status_code=status, headers=e.headers)


class OipRoute(APIRoute):
    """The OIP edge: a ServiceError raised by the endpoint gets the protocol's error shape."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as e:
                return oip_error(e)

        return handle


log = logging.getLogger("gru_serve.oip")

router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=OipRoute)


def _served(request: Request, name: str, version: str | None) -> Served:
    """The model version serving `name` (and `version`, when given; else the highest);
    NotFound or NotReady otherwise."""
    models = state_of(request).models
    if models is None:
        raise NotReady("the model is still loading", headers={"Retry-After": "1"})
    return models.resolve(name, version)


@router.get("", response_model=oip.ServerMetadata, responses=OIP_READ)
async def get_server_metadata(request: Request) -> oip.ServerMetadata:
    """Server metadata: name, version and supported protocol extensions."""
    models = state_of(request).models
    extensions = list(oip.EXTENSIONS)
    if models is not None and models.root is not None:
        extensions.append(oip.REPOSITORY_EXTENSION)
    return oip.ServerMetadata(name="gru-serve", version=request.app.version, extensions=extensions)


@router.get("/health/live")
async def get_server_live() -> dict:
    """Server live: the process answers (never requires an API key)."""
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "not ready"}})
async def get_server_ready(request: Request) -> JSONResponse:
    """Server ready: the model is loaded and warmed up (503 before; no API key needed)."""
    ready, _ = state_of(request).readiness()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


async def _model_ready(request: Request, name: str, version: str | None) -> JSONResponse:
    served = _served(request, name, version)
    ready = state_of(request).readiness()[0] and served.ready and served.core.batcher.alive
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def _model_metadata(request: Request, name: str, version: str | None) -> JSONResponse:
    served = _served(request, name, version)
    rt = served.runtime
    inputs, outputs = oip.tensor_signature(rt.meta)
    versions = state_of(request).models.versions(name)  # type: ignore[union-attr]
    body = oip.ModelMetadata(
        name=rt.meta.name,
        versions=[s.version for s in versions] if version is None else [rt.meta.version],
        platform=oip.PLATFORM,
        inputs=inputs,
        outputs=outputs,
    )
    return JSONResponse(body.model_dump())


@router.get("/models/{name}/ready", response_model=oip.ModelReady, responses=OIP_READY)
async def get_model_ready(request: Request, name: str) -> JSONResponse:
    """Model ready (200) or still warming up (503)."""
    return await _model_ready(request, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready", response_model=oip.ModelReady, responses=OIP_READY
)
async def get_model_version_ready(request: Request, name: str, version: str) -> JSONResponse:
    """Model version ready (200) or still warming up (503)."""
    return await _model_ready(request, name, version)


@router.get("/models/{name}", response_model=oip.ModelMetadata, responses=OIP_MODEL)
async def get_model_metadata(request: Request, name: str) -> JSONResponse:
    """Model metadata: versions, platform and the batch-first input and output tensors."""
    return await _model_metadata(request, name, None)


@router.get(
    "/models/{name}/versions/{version}", response_model=oip.ModelMetadata, responses=OIP_MODEL
)
async def get_model_version_metadata(request: Request, name: str, version: str) -> JSONResponse:
    """Model version metadata."""
    return await _model_metadata(request, name, version)


_PARAMETERS = {"type": "object", "additionalProperties": True}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "description": "x, h0 or seq_lens"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "description": "FP32 (x, h0) or INT32 (seq_lens)"},
        "parameters": _PARAMETERS,
        "data": {"type": "array", "description": "values, flat or nested in row-major order"},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR},
    },
}
_BINARY = {
    "type": "string",
    "format": "binary",
    "description": "binary tensor data extension: JSON header of "
    "Inference-Header-Content-Length bytes, then the raw tensors",
}
_INFER_DOC = {
    "responses": {
        "200": {
            "content": {
                "application/json": {"schema": _INFER_RESPONSE},
                "application/octet-stream": {"schema": _BINARY},
            }
        }
    },
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _INFER_REQUEST,
                "example": {
                    "id": "42",
                    "inputs": [
                        {
                            "name": "x",
                            "shape": [1, 3, 1],
                            "datatype": "FP32",
                            "data": [0.1, 0.2, 0.3],
                        }
                    ],
                    "outputs": [{"name": "y"}, {"name": "h_n"}],
                },
            },
            "application/octet-stream": {"schema": _BINARY},
        },
    },
}


@router.post("/models/{name}/infer", responses=OIP_INFER, openapi_extra=_INFER_DOC)
async def create_inference(request: Request, name: str) -> Response:
    """Inference: x [B, T, F] FP32 (+ h0 [B, L, H], seq_lens [B]) -> y [B, T, O], h_n [B, L, H]."""
    return await _infer(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer", responses=OIP_INFER, openapi_extra=_INFER_DOC
)
async def create_version_inference(request: Request, name: str, version: str) -> Response:
    """Inference on a named version."""
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    if request.headers.get("content-encoding", "identity") != "identity":
        raise InvalidInput("compressed request bodies (Content-Encoding) are not supported")
    body = await request.body()
    # Chosen once the body is in: from here to admission nothing awaits, so a model being
    # unloaded either still counts this request as in flight or has answered it 404.
    served = _served(request, name, version)
    rt = served.runtime
    core = state_of(request).ready_core(served)
    req = oip.decode_request(body, request.headers.get(oip.HEADER_LENGTH), rt.meta)
    tensors = await _run(core, req)
    content, headers = oip.encode_response(
        rt.meta.name, rt.meta.version, req.id, tensors, req.outputs
    )
    return Response(content, headers=headers)


async def _run(core, req: oip.InferRequest) -> dict[str, np.ndarray]:
    rows, T = req.x.shape[:2]
    core.check_items(rows, "x", "rows")
    lens = req.seq_lens if req.seq_lens is not None else np.full(rows, T, np.int32)
    xs = [core.check_sequence(req.x[b, : lens[b]], f"x[{b}]") for b in range(rows)]
    hs = [
        core.zero_state() if req.h0 is None else core.check_state(req.h0[b], f"h0[{b}]")
        for b in range(rows)
    ]
    results = await core.hidden(xs, hs, False)
    out: dict[str, np.ndarray] = {}
    if oip.OUTPUT_Y in req.outputs:
        y = np.zeros((rows, T, core.meta.output_size), np.float32)
        for b, r in enumerate(results):
            y[b, : r.y.shape[0]] = r.y
        out[oip.OUTPUT_Y] = y
    if oip.OUTPUT_HN in req.outputs:
        out[oip.OUTPUT_HN] = np.stack([r.h for r in results])
    # keep the client's order of requested outputs
    return {k: out[k] for k in req.outputs}


# ---- the model repository extension -------------------------------------------------------------
@router.post(
    "/repository/index", response_model=list[oip.RepositoryModel], responses=OIP_REPOSITORY
)
async def get_repository_index(request: Request) -> JSONResponse:
    """Every model version in the model repository, loaded or not, with its state."""
    models = _repository(request)
    body = await request.body()
    ready_only = _params_flag(body, "ready")
    loaded = {(s.name, s.version): s for s in models.all()}
    index = []
    try:
        found = await asyncio.to_thread(scan, models.root)  # type: ignore[arg-type]
    except RepositoryError as e:
        raise InvalidInput(str(e)) from None
    for name, versions in found.items():
        for version in versions:
            s = loaded.pop((name, version), None)
            state = "READY" if s is not None and s.ready else "UNAVAILABLE"
            index.append(oip.RepositoryModel(name=name, version=version, state=state))
    for name, version in loaded:  # loaded, its directory removed since
        index.append(oip.RepositoryModel(name=name, version=version, state="READY"))
    if ready_only:
        index = [m for m in index if m.state == "READY"]
    index.sort(key=lambda m: (m.name, version_key(m.version) or ()))
    return JSONResponse([m.model_dump() for m in index])


@router.post("/repository/models/{name}/load", responses=OIP_REPOSITORY)
async def load_model(request: Request, name: str) -> JSONResponse:
    """Load model `name` from the repository: versions not served yet are loaded and warmed
    up before they take requests (versions whose directory is gone are unloaded); every
    other model keeps serving meanwhile."""
    models = _repository(request)
    try:
        await models.load(name)
    except (RepositoryError, ArtifactError, DeviceError) as e:
        raise InvalidInput(str(e)) from None
    except ServiceError:
        raise
    except Exception as e:  # e.g. a failed warm-up: the model stays unloaded, the server serves
        log.exception("loading model %s failed", name)
        raise InvalidInput(f"cannot load model {name!r}: {type(e).__name__}: {e}") from None
    return JSONResponse({})


@router.post("/repository/models/{name}/unload", responses=OIP_REPOSITORY)
async def unload_model(request: Request, name: str) -> JSONResponse:
    """Unload every version of `name`: new requests for it get 404 at once, admitted ones
    finish (within shutdown_grace_s), its streams get their resume tokens."""
    models = _repository(request)
    await models.unload(name, state_of(request).settings.shutdown_grace_s)
    return JSONResponse({})


def _repository(request: Request) -> ModelRepository:
    state = state_of(request)
    if state.models is None:
        raise NotReady("the models are still loading", headers={"Retry-After": "1"})
    if state.models.root is None:
        raise InvalidInput(
            "this server serves one model file, not a model repository (serve a directory "
            "of <name>/<version>/model.onnx to load and unload models)"
        )
    return state.models


def _params_flag(body: bytes, key: str) -> bool:
    """`key` of an optional JSON body ({"ready": true} in the index request)."""
    if not body.strip():
        return False
    try:
        req = json.loads(body)
    except ValueError:
        raise InvalidInput("the request body is not valid JSON") from None
    if not isinstance(req, dict):
        raise InvalidInput("the request body must be a JSON object")
    value = req.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key!r} must be true or false")
    return value
