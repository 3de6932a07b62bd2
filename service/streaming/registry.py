"""The live stream sessions of this process: bounded by max_sessions, closed together on
shutdown (each gets its resume token first)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from service.errors import SessionFull
from service.streaming.session import StreamSession

log = logging.getLogger("gru_serve.sessions")


class SessionHandle(Protocol):
    """What the registry holds per live session: the transport's connection object."""

    session: StreamSession

    async def server_close(self, code: int, reason: str) -> None:
        """Send the session's resume token, then close with `code`."""


class SessionRegistry:
    """Live sessions of this process, bounded by max_sessions; closes them all on shutdown."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._handles: dict[str, SessionHandle] = {}
        self.closing = False

    def __len__(self) -> int:
        return len(self._handles)

    def handles(self) -> list[SessionHandle]:
        return list(self._handles.values())

    def add(self, session_id: str, handle: SessionHandle) -> None:
        if self.closing:
            raise SessionFull("the server is shutting down")
        if len(self._handles) >= self.max_sessions:
            raise SessionFull(f"the server holds its limit of {self.max_sessions} sessions")
        self._handles[session_id] = handle

    def remove(self, session_id: str) -> None:
        self._handles.pop(session_id, None)

    async def close_all(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Graceful shutdown: every session gets its resume token, then a close frame."""
        self.closing = True
        handles = self.handles()
        if handles:
            log.info("closing %d stream session(s) with code %d", len(handles), code)
        results = await asyncio.gather(
            *(h.server_close(code, reason) for h in handles), return_exceptions=True
        )
        for r in results:
            if isinstance(r, Exception):
                log.warning("closing a session failed: %r", r)
