"""Stream states in one slot buffer [layers, slots, H] (service/device_state.py), on the CPU
provider: every stream's outputs and states equal the reference run over its own history, in
whatever order and company its steps come; the buffer never moves or leaves the device."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
from service_helpers import Reference, tiny_meta

from export.cuda_graph import build_cuda_model
from export.graph import build_model, random_weights
from service.device_state import DeviceState, SlotsExhausted

TOL = 1e-5


def session(meta) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    build = build_cuda_model if meta.target == "cuda" else build_model
    data = build(random_weights(meta, seed=4), meta).SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


@pytest.fixture(params=["cho2014", "cudnn"])
def setup(request):
    meta = replace(tiny_meta(request.param), target="cuda")
    return DeviceState(session(meta), meta, slots=6), Reference(tiny_meta(request.param), seed=4)


class Streams:
    """What each stream has seen, to replay it through the reference in one run."""

    def __init__(self, ref: Reference) -> None:
        self.ref, self.seen, self.h0 = ref, {}, {}

    def start(self, slot: int, h0: np.ndarray) -> None:
        self.seen[slot], self.h0[slot] = [], h0

    def add(self, slot: int, values) -> None:
        self.seen[slot].extend(values)

    def expected(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.array(self.seen[slot], np.float32)[:, None]
        y, h, _ = self.ref.run(x, self.h0[slot])
        return y, h


def test_steps_in_any_order_and_company_match_the_reference(setup):
    states, ref = setup
    streams = Streams(ref)
    rng = np.random.default_rng(0)
    slots = []
    for k in range(4):
        h0 = None if k % 2 == 0 else rng.uniform(-1, 1, (2, 8)).astype(np.float32)
        slot = states.allocate(h0)
        streams.start(slot, np.zeros((2, 8)) if h0 is None else h0)
        slots.append(slot)
    pointer = states.buffer.data_ptr()
    for step in range(12):
        active = list(rng.permutation(slots)[: rng.integers(1, len(slots) + 1)])
        T = int(rng.integers(1, 4))
        x = rng.normal(size=(T, len(active), 1)).astype(np.float32)
        lens = rng.integers(1, T + 1, size=len(active)).astype(np.int32)
        y = states.step(x, active, lens)
        assert y.shape == (T, len(active), 1)
        for b, slot in enumerate(active):
            streams.add(slot, x[: lens[b], b, 0])
            ry, _ = streams.expected(slot)
            assert np.abs(y[lens[b] - 1, b] - ry[-1]).max() <= TOL, (step, slot)
    assert states.buffer.data_ptr() == pointer  # updated in place, never reallocated
    got = states.read(slots)
    for b, slot in enumerate(slots):
        assert np.abs(got[:, b] - streams.expected(slot)[1]).max() <= TOL


def test_load_release_and_reuse(setup):
    states, ref = setup
    a, b = states.allocate(), states.allocate()
    x = np.full((1, 2, 1), 0.5, np.float32)
    states.step(x, [a, b])
    resumed = np.full((2, 8), 0.25, np.float32)
    states.load(a, resumed)  # e.g. a resume token's state
    assert np.array_equal(states.read([a])[:, 0], resumed)  # staged, read back as given
    y = states.step(x[:, :1], [a])
    ry, rh, _ = ref.run(x[:, 0], resumed)
    assert np.abs(y[0, 0] - ry[-1]).max() <= TOL
    assert np.abs(states.read([a])[:, 0] - rh).max() <= TOL
    states.release(b)
    assert states.in_use == 1
    c = states.allocate()  # a new stream in b's old slot starts from zeros, not b's state
    assert c == b and np.array_equal(states.read([c]), np.zeros((2, 1, 8), np.float32))
    y = states.step(x[:, :1], [c])
    assert np.abs(y[0, 0] - ref.run(x[:, 0])[0][-1]).max() <= TOL


def test_capacity_and_bad_calls(setup):
    states, _ = setup
    slots = [states.allocate() for _ in range(states.capacity)]
    assert states.capacity == 6 and sorted(slots) == list(range(6))
    with pytest.raises(SlotsExhausted):
        states.allocate()
    states.release(slots[0])
    with pytest.raises(ValueError, match=r"slot\(s\) \[0\] hold no stream"):
        states.step(np.zeros((1, 1, 1), np.float32), [slots[0]])
    with pytest.raises(ValueError, match="twice"):
        states.step(np.zeros((1, 2, 1), np.float32), [slots[1], slots[1]])
    with pytest.raises(ValueError, match="x has 1 rows for 2 slots"):
        states.step(np.zeros((1, 1, 1), np.float32), [slots[1], slots[2]])
    with pytest.raises(ValueError, match=r"state shape \(8,\)"):
        states.load(slots[1], np.zeros(8))
    assert states.read([]).shape == (2, 0, 8)


def test_needs_the_slot_inputs_of_a_cuda_target_artifact():
    meta = tiny_meta("cho2014")
    with pytest.raises(ValueError, match="--target cuda"):
        DeviceState(session(meta), meta, slots=4)
    cuda = replace(meta, target="cuda")
    with pytest.raises(ValueError, match="slots must be >= 1"):
        DeviceState(session(cuda), cuda, slots=0)
