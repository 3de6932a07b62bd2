"""KServe Open Inference Protocol v2 REST routes: health, metadata, readiness and infer.

Endpoints only translate (service/oip.py holds the codec): infer goes through the same core
and dynamic batcher as /v1/hidden, so both answer the same numbers. Errors use the protocol's
own `{"error": "..."}` body: `OipRoute` answers every ServiceError raised under these routes
in that shape (invalid input is a 400 in this protocol).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service import oip
from service.errors import InvalidInput, NotFound, NotReady, ServiceError
from service.routes.documented import OIP_INFER, OIP_MODEL, OIP_READ, OIP_READY
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


router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=OipRoute)


def _runtime(request: Request, name: str, version: str | None):
    """The runtime serving `name` (and `version`, when given); NotFound or NotReady otherwise."""
    rt = state_of(request).runtime
    if rt is None:
        raise NotReady("the model is still loading", headers={"Retry-After": "1"})
    if name != rt.meta.name:
        raise NotFound(f"unknown model {name!r}; this server serves {rt.meta.name!r}")
    if version is not None and version != rt.meta.version:
        raise NotFound(
            f"unknown version {version!r} of model {name!r}; served: {rt.meta.version!r}"
        )
    return rt


@router.get("", response_model=oip.ServerMetadata, responses=OIP_READ)
async def get_server_metadata(request: Request) -> oip.ServerMetadata:
    """Server metadata: name, version and supported protocol extensions."""
    return oip.ServerMetadata(
        name="gru-serve", version=request.app.version, extensions=oip.EXTENSIONS
    )


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
    _runtime(request, name, version)
    ready, _ = state_of(request).readiness()
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def _model_metadata(request: Request, name: str, version: str | None) -> JSONResponse:
    rt = _runtime(request, name, version)
    inputs, outputs = oip.tensor_signature(rt.meta)
    body = oip.ModelMetadata(
        name=rt.meta.name,
        versions=[rt.meta.version],
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
    """Inference on a named version (the served one)."""
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    rt = _runtime(request, name, version)
    core = state_of(request).ready_core()
    if request.headers.get("content-encoding", "identity") != "identity":
        raise InvalidInput("compressed request bodies (Content-Encoding) are not supported")
    body = await request.body()
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
