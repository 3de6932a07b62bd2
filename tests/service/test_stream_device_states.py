"""WS /v1/stream with the states in the device slot buffer (stream_states=device), on the CPU
provider with a cuda-target artifact: the same answers as host states (every test of
test_stream.py runs again here), and a step copies no state between host and buffer."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import test_stream
from service_helpers import Reference, write_tiny_artifact
from test_stream import HISTORY, STEPS, expected_outputs, start, step_all

from service.batching import _Job
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


def test_a_slot_outlives_the_run_of_a_cancelled_step(tmp_path):
    """A client leaves while its step sits in the worker's run: the slot is given back only
    after that run, so the batch's other rows are served and the next stream in that slot
    starts from its own state."""
    settings = Settings(
        model_path=write_tiny_artifact(tmp_path / "c.onnx", target="cuda"),
        device="cpu",
        stream_states="device",
        max_sessions=4,
    )

    async def scenario():
        core = InferenceCore(Runtime(settings), settings)
        await core.start()
        states = core.device_states
        a, b = states.allocate(), states.allocate()
        one = np.ones((1, 1), np.float32)
        gate = threading.Event()
        core.batcher._executor.submit(gate.wait)  # hold the worker: the next batch waits
        step_a = asyncio.create_task(core.run_slot(one, a))
        step_b = asyncio.create_task(core.run_slot(one, b))
        rest = asyncio.create_task(core.run_rows([one], [core.zero_state()]))
        await asyncio.sleep(0.05)  # the batch is taken off the queue, its run not started
        assert core.batcher.queued == 0
        step_a.cancel()
        core.release_slot(a)  # what closing the session does
        assert states.in_use == 2  # not yet: a's step is in the run
        gate.set()
        y_b = await step_b
        (r,) = await rest
        assert y_b.shape == (1, 1) and r.y.shape == (1, 1)
        await asyncio.sleep(0.05)
        assert states.in_use == 1
        h = np.full((2, 8), 0.3, np.float32)
        c = states.allocate(h)  # the freed slot, for a resumed stream
        assert c == a and np.array_equal(states.read([c])[:, 0], h)
        await core.stop()

    asyncio.run(scenario())


def test_warm_ups_do_not_pad_the_one_step_rows(tmp_path):
    """Slot rows of very different lengths run separately, like host rows."""
    settings = Settings(
        model_path=write_tiny_artifact(tmp_path / "c.onnx", target="cuda"),
        device="cpu",
        stream_states="device",
    )
    core = InferenceCore(Runtime(settings), settings)
    calls = []
    step = core.device_states.step
    core.batcher._run_slots = lambda x, slots, lens: calls.append(x.shape) or step(x, slots, lens)
    slots = [core.device_states.allocate() for _ in range(3)]
    jobs = [
        _Job(np.ones((n, 1), np.float32), np.zeros((0, 0), np.float32), False, None, slot=s)
        for n, s in zip((1, 500, 1), slots, strict=True)
    ]
    results = core.batcher._step_slots(jobs)
    assert sorted(calls) == [(1, 2, 1), (500, 1, 1)]
    assert [r.y.shape[0] for r in results] == [1, 500, 1]


def test_huge_inputs_over_several_features_move_the_session_to_the_host(make_client, tmp_path):
    """Over several features, inputs near float32's limit could turn a slot's state NaN
    (inf - inf) after the step is refused: such a step runs from the host instead, with the
    host path's answers from then on."""
    path = write_tiny_artifact(tmp_path / "f2.onnx", target="cuda", input_size=2, output_size=2)
    steps = [[[1.0, 2.0]], [[3.0e38, -3.0e38]], [[0.5, 0.5]]]
    answers = {}
    for mode in ("device", "host"):
        client = make_client(model_path=path, stream_states=mode)
        states = client.app.state.service.served()[0].core.device_states
        with client.websocket_connect("/v1/stream") as ws:
            start(ws, scaling={"loc": [0.0, 0.0], "scale": [1.0, 1.0]})
            answers[mode] = []
            for k, x in enumerate(steps):
                ws.send_json({"type": "step", "x": x})
                answers[mode].append(ws.receive_json())
                if mode == "device":
                    assert states.in_use == (1 if k == 0 else 0)  # left at the huge step
    assert answers["device"] == answers["host"]
