"""The image's exact CMD, run here as a process: the closest check of the container without Docker.

The command and the environment come from the Dockerfile (cpu target) itself; only what must
differ outside a container differs: the host is 127.0.0.1, the port a free one, and PATH finds
`gru-serve` in this checkout's venv instead of the image's /opt/venv. The working directory is
the repository root, which is what the image's WORKDIR /app holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from deployfiles import ROOT, Dockerfile

READY_TIMEOUT_S = 30.0
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_env(dockerfile: Dockerfile, port: int) -> dict[str, str]:
    image = dockerfile.image("cpu")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRU_SERVE_")}
    venv = image.env["VIRTUAL_ENV"]
    for name, value in image.env.items():
        if name == "PATH":
            # The image puts its venv first; this checkout's venv stands in for it.
            assert value.startswith(f"{venv}/bin:"), value
            env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        elif name == "VIRTUAL_ENV":
            env[name] = str(VENV_BIN.parent)
        else:
            env[name] = value
    env["GRU_SERVE_HOST"] = "127.0.0.1"
    env["GRU_SERVE_PORT"] = str(port)
    return env


def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_image_cmd_serves_until_ready(dockerfile: Dockerfile, tmp_path: Path):
    image = dockerfile.image("cpu")
    assert image.env["GRU_SERVE_HOST"] == "0.0.0.0"  # what the override below replaces
    port = free_port()
    env = image_env(dockerfile, port)
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(image.cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            status = get_status(f"{base}/readyz")
            if status == 200:
                break
            time.sleep(0.05)
        log_text = log_path.read_text(errors="replace")
        assert proc.poll() is None, f"`{' '.join(image.cmd)}` exited {proc.returncode}:\n{log_text}"
        assert status == 200, f"/readyz gave {status} after {READY_TIMEOUT_S} s:\n{log_text}"
        assert get_status(f"{base}/healthz") == 200

        # The image's HEALTHCHECK command, run with the same environment, passes ...
        check = subprocess.run(image.healthcheck_cmd, env=env, capture_output=True, timeout=10)
        assert check.returncode == 0, check.stderr.decode()
    finally:
        stop(proc)
    # ... and fails once the server is gone.
    check = subprocess.run(image.healthcheck_cmd, env=env, capture_output=True, timeout=10)
    assert check.returncode != 0
    with contextlib.suppress(OSError):
        log_path.unlink()
