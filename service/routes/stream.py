"""WS /v1/stream: the websocket transport of stream sessions (parse, validate, serialise).

Per connection two tasks share a bounded command queue: the reader parses and validates
frames into commands, the worker executes them in order against a StreamSession and
sends the answers. The queue is bounded in steps (max_queued_steps): when it is full the
reader stops reading, so a client that floods (or never reads its outputs, which blocks
the worker's sends) is held back by TCP instead of growing server memory. Protocol:
docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette import status as ws_status

from service.core import InferenceCore
from service.errors import (
    InvalidInput,
    MalformedMessage,
    ServiceError,
    SessionFull,
    TooManySteps,
    UnknownType,
)
from service.sessions import (
    Phase,
    SessionRegistry,
    StepOutput,
    StreamOptions,
    StreamSession,
)
from service.settings import Settings
from service.tokens import TokenCodec
from service.translate import quantile_key, series_out

log = logging.getLogger("gru_serve.stream")

router = APIRouter(prefix="/v1", tags=["stream"])

_STEP_HEADER = struct.Struct("<Q")  # binary output frame: step index, then float32 values
_F32 = np.dtype("<f4")
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


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
    "start": {"type", "history", "resume", "options", "scaling"},
    "step": {"type", "x", "output"},
    "forecast": {"type", "horizon", "quantiles"},
    "reset": {"type"},
    "state": {"type"},
    "close": {"type"},
}
_OPTIONS = {"quantiles", "return_hidden", "output", "token", "binary"}


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
    )


def parse_text(core: InferenceCore, settings: Settings, text: str) -> Command:
    """One JSON text frame -> a validated Command; ServiceError says what is wrong."""
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
    return _dumps(msg)


def output_binary(o: StepOutput) -> bytes:
    parts = [o.y, *o.quantiles.values()]
    if o.h is not None:
        parts.append(o.h.ravel())
    return _STEP_HEADER.pack(o.step) + np.concatenate(parts).astype(_F32).tobytes()


# ---- one connection -----------------------------------------------------------------------------
class Connection:
    def __init__(
        self,
        ws: WebSocket,
        core: InferenceCore,
        codec: TokenCodec,
        registry: SessionRegistry,
        settings: Settings,
    ) -> None:
        self.ws, self.core, self.registry, self.settings = ws, core, registry, settings
        self.session = StreamSession(core, codec)
        self._queue: deque[Command] = deque()
        self._units = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._errors = 0  # consecutive errors; reset by any command that succeeds
        self._worker: asyncio.Task | None = None
        self.high_water = 0  # most queue units ever held (the backpressure bound, for tests)
        self.closed_by_server = False
        self._reader: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_seen = 0.0
        self._sending_since: float | None = None
        self._running = False  # the worker is executing a command

    # queue -------------------------------------------------------------------------------------
    def _push(self, cmd: Command, front: bool = False) -> None:
        (self._queue.appendleft if front else self._queue.append)(cmd)
        self._units += cmd.units
        self.high_water = max(self.high_water, self._units)
        self._wake.set()

    async def _pop(self) -> Command:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        cmd = self._queue.popleft()
        self._units -= cmd.units
        self._space.set()
        return cmd

    async def _wait_for_space(self, units: int) -> None:
        limit = self.settings.max_queued_steps
        while self._units > 0 and self._units + units > limit:
            self._space.clear()
            await self._space.wait()

    # life cycle ----------------------------------------------------------------------------------
    async def serve(self) -> None:
        self.registry.add(self.session.id, self)
        metrics = getattr(self.ws.app.state, "metrics", None)
        if metrics is not None:
            metrics.session_opened()
        loop = asyncio.get_running_loop()
        self._last_seen = loop.time()
        self._worker = worker = asyncio.create_task(self._work())
        self._reader = reader = asyncio.create_task(self._read())
        self._arm_watchdog(self.settings.session_idle_timeout_s)
        try:
            done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_COMPLETED)
            if worker not in done and (reader.cancelled() or reader.result() == "handed_off"):
                await worker  # a close is queued: the worker sends the token and closes
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for t in (reader, worker):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self.session.close()
            self.registry.remove(self.session.id)
            if metrics is not None:
                metrics.session_closed(evicted=self.closed_by_server)

    async def server_close(self, code: int, reason: str) -> None:
        """Close from the server side (shutdown): token first; queued steps are dropped (the
        token's step index says where the client resumes)."""
        self._push(Command("server_close", {"code": code, "reason": reason}), front=True)
        if self._reader is not None:
            self._reader.cancel()  # stop reading: nothing after the close is taken
        if self._worker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._worker), 5.0)

    # idle and stuck-client watchdog: one timer per idle period, nothing per message ------------
    def _arm_watchdog(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._watchdog)

    def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        now, idle = loop.time(), self.settings.session_idle_timeout_s
        if self._sending_since is not None and now - self._sending_since >= idle:
            # The client has not read its outputs for a whole idle period: it is gone.
            log.info("stream session %s stopped reading; dropping it", self.session.id)
            self.closed_by_server = True
            for t in (self._reader, self._worker):
                if t is not None:
                    t.cancel()
            return
        busy = self._units > 0 or self._running
        if not busy and now - self._last_seen >= idle:
            self._push(Command("server_close", {"code": 1000, "reason": "idle timeout"}))
            if self._reader is not None:
                self._reader.cancel()
            return
        due = self._last_seen + idle - now
        if self._sending_since is not None:
            due = min(due, self._sending_since + idle - now)
        self._arm_watchdog(max(due, idle / 8) if busy else max(due, 0.001))

    # reader --------------------------------------------------------------------------------------
    async def _read(self) -> str:
        """Frames -> commands. Returns 'disconnected', or 'handed_off' once a close is queued."""
        s = self.settings
        receive = self.ws.receive
        loop = asyncio.get_running_loop()
        while True:
            msg = await receive()
            self._last_seen = loop.time()
            if msg["type"] == "websocket.disconnect":
                return "disconnected"
            text, data = msg.get("text"), msg.get("bytes")
            try:
                size = len(data) if data is not None else len(text or "")
                if text is not None and size * 4 > s.max_message_bytes:
                    size = len(text.encode())
                if size > s.max_message_bytes:
                    raise Fatal(
                        ws_status.WS_1009_MESSAGE_TOO_BIG,
                        f"message of {size} bytes exceeds {s.max_message_bytes}",
                    )
                cmd = (
                    parse_text(self.core, s, text)
                    if text is not None
                    else parse_binary(self.core, s, data or b"")
                )
            except ServiceError as e:
                cmd = Command("error", {"error": e})
            except Fatal as e:
                self._push(Command("server_close", {"code": e.code, "reason": str(e)}))
                return "handed_off"
            await self._wait_for_space(cmd.units)
            self._push(cmd)
            if cmd.kind == "close":
                return "handed_off"

    # worker --------------------------------------------------------------------------------------
    async def _work(self) -> None:
        try:
            while True:
                cmd = await self._pop()
                if cmd.kind == "server_close":
                    await self._close(cmd.args["code"], cmd.args["reason"], "server")
                    return
                if cmd.kind == "close":
                    await self._close(1000, "closed by client", "client")
                    return
                self._running = True
                try:
                    if cmd.kind == "error":
                        raise cmd.args["error"]
                    await self._execute(cmd)
                    self._errors = 0
                except ServiceError as e:
                    self._errors += 1
                    await self._send_text(_dumps(_error_message(e)))
                    if self._errors >= self.settings.max_stream_errors:
                        await self._close(
                            ws_status.WS_1008_POLICY_VIOLATION,
                            f"{self._errors} consecutive errors",
                            "abuse",
                        )
                        return
                finally:
                    self._running = False
        except _Gone as e:
            log.info("stream session %s: client gone (%r)", self.session.id, e.__cause__)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream session %s failed; closing it with 1011", self.session.id)
            self.closed_by_server = True
            with contextlib.suppress(Exception):
                await self.ws.close(ws_status.WS_1011_INTERNAL_ERROR, "internal error")

    async def _execute(self, cmd: Command) -> None:
        ses = self.session
        if cmd.kind == "step":
            await self._steps(cmd)
        elif cmd.kind == "start":
            a = cmd.args
            await ses.start(a["history"], a["resume"], a["options"], a["scaling"])
            await self._send_text(
                _dumps(
                    {
                        "type": "ready",
                        "session": ses.id,
                        "model": self.core.meta.name,
                        "version": self.core.meta.version,
                        "step": ses.step,
                    }
                )
            )
        elif cmd.kind == "forecast":
            f = await ses.forecast(cmd.args["horizon"], cmd.args["quantiles"])
            msg = {"type": "forecast", "step": f.step, "mean": series_out(f.mean)}
            if f.quantiles:
                msg["quantiles"] = {quantile_key(q): series_out(v) for q, v in f.quantiles.items()}
            await self._send_text(_dumps(msg))
        elif cmd.kind == "reset":
            ses.reset()
            await self._send_state()
        elif cmd.kind == "state":
            ses.require_ready()
            await self._send_state()

    async def _steps(self, first: Command) -> None:
        """Run this step command and the steps queued right behind it as one row (order kept)."""
        cmds = [first]
        total = first.units
        cap = self.settings.max_steps_per_message
        while self._queue and self._queue[0].kind == "step" and total + self._queue[0].units <= cap:
            cmds.append(await self._pop())
            total += cmds[-1].units
        x = cmds[0].args["x"] if len(cmds) == 1 else np.concatenate([c.args["x"] for c in cmds])
        on_request = self.session.options.output_on_request
        wanted: list[bool] = []
        for c in cmds:
            n = c.units
            wanted += [not on_request] * (n - 1) + [not on_request or c.args["output"]]
        outs = await self.session.advance(x, wanted)
        if self.session.options.binary:
            for o in outs:
                await self._send_bytes(output_binary(o))
        else:
            for o in outs:
                await self._send_text(output_json(o))

    async def _send_state(self, reason: str | None = None) -> None:
        msg: dict[str, Any] = {
            "type": "state",
            "step": self.session.step,
            "token": self.session.token(),
        }
        if reason is not None:
            msg["reason"] = reason
        await self._send_text(_dumps(msg))

    async def _close(self, code: int, reason: str, why: str) -> None:
        self.closed_by_server = why != "client"
        if self.session.phase is Phase.READY:
            with contextlib.suppress(_Gone):
                await self._send_state(reason)
        self.session.close()
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason[:120])

    async def _send_text(self, text: str) -> None:
        await self._send(self.ws.send_text(text))

    async def _send_bytes(self, data: bytes) -> None:
        await self._send(self.ws.send_bytes(data))

    async def _send(self, aw) -> None:
        # A client that never reads blocks this send (TCP backpressure); the watchdog drops
        # it after one idle period.
        self._sending_since = asyncio.get_running_loop().time()
        try:
            await aw
        except (RuntimeError, OSError) as e:
            raise _Gone() from e
        except Exception as e:
            if type(e).__name__ in ("WebSocketDisconnect", "ClientDisconnected"):
                raise _Gone() from e
            raise
        finally:
            self._sending_since = None


class _Gone(Exception):
    """The client went away (or stopped reading); nothing more can be sent."""


def _error_message(e: ServiceError) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": e.code, "message": e.message}
    if e.field is not None:
        msg["field"] = e.field
    return msg


@router.websocket("/stream")
async def stream_session(ws: WebSocket) -> None:
    """A stateful stream: per-step outputs, forecast forks, resume tokens (docs/protocol.md)."""
    state = ws.app.state
    await ws.accept()
    if not getattr(state, "ready", False) or getattr(state, "streams", None) is None:
        await ws.close(ws_status.WS_1013_TRY_AGAIN_LATER, "the model is not ready yet")
        return
    conn = Connection(ws, state.core, state.token_codec, state.streams, state.settings)
    try:
        await conn.serve()
    except SessionFull as e:
        metrics = getattr(state, "metrics", None)
        if metrics is not None:
            metrics.stream_rejected()
        await ws.close(ws_status.WS_1013_TRY_AGAIN_LATER, e.message[:120])
