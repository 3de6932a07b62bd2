"""The runtime: provider choice, session options, validation of the artifact, warm-up, the
CUDA placement warning, and a serving process that never imports torch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from servers import run_expecting_one_error_line
from service_helpers import ROOT, serve_command, serve_env, write_tiny_artifact

from export.contract import META_PREFIX
from service.runtime import CPU, CUDA, ArtifactError, DeviceError, Runtime, cuda_device_count

NO_GPU = cuda_device_count() == 0
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="asserts CPU-only behaviour")


# ---- provider choice ----------------------------------------------------------------------------
def test_device_cpu_runs_on_cpu(make_settings):
    rt = Runtime(make_settings(device="cpu"))
    assert rt.session.get_providers() == [CPU]
    assert rt.placement.provider == CPU and rt.placement.recurrent_nodes == CPU


@needs_no_gpu
def test_device_auto_falls_back_to_cpu_here(make_settings, caplog):
    assert CUDA in ort.get_available_providers()  # onnxruntime-gpu lists it even without a GPU
    with caplog.at_level(logging.DEBUG):
        rt = Runtime(make_settings(device="auto"))
    assert rt.session.get_providers() == [CPU]
    assert rt.placement.provider == CPU
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    provider_lines = [r.getMessage() for r in caplog.records if CPU in r.getMessage()]
    assert len(provider_lines) == 1, provider_lines


@needs_no_gpu
def test_device_cuda_without_gpu_is_a_clear_error(make_settings):
    with pytest.raises(DeviceError, match="device=cuda"):
        Runtime(make_settings(device="cuda"))


@needs_no_gpu
def test_serve_device_auto_logs_no_errors_and_the_provider_once(serve_process):
    """A real `gru-serve serve --device auto` on this CPU-only machine with onnxruntime-gpu."""
    import httpx

    server = serve_process(device="auto")
    r = httpx.get(server.base_url + "/readyz")
    assert r.json()["provider"] == CPU
    assert httpx.get(server.base_url + "/v1/models").json()["models"][0]["provider"] == CPU
    server.stop()
    log = server.log()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    bad = [line for line in lines if is_error_line(line)]
    assert not bad, log
    assert "[W:onnxruntime" not in log, log  # no onnxruntime warnings either
    assert sum(f"on {CPU}" in line for line in lines) == 1, log


def is_error_line(line: str) -> bool:
    """An error-level line in any of the forms the process may write: JSON log records,
    plain logging lines, or onnxruntime's own `[E:onnxruntime:...]` lines."""
    if line.startswith("{"):
        try:
            return json.loads(line).get("level", "").lower() in ("error", "critical")
        except ValueError:
            pass
    return " ERROR " in line or "[E:" in line or line.startswith(("ERROR", "CRITICAL"))


@needs_no_gpu
def test_serve_device_cuda_without_gpu_exits_2_with_one_line(tiny_artifact):
    line, p = run_expecting_one_error_line(
        serve_command(model_path=tiny_artifact, device="cuda", port=0), serve_env()
    )
    assert line.startswith("gru-serve serve: error: device=cuda")
    assert "Traceback" not in p.stderr


# ---- session options and running ------------------------------------------------------------------
def test_session_options_follow_settings(make_settings):
    rt = Runtime(make_settings())
    so = rt._session_options()
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 1)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    rt = Runtime(
        make_settings(
            intra_op_threads=2, allow_spinning=True, graph_optimization="basic", inter_op_threads=3
        )
    )
    so = rt._session_options()
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (2, 3)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "1"
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_run_shapes_and_reference_values(make_settings, tiny_reference):
    rt = Runtime(make_settings())
    T, B = 5, 3
    rng = np.random.default_rng(1)
    x = rng.normal(size=(T, B, 1)).astype(np.float32)
    h0 = rng.normal(scale=0.3, size=(2, B, 8)).astype(np.float32)
    lens = np.array([5, 2, 1], np.int32)
    y, h_n, h_seq = rt.run(x, h0, lens, want_seq=True)
    assert y.shape == (T, B, 1) and h_n.shape == (2, B, 8) and h_seq.shape == (T, 2, B, 8)
    for b, n in enumerate(lens):
        ry, rh, rseq = tiny_reference.run(x[:n, b], h0[:, b])
        assert np.max(np.abs(y[:n, b] - ry)) <= 1e-5
        assert np.max(np.abs(h_n[:, b] - rh)) <= 1e-5
        assert np.max(np.abs(h_seq[:n, :, b] - rseq)) <= 1e-5
    _, _, none = rt.run(x, h0, lens)
    assert none is None


def test_warm_up_reports_its_seconds(make_settings):
    # readiness is the app's (ServiceState), set once warm-up has run; the runtime keeps none
    rt = Runtime(make_settings())
    seconds = rt.warmup(rounds=1)
    assert seconds > 0 and not hasattr(rt, "ready")


# ---- the CUDA placement of cho2014 GRU nodes ------------------------------------------------------
class FakeCudaSession:
    """Stands in for a session that really got the CUDA provider."""

    def get_providers(self):
        return [CUDA, CPU]


@pytest.mark.parametrize(
    ("variant", "recurrent", "warnings"), [("cho2014", CPU, 1), ("cudnn", CUDA, 0)]
)
def test_cuda_placement_of_recurrent_nodes(make_settings, caplog, variant, recurrent, warnings):
    import dataclasses

    rt = Runtime(make_settings())
    rt.session = FakeCudaSession()
    rt.meta = dataclasses.replace(rt.meta, variant=variant)
    with caplog.at_level(logging.INFO, logger="gru_serve.runtime"):
        placement = rt._placement()
    assert placement.provider == CUDA
    assert placement.recurrent_nodes == recurrent
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == warnings
    if warnings:
        msg = warned[0].getMessage()
        assert "cho2014" in msg and "CPU" in msg and "cudnn" in msg


def test_models_endpoint_reports_where_recurrent_nodes_run(make_settings):
    from fastapi.testclient import TestClient
    from service_helpers import wait_ready

    from service.app import create_app
    from service.runtime import Placement

    settings = make_settings()
    rt = Runtime(settings)
    rt.placement = Placement(provider=CUDA, recurrent_nodes=CPU)  # as under CUDA with cho2014
    with TestClient(create_app(settings, rt)) as client:
        wait_ready(client)
        (m,) = client.get("/v1/models").json()["models"]
        assert (m["provider"], m["recurrent_nodes"]) == (CUDA, CPU)
        assert client.get("/readyz").json()["provider"] == CUDA


# ---- artifact validation ----------------------------------------------------------------------------
def _edit_metadata(src, dst, **changes):
    model = onnx.load(src)
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(META_PREFIX + key, None)
        else:
            props[META_PREFIX + key] = json.dumps(value)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, dst)
    return dst


def _identity_model(dst):
    """A valid ONNX model that is not a gru-serve artifact."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.save(model, dst)
    return dst


def _bad_artifact(kind: str, tmp_path, tiny_artifact):
    path = tmp_path / f"{kind}.onnx"
    if kind == "missing":
        return path, "does not exist"
    if kind == "garbage":
        path.write_bytes(b"\x00not an onnx model\xff" * 64)
        return path, "not a loadable ONNX model"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "not a loadable ONNX model"
    if kind == "truncated":
        path.write_bytes(tiny_artifact.read_bytes()[:500])
        return path, "not a loadable ONNX model"
    if kind == "future-ir":
        model = onnx.load(tiny_artifact)
        model.ir_version = 99  # newer than this onnxruntime reads: ORT's message spans lines
        onnx.save(model, path)
        return path, "not a loadable ONNX model"
    if kind == "no-name":
        return _edit_metadata(tiny_artifact, path, name=None), "name is missing"
    if kind == "bad-variant":
        return _edit_metadata(tiny_artifact, path, variant="lstm"), "variant"
    if kind == "bad-opset":
        return _edit_metadata(tiny_artifact, path, opset=13), "opset 13"
    if kind == "size-mismatch":
        return _edit_metadata(tiny_artifact, path, hidden_size=16), "disagrees with metadata"
    if kind == "bad-quantiles":
        return _edit_metadata(tiny_artifact, path, quantile_levels=[0.1]), "quantile"
    if kind == "cannot-roll-out":
        write_tiny_artifact(path, "cho2014", 0, input_size=1, output_size=2)
        return path, "output_size 2 != input_size 1"
    if kind == "not-gru":
        return _identity_model(path), "metadata"
    if kind == "directory":
        path.mkdir()
        return path, "does not exist"
    raise AssertionError(kind)


BAD_KINDS = [
    "missing",
    "garbage",
    "empty",
    "truncated",
    "future-ir",
    "no-name",
    "bad-variant",
    "bad-opset",
    "size-mismatch",
    "bad-quantiles",
    "not-gru",
    "cannot-roll-out",
    "directory",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_artifact_is_refused_with_a_clear_message(make_settings, tmp_path, tiny_artifact, kind):
    path, phrase = _bad_artifact(kind, tmp_path, tiny_artifact)
    with pytest.raises(ArtifactError) as e:
        Runtime(make_settings(model_path=path))
    message = str(e.value)
    assert str(path) in message and phrase in message, message
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["missing", "garbage", "bad-variant"])
def test_serve_with_bad_artifact_exits_with_one_line(tmp_path, tiny_artifact, kind):
    path, phrase = _bad_artifact(kind, tmp_path, tiny_artifact)
    line, p = run_expecting_one_error_line(
        serve_command(model_path=path, device="cpu", port=0), serve_env()
    )
    assert line.startswith("gru-serve serve: error:") and phrase in line
    assert "Uvicorn running" not in p.stdout + p.stderr  # failed before binding


def test_other_variant_serves_too(make_settings, tmp_path):
    """A cudnn-variant artifact loads and matches its reference."""
    from service_helpers import make_artifact

    path, ref = make_artifact(tmp_path / "cudnn.onnx", variant="cudnn", seed=5)
    rt = Runtime(make_settings(model_path=path))
    assert rt.meta.variant == "cudnn"
    x = np.array([[0.5], [-1.0], [0.25]], np.float32)
    y, h, _ = rt.run(x[:, None], np.zeros((2, 1, 8), np.float32), np.array([3], np.int32))
    ry, rh, _ = ref.run(x)
    assert np.max(np.abs(y[:, 0] - ry)) <= 1e-5 and np.max(np.abs(h[:, 0] - rh)) <= 1e-5


# ---- no torch on the serving path ---------------------------------------------------------------------
def test_serving_process_never_imports_torch(tiny_artifact):
    script = textwrap.dedent(
        f"""
        import sys, time
        from fastapi.testclient import TestClient
        from service.cli import build_parser
        from service.app import create_app
        from service.settings import Settings

        build_parser()  # the CLI registers every sub-command: none may pull torch in
        app = create_app(Settings(model_path={str(tiny_artifact)!r}, device="auto"))
        with TestClient(app) as c:
            while c.get("/readyz").status_code != 200:
                time.sleep(0.01)
            codes = [
                c.post("/v1/forecast", json={{"series": [[1, 2, 3]], "horizon": 3, "quantiles": [0.9]}}).status_code,
                c.post("/v1/hidden", json={{"inputs": [{{"x": [[0.1]]}}], "return_sequence": True}}).status_code,
                c.post("/v1/timeseries/forecast", json={{"inputs": [{{"name": "a", "series": [1, 2], "frequency": "D"}}], "options": {{"horizon": 2}}}}).status_code,
                c.get("/v1/models").status_code,
                c.get("/docs").status_code,
            ]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "pandas", "statsmodels"))
        print(codes, heavy)
        """
    )
    p = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[200, 200, 200, 200, 200] []"


def test_running_server_has_no_torch_mapped(serve_process):
    """The real `gru-serve serve` process, after serving: no torch library in its memory map."""
    import httpx

    server = serve_process()
    r = httpx.post(server.base_url + "/v1/forecast", json={"series": [[1, 2, 3]], "horizon": 2})
    assert r.status_code == 200
    with open(f"/proc/{server.proc.pid}/maps") as f:
        maps = f.read()
    assert "onnxruntime" in maps  # the check can see libraries at all
    assert "libtorch" not in maps and "/torch/" not in maps


def test_tiny_helper_writes_loadable_artifact(tmp_path, make_settings):
    path = write_tiny_artifact(tmp_path / "a.onnx", seed=9)
    assert Runtime(make_settings(model_path=path)).meta.name == "tiny"
