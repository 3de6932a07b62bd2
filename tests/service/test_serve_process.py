"""`gru-serve serve` as a process: configuration by GRU_SERVE_* variables and flags (flags win),
bad settings as one line with exit 2, and a real server answering over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest
from servers import ServerProcess, launch, run_expecting_one_error_line
from service_helpers import serve_command, serve_env


def start_with_env(tmp_path, env: dict[str, str], **flags) -> ServerProcess:
    """Like start_server, but host/port/device come only from what the caller passes (the port
    is 0 there, read back from the server's log)."""
    log_path = tmp_path / "serve.log"
    return launch(serve_command(**flags), serve_env(env), log_path)


def test_settings_from_environment_variables(tmp_path, tiny_artifact):
    env = {
        "GRU_SERVE_HOST": "127.0.0.1",
        "GRU_SERVE_PORT": "0",
        "GRU_SERVE_MODEL_PATH": str(tiny_artifact),
        "GRU_SERVE_DEVICE": "cpu",
        "GRU_SERVE_MAX_HORIZON": "5",
        "GRU_SERVE_MAX_ITEMS": "2",
        "GRU_SERVE_MAX_HORIZN": "7",  # a typo: warned about, never silently half-applied
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
        warned = [json.loads(line) for line in server.log().splitlines() if "MAX_HORIZN" in line]
        assert [w["level"] for w in warned] == ["warning"]
        assert warned[0]["message"] == "GRU_SERVE_MAX_HORIZN is not a setting; ignored"
    finally:
        server.stop()


def test_flags_win_over_environment_variables(tmp_path, tiny_artifact):
    env = {"GRU_SERVE_PORT": "1", "GRU_SERVE_MAX_HORIZON": "5", "GRU_SERVE_DEVICE": "cuda"}
    server = start_with_env(
        tmp_path,
        env,
        host="127.0.0.1",
        port=0,
        model_path=tiny_artifact,
        device="cpu",
        max_horizon=7,
    )
    try:
        assert server.port != 1  # --port 0 won: the kernel picked the port, not the env's 1
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
        ({}, {"GRU_SERVE_MAX_WAIT_US": "-1"}, "GRU_SERVE_MAX_WAIT_US=-1"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(tiny_artifact, flags, env, phrase):
    flags = {"model_path": tiny_artifact, "port": 0, **flags}
    line, _ = run_expecting_one_error_line(serve_command(**flags), serve_env(env))
    assert line.startswith("gru-serve serve: error:") and phrase in line


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
