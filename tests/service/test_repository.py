"""A model repository: several models and versions in one server, chosen per request,
loaded and unloaded at run time (service/repository.py)."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import wait_ready, write_tiny_artifact

from service.app import create_app
from service.repository import RepositoryError, scan, version_key
from service.settings import Settings

SECRET = "repository-tests"
# (name, version) -> (seed, meta overrides): three small random models, of two sizes
MODELS = {
    ("alpha", "1"): (1, {}),
    ("alpha", "2"): (2, {}),
    ("beta", "1.0.0"): (3, {"hidden_size": 6, "num_layers": 1}),
}
SERIES = [[1.0, 3.0, 2.0, 5.0, 4.0, 6.0], [10.0, 12.0, 11.0]]


def _settings(path: Path) -> Settings:
    return Settings(model_path=path, device="cpu", token_secret=SECRET, access_log=False)


@contextlib.contextmanager
def _client(path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(path))) as c:
        wait_ready(c)
        yield c


def _write(root: Path, name: str, version: str) -> Path:
    seed, meta = MODELS[(name, version)]
    (root / name / version).mkdir(parents=True, exist_ok=True)
    return write_tiny_artifact(root / name / version / "model.onnx", seed=seed, **meta)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    for name, version in MODELS:
        _write(root, name, version)
    return root


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    with _client(repo) as c:
        yield c


def _forecast(c: TestClient, **choice) -> dict:
    r = c.post("/v1/forecast", json={"series": SERIES, "horizon": 4, "quantiles": [0.1], **choice})
    assert r.status_code == 200, r.text
    return r.json()


def _hidden(c: TestClient, **choice) -> dict:
    body = {"inputs": [{"x": [[0.5], [-0.2], [0.1]]}], "return_sequence": True, **choice}
    r = c.post("/v1/hidden", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# ---- layout --------------------------------------------------------------------------------------
def test_versions_order_integers_and_semantic_versions() -> None:
    order = ["1", "1.2.0-rc.1", "1.2.0-rc.2", "1.2.0", "2", "2.0.1", "10"]
    assert sorted(order, key=version_key) == order
    assert version_key("3") == version_key("3.0.0")
    for bad in ("0", "01", "v1", "latest", "1.2", "-1"):
        assert version_key(bad) is None, bad


def test_scan_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="holds no model"):
        scan(tmp_path)
    (tmp_path / "m" / "latest").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="positive integer or a semantic version"):
        scan(tmp_path)
    (tmp_path / "m" / "latest").rmdir()
    (tmp_path / "m" / "1").mkdir()
    with pytest.raises(RepositoryError, match="model.onnx does not exist"):
        scan(tmp_path)
    _write(tmp_path, "alpha", "1")
    shutil.copy(tmp_path / "alpha" / "1" / "model.onnx", tmp_path / "m" / "1" / "model.onnx")
    assert scan(tmp_path) == {
        "alpha": {"1": tmp_path / "alpha" / "1" / "model.onnx"},
        "m": {"1": tmp_path / "m" / "1" / "model.onnx"},
    }


# ---- choosing a model ----------------------------------------------------------------------------
def test_each_version_answers_as_it_does_served_alone(client: TestClient, repo: Path) -> None:
    x = np.array([0.5, -0.2, 0.1, 0.3], np.float32).reshape(1, 4, 1)
    oip = {
        "inputs": [
            {"name": "x", "shape": [1, 4, 1], "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    for name, version in MODELS:
        with _client(repo / name / version / "model.onnx") as alone:
            want_f, want_h = _forecast(alone), _hidden(alone)
            want_o = alone.post("/v2/models/tiny/infer", json=oip).json()["outputs"]
        got_f = _forecast(client, model=name, version=version)
        got_h = _hidden(client, model=name, version=version)
        r = client.post(f"/v2/models/{name}/versions/{version}/infer", json=oip)
        assert r.status_code == 200, r.text
        assert (got_f["model"], got_f["version"]) == (name, version)
        assert (r.json()["model_name"], r.json()["model_version"]) == (name, version)
        for a, b in zip(got_f["forecasts"], want_f["forecasts"], strict=True):
            np.testing.assert_allclose(a["mean"], b["mean"], atol=1e-6)
            np.testing.assert_allclose(a["quantiles"]["0.1"], b["quantiles"]["0.1"], atol=1e-6)
        (a,), (b,) = got_h["outputs"], want_h["outputs"]
        np.testing.assert_allclose(a["h_seq"], b["h_seq"], atol=1e-6)
        for a, b in zip(r.json()["outputs"], want_o, strict=True):
            np.testing.assert_allclose(a["data"], b["data"], atol=1e-6)
    # the models really differ: the test above could not pass by serving one of them
    means = {v: _forecast(client, model=n, version=v)["forecasts"][0]["mean"] for n, v in MODELS}
    assert not np.allclose(means["1"], means["2"]) and not np.allclose(means["2"], means["1.0.0"])


def test_no_version_is_the_highest(client: TestClient) -> None:
    body = _forecast(client, model="alpha")
    assert body["version"] == "2"
    assert body == _forecast(client, model="alpha", version="2")
    assert _hidden(client, model="beta")["version"] == "1.0.0"


def test_several_models_and_none_named_is_a_422_naming_them(client: TestClient) -> None:
    for path, body in (
        ("/v1/forecast", {"series": SERIES}),
        ("/v1/hidden", {"inputs": [{"x": [[0.1]]}]}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["field"] == "model" and "alpha, beta" in err["message"]


@pytest.mark.parametrize(
    ("choice", "field", "needle"),
    [
        ({"model": "gamma"}, "model", "unknown model 'gamma'; served: alpha, beta"),
        ({"model": "alpha", "version": "3"}, "version", "unknown version '3' of model 'alpha'"),
        ({"model": "beta", "version": "1"}, "version", "served: 1.0.0"),
    ],
)
def test_unknown_model_or_version_is_a_404_naming_it(client, choice, field, needle) -> None:
    r = client.post("/v1/forecast", json={"series": SERIES, **choice})
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": r.json()["error"]["message"],
        "field": field,
    }
    assert needle in r.json()["error"]["message"]
    body = {
        "model": choice["model"],
        "inputs": [
            {"type": "univariate_time_series", "name": "s", "series": [1.0, 2.0], "frequency": "M"}
        ],
        "options": {"horizon": 2},
    }
    if "version" in choice:
        body["version"] = choice["version"]
    assert client.post("/v1/timeseries/forecast", json=body).status_code == 404


def test_a_repository_of_one_model_serves_it_unnamed(tmp_path: Path) -> None:
    _write(tmp_path, "alpha", "1")
    _write(tmp_path, "alpha", "2")
    with _client(tmp_path) as c:
        body = _forecast(c)
        assert (body["model"], body["version"]) == ("alpha", "2")
        assert _forecast(c, version="1")["version"] == "1"


def test_models_lists_every_version(client: TestClient, repo: Path) -> None:
    models = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["version"]) for m in models] == [
        ("alpha", "2"),
        ("alpha", "1"),
        ("beta", "1.0.0"),
    ]
    assert [m["hidden_size"] for m in models] == [8, 8, 6]
    assert len({m["weights_sha256"] for m in models}) == 3


# ---- tokens and streams --------------------------------------------------------------------------
def _stream_token(c: TestClient, start: dict) -> tuple[dict, str, float]:
    with c.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "history": [1.0, 2.0, 4.0, 3.0], **start})
        ready = ws.receive_json()
        assert ready["type"] == "ready", ready
        ws.send_json({"type": "state"})
        token = ws.receive_json()["token"]
        ws.send_json({"type": "step", "x": 5.0})
        y = ws.receive_json()["y"]
    return ready, token, y


def test_a_stream_keeps_its_version_and_tokens_name_it(client: TestClient) -> None:
    ready, token, y = _stream_token(client, {"model": "alpha", "version": "1"})
    assert (ready["model"], ready["version"]) == ("alpha", "1")
    with client.websocket_connect("/v1/stream") as ws:
        # the token names alpha 1: without `model` the stream resumes there, not on alpha 2
        ws.send_json({"type": "start", "resume": token})
        again = ws.receive_json()
        assert (again["model"], again["version"], again["step"]) == ("alpha", "1", 4)
        ws.send_json({"type": "step", "x": 5.0})
        assert ws.receive_json()["y"] == y
        # asked for on alpha 2, a token of alpha 1 is refused
        ws.send_json({"type": "start", "resume": token, "model": "alpha", "version": "2"})
        err = ws.receive_json()
    assert err["code"] == "already_started"
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "resume": token, "model": "alpha", "version": "2"})
        err = ws.receive_json()
        assert (err["type"], err["code"]) == ("error", "token_mismatch")
        assert "'alpha' version '1'" in err["message"]
        ws.send_json({"type": "start", "history": [1.0, 2.0], "model": "beta"})
        ready = ws.receive_json()
        assert (ready["type"], ready["model"], ready["version"]) == ("ready", "beta", "1.0.0")
        ws.send_json({"type": "state"})
        assert ws.receive_json()["token"] != token


def test_a_stream_naming_no_model_among_several_is_told_the_choices(client: TestClient) -> None:
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "history": [1.0, 2.0]})
        err = ws.receive_json()
        assert (err["code"], err["field"]) == ("invalid_input", "model")
        assert "alpha, beta" in err["message"]
        ws.send_json({"type": "start", "model": "nope"})
        assert ws.receive_json()["code"] == "not_found"


# ---- the Open Inference Protocol's repository extension ------------------------------------------
def test_oip_metadata_readiness_and_extension(client: TestClient) -> None:
    assert "model_repository" in client.get("/v2").json()["extensions"]
    assert client.get("/v2/models/alpha").json()["versions"] == ["2", "1"]
    assert client.get("/v2/models/alpha/versions/1").json()["versions"] == ["1"]
    h = client.get("/v2/models/beta").json()["inputs"][1]
    assert (h["name"], h["shape"]) == ("h0", [-1, 1, 6])
    r = client.get("/v2/models/alpha/versions/1/ready")
    assert (r.status_code, r.json()) == (200, {"name": "alpha", "ready": True})
    r = client.get("/v2/models/alpha/versions/7/ready")
    assert r.status_code == 404 and "unknown version '7'" in r.json()["error"]


def test_unload_and_load_at_run_time(repo: Path) -> None:
    with _client(repo) as c:
        before = _forecast(c, model="beta")
        index = c.post("/v2/repository/index").json()
        assert index == [
            {"name": "alpha", "version": "1", "state": "READY"},
            {"name": "alpha", "version": "2", "state": "READY"},
            {"name": "beta", "version": "1.0.0", "state": "READY"},
        ]
        assert c.post("/v2/repository/models/beta/unload").status_code == 200
        r = c.post("/v1/forecast", json={"series": SERIES, "model": "beta"})
        assert r.status_code == 404 and "served: alpha" in r.json()["error"]["message"]
        assert c.get("/v2/models/beta/ready").status_code == 404
        assert c.post("/v2/repository/index", json={"ready": True}).json() == index[:2]
        assert c.post("/v2/repository/index").json()[2]["state"] == "UNAVAILABLE"
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["alpha", "alpha"]
        # one model left: requests naming none are served by it
        assert _forecast(c)["version"] == "2"
        assert c.get("/readyz").status_code == 200
        assert c.post("/v2/repository/models/beta/load").status_code == 200
        assert _forecast(c, model="beta") == before
        r = c.post("/v2/repository/models/gamma/load")
        assert r.status_code == 404 and "gamma" in r.json()["error"]
        r = c.post("/v2/repository/models/gamma/unload")
        assert r.status_code == 404 and "gamma" in r.json()["error"]


def test_a_new_version_loads_beside_the_old_one(tmp_path: Path) -> None:
    _write(tmp_path, "alpha", "1")
    with _client(tmp_path) as c:
        old = _forecast(c)
        _write(tmp_path, "alpha", "2")
        assert c.post("/v2/repository/models/alpha/load").status_code == 200
        assert _forecast(c)["version"] == "2"  # the new default
        assert _forecast(c, version="1") == old  # the old one still answers
        shutil.rmtree(tmp_path / "alpha" / "1")
        assert c.post("/v2/repository/models/alpha/load").status_code == 200  # matches disk
        assert c.post("/v1/forecast", json={"series": SERIES, "version": "1"}).status_code == 404


def test_a_single_file_server_has_no_repository(make_client) -> None:
    c = make_client()
    assert c.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    r = c.post("/v2/repository/models/tiny/load")
    assert r.status_code == 400 and "not a model repository" in r.json()["error"]
    # naming the one served model (or its version) is allowed
    assert (
        c.post(
            "/v1/forecast", json={"series": SERIES, "model": "tiny", "version": "0.0.1"}
        ).status_code
        == 200
    )


def test_metrics_are_labelled_by_model_and_version(client: TestClient) -> None:
    _forecast(client, model="beta")
    text = client.get("/metrics").text
    rows = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gru_model_rows_total{")
    }
    assert rows['model="beta",version="1.0.0"'] >= 2  # two series, run at least once each
    assert 'gru_model_queue_rows{model="alpha",version="1"} 0.0' in text
    assert (
        'gru_model_info{name="beta",provider="CPUExecutionProvider",variant="cho2014",version="1.0.0"} 1.0'
        in text
    )


# ---- load and unload under traffic, on a real server ---------------------------------------------
def _post(port: int, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_load_and_unload_under_traffic_lose_no_request(repo: Path, serve_process) -> None:
    server = serve_process(model_path=repo, token_secret=SECRET)
    body = {"series": SERIES, "horizon": 8}
    want = {
        m: _post(server.port, "/v1/forecast", {**body, "model": m})[1] for m in ("alpha", "beta")
    }
    answers: list[tuple[str, int, dict]] = []
    stop = threading.Event()

    def traffic(model: str) -> None:
        while not stop.is_set():
            status, got = _post(server.port, "/v1/forecast", {**body, "model": model})
            answers.append((model, status, got))

    threads = [
        threading.Thread(target=traffic, args=(m,)) for m in ("alpha", "alpha", "beta", "beta")
    ]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            assert _post(server.port, "/v2/repository/models/beta/unload", {})[0] == 200
            assert _post(server.port, "/v2/repository/models/beta/load", {})[0] == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert {m for m, s, _ in answers if s == 200} == {"alpha", "beta"}
    for model, status, got in answers:
        if status == 200:
            assert got == want[model]  # every answered request has its model's numbers
        else:  # only beta's, while it was out: a clean 404 naming it, never a failure
            assert (model, status, got["error"]["code"]) == ("beta", 404, "not_found"), got
    assert all(s == 200 for m, s, _ in answers if m == "alpha")


def test_unloading_a_model_hands_its_streams_their_tokens(repo: Path) -> None:
    from starlette.websockets import WebSocketDisconnect

    with _client(repo) as c:
        with c.websocket_connect("/v1/stream") as ws:
            ws.send_json({"type": "start", "history": [1.0, 2.0, 4.0], "model": "beta"})
            assert ws.receive_json()["type"] == "ready"
            assert c.post("/v2/repository/models/beta/unload").status_code == 200
            last = ws.receive_json()
            assert (last["type"], last["step"]) == ("state", 3)
            assert last["reason"] == "model beta 1.0.0 unloaded"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1001
        assert c.post("/v2/repository/models/beta/load").status_code == 200
        with c.websocket_connect("/v1/stream") as ws:  # loaded again: the token resumes
            ws.send_json({"type": "start", "resume": last["token"]})
            again = ws.receive_json()
            assert (again["type"], again["model"], again["step"]) == ("ready", "beta", 3)


def test_serve_refuses_a_bad_repository_in_one_line(tmp_path: Path) -> None:
    import subprocess

    from service_helpers import serve_command, serve_env

    (tmp_path / "m" / "latest").mkdir(parents=True)
    p = subprocess.run(
        serve_command(model_path=tmp_path, port=0, device="cpu"),
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "latest: expected version directories" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


# ---- review fixes --------------------------------------------------------------------------------
def test_unloading_takes_every_version_out_before_draining_any(tmp_path: Path, monkeypatch) -> None:
    """While one version drains, an older one must not become the answer to requests naming
    no version: all of a model's versions leave the table first."""
    import service.repository as repository

    _write(tmp_path, "alpha", "1")
    _write(tmp_path, "alpha", "2")
    seen: list[list[str]] = []
    with _client(tmp_path) as c:
        models = c.app.state.service.models
        drain = repository.drain

        async def watching(core, grace_s):
            seen.append([s.version for s in models.versions("alpha")])
            await drain(core, grace_s)

        monkeypatch.setattr(repository, "drain", watching)
        assert c.post("/v2/repository/models/alpha/unload").status_code == 200
        r = c.post("/v1/forecast", json={"series": SERIES})
    assert seen == [[], []]  # both drains ran with the table already empty
    assert r.status_code == 404 and "no model is loaded" in r.json()["error"]["message"]


def test_a_refused_second_start_does_not_change_how_steps_are_read(client: TestClient) -> None:
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "model": "alpha", "history": [1.0, 2.0, 3.0]})
        assert ws.receive_json()["type"] == "ready"
        ws.send_json({"type": "start", "model": "beta", "history": [1.0, 2.0]})
        assert ws.receive_json()["code"] == "already_started"
        ws.send_json({"type": "step", "x": 5.0})
        out = ws.receive_json()
    assert out["type"] == "output" and out["step"] == 3


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_a_name_outside_the_repository_is_no_model(repo: Path, name: str) -> None:
    from service.repository import UnknownModel, scan_model

    (repo / "alpha" / ".hidden").mkdir(exist_ok=True)  # a folder there, but hidden
    with pytest.raises(UnknownModel):
        scan_model(repo / "alpha", name)  # ".." would be the repository root itself
