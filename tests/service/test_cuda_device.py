"""On a machine with an NVIDIA GPU (skipped elsewhere): the bundled model's cuda graph runs
every node on the CUDA provider, gives the CPU's numbers, and keeps stream states on the
device; the cpu graph is refused for device=cuda."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from service_helpers import ROOT

from service.cli import main
from service.device_state import DeviceState
from service.runtime import CPU, CUDA, DeviceError, Runtime, cuda_device_count
from service.settings import Settings

pytestmark = pytest.mark.skipif(
    cuda_device_count() == 0 or CUDA not in ort.get_available_providers(),
    reason="needs an NVIDIA GPU and the CUDA provider",
)
ARTIFACT = ROOT / "artifacts" / "gru.onnx"
GPU_TOL = 1e-4  # float32 on another device: summation order differs, no TF32 expected


@pytest.fixture(scope="module")
def cuda_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "gru-cuda.onnx"
    checkpoint = str(ROOT / "artifacts" / "checkpoint.pt")
    assert main(["export", "--checkpoint", checkpoint, "--target", "cuda", "--out", str(out)]) == 0
    return out


def test_every_node_runs_on_cuda_and_matches_the_cpu(cuda_artifact):
    gpu = Runtime(Settings(model_path=cuda_artifact, device="cuda"))
    assert gpu.placement.provider == CUDA and set(gpu.placement.nodes) == {CUDA}
    cpu = Runtime(Settings(model_path=ARTIFACT, device="cpu"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(72, 64, 1)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (cpu.meta.num_layers, 64, cpu.meta.hidden_size)).astype("f4")
    lens = rng.integers(1, 73, 64).astype(np.int32)
    (yg, hg, _), (yc, hc, _) = gpu.run(x, h0, lens), cpu.run(x, h0, lens)
    valid = np.arange(72)[:, None] < lens[None, :]
    err = max(np.abs(yg - yc)[valid].max(), np.abs(hg - hc).max())
    print(f"CUDA vs CPU max abs error {err:.2e}")
    assert err <= GPU_TOL


def test_device_states_stay_on_the_gpu(cuda_artifact):
    gpu = Runtime(Settings(model_path=cuda_artifact, device="cuda"))
    cpu = Runtime(Settings(model_path=ARTIFACT, device="cpu"))
    states = DeviceState(gpu.session, gpu.meta, slots=256)
    assert states.device == "cuda"
    slots = [states.allocate() for _ in range(256)]
    pointer = states.buffer.data_ptr()
    rng = np.random.default_rng(1)
    h = np.zeros((cpu.meta.num_layers, 256, cpu.meta.hidden_size), np.float32)
    for _ in range(20):
        x = rng.normal(size=(1, 256, 1)).astype(np.float32)
        y = states.step(x, slots)
        yc, h, _ = cpu.run(x, h, np.ones(256, np.int32))
        assert np.abs(y - yc).max() <= GPU_TOL
    assert states.buffer.data_ptr() == pointer
    assert np.abs(states.read(slots) - h).max() <= GPU_TOL


def test_the_cpu_graph_is_refused_for_device_cuda():
    with pytest.raises(DeviceError, match="--target cuda"):
        Runtime(Settings(model_path=ARTIFACT, device="cuda"))
    auto = Runtime(Settings(model_path=ARTIFACT, device="auto"))
    assert auto.placement.provider == CPU


def test_the_service_keeps_stream_states_on_the_gpu(cuda_artifact):
    """Through WS /v1/stream on CUDA: the sessions' states live in the device buffer, no
    step copies one to the host, and the outputs are the CPU service's."""
    from fastapi.testclient import TestClient
    from service_helpers import wait_ready

    from service.app import create_app

    history = [float(v) for v in np.sin(np.arange(72) / 5.0) * 10 + 50]
    steps = [50.0 + 3 * np.cos(k / 3.0) for k in range(40)]
    outputs = {}
    for device, path in (("cuda", cuda_artifact), ("cpu", ARTIFACT)):
        settings = Settings(model_path=path, device=device, access_log=False)
        with TestClient(create_app(settings)) as client:
            wait_ready(client)
            (info,) = client.get("/v1/models").json()["models"]
            (served,) = client.app.state.service.served()
            states = served.core.device_states
            ys = []
            with (
                client.websocket_connect("/v1/stream") as a,
                client.websocket_connect("/v1/stream") as b,
            ):
                for ws in (a, b):
                    ws.send_json({"type": "start", "history": history})
                    assert ws.receive_json()["type"] == "ready"
                for x in steps:
                    for ws in (a, b):
                        ws.send_json({"type": "step", "x": x})
                    ys.append([a.receive_json()["y"], b.receive_json()["y"]])
                if device == "cuda":
                    assert info["stream_states"] == "device" and states.device == "cuda"
                    assert set(info["nodes"]) == {CUDA}
                    # two states entered the buffer (the starts), none came back per step
                    assert (states.uploads, states.reads, states.in_use) == (2, 0, 2)
                else:
                    assert info["stream_states"] == "host" and states is None
            outputs[device] = np.array(ys)
    err = np.abs(outputs["cuda"] - outputs["cpu"]).max() / np.abs(outputs["cpu"]).max()
    print(f"stream outputs, CUDA vs CPU service: max relative error {err:.2e}")
    assert err <= GPU_TOL
