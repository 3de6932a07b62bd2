"""Graceful shutdown on SIGTERM and SIGINT, within settings.shutdown_grace_s.

uvicorn's own handling is close but not enough: it closes websockets with 1012 before the
application's lifespan shutdown runs (too late for resume tokens), and since 0.29 it
re-raises the captured signal once done, so the process exits 143. `GracefulServer` takes
the signals itself and drives the order:

1. readiness turns false (/readyz 503, new REST requests 503, new streams 1013);
2. every stream session gets its resume token (a `state` message), then close 1001;
3. uvicorn stops accepting (the listening socket closes), lets in-flight requests finish
   for what is left of the grace period, then cancels the rest;
4. the lifespan shutdown stops the batcher; the process exits 0.

A second signal cuts the drain short. A watchdog exits the process (status 0, with an error
line) if anything still holds it `HARD_STOP_MARGIN_S` after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.state import app_state

log = logging.getLogger("gru_serve.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
HARD_STOP_MARGIN_S = 2.0  # after the grace period, for what uvicorn cannot cancel (threads)
_UVICORN_TICK_S = 0.25  # uvicorn notices should_exit within 0.1 s, then sleeps 0.1 s


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose signals start `drain()` instead of uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.app, self.grace_s = app, grace_s
        self.signalled_at: float | None = None  # time.monotonic() of the first signal
        self.deadline: float | None = None  # by then in-flight work is done or cut
        self._drain_task: asyncio.Task | None = None

    # ---- signals ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Replaces uvicorn's: handlers run on the event loop, and nothing is re-raised after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.on_signal, sig)
        try:
            yield
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's hook (used by its supervisors); same as our own handler."""
        self.on_signal(sig)

    def on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._drain_task is not None:
            log.warning("%s during shutdown: cutting the remaining work now", name)
            self.force_exit = self.should_exit = True
            return
        log.info("%s received: shutting down within %.1f s", name, self.grace_s)
        _start_watchdog(self.grace_s + HARD_STOP_MARGIN_S)
        self.start_drain()

    def start_drain(self) -> asyncio.Task:
        """Start the clock of the grace period and the steps below (on the running loop)."""
        self.signalled_at = time.monotonic()
        self.deadline = self.signalled_at + self.grace_s
        self._drain_task = asyncio.get_running_loop().create_task(self.drain())
        return self._drain_task

    def remaining(self) -> float:
        return max(0.0, (self.deadline or time.monotonic()) - time.monotonic())

    # ---- the order of steps --------------------------------------------------------------------
    async def drain(self) -> None:
        state = app_state(self.app)
        # 1. Not ready: load balancers stop sending; new requests and streams are refused.
        state.draining = True  # a warm-up still running must not turn readiness back on
        state.ready = False
        # 2. Streams first, while their connections are ours (uvicorn would send 1012).
        streams = state.streams
        if streams is not None:
            try:
                await asyncio.wait_for(streams.close_all(1001), self.remaining())
            except TimeoutError:
                log.warning("stream sessions not all closed within the grace period")
        # 3. uvicorn: close the listener, finish in-flight requests within what is left of the
        #    grace period (then cancel them), run the lifespan shutdown (stops the batcher).
        left = max(0.0, self.remaining() - _UVICORN_TICK_S)
        # Typed int, but uvicorn only hands it to asyncio.wait_for: a float is what we mean.
        self.config.timeout_graceful_shutdown = left  # type: ignore[assignment]
        self.should_exit = True


def _start_watchdog(after_s: float) -> None:
    def stop() -> None:
        log.error("still running %.1f s after the shutdown signal; exiting now", after_s)
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(after_s, stop)
    timer.daemon = True
    timer.start()


def serve(app: FastAPI, config: uvicorn.Config, grace_s: float) -> None:
    """Run the server until a signal has drained it (uvicorn exits 3 itself on a failed start)."""
    server = GracefulServer(config, app, grace_s)
    server.run()
    if server.signalled_at is not None:
        log.info("shut down %.2f s after the signal", time.monotonic() - server.signalled_at)
