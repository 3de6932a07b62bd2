"""Server processes for the bench: start on a free loopback port, time start-to-ready, read RSS."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "artifacts" / "gru.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRU_SERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    ready_s: float
    log_path: Path

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.read()

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak) of the serving process, in MB (10^6 bytes)."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024 / 1e6
        return out

    def batch_counters(self) -> tuple[float, float]:
        """(sum, count) of the service's gru_batch_rows histogram: rows and onnxruntime runs."""
        text = self.get("/metrics").decode()
        found = dict(re.findall(r"^gru_batch_rows_(sum|count)\s+(\S+)$", text, re.M))
        return float(found.get("sum", "nan")), float(found.get("count", "nan"))

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server process has used so far."""
        return stat_cpu_s(Path(f"/proc/{self.proc.pid}/stat"))

    def loop_cpu_s(self) -> float:
        """CPU seconds of the server's main thread so far: uvicorn's event loop (HTTP, JSON,
        validation, the batcher's bookkeeping). The service's onnxruntime runs and the scaling
        around them happen on other threads."""
        return stat_cpu_s(Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(
    name: str,
    cmd: list[str],
    port: int,
    ready_path: str,
    timeout_s: float = 60,
    tree: Path | None = None,
) -> Server:
    """Start `cmd`, poll `ready_path` every 5 ms until 200; ready_s = Popen to first 200.
    With `tree` (a checkout, see `checkout`), the server runs that tree's code."""
    log_path = Path(tempfile.gettempdir()) / f"gru-bench-{name}-{port}.log"
    env = clean_env()
    if tree is not None:
        env["PYTHONPATH"] = str(tree)  # ahead of the installed (editable) package
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=tree or ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()}")
        url = f"http://127.0.0.1:{port}{ready_path}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return Server(name, proc, port, time.perf_counter() - t0, log_path)
        time.sleep(0.005)
    proc.kill()
    raise RuntimeError(f"{name} not ready after {timeout_s} s:\n{log_path.read_text()}")


def serve_cmd(model: Path, port: int, **flags) -> list[str]:
    exe = Path(sys.executable).with_name("gru-serve")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "service.cli"]
    cmd += ["serve", "--host", "127.0.0.1", "--port", str(port), "--model-path", str(model)]
    for k, v in flags.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    return cmd


def app_cmd(kind: str, model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "bench.apps", kind, "--model", str(model), "--port", str(port)]


def artifact(path: str | None = None) -> tuple[Path, str]:
    """`path` when given (`--model`), else the bundled artifact when present, else a tiny
    random one (needs the onnx package)."""
    if path:
        return Path(path), f"artifact {path}"
    if BUNDLED.is_file():
        return BUNDLED, "bundled artifacts/gru.onnx"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_tiny_artifact  # tests/conftest.py: random weights, no torch

    path = Path(tempfile.mkdtemp()) / "tiny.onnx"
    write_tiny_artifact(path)
    return path, "tiny random artifact (2 layers x 8 units; bundled one absent)"


def stat_cpu_s(stat: Path) -> float:
    """utime + stime in seconds from a /proc stat file (a process's, or one thread's under
    task/): fields 14 and 15, counted after the command name, which may hold spaces."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mean_rows(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Mean rows per onnxruntime run between two batch_counters() readings."""
    runs = after[1] - before[1]
    return (after[0] - before[0]) / runs if runs else None


def checkout(rev: str) -> Path:
    """The repository's files at git revision `rev`, in a temporary folder (git archive)."""
    tree = Path(tempfile.mkdtemp(prefix=f"gru-bench-{rev[:12]}-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree
