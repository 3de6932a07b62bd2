"""One websocket connection of WS /v1/stream: the loop between frames and a StreamSession
(the wire format lives in protocol.py, the session's state machine in session.py).

Per connection two tasks share a bounded command queue: the reader parses and validates
frames into commands, the worker executes them in order against a StreamSession and
sends the answers. The queue is bounded in steps (max_queued_steps): when it is full the
reader stops reading, so a client that floods (or never reads its outputs, which blocks
the worker's sends) is held back by TCP instead of growing server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import numpy as np
from starlette import status as ws_status
from starlette.websockets import WebSocket

from service.errors import InvalidInput, ServiceError, TokenMismatch
from service.repository import Served, UnknownModel, describe
from service.state import ServiceState
from service.streaming.protocol import (
    Command,
    Fatal,
    error_json,
    forecast_json,
    output_binary,
    output_json,
    parse_binary,
    parse_text,
    ready_json,
    state_json,
)
from service.streaming.session import Phase, StreamSession
from service.tokens import token_identity

log = logging.getLogger("gru_serve.stream")


class Connection:
    def __init__(self, ws: WebSocket, state: ServiceState) -> None:
        assert state.models is not None and state.streams is not None
        # Until `start` names one, the default model (any served one when there are several:
        # a session that has not started runs nothing).
        first = state.default or state.served()[0]
        self.ws, self.core, self.registry = ws, first.core, state.streams
        self.state, self.settings, self.metrics = state, state.settings, state.metrics
        self.session = StreamSession(first.core, first.tokens)
        self._queue: deque[Command] = deque()
        self._units = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._errors = 0  # consecutive errors; reset by any command that succeeds
        self._worker: asyncio.Task | None = None
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
        self.metrics.session_opened()
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
            self.metrics.session_closed(evicted=self.closed_by_server)

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
                    parse_text(self.core, s, text, self._resolve)
                    if text is not None
                    else parse_binary(self.core, s, data or b"")
                )
                if cmd.kind == "start" and self.session.phase is Phase.NEW:
                    # frames after it are for its model; a `start` on a started session is
                    # refused (already_started) and must not change how they are read
                    self.core = cmd.args["served"].core
            except ServiceError as e:
                cmd = Command("error", {"error": e})
            except Fatal as e:
                self._push(Command("server_close", {"code": e.code, "reason": str(e)}))
                return "handed_off"
            await self._wait_for_space(cmd.units)
            self._push(cmd)
            if cmd.kind == "close":
                return "handed_off"

    def _resolve(self, model: str | None, version: str | None, resume: object) -> Served:
        """The model version a `start` runs on: the one it names; else, resuming, the one its
        token names (a stream stays on the version it started on, whatever is loaded
        beside it); else the default."""
        models = self.state.models
        assert models is not None
        if model is not None or version is not None or resume is None:
            return models.resolve(model, version)
        identity = token_identity(resume)
        if identity is not None:
            with contextlib.suppress(UnknownModel):
                return models.resolve(*identity)
        if models.default is not None or identity is None:
            return models.default or models.all()[0]  # its codec says what is wrong
        name, version = identity
        raise TokenMismatch(
            f"the resume token belongs to model {name!r} version {version!r}, which this "
            f"server does not serve (served: {describe(models.all())})",
            "resume",
        )

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
                    # 503s (overloaded, not ready) are the server's state, not the client's
                    # fault: they must not push a well-behaved session towards the 1008 close.
                    if e.status != 503:
                        self._errors += 1
                    await self._send_text(error_json(e))
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
            served = a["served"]
            if ses.phase is Phase.NEW:
                ses.use(served.core, served.tokens)
            await ses.start(a["history"], a["resume"], a["options"], a["scaling"])
            await self._send_text(ready_json(ses, ses.core.meta))
        elif cmd.kind == "forecast":
            f = await ses.forecast(cmd.args["horizon"], cmd.args["quantiles"])
            await self._send_text(forecast_json(f))
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
        if first.args["x"].shape[1] != self.session.core.meta.input_size:
            # parsed for the model a refused second `start` named, not this session's
            raise InvalidInput(
                f"expected {self.session.core.meta.input_size} value(s) per observation", "x"
            )
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
        await self._send_text(state_json(self.session, reason))

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
