"""The GRU cell computes the formulas of docs/design.md exactly, in both variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.gru import GRUConfig, GRUForecaster, GRULayer


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_gru_state_dict_loads_into_cudnn_variant(batch_first):
    torch.manual_seed(0)
    layers, hidden, feat = 3, 16, 4
    ref = torch.nn.GRU(feat, hidden, num_layers=layers, batch_first=batch_first)
    head = torch.nn.Linear(hidden, 2)
    model = GRUForecaster(GRUConfig(feat, hidden, layers, 2, 0.0, "cudnn"))
    model.load_torch_gru(ref.state_dict())
    model.head.load_state_dict(head.state_dict())
    x = torch.randn(5, 9, feat)  # (B, T, F)
    h0 = torch.randn(layers, 5, hidden)
    with torch.no_grad():
        ref_out, ref_h = ref(x if batch_first else x.transpose(0, 1), h0)
        if not batch_first:
            ref_out = ref_out.transpose(0, 1)
        y, h_n = model(x, h0)
        expected_y = head(ref_out)
    assert (y - expected_y).abs().max().item() <= 1e-6
    assert (h_n - ref_h).abs().max().item() <= 1e-6


def test_torch_gru_state_dict_refused_by_cho2014():
    model = GRUForecaster(GRUConfig(1, 4, 1, 1, 0.0, "cho2014"))
    with pytest.raises(ValueError, match="cudnn"):
        model.load_torch_gru(torch.nn.GRU(1, 4).state_dict())


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _layer(variant, seed=3, inp=2, hid=3):
    torch.manual_seed(seed)
    return GRULayer(inp, hid, variant)


def _weights(layer):
    H = layer.hidden_size
    W = layer.weight_ih.detach().double().numpy()
    U = layer.weight_hh.detach().double().numpy()
    bi = layer.bias_ih.detach().double().numpy()
    bh = layer.bias_hh.detach().double().numpy()
    rows = [slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)]  # r, z, n
    return [(W[s], U[s], bi[s], bh[s]) for s in rows]


def test_cho2014_step_matches_hand_computed_formulas():
    layer = _layer("cho2014")
    x = np.array([0.7, -1.2])
    h = np.array([0.3, -0.5, 0.9])
    (Wr, Ur, bir, bhr), (Wz, Uz, biz, bhz), (Wh, Uh, bih, bhh) = _weights(layer)
    r = _sigmoid(Wr @ x + Ur @ h + bir + bhr)
    z = _sigmoid(Wz @ x + Uz @ h + biz + bhz)
    c = np.tanh(Wh @ x + Uh @ (r * h) + bih + bhh)  # reset BEFORE U_h, one summed bias
    expected = (1 - z) * h + z * c  # z near 1 takes the candidate
    out, h_last = layer(
        torch.tensor(x[None, None], dtype=torch.float32), torch.tensor(h[None], dtype=torch.float32)
    )
    assert np.abs(h_last[0].detach().double().numpy() - expected).max() <= 1e-6
    assert np.abs(out[0, 0].detach().double().numpy() - expected).max() <= 1e-6


def test_cudnn_step_matches_hand_computed_formulas_and_differs_from_cho2014():
    x = np.array([0.7, -1.2])
    h = np.array([0.3, -0.5, 0.9])
    layer = _layer("cudnn")
    (Wr, Ur, bir, bhr), (Wz, Uz, biz, bhz), (Wh, Uh, bih, bhh) = _weights(layer)
    r = _sigmoid(Wr @ x + Ur @ h + bir + bhr)
    z = _sigmoid(Wz @ x + Uz @ h + biz + bhz)
    n = np.tanh(Wh @ x + bih + r * (Uh @ h + bhh))
    expected = (1 - z) * n + z * h
    xt, ht = (
        torch.tensor(x[None, None], dtype=torch.float32),
        torch.tensor(h[None], dtype=torch.float32),
    )
    _, h_last = layer(xt, ht)
    assert np.abs(h_last[0].detach().double().numpy() - expected).max() <= 1e-6
    cho = _layer("cho2014")
    _, h_cho = cho(xt, ht)
    assert np.abs(h_cho[0].detach().double().numpy() - expected).max() > 1e-3


@pytest.mark.parametrize("variant", ["cho2014", "cudnn"])
def test_training_gradients_match_finite_differences(variant):
    # Training takes the layer's autograd gradients (steps unbound from one input
    # projection, weights split once): checked against central differences in float64,
    # with rows of different lengths so the masked steps are covered too.
    torch.manual_seed(0)
    layer = GRULayer(2, 3, variant).double()
    x = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])

    names = [n for n, _ in layer.named_parameters()]

    def f(x, h0, *weights):
        params = dict(zip(names, weights, strict=True))
        return torch.func.functional_call(layer, params, (x, h0, lengths))

    weights = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, *weights), eps=1e-6, atol=1e-7)
