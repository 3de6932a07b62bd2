"""WS /v1/stream with the states in the device slot buffer (stream_states=device), on the CPU
provider with a cuda-target artifact: the same answers as host states (every test of
test_stream.py runs again here), and a step copies no state between host and buffer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import test_stream
from service_helpers import Reference, write_tiny_artifact
from test_stream import HISTORY, STEPS, expected_outputs, start, step_all

from service.core import InferenceCore
from service.runtime import ArtifactError, Runtime
from service.settings import Settings

# Every test of test_stream.py, here on device states. The one that serves a second, cpu-target
# artifact is left out: device states need a cuda-target one (test below).
for _name in dir(test_stream):
    if _name.startswith("test_") and _name != "test_stream_token_of_other_model_version_is_refused":
        globals()[_name] = getattr(test_stream, _name)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny artifact's cuda-target graph: the same weights, so the same reference."""
    out = tmp_path_factory.mktemp("cuda") / "tiny-cuda.onnx"
    return write_tiny_artifact(out, target="cuda")


@pytest.fixture
def make_settings(tiny_artifact: Path):
    def make(**overrides) -> Settings:
        fields = {
            "model_path": tiny_artifact,
            "device": "cpu",
            "access_log": False,
            "stream_states": "device",
        }
        fields.update(overrides)
        return Settings(**fields)

    return make


def device_states(client):
    (served,) = client.app.state.service.served()
    states = served.core.device_states
    assert states is not None
    return states


def test_steps_copy_no_state_and_match_the_reference(client, tiny_reference: Reference):
    states = device_states(client)
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        outs = step_all(ws, STEPS)
        # The start's state entered the buffer once; no step read one back.
        assert (states.uploads, states.reads, states.in_use) == (1, 0, 1)
        got = np.array([o["y"] for o in outs])
        want = expected_outputs(tiny_reference, HISTORY, STEPS)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        ws.send_json({"type": "state"})  # asked for: one read
        assert ws.receive_json()["type"] == "state"
        assert states.reads == 1
    assert states.in_use == 0  # the closed session gave its slot back


def test_sessions_that_want_states_every_step_keep_them_on_the_host(client, tiny_reference):
    states = device_states(client)
    with (
        client.websocket_connect("/v1/stream") as host,
        client.websocket_connect("/v1/stream") as device,
    ):
        start(host, history=HISTORY, options={"return_hidden": True})
        start(device, history=HISTORY)
        assert states.in_use == 1
        for x in STEPS:  # interleaved: slot rows and host rows share the batcher
            host.send_json({"type": "step", "x": x})
            device.send_json({"type": "step", "x": x})
            a, b = host.receive_json(), device.receive_json()
            assert a["y"] == pytest.approx(b["y"], abs=1e-6)
            assert np.asarray(a["h"]).shape == (2, 8)
    assert states.in_use == 0


def test_a_slot_is_freed_when_the_start_fails(client):
    states = device_states(client)
    with client.websocket_connect("/v1/stream") as ws:
        # a slot is taken, then the history scaled by this tiny scale leaves float32
        scaling = {"loc": [0.0], "scale": [1e-30]}
        ws.send_json({"type": "start", "history": [1e10, 2e10], "scaling": scaling})
        assert ws.receive_json()["type"] == "error"
        assert states.in_use == 0
        start(ws, history=HISTORY)
        assert states.in_use == 1


def test_device_states_need_a_cuda_target_artifact(tmp_path):
    cpu_graph = write_tiny_artifact(tmp_path / "cpu.onnx")
    settings = Settings(model_path=cpu_graph, device="cpu", stream_states="device")
    with pytest.raises(ArtifactError, match="--target cuda"):
        InferenceCore(Runtime(settings), settings)


def test_auto_keeps_states_on_the_host_off_cuda(tiny_artifact):
    settings = Settings(model_path=tiny_artifact, device="cpu")  # stream_states=auto
    assert InferenceCore(Runtime(settings), settings).device_states is None
