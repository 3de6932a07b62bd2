"""The /v1/stream wire protocol: client frames -> validated Commands, and the server's
messages -> text or binary frames. No connection state: connection.py holds the loop.
Protocol: docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette import status as ws_status

from export.contract import ArtifactMeta
from service.core import InferenceCore
from service.errors import InvalidInput, MalformedMessage, ServiceError, TooManySteps, UnknownType
from service.repository import Served
from service.settings import Settings
from service.streaming.session import ForkForecast, StepOutput, StreamOptions, StreamSession
from service.translate import quantile_key, series_out

_STEP_HEADER = struct.Struct("<Q")  # binary output frame: step index, then float32 values
_F32 = np.dtype("<f4")
dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class Fatal(Exception):
    """The connection ends: close with `code` (the session's token is sent first)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass
class Command:
    kind: str  # start | step | forecast | reset | state | close | error | server_close
    args: dict[str, Any] = field(default_factory=dict)
    units: int = 1  # queue budget it takes: its number of steps, at least 1


_FIELDS = {
    "start": {"type", "history", "resume", "options", "scaling", "model", "version"},
    "step": {"type", "x", "output"},
    "forecast": {"type", "horizon", "quantiles"},
    "reset": {"type"},
    "state": {"type"},
    "close": {"type"},
}
_OPTIONS = {"quantiles", "return_hidden", "output", "token", "binary", "frequency"}


# ---- parsing and validation (no session state needed) ----------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _observations(core: InferenceCore, value: Any, field: str) -> np.ndarray:
    """One observation or a list of them -> (T, F) float32, validated (shape, finiteness)."""
    F = core.meta.input_size
    if _is_number(value):
        rows = [[value]]
    elif isinstance(value, list) and value and all(_is_number(v) for v in value):
        rows = [[v] for v in value] if F == 1 else [value]
    elif isinstance(value, list) and value and all(isinstance(r, list) for r in value):
        rows = value
        if not all(all(_is_number(v) for v in r) for r in rows):
            raise InvalidInput("observations must be numbers", field)
    else:
        want = (
            "a number or a list of numbers" if F == 1 else f"a row of {F} numbers or a list of rows"
        )
        raise InvalidInput(f"expected {want}, got {type(value).__name__}", field)
    if any(len(r) != F for r in rows):
        raise InvalidInput(f"each observation must have {F} value(s) (the model's features)", field)
    try:
        x = np.asarray(rows, dtype=np.float32)
    except OverflowError:
        raise InvalidInput("values must be finite numbers (no NaN or infinity)", field) from None
    return core.check_sequence(x, field)


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"expected true or false, got {value!r}", field)
    return value


def _options(core: InferenceCore, raw: Any) -> StreamOptions:
    if not isinstance(raw, dict):
        raise InvalidInput("options must be an object", "options")
    unknown = set(raw) - _OPTIONS
    if unknown:
        raise InvalidInput(
            f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}", "options"
        )
    qs = raw.get("quantiles", [])
    if not isinstance(qs, list) or not all(_is_number(q) for q in qs):
        raise InvalidInput("quantiles must be a list of numbers", "options.quantiles")
    frequency = raw.get("frequency")
    if frequency is not None and not isinstance(frequency, str):
        raise InvalidInput(
            f"frequency must be a string, got {type(frequency).__name__}", "options.frequency"
        )
    output = raw.get("output", "every")
    if output not in ("every", "on_request"):
        raise InvalidInput(
            f"output must be 'every' or 'on_request', got {output!r}", "options.output"
        )
    return StreamOptions(
        quantiles=tuple(core.check_quantiles([float(q) for q in qs], "options.quantiles")),
        return_hidden=_bool(raw.get("return_hidden", False), "options.return_hidden"),
        token_each_output=_bool(raw.get("token", False), "options.token"),
        output_on_request=output == "on_request",
        binary=_bool(raw.get("binary", False), "options.binary"),
        frequency=core.check_frequency(frequency, "options.frequency"),
    )


# (model, version, resume token) of a `start` -> the model version the session runs on
Resolver = Callable[[str | None, str | None, Any], Served]


def parse_text(
    core: InferenceCore, settings: Settings, text: str, resolve: Resolver | None = None
) -> Command:
    """One JSON text frame -> a validated Command; ServiceError says what is wrong. A
    `start` is validated against the model version `resolve` picks (args["served"])."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MalformedMessage(f"the message is not valid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise MalformedMessage(f"a message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if kind not in _FIELDS:
        raise UnknownType(
            f"unknown message type {kind!r}; expected one of {sorted(_FIELDS)}", "type"
        )
    unknown = set(msg) - _FIELDS[kind]
    if unknown:
        raise InvalidInput(f"unknown field(s) {sorted(unknown)} in a {kind!r} message")
    if kind == "step":
        v = msg.get("x")
        if len(msg) == 2 and type(v) is float and core.meta.input_size == 1:  # the hot path
            x = np.full((1, 1), v, np.float32)
            if not math.isfinite(x[0, 0]):
                raise InvalidInput("values must be finite numbers (no NaN or infinity)", "x")
            return Command("step", {"x": x, "output": False}, 1)
        if "x" not in msg:
            raise InvalidInput("a step needs `x`: one observation or a list of them", "x")
        x = _observations(core, msg["x"], "x")
        if x.shape[0] > settings.max_steps_per_message:
            raise TooManySteps(
                f"{x.shape[0]} steps exceed the limit of {settings.max_steps_per_message} per message",
                "x",
            )
        return Command(
            "step", {"x": x, "output": _bool(msg.get("output", False), "output")}, len(x)
        )
    if kind == "start":
        args: dict[str, Any] = {"history": None, "resume": None, "options": None, "scaling": None}
        if resolve is not None:
            names = [msg.get(k) for k in ("model", "version")]
            for k, v in zip(("model", "version"), names, strict=True):
                if v is not None and not isinstance(v, str):
                    raise InvalidInput(f"{k} must be a string, got {type(v).__name__}", k)
            served = args["served"] = resolve(names[0], names[1], msg.get("resume"))
            core = served.core
        if msg.get("history") is not None:
            args["history"] = _observations(core, msg["history"], "history")
        if msg.get("resume") is not None:
            args["resume"] = msg["resume"]
        if msg.get("options") is not None:
            args["options"] = _options(core, msg["options"])
        if msg.get("scaling") is not None:
            sc = msg["scaling"]
            if not isinstance(sc, dict) or set(sc) != {"loc", "scale"}:
                raise InvalidInput("scaling must be an object with `loc` and `scale`", "scaling")
            args["scaling"] = tuple(
                core.check_scaling(
                    _observations(core, sc[k], f"scaling.{k}")[0], f"scaling.{k}", k == "scale"
                )
                for k in ("loc", "scale")
            )
        return Command("start", args)
    if kind == "forecast":
        horizon = msg.get("horizon")
        if not isinstance(horizon, int) or isinstance(horizon, bool):
            raise InvalidInput(f"horizon must be an integer, got {horizon!r}", "horizon")
        qs = msg.get("quantiles")
        if qs is not None and (not isinstance(qs, list) or not all(_is_number(q) for q in qs)):
            raise InvalidInput("quantiles must be a list of numbers", "quantiles")
        return Command("forecast", {"horizon": horizon, "quantiles": qs})
    return Command(kind)


def parse_binary(core: InferenceCore, settings: Settings, data: bytes) -> Command:
    """A binary frame is a step: n observations as little-endian float32, n * F values."""
    width = 4 * core.meta.input_size
    if not data or len(data) % width:
        raise Fatal(
            ws_status.WS_1007_INVALID_FRAME_PAYLOAD_DATA,
            f"binary step frame of {len(data)} bytes is not a positive multiple of {width}",
        )
    x = np.frombuffer(data, _F32).reshape(-1, core.meta.input_size).astype(np.float32)
    if x.shape[0] > settings.max_steps_per_message:
        raise TooManySteps(
            f"{x.shape[0]} steps exceed the limit of {settings.max_steps_per_message} per message",
            "x",
        )
    return Command("step", {"x": core.check_sequence(x, "x"), "output": False}, len(x))


# ---- serialisation -----------------------------------------------------------------------------
def _vector(v: np.ndarray) -> float | list[float]:
    return float(v[0]) if v.shape[0] == 1 else v.tolist()


def output_json(o: StepOutput) -> str:
    if o.y.shape[0] == 1 and not o.quantiles and o.h is None and o.token is None:
        return f'{{"type":"output","step":{o.step},"y":{float(o.y[0])!r}}}'  # the hot path
    msg: dict[str, Any] = {"type": "output", "step": o.step, "y": _vector(o.y)}
    if o.quantiles:
        msg["quantiles"] = {quantile_key(q): _vector(v) for q, v in o.quantiles.items()}
    if o.h is not None:
        msg["h"] = o.h.tolist()
    if o.token is not None:
        msg["token"] = o.token
    return dumps(msg)


def output_binary(o: StepOutput) -> bytes:
    parts = [o.y, *o.quantiles.values()]
    if o.h is not None:
        parts.append(o.h.ravel())
    return _STEP_HEADER.pack(o.step) + np.concatenate(parts).astype(_F32).tobytes()


def ready_json(session: StreamSession, meta: ArtifactMeta) -> str:
    return dumps(
        {
            "type": "ready",
            "session": session.id,
            "model": meta.name,
            "version": meta.version,
            "step": session.step,
        }
    )


def forecast_json(f: ForkForecast) -> str:
    msg: dict[str, Any] = {"type": "forecast", "step": f.step, "mean": series_out(f.mean)}
    if f.quantiles:
        msg["quantiles"] = {quantile_key(q): series_out(v) for q, v in f.quantiles.items()}
    return dumps(msg)


def state_json(session: StreamSession, reason: str | None = None) -> str:
    msg: dict[str, Any] = {"type": "state", "step": session.step, "token": session.token()}
    if reason is not None:
        msg["reason"] = reason
    return dumps(msg)


def error_json(e: ServiceError) -> str:
    msg: dict[str, Any] = {"type": "error", "code": e.code, "message": e.message}
    if e.field is not None:
        msg["field"] = e.field
    return dumps(msg)
