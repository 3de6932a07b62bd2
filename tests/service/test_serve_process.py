"""`gru-serve serve` as a process: configuration by GRU_SERVE_* variables and flags (flags win),
bad settings as one line with exit 2, and a real server answering over HTTP."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from service_helpers import ROOT, ServerProcess, free_port, serve_command, serve_env


def start_with_env(tmp_path, env: dict[str, str], **flags) -> ServerProcess:
    """Like start_server, but host/port/device come only from what the caller passes."""
    port = int(flags.get("port") or env["GRU_SERVE_PORT"])
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            serve_command(**flags),
            cwd=ROOT,
            env=serve_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(proc, port, log_path)


def test_settings_from_environment_variables(tmp_path, tiny_artifact):
    port = free_port()
    env = {
        "GRU_SERVE_HOST": "127.0.0.1",
        "GRU_SERVE_PORT": str(port),
        "GRU_SERVE_MODEL_PATH": str(tiny_artifact),
        "GRU_SERVE_DEVICE": "cpu",
        "GRU_SERVE_MAX_HORIZON": "5",
        "GRU_SERVE_MAX_ITEMS": "2",
    }
    server = start_with_env(tmp_path, env)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            assert c.post("/v1/forecast", json={"series": [[1.0]], "horizon": 5}).status_code == 200
            r = c.post("/v1/forecast", json={"series": [[1.0]], "horizon": 6})
            assert r.status_code == 422 and "between 1 and 5" in r.json()["error"]["message"]
            r = c.post("/v1/forecast", json={"series": [[1.0]] * 3, "horizon": 2})
            assert r.status_code == 422 and r.json()["error"]["field"] == "series"
            assert c.get("/v1/models").json()["models"][0]["name"] == "tiny"
    finally:
        server.stop()


def test_flags_win_over_environment_variables(tmp_path, tiny_artifact):
    port = free_port()
    env = {"GRU_SERVE_PORT": "1", "GRU_SERVE_MAX_HORIZON": "5", "GRU_SERVE_DEVICE": "cuda"}
    server = start_with_env(
        tmp_path,
        env,
        host="127.0.0.1",
        port=port,
        model_path=tiny_artifact,
        device="cpu",
        max_horizon=7,
    )
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            assert c.post("/v1/forecast", json={"series": [[1.0]], "horizon": 7}).status_code == 200
            r = c.post("/v1/forecast", json={"series": [[1.0]], "horizon": 8})
            assert r.status_code == 422 and "between 1 and 7" in r.json()["error"]["message"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("flags", "env", "phrase"),
    [
        ({"max_batch_rows": 0}, {}, "--max-batch-rows"),
        ({"device": "gpu"}, {}, "--device"),
        ({"port": "http"}, {}, "--port"),
        ({}, {"GRU_SERVE_MAX_WAIT_US": "-1"}, "--max-wait-us"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(tiny_artifact, flags, env, phrase):
    flags = {"model_path": tiny_artifact, "port": 0, **flags}
    p = subprocess.run(
        serve_command(**flags),
        cwd=ROOT,
        env=serve_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("gru-serve serve: error:") and phrase in lines[0]


def test_real_server_serves_every_rest_endpoint(serve_process):
    server = serve_process()
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        assert c.get("/healthz").json()["status"] == "alive"
        assert c.get("/readyz").json()["status"] == "ready"
        r = c.post("/v1/forecast", json={"series": [[1, 2, 3], [4, 5]], "horizon": 2})
        assert r.status_code == 200 and len(r.json()["forecasts"]) == 2
        r = c.post("/v1/hidden", json={"inputs": [{"x": [[0.5]]}]})
        assert r.status_code == 200 and len(r.json()["outputs"][0]["h"]) == 2
        body = {
            "inputs": [
                {"name": "a", "series": [1, 2], "frequency": "D", "start_timestamp": "2024-02-28"}
            ],
            "options": {"horizon": 2},
        }
        r = c.post("/v1/timeseries/forecast", json=body)
        assert r.status_code == 200
        assert r.json()["outputs"][0]["content"][0]["start_timestamp"] == "2024-03-01T00:00:00"
        docs = c.get("/docs")
        assert docs.status_code == 200 and "/static/docs/swagger-ui-bundle.js" in docs.text
        assert c.get("/static/docs/swagger-ui-bundle.js").status_code == 200
