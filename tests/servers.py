"""Real server processes for tests (tests/service and tests/deploy import it as `servers`).

A server is started with port 0: the kernel picks a free port at bind time and the server's own
log line ("Uvicorn running on http://127.0.0.1:PORT", JSON or plain) says which one. No port is
reserved and released beforehand, so two servers can never race for the same one. That line is
logged at info level, the default: a server started with a quieter log level is not found.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0
_BOUND = re.compile(r"Uvicorn running on https?://[^\s:\"]+:(\d+)")


def get_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of GET `url` (error statuses included); None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class ServerProcess:
    """A server child process; its stdout and stderr (the service's log) go to `log_path`."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Poll /readyz until 200; returns seconds since the process started."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server exited with {self.proc.returncode} before ready:\n{self.log()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if c.get("/readyz").status_code == 200:
                        return time.monotonic() - self.started_at
                time.sleep(0.02)
        raise AssertionError(f"server not ready after {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        return stop_process(self.proc, timeout_s)


def bound_port(proc: subprocess.Popen, log_path: Path, timeout_s: float = READY_TIMEOUT_S) -> int:
    """The port the server logged it listens on; fails if it exits or stays silent."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text(errors="replace")
        if m := _BOUND.search(text):
            return int(m.group(1))
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before binding:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"server did not log its port after {timeout_s} s:\n{text}")
        time.sleep(0.02)


def launch(
    cmd: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
) -> ServerProcess:
    """Start `cmd` (a server told to listen on port 0) and return it once it has bound its port.
    The caller must `stop()` it; if it never binds it is stopped here and the error raised."""
    started_at = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = bound_port(proc, log_path)
    except BaseException:
        stop_process(proc)
        raise
    return ServerProcess(proc, port, log_path, started_at)


def run_expecting_one_error_line(
    cmd: Sequence[str], env: dict[str, str], cwd: Path = ROOT, timeout_s: float = 60
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Run a command that must fail as the CLI promises: exit 2, one non-empty stderr line.
    Returns that line and the finished process for the caller's own checks."""
    p = subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0], p
