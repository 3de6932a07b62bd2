"""PyTorch module == onnxruntime (CPU EP) == plain NumPy of the docs/design.md formulas."""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import TOL, reference_params, run_three, session_for, torch_model
from reference import forecaster

from export.contract import INPUT_H0, INPUT_LENS, INPUT_X, OUTPUT_HN, OUTPUT_HSEQ
from export.verify import max_abs_error, random_batch
from model.ensemble import combine

VARIANTS = ["cho2014", "cudnn"]


@pytest.fixture(
    scope="module",
    params=[(v, k) for k in (1, 3) for v in VARIANTS],
    ids=lambda p: f"{p[0]}-{p[1]}member{'s' * (p[1] > 1)}",
)
def pair(request):
    """(torch module, onnxruntime session) of one variant, shared by the module's tests: one
    GRU, or an ensemble of 3 combined block-diagonally (exported as a GRU node per member)."""
    variant, k = request.param
    if k == 1:
        model = torch_model(variant, input_size=2, output_size=2)
    else:
        members = [
            torch_model(variant, input_size=2, hidden_size=6, output_size=2, seed=s)
            for s in range(k)
        ]
        model = combine(members)
    return model, session_for(model)


def assert_three_agree(model, session, x, h0, lengths) -> dict[str, float]:
    torch_out, ort_out, ref_out = run_three(model, session, x, h0, lengths)
    errors = {
        "torch-onnx": max_abs_error(torch_out, ort_out, lengths),
        "torch-numpy": max_abs_error(torch_out, ref_out, lengths),
        "onnx-numpy": max_abs_error(ort_out, ref_out, lengths),
    }
    print(f"{model.config.variant} B={len(lengths)} T={x.shape[1]} {errors}")
    assert all(e <= TOL for e in errors.values()), errors
    return errors


@pytest.mark.parametrize("steps", [1, 7, 200])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_torch_onnx_numpy_agree(pair, batch, steps):
    """Random initial states; with batch > 1 the rows have mixed lengths (row 0 full, last 1)."""
    model, session = pair
    c = model.config
    x, h0, lengths = random_batch(
        c.input_size, c.num_layers, c.hidden_size, batch, steps, seed=batch + steps
    )
    assert_three_agree(model, session, x, h0, lengths)


def test_state_and_output_move_with_the_input(pair):
    """Guards the parity tests against passing vacuously (e.g. all outputs constant)."""
    model, session = pair
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, 4, 7, seed=1)
    torch_out, _, _ = run_three(model, session, x, h0, lengths)
    y, h_n = torch_out
    assert np.std(y[0]) > 1e-2
    assert np.abs(h_n[:, 0] - h_n[:, 1]).max() > 1e-2


@pytest.mark.parametrize("batch", [3, 64])
def test_padded_row_equals_row_alone(pair, batch):
    """A row shorter than the batch's T gives the same y (valid steps) and h_n as run alone,
    whatever garbage sits in its padding."""
    model, session = pair
    c = model.config
    T = 200
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, batch, T, seed=7)
    for b in range(batch):
        x[b, lengths[b] :] = 1e3  # padding must not leak into the state
    batched = run_three(model, session, x, h0, lengths)
    for b in {0, 1, batch // 2, batch - 1}:
        n = int(lengths[b])
        alone = run_three(model, session, x[b : b + 1, :n], h0[:, b : b + 1], lengths[b : b + 1])
        for (y_all, h_all), (y_one, h_one) in zip(batched, alone, strict=True):
            assert np.abs(y_all[b, :n] - y_one[0]).max() <= TOL
            assert np.abs(h_all[:, b] - h_one[:, 0]).max() <= TOL


def test_dynamic_time_and_batch_axes(pair):
    """One session serves different T and B without being rebuilt."""
    model, session = pair
    c = model.config
    for batch, steps in [(2, 5), (9, 31)]:
        x, h0, lengths = random_batch(
            c.input_size, c.num_layers, c.hidden_size, batch, steps, seed=steps
        )
        torch_out, ort_out, _ = run_three(model, session, x, h0, lengths)
        assert ort_out[0].shape == (batch, steps, c.output_size)
        assert ort_out[1].shape == (c.num_layers, batch, c.hidden_size)
        assert max_abs_error(torch_out, ort_out, lengths) <= TOL


def test_reference_catches_the_wrong_variant():
    """The NumPy twin is a real witness: read with the other variant's formulas, the same
    weights give clearly different outputs (the bug docs/design.md warns about)."""
    model = torch_model("cho2014")
    other = torch_model("cudnn")
    other.load_state_dict(model.state_dict())
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, 3, 20, seed=3)
    a, _, _ = run_three(model, session_for(model), x, h0, lengths)
    b, _, _ = run_three(other, session_for(other), x, h0, lengths)
    assert max_abs_error(a, b, lengths) > 1e-2


def test_h_seq_holds_every_layers_state_at_valid_steps(pair):
    """The h_seq output ([T, L, B, H]) equals the NumPy states per step and layer; zero past
    a row's length (the contract), and its last valid step is h_n."""
    model, session = pair
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, 5, 30, seed=11)
    layers, W, b = reference_params(model)
    _, _, ref_states = forecaster(layers, W, b, x, h0, lengths, c.variant, return_states=True)
    feeds = {
        INPUT_X: np.ascontiguousarray(x.transpose(1, 0, 2)),
        INPUT_H0: h0,
        INPUT_LENS: lengths,
    }
    h_seq, h_n = session.run([OUTPUT_HSEQ, OUTPUT_HN], feeds)
    h_seq = h_seq.transpose(2, 0, 1, 3)  # (B, T, L, H)
    assert h_seq.shape == (5, 30, c.num_layers, c.hidden_size)
    for row, n in enumerate(lengths):
        assert np.abs(h_seq[row, :n] - ref_states[row, :n]).max() <= TOL
        assert np.all(h_seq[row, n:] == 0)
        assert np.abs(h_seq[row, n - 1] - h_n[:, row]).max() <= TOL
