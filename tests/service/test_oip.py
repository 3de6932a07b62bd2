"""Open Inference Protocol v2: the official client against a real server, and the protocol's
details (errors, requested outputs, binary tensors, limits) in-process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from service_helpers import start_server
from tritonclient.utils import InferenceServerException

MODEL, VERSION = "tiny", "0.0.1"  # tests/conftest.py tiny_meta
L, H = 2, 8
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_artifact: Path):
    s = start_server(tmp_path_factory.mktemp("oip"), model_path=tiny_artifact)
    try:
        yield s
    finally:
        s.stop()


def hidden_v1(base_url: str, xs, hs=None) -> list[dict]:
    items = [{"x": x.tolist()} for x in xs]
    for item, h in zip(items, hs or [None] * len(xs), strict=True):
        if h is not None:
            item["h"] = h.tolist()
    r = httpx.post(f"{base_url}/v1/hidden", json={"inputs": items, "return_sequence": True})
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


def tensor(name: str, arr: np.ndarray, datatype: str = "FP32") -> dict:
    return {
        "name": name,
        "shape": list(arr.shape),
        "datatype": datatype,
        "data": arr.ravel().tolist(),
    }


# ---- the official client against a real uvicorn ------------------------------------------------
def test_tritonclient_metadata_and_readiness(server) -> None:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert c.is_server_live() and c.is_server_ready()
        meta = c.get_server_metadata()
        assert meta["name"] == "gru-serve" and "binary_tensor_data" in meta["extensions"]
        assert c.is_model_ready(MODEL) and c.is_model_ready(MODEL, VERSION)
        assert not c.is_model_ready("nope") and not c.is_model_ready(MODEL, "9")
        for m in (c.get_model_metadata(MODEL), c.get_model_metadata(MODEL, VERSION)):
            assert m["name"] == MODEL and m["versions"] == [VERSION]
            assert {t["name"]: (t["datatype"], t["shape"]) for t in m["inputs"]} == {
                "x": ("FP32", [-1, -1, 1]),
                "h0": ("FP32", [-1, L, H]),
                "seq_lens": ("INT32", [-1]),
            }
            assert {t["name"]: (t["datatype"], t["shape"]) for t in m["outputs"]} == {
                "y": ("FP32", [-1, -1, 1]),
                "h_n": ("FP32", [-1, L, H]),
            }
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("nope")
        assert e.value.status() == "404" and "nope" in e.value.message()
    finally:
        c.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infer_equals_v1_hidden(server, binary: bool) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 1)).astype(np.float32)  # (B, T, F)
    h0 = rng.normal(size=(3, L, H)).astype(np.float32) * 0.5
    lens = np.array([5, 2, 4], np.int32)
    inputs = [
        triton.InferInput("x", list(x.shape), "FP32"),
        triton.InferInput("h0", list(h0.shape), "FP32"),
        triton.InferInput("seq_lens", [3], "INT32"),
    ]
    for inp, arr in zip(inputs, (x, h0, lens), strict=True):
        inp.set_data_from_numpy(arr, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("y", "h_n")]
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        res = c.infer(MODEL, inputs, request_id="req-7", outputs=outputs)
        res_v = c.infer(MODEL, inputs, model_version=VERSION, outputs=outputs)
    finally:
        c.close()
    resp = res.get_response()
    assert resp["id"] == "req-7" and resp["model_name"] == MODEL
    assert resp["model_version"] == VERSION
    y, h_n = res.as_numpy("y"), res.as_numpy("h_n")
    assert y.shape == (3, 5, 1) and h_n.shape == (3, L, H) and y.dtype == np.float32
    np.testing.assert_array_equal(res_v.as_numpy("y"), y)

    rest = hidden_v1(server.base_url, [x[b, : lens[b]] for b in range(3)], list(h0))
    for b in range(3):
        n = lens[b]
        np.testing.assert_allclose(h_n[b], np.array(rest[b]["h"]), rtol=0, atol=1e-6)
        np.testing.assert_allclose(y[b, :n], np.array(rest[b]["y_seq"]), rtol=0, atol=1e-6)
        assert (y[b, n:] == 0).all()  # zeros past a row's length, as the metadata doc says


def test_tritonclient_default_binary_outputs_and_error(server, tiny_reference) -> None:
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6, 1)
    inp = triton.InferInput("x", [1, 6, 1], "FP32")
    inp.set_data_from_numpy(x)
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        res = c.infer(MODEL, [inp])
        bad = triton.InferInput("x", [1, 6, 1], "FP64")
        bad.set_data_from_numpy(x.astype(np.float64))
        with pytest.raises(InferenceServerException) as e:
            c.infer(MODEL, [bad])
    finally:
        c.close()
    y_ref, h_ref, _ = tiny_reference.run(x[0])
    np.testing.assert_allclose(res.as_numpy("y")[0], y_ref, atol=1e-5)
    np.testing.assert_allclose(res.as_numpy("h_n")[0], h_ref, atol=1e-5)
    assert e.value.status() == "400" and "FP32" in e.value.message()


# ---- protocol details in-process -----------------------------------------------------------------
def test_health_and_server_metadata(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("GET", f"/v2/models/{MODEL}/versions/2"),
        ("GET", f"/v2/models/{MODEL}/versions/2/ready"),
        ("POST", "/v2/models/other/infer"),
        ("POST", f"/v2/models/{MODEL}/versions/2/infer"),
    ],
)
def test_unknown_model_or_version_is_404(client, method: str, path: str) -> None:
    body = {"inputs": [tensor("x", np.zeros((1, 1, 1), np.float32))]}
    r = client.request(method, path, json=body if method == "POST" else None)
    assert r.status_code == 404
    assert isinstance(r.json()["error"], str) and "unknown" in r.json()["error"]


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [1.0]}], "needs 2"),
        ([{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}], "shape"),
        ([{"name": "x", "shape": [1, 2, 1], "datatype": "INT32", "data": [1, 2]}], "FP32"),
        ([{"name": "z", "shape": [1], "datatype": "FP32", "data": [1.0]}], "unexpected input"),
        ([{"name": "h0", "shape": [1, L, H], "datatype": "FP32", "data": [0.0] * 16}], "required"),
        ([{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": ["a", "b"]}], "numbers"),
        (
            [
                {"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [1.0, 2.0]},
                {"name": "seq_lens", "shape": [1], "datatype": "INT32", "data": [3]},
            ],
            "between 1 and 2",
        ),
        (
            [
                {"name": "x", "shape": [2, 2, 1], "datatype": "FP32", "data": [1.0, 2, 3, 4]},
                {"name": "h0", "shape": [1, L, H], "datatype": "FP32", "data": [0.0] * 16},
            ],
            "h0",
        ),
        ([], "non-empty"),
    ],
)
def test_bad_infer_request_is_400(client, inputs, needle: str) -> None:
    r = client.post(INFER, json={"inputs": inputs})
    assert r.status_code == 400
    assert needle in r.json()["error"]


def test_not_json_and_unknown_output_are_400(client) -> None:
    r = client.post(INFER, content=b"\x00\x01binary", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    body = {"inputs": [tensor("x", np.ones((1, 2, 1), np.float32))], "outputs": [{"name": "q"}]}
    r = client.post(INFER, json=body)
    assert r.status_code == 400 and "unknown output 'q'" in r.json()["error"]


def test_requested_outputs_id_and_order(client) -> None:
    x = np.ones((2, 3, 1), np.float32)
    body = {"id": "abc", "inputs": [tensor("x", x)], "outputs": [{"name": "h_n"}]}
    r = client.post(INFER, json=body).json()
    assert r["id"] == "abc" and [o["name"] for o in r["outputs"]] == ["h_n"]
    assert r["outputs"][0]["shape"] == [2, L, H] and len(r["outputs"][0]["data"]) == 2 * L * H
    r = client.post(INFER, json={"inputs": [tensor("x", x)], "parameters": {"foo": 1}}).json()
    assert "id" not in r and [o["name"] for o in r["outputs"]] == ["y", "h_n"]


def test_nested_data_equals_flat_data(client) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1) / 10
    flat = client.post(INFER, json={"inputs": [tensor("x", x)]}).json()
    nested = {"name": "x", "shape": [2, 3, 1], "datatype": "FP32", "data": x.tolist()}
    assert client.post(INFER, json={"inputs": [nested]}).json() == flat


def test_binary_request_by_hand(client) -> None:
    """The binary extension without the client library: JSON header, then raw tensors."""
    x = np.array([[[0.5], [-1.0], [2.0]]], np.float32)
    lens = np.array([2], np.int32)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 3, 1], "datatype": "FP32",
                 "parameters": {"binary_data_size": x.nbytes}},
                {"name": "seq_lens", "shape": [1], "datatype": "INT32",
                 "parameters": {"binary_data_size": lens.nbytes}},
            ],
            "outputs": [{"name": "h_n", "parameters": {"binary_data": True}}, {"name": "y"}],
        }
    ).encode()  # fmt: skip
    r = client.post(
        INFER,
        content=header + x.tobytes() + lens.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:n])
    h_out, y_out = meta["outputs"]
    assert h_out["name"] == "h_n" and h_out["parameters"]["binary_data_size"] == L * H * 4
    h_n = np.frombuffer(r.content[n:], "<f4").reshape(1, L, H)
    ref = client.post("/v1/hidden", json={"inputs": [{"x": [[0.5], [-1.0]]}]}).json()
    np.testing.assert_allclose(h_n[0], ref["outputs"][0]["h"], atol=1e-6)
    assert y_out["data"][2] == 0.0 and y_out["data"][1] == pytest.approx(ref["outputs"][0]["y"][0])

    # a size that disagrees with the shape, and bytes nobody claims, are 400s
    bad = header.replace(b'"binary_data_size": 12', b'"binary_data_size": 8')
    r = client.post(INFER, content=bad + x.tobytes() + lens.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(bad))})  # fmt: skip
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]
    r = client.post(INFER, content=header + x.tobytes() + lens.tobytes() + b"xx",
                    headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert r.status_code == 400 and "not claimed" in r.json()["error"]


def test_sequence_parameters_and_absurd_shapes_are_400(client) -> None:
    x = tensor("x", np.ones((1, 2, 1), np.float32))
    r = client.post(INFER, json={"inputs": [x], "parameters": {"sequence_id": 7}})
    assert r.status_code == 400 and "h0" in r.json()["error"]
    huge = {"name": "x", "shape": [2**40, 2**40, 1], "datatype": "FP32", "data": [1.0]}
    r = client.post(INFER, json={"inputs": [huge]})
    assert r.status_code == 400 and "needs" in r.json()["error"]


def test_compressed_request_is_a_clear_400(client) -> None:
    r = client.post(INFER, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "Content-Encoding" in r.json()["error"]


def test_body_limit_applies_to_infer(make_client) -> None:
    c = make_client(max_body_bytes=2048)
    x = np.zeros((1, 1000, 1), np.float32)  # ~5 KB of JSON
    r = c.post(INFER, json={"inputs": [tensor("x", x)]})
    assert r.status_code == 413 and "2048" in r.json()["error"]
    small = np.zeros((1, 10, 1), np.float32)
    assert c.post(INFER, json={"inputs": [tensor("x", small)]}).status_code == 200


def test_limits_of_the_core_apply(make_client) -> None:
    c = make_client(max_series_length=4, max_items=2)
    r = c.post(INFER, json={"inputs": [tensor("x", np.zeros((1, 5, 1), np.float32))]})
    assert r.status_code == 400 and "limit of 4" in r.json()["error"]
    r = c.post(INFER, json={"inputs": [tensor("x", np.zeros((3, 1, 1), np.float32))]})
    assert r.status_code == 400 and "limit of 2" in r.json()["error"]


def test_not_ready_is_503_on_readiness_and_infer(client) -> None:
    body = {"inputs": [tensor("x", np.zeros((1, 1, 1), np.float32))]}
    client.app.state.service.ready = False  # as during warm-up or once shutdown begins
    try:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        r = client.get(f"/v2/models/{MODEL}/ready")
        assert r.status_code == 503 and r.json() == {"name": MODEL, "ready": False}
        r = client.post(INFER, json=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "not ready" in r.json()["error"]
    finally:
        client.app.state.service.ready = True
    assert client.post(INFER, json=body).status_code == 200


def test_overload_is_503_with_retry_after(make_client) -> None:
    c = make_client(max_queue_rows=1)
    r = c.post(INFER, json={"inputs": [tensor("x", np.zeros((2, 1, 1), np.float32))]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert isinstance(r.json()["error"], str) and "capacity" in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/nope/infer", 405),
        ("GET", f"/v2/models/{MODEL}/infer", 405),
        ("GET", "/v2/no/such/path", 404),
    ],
)
def test_http_errors_under_v2_use_the_oip_error_shape(client, method, path, status) -> None:
    r = client.request(method, path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    # elsewhere the REST shape stays
    r = client.get("/v1/forecast")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_error_body_picks_the_shape_by_path() -> None:
    from service.errors import PayloadTooLarge, error_body, is_oip

    err = PayloadTooLarge("too big")
    assert error_body("/v2/models/x/infer", err) == {"error": "too big"}
    assert error_body("/v1/forecast", err) == {
        "error": {"code": "payload_too_large", "message": "too big"}
    }
    assert (is_oip("/v2"), is_oip("/v2/health/ready"), is_oip("/v2x"), is_oip("/v1")) == (
        True,
        True,
        False,
        False,
    )
