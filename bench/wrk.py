"""wrk, the C load generator, as a second client for the REST section (when it is on PATH).

The Python client (bench/load.py) shares the interpreter's costs with nothing, but it is
still Python; wrk costs the shared cores far less per request, so the servers get closer to
their own limit. Both are reported side by side. Install: `apt-get install wrk` (Debian,
Ubuntu) or `brew install wrk`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
"""
# wrk's delay() is a pause between an answer and the next request on a connection
_PACED = "function delay() return {delay_ms} end\n"
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass
class WrkResult:
    connections: int
    rps: float  # requests per second over the run (non-2xx included; see non_2xx)
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    port: int, path: str, body: bytes, connections: int, seconds: float, delay_ms: int = 0
) -> WrkResult:
    """One wrk run: `connections` keep-alive connections on one thread for `seconds`, each
    pausing `delay_ms` between an answer and its next request (0: closed loop)."""
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp, "body.json")
        body_file.write_bytes(body)
        script = Path(tmp, "post.lua")
        paced = _PACED.format(delay_ms=delay_ms) if delay_ms > 0 else ""
        script.write_text(_SCRIPT.format(body=body_file) + paced)
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
               "-s", str(script), f"http://127.0.0.1:{port}{path}"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30)
    return parse(out.stdout, connections)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(text: str, connections: int) -> WrkResult:
    """wrk's report -> figures (latency percentiles from its --latency distribution)."""
    pct = {
        int(m[1]): _ms(m[2], m[3])
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if rps is None or total is None or 50 not in pct or 99 not in pct:
        raise ValueError(f"unexpected wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        connections=connections,
        rps=float(rps[1]),
        p50_ms=pct[50],
        p99_ms=pct[99],
        requests=int(total[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )
