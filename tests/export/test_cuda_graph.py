"""The cuda target: the same function as the GRU-node graph and the NumPy reference, every
node one the CUDA provider runs, and the slot buffer's gather and scatter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import TOL, meta_for, reference_params, run_reference, session_for, torch_model
from reference import forecaster

from bench.gpu import host_loop
from export.checkpoint_weights import weights_from_model
from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_READ_SLOTS,
    INPUT_STATE,
    INPUT_WRITE_ROWS,
    INPUT_WRITE_SLOTS,
    INPUT_X,
    OUTPUT_HN,
    OUTPUT_HSEQ,
    OUTPUT_STATE,
    OUTPUT_Y,
    ArtifactMeta,
    empty_slot_feeds,
)
from export.cuda_graph import build_cuda_model
from export.cuda_kernels import unsupported_nodes
from export.graph import build_model
from export.verify import max_abs_error, random_batch, run_onnx

VARIANTS = ["cho2014", "cudnn"]


def cuda_proto(model, recurrence: str = "scan", **meta) -> onnx.ModelProto:
    return build_cuda_model(
        weights_from_model(model), replace(meta_for(model, **meta), target="cuda"), recurrence
    )


def quiet_session(proto: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=VARIANTS)
def trio(request):
    """(torch module, GRU-node session, cuda-graph session) of one variant."""
    model = torch_model(request.param, input_size=2, output_size=2)
    return model, session_for(model), quiet_session(cuda_proto(model))


def all_outputs(session, x, h0, lengths) -> tuple[np.ndarray, ...]:
    """y, h_n, h_seq at every step (past each row's length too), time-major."""
    feeds = {INPUT_X: np.ascontiguousarray(x.transpose(1, 0, 2)), INPUT_H0: h0, INPUT_LENS: lengths}
    if INPUT_STATE in {i.name for i in session.get_inputs()}:
        feeds.update(empty_slot_feeds(h0.shape[0], h0.shape[2]))
    return tuple(session.run([OUTPUT_Y, OUTPUT_HN, OUTPUT_HSEQ], feeds))


@pytest.mark.parametrize("steps", [1, 7, 200])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_cuda_graph_equals_gru_node_graph_and_reference(trio, batch, steps):
    """Random initial states; with batch > 1 the rows have mixed lengths (row 0 full, last 1)."""
    model, gru_node, cuda = trio
    c = model.config
    x, h0, lengths = random_batch(
        c.input_size, c.num_layers, c.hidden_size, batch, steps, seed=batch * steps + 1
    )
    ours = run_onnx(cuda, x, h0, lengths)
    errors = {
        "cuda-gru_node": max_abs_error(ours, run_onnx(gru_node, x, h0, lengths), lengths),
        "cuda-numpy": max_abs_error(ours, run_reference(model, x, h0, lengths), lengths),
    }
    print(f"{c.variant} B={batch} T={steps} {errors}")
    assert all(e <= TOL for e in errors.values()), errors


def test_past_a_rows_length_the_graphs_agree_everywhere(trio):
    """Mixed lengths mirror the GRU node exactly: past its length a row keeps its state, its
    h_seq is zero and y is the head of zeros (the head's bias), in both graphs."""
    model, gru_node, cuda = trio
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, 6, 40, seed=4)
    x[1, lengths[1] :] = 1e3  # padding must not leak
    y_a, hn_a, seq_a = all_outputs(cuda, x, h0, lengths)
    y_b, hn_b, seq_b = all_outputs(gru_node, x, h0, lengths)
    assert np.abs(y_a - y_b).max() <= TOL and np.abs(hn_a - hn_b).max() <= TOL
    assert np.abs(seq_a - seq_b).max() <= TOL
    short = int(np.argmin(lengths))
    assert lengths[short] < 40
    assert np.all(seq_a[lengths[short] :, :, short] == 0)
    bias = model.head.bias.detach().numpy()
    assert np.abs(y_a[lengths[short] :, short] - bias).max() <= TOL
    layers, W, b = reference_params(model)
    _, _, states = forecaster(layers, W, b, x, h0, lengths, c.variant, return_states=True)
    for row, n in enumerate(lengths):
        assert np.abs(seq_a[:n, :, row] - states[row, :n]).max() <= TOL


def test_the_check_is_not_vacuous(trio):
    """The outputs move with the input, and the other variant's graph is clearly different."""
    model, _, cuda = trio
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, 4, 20, seed=3)
    y, h_n = run_onnx(cuda, x, h0, lengths)
    assert np.std(y[0]) > 1e-2 and np.abs(h_n[:, 0] - h_n[:, 1]).max() > 1e-2
    other = torch_model("cudnn" if c.variant == "cho2014" else "cho2014", 2, 16, 2, 2)
    other.load_state_dict(model.state_dict())
    wrong = run_onnx(quiet_session(cuda_proto(other)), x, h0, lengths)
    assert max_abs_error(wrong, run_reference(model, x, h0, lengths), lengths) > 1e-2


@pytest.mark.parametrize("recurrence", ["loop", "step"])
def test_the_measured_alternatives_compute_the_same(trio, recurrence):
    """Loop (one run) and the host loop over the one-step graph: the same numbers."""
    model, _, _ = trio
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, 5, 30, seed=9)
    session = quiet_session(cuda_proto(model, recurrence))
    if recurrence == "loop":
        out = run_onnx(session, x, h0, lengths)
    else:
        y, h_n = host_loop(session, np.ascontiguousarray(x.transpose(1, 0, 2)), h0, lengths)
        out = (y.transpose(1, 0, 2), h_n)
    assert max_abs_error(out, run_reference(model, x, h0, lengths), lengths) <= TOL


def test_every_node_is_one_the_cuda_provider_runs():
    """Checked against onnxruntime's CUDA kernel list (export/cuda_kernels.py), Scan bodies
    included; the same check flags the cpu target's cho2014 GRU node and the Loop form's
    host-side trip count, so it can fail."""
    for variant in VARIANTS:
        for layers in (1, 3):
            model = torch_model(variant, num_layers=layers)
            proto = cuda_proto(model)
            assert [n.op_type for n in proto.graph.node].count("Scan") == layers
            assert not [n for n in proto.graph.node if n.op_type in ("GRU", "Shape", "Loop")]
            assert unsupported_nodes(proto) == []
    cho = torch_model("cho2014")
    flagged = unsupported_nodes(build_model(weights_from_model(cho), meta_for(cho)))
    assert len(flagged) == 2 and all("linear_before_reset=1" in f for f in flagged)
    assert unsupported_nodes(cuda_proto(cho, "loop")) == [
        "node 4 (Gather): onnxruntime moves it to the CPU (a shape computation)"
    ]


def test_cuda_metadata_is_the_cpu_metadata_plus_target():
    model = torch_model("cho2014")
    extra = {"context_length": 24, "frequencies": ("monthly",)}
    cpu = build_model(weights_from_model(model), meta_for(model, **extra))
    cpu_props = {p.key: p.value for p in cpu.metadata_props}
    cuda_props = {p.key: p.value for p in cuda_proto(model, **extra).metadata_props}
    assert cuda_props.pop("gru_serve.target") == '"cuda"'
    assert cuda_props == cpu_props
    assert ArtifactMeta.from_props(cpu_props).target == "cpu"  # absent: the cpu target


def test_refuses_metadata_of_another_target():
    model = torch_model("cho2014")
    with pytest.raises(ValueError, match="target 'cuda'"):
        build_cuda_model(weights_from_model(model), meta_for(model))
    with pytest.raises(ValueError, match="recurrence 'while'"):
        cuda_proto(model, "while")


def test_slot_buffer_gathers_and_scatters(trio):
    """Rows start from h0's rows then from read_slots; h_n row write_rows[k] lands in slot
    write_slots[k]; other slots are untouched."""
    model, _, cuda = trio
    c = model.config
    L, H, S = c.num_layers, c.hidden_size, 6
    rng = np.random.default_rng(2)
    state = rng.uniform(-1, 1, (L, S, H)).astype(np.float32)
    fresh = rng.uniform(-1, 1, (L, 1, H)).astype(np.float32)
    x, _, lengths = random_batch(c.input_size, L, H, 3, 9, seed=6)
    read, write = np.array([4, 1], np.int64), np.array([0, 4, 1], np.int64)
    feeds = {
        INPUT_X: np.ascontiguousarray(x.transpose(1, 0, 2)),
        INPUT_H0: fresh,
        INPUT_LENS: lengths,
        INPUT_STATE: state,
        INPUT_READ_SLOTS: read,
        INPUT_WRITE_SLOTS: write,
        INPUT_WRITE_ROWS: np.arange(3, dtype=np.int64),
    }
    y, state_out = cuda.run([OUTPUT_Y, OUTPUT_STATE], feeds)
    start = np.concatenate([fresh, state[:, read]], axis=1)
    ref_y, ref_h = run_reference(model, x, start, lengths)
    expected = state.copy()
    expected[:, write] = ref_h
    assert np.abs(state_out - expected).max() <= TOL
    for row, n in enumerate(lengths):
        assert np.abs(y[:n, row] - ref_y[row, :n]).max() <= TOL
    untouched = [s for s in range(S) if s not in write]
    assert np.array_equal(state_out[:, untouched], state[:, untouched])
