"""The image's exact CMD, run here as a process: the closest check of the container without Docker.

The command and the environment come from the Dockerfile (cpu target) itself; only what must
differ outside a container differs: the host is 127.0.0.1, the port 0 (the server picks a free
one and logs it; the HEALTHCHECK then runs with that port), and PATH finds
`gru-serve` in this checkout's venv instead of the image's /opt/venv. The working directory is
the repository root, which is what the image's WORKDIR /app holds.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from deployfiles import ROOT, Dockerfile
from servers import READY_TIMEOUT_S, get_status, launch

VENV_BIN = Path(sys.executable).parent


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


def test_image_cmd_serves_until_ready(dockerfile: Dockerfile, tmp_path: Path):
    image = dockerfile.image("cpu")
    assert image.env["GRU_SERVE_HOST"] == "0.0.0.0"  # what the override below replaces
    env = image_env(dockerfile, 0)
    log_path = tmp_path / "serve.log"
    server = launch(image.cmd, env, log_path, cwd=ROOT)
    proc = server.proc
    base = server.base_url
    env["GRU_SERVE_PORT"] = str(server.port)  # what the HEALTHCHECK below probes
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
        server.stop()
    # ... and fails once the server is gone.
    check = subprocess.run(image.healthcheck_cmd, env=env, capture_output=True, timeout=10)
    assert check.returncode != 0
    with contextlib.suppress(OSError):
        log_path.unlink()
