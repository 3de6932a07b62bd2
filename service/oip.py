"""KServe Open Inference Protocol v2: the tensor codec, the model's tensor signature and schemas.

Transport-free: `service/routes/oip.py` reads the body, calls `decode_request`, runs the core,
and answers with `encode_response`. Everything here raises the service's own errors
(`MalformedRequest`, `InvalidInput`); the OIP routes answer them in the protocol's shape.

Tensors are batch-first as OIP clients expect; the core works per row (T, F), so the batch
axis is split here and nothing else transposes:

  inputs   x         FP32  [B, T, F]  the sequences (required)
           h0        FP32  [B, L, H]  initial hidden states (optional; zeros)
           seq_lens  INT32 [B]        valid steps per row, 1..T (optional; all T)
  outputs  y         FP32  [B, T, O]  head output after each step (zeros past a row's length)
           h_n       FP32  [B, L, H]  state after each row's last valid step

The binary tensor data extension is supported both ways: a request with an
`Inference-Header-Content-Length` header carries its JSON header first and then the raw
little-endian bytes of every input whose `parameters.binary_data_size` says so; outputs are
sent as binary when `parameters.binary_data_output` (request) or `parameters.binary_data`
(per output) is true.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from export.contract import INPUT_H0, INPUT_LENS, INPUT_X, OUTPUT_HN, OUTPUT_Y, ArtifactMeta
from service.errors import InvalidInput, MalformedRequest

# The OIP tensors carry the artifact's names (batch-first here, time-first in the graph).
OUTPUTS = (OUTPUT_Y, OUTPUT_HN)
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data"]
REPOSITORY_EXTENSION = "model_repository"  # listed when a model repository is served
PLATFORM = "onnxruntime_onnx"

_DTYPES = {"FP32": np.dtype("<f4"), "INT32": np.dtype("<i4")}
_EXPECTED = {INPUT_X: "FP32", INPUT_H0: "FP32", INPUT_LENS: "INT32"}


# ---- schemas (response shapes; also what /docs shows) -------------------------------------------
class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: str  # READY or UNAVAILABLE


class OipErrorBody(BaseModel):
    error: str


def tensor_signature(meta: ArtifactMeta) -> tuple[list[TensorMetadata], list[TensorMetadata]]:
    """Inputs and outputs as the model metadata declares them (-1 = any size)."""
    L, H = meta.num_layers, meta.hidden_size
    inputs = [
        TensorMetadata(name=INPUT_X, datatype="FP32", shape=[-1, -1, meta.input_size]),
        TensorMetadata(name=INPUT_H0, datatype="FP32", shape=[-1, L, H]),
        TensorMetadata(name=INPUT_LENS, datatype="INT32", shape=[-1]),
    ]
    outputs = [
        TensorMetadata(name=OUTPUT_Y, datatype="FP32", shape=[-1, -1, meta.output_size]),
        TensorMetadata(name=OUTPUT_HN, datatype="FP32", shape=[-1, L, H]),
    ]
    return inputs, outputs


# ---- requests -------------------------------------------------------------------------------------
@dataclass
class InferRequest:
    id: str | None
    x: np.ndarray  # (B, T, F) float32
    h0: np.ndarray | None  # (B, L, H) float32
    seq_lens: np.ndarray | None  # (B,) int32
    outputs: dict[str, bool]  # requested output -> binary?
    parameters: dict[str, Any] = field(default_factory=dict)


def decode_request(body: bytes, header_length: str | None, meta: ArtifactMeta) -> InferRequest:
    """Parse a JSON (or binary-extension) inference request into arrays; 400 on anything wrong."""
    raw = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length must be an integer") from None
        if not 0 < n <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {n} is outside the body ({len(body)} bytes)"
            )
        body, raw = body[:n], body[n:]
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        hint = (
            " (binary tensor data needs the Inference-Header-Content-Length header)"
            if header_length is None
            else ""
        )
        raise MalformedRequest(f"request is not valid JSON: {e}{hint}") from None
    if not isinstance(req, dict):
        raise InvalidInput("request must be a JSON object")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput("'id' must be a string")
    params = _params(req.get("parameters"), "request")
    if params.get("sequence_id") not in (None, 0, ""):
        raise InvalidInput(
            "sequence batching (parameters.sequence_id) is not supported: send the state as "
            "input 'h0', or stream over WS /v1/stream",
        )
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")

    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise InvalidInput(f"inputs[{i}] must be an object")
        name = t.get("name")
        if name not in _EXPECTED:
            raise InvalidInput(f"unexpected input {name!r}; this model takes {sorted(_EXPECTED)} ")
        if name in tensors:
            raise InvalidInput(f"input {name!r} given twice")
        tensors[name], offset = _decode_tensor(t, raw, offset)
    if offset != len(raw):
        raise InvalidInput(
            f"{len(raw) - offset} binary byte(s) after the last input are not claimed"
        )
    if INPUT_X not in tensors:
        raise InvalidInput(f"input {INPUT_X!r} ([batch, steps, features] FP32) is required")

    x, h0, lens = tensors[INPUT_X], tensors.get(INPUT_H0), tensors.get(INPUT_LENS)
    F, L, H = meta.input_size, meta.num_layers, meta.hidden_size
    if x.ndim != 3 or x.shape[2] != F or x.shape[0] < 1 or x.shape[1] < 1:
        raise InvalidInput(f"input 'x' must have shape [batch, steps, {F}], got {list(x.shape)}")
    B, T = x.shape[:2]
    if h0 is not None and h0.shape != (B, L, H):
        raise InvalidInput(f"input 'h0' must have shape [{B}, {L}, {H}], got {list(h0.shape)}")
    if lens is not None:
        if lens.shape != (B,):
            raise InvalidInput(f"input 'seq_lens' must have shape [{B}], got {list(lens.shape)}")
        if (lens < 1).any() or (lens > T).any():
            raise InvalidInput(f"input 'seq_lens' values must be between 1 and {T}")
    return InferRequest(rid, x, h0, lens, _requested(req.get("outputs"), params), params)


def _params(p: Any, where: str) -> dict[str, Any]:
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise InvalidInput(f"{where} 'parameters' must be an object")
    return p


def _decode_tensor(t: dict, raw: bytes, offset: int) -> tuple[np.ndarray, int]:
    name, shape, datatype = t["name"], t.get("shape"), t.get("datatype")
    if datatype != _EXPECTED[name]:
        raise InvalidInput(f"input {name!r} must have datatype {_EXPECTED[name]}, got {datatype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input {name!r}: 'shape' must be a list of non-negative integers")
    dtype = _DTYPES[datatype]
    count = math.prod(shape)  # Python ints: no overflow for absurd shapes
    params = _params(t.get("parameters"), f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in t:
            raise InvalidInput(f"input {name!r} has both 'data' and binary_data_size")
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size!r} does not match shape {shape} "
                f"of {datatype} ({count * dtype.itemsize} bytes)",
            )
        if offset + size > len(raw):
            raise InvalidInput(f"input {name!r}: binary data ends before {size} bytes")
        arr = np.frombuffer(raw, dtype, count, offset).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=True), offset + size
    if "data" not in t:
        raise InvalidInput(f"input {name!r} has no 'data'")
    try:
        arr = np.asarray(t["data"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"input {name!r}: 'data' must be numbers") from None
    if arr.size != count:
        raise InvalidInput(
            f"input {name!r}: shape {shape} needs {count} value(s), 'data' has {arr.size}"
        )
    if datatype == "INT32":
        if not np.array_equal(arr, np.round(arr)):
            raise InvalidInput(f"input {name!r}: INT32 data must be integers")
        return arr.astype(np.int32).reshape(shape), offset
    arr32 = arr.astype(np.float32).reshape(shape)
    if not np.isfinite(arr32).all():
        raise InvalidInput(f"input {name!r}: values must be finite FP32 numbers")
    return arr32, offset


def _requested(outputs: Any, params: dict[str, Any]) -> dict[str, bool]:
    default_binary = bool(params.get("binary_data_output", False))
    if outputs is None:
        return dict.fromkeys(OUTPUTS, default_binary)
    if not isinstance(outputs, list):
        raise InvalidInput("'outputs' must be a list")
    chosen: dict[str, bool] = {}
    for i, o in enumerate(outputs):
        if not isinstance(o, dict) or o.get("name") not in OUTPUTS:
            name = o.get("name") if isinstance(o, dict) else o
            raise InvalidInput(f"outputs[{i}]: unknown output {name!r}; known: {list(OUTPUTS)}")
        p = _params(o.get("parameters"), f"output {o['name']!r}")
        if p.get("classification"):
            raise InvalidInput("the classification extension is not supported")
        chosen[o["name"]] = bool(p.get("binary_data", default_binary))
    return chosen


# ---- responses ------------------------------------------------------------------------------------
def encode_response(
    model: str,
    version: str,
    rid: str | None,
    tensors: dict[str, np.ndarray],
    binary: dict[str, bool],
) -> tuple[bytes, dict[str, str]]:
    """-> (body, headers). Binary outputs follow the JSON header in the order listed."""
    outputs, chunks = [], []
    for name, arr in tensors.items():
        out: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary[name]:
            data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            out["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            out["data"] = arr.reshape(-1).tolist()
        outputs.append(out)
    resp: dict[str, Any] = {"model_name": model, "model_version": version}
    if rid is not None:
        resp["id"] = rid
    resp["outputs"] = outputs
    header = json.dumps(resp, separators=(",", ":")).encode()
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
