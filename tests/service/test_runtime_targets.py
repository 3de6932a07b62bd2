"""The runtime with both graph families: a cuda-target artifact serves (on the CPU here) with
the same numbers; node placement comes from onnxruntime and reaches /v1/models; CUDA is never
claimed while a node would run on the CPU.

No GPU is needed: a CUDA session is played by a CPU session that reports the CUDA provider and
a placement where onnxruntime would put each node on a GPU (a cho2014 GRU node on the CPU).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from service_helpers import Reference, tiny_meta, write_tiny_artifact

from export.cuda_graph import build_cuda_model
from export.graph import random_weights
from service import runtime as runtime_module
from service.runtime import CPU, CUDA, DeviceError, Runtime


def write_cuda_artifact(path: Path, variant: str = "cho2014", seed: int = 0) -> Path:
    meta = replace(tiny_meta(variant), target="cuda")
    onnx.save(build_cuda_model(random_weights(meta, seed=seed), meta), path)
    return path


@pytest.fixture(scope="module")
def cuda_artifact(tmp_path_factory) -> Path:
    return write_cuda_artifact(tmp_path_factory.mktemp("cuda") / "tiny-cuda.onnx")


def test_cuda_artifact_serves_on_the_cpu_with_the_reference_numbers(make_settings, cuda_artifact):
    rt = Runtime(make_settings(model_path=cuda_artifact))
    assert rt.meta.target == "cuda"
    assert rt.placement.provider == CPU and rt.placement.recurrent_nodes == CPU
    assert set(rt.placement.nodes) == {CPU} and rt.placement.nodes[CPU] > 20  # bodies counted
    ref = Reference(tiny_meta("cho2014"))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3, 1)).astype(np.float32)
    h0 = rng.normal(scale=0.3, size=(2, 3, 8)).astype(np.float32)
    lens = np.array([6, 2, 1], np.int32)
    y, h_n, h_seq = rt.run(x, h0, lens, want_seq=True)
    assert h_seq is not None
    for b, n in enumerate(lens):
        ry, rh, rseq = ref.run(x[:n, b], h0[:, b])
        assert np.abs(y[:n, b] - ry).max() <= 1e-5 and np.abs(h_n[:, b] - rh).max() <= 1e-5
        assert np.abs(h_seq[:n, :, b] - rseq).max() <= 1e-5
    assert rt.warmup(rounds=1) > 0


def test_models_endpoint_reports_target_and_placement(make_client, cuda_artifact):
    cuda = make_client(model_path=cuda_artifact)
    (m,) = cuda.get("/v1/models").json()["models"]
    assert (m["target"], m["provider"], m["recurrent_nodes"]) == ("cuda", CPU, CPU)
    assert set(m["nodes"]) == {CPU} and m["nodes"][CPU] > 20
    (c,) = make_client().get("/v1/models").json()["models"]
    # per layer Slice, GRU, Squeeze; the two Concats; the head's MatMul and Add
    assert c["target"] == "cpu" and c["nodes"] == {CPU: 10}


def test_a_forecast_is_the_same_through_either_target(make_client, cuda_artifact):
    body = {"series": [[3, 5, 4, 6, 5, 7, 6, 8]], "horizon": 5, "quantiles": [0.1, 0.9]}
    cpu = make_client().post("/v1/forecast", json=body).json()["forecasts"][0]
    gpu_graph = make_client(model_path=cuda_artifact).post("/v1/forecast", json=body).json()
    got = gpu_graph["forecasts"][0]
    assert np.abs(np.array(got["mean"]) - cpu["mean"]).max() <= 1e-4
    assert np.abs(np.array(got["quantiles"]["0.9"]) - cpu["quantiles"]["0.9"]).max() <= 1e-4


# ---- a pretend CUDA session -----------------------------------------------------------------------
class PretendCuda(ort.InferenceSession):
    """A CPU session that says it got the CUDA provider and reports the placement onnxruntime
    makes on a GPU: every node on CUDA but a linear_before_reset=0 GRU node (cuDNN lacks it)."""

    def __init__(self, path, options=None, providers=None, **kw):
        super().__init__(path, options, providers=[CPU])
        names = [p[0] if isinstance(p, tuple) else p for p in providers or []]  # (name, options)
        self.cuda = CUDA in names
        self.cuda_options = next((p[1] for p in providers or [] if isinstance(p, tuple)), None)
        model = onnx.load(path)
        self.gru_on_cpu = any(
            n.op_type == "GRU"
            and {a.name: a.i for a in n.attribute}.get("linear_before_reset", 0) == 0
            for n in model.graph.node
        )

    def get_providers(self):
        return [CUDA, CPU] if self.cuda else [CPU]

    def get_provider_graph_assignment_info(self):
        info = super().get_provider_graph_assignment_info()
        if not self.cuda:
            return info

        class Relabelled:
            def __init__(self, sg, ep):
                self.ep_name, self._sg = ep, sg

            def get_nodes(self):
                return self._sg.get_nodes()

        def ep(sg):
            ops = {n.op_type for n in sg.get_nodes()}
            return CPU if self.gru_on_cpu and "GRU" in ops else CUDA

        return [Relabelled(sg, ep(sg)) for sg in info]


@pytest.fixture
def pretend_gpu(monkeypatch):
    monkeypatch.setattr(runtime_module.ort, "InferenceSession", PretendCuda)
    monkeypatch.setattr(runtime_module, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(runtime_module.ort, "get_available_providers", lambda: [CUDA, CPU])
    if hasattr(runtime_module.ort, "preload_dlls"):
        monkeypatch.setattr(runtime_module.ort, "preload_dlls", lambda *a, **k: None)


def test_device_cuda_refuses_an_artifact_with_nodes_on_the_cpu(make_settings, pretend_gpu):
    with pytest.raises(DeviceError) as e:
        Runtime(make_settings(device="cuda"))
    message = str(e.value)
    assert message.startswith("device=cuda but 2 node(s) (GRU) of ")
    assert "would run on the CPU under CUDA" in message
    assert "gru-serve export --target cuda" in message and "\n" not in message


def test_device_auto_serves_such_an_artifact_on_the_cpu(make_settings, pretend_gpu, caplog):
    with caplog.at_level(logging.WARNING, logger="gru_serve.runtime"):
        rt = Runtime(make_settings(device="auto"))
    assert rt.session.get_providers() == [CPU]
    assert rt.placement.provider == CPU and set(rt.placement.nodes) == {CPU}
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "--target cuda" in warned and warned.endswith("serving on the CPU instead")


def test_cuda_is_claimed_when_every_node_runs_there(make_settings, pretend_gpu, tmp_path, caplog):
    cuda = write_cuda_artifact(tmp_path / "c.onnx")
    cudnn = write_tiny_artifact(tmp_path / "cudnn.onnx", "cudnn")  # GRU nodes cuDNN runs
    for path, recurrent_op in ((cuda, "Scan"), (cudnn, "GRU")):
        with caplog.at_level(logging.WARNING, logger="gru_serve.runtime"):
            rt = Runtime(make_settings(device="cuda", model_path=path))
        assert rt.placement.provider == CUDA and rt.placement.recurrent_nodes == CUDA
        assert set(rt.placement.nodes) == {CUDA}, recurrent_op
        assert rt.session.cuda_options == {"use_tf32": "0"}  # full float32 products
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_a_placement_report_the_cuda_target_is_not_suspected(make_settings, cuda_artifact):
    """An onnxruntime that cannot report placement: only a cpu-target cho2014 GRU is known to
    leave the GPU."""

    class NoReport:
        def get_providers(self):
            return [CUDA, CPU]

    rt = Runtime(make_settings(model_path=cuda_artifact))
    rt.session = NoReport()
    placement = rt._placement()
    assert (placement.provider, placement.recurrent_nodes, placement.nodes) == (CUDA, CUDA, {})
