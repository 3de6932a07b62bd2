"""Scaling and forecasting the way the service does it."""

from __future__ import annotations

import numpy as np
import torch

from export.contract import Scaler
from model.gru import GRUConfig, GRUForecaster
from model.windows import fit_scaler, forecast, rollout, sample_batch, scaled_pair


def test_torch_scaler_matches_contract_scaler():
    rng = np.random.default_rng(0)
    hist = rng.normal(5.0, 3.0, size=(4, 30))
    hist[2] = 7.0  # constant: the floor keeps it finite
    scaler = Scaler(min_scale=1e-3)
    loc, scale = fit_scaler(torch.tensor(hist), scaler)
    for i in range(4):
        ref_loc, ref_scale = scaler.fit(hist[i].reshape(-1, 1))
        assert abs(loc[i, 0].item() - ref_loc[0]) < 1e-5
        assert abs(scale[i, 0].item() - ref_scale[0]) < 1e-5
    assert scale[2, 0].item() == 1e-3


def test_scaled_pair_fits_on_history_only():
    hist = np.array([[1.0, 2.0, 3.0]])
    target = np.array([[4.0, 10.0]])
    x, y = scaled_pair(hist, target, Scaler())
    std = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(x.numpy(), [[-1 / std, 0.0, 1 / std]], rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), [[2 / std, 8 / std]], rtol=1e-6)


def test_sample_batch_draws_contiguous_windows_from_training_parts():
    trains = [np.arange(100.0), 1000 + np.arange(40.0)]
    ctx, hist, target = sample_batch(trains, 32, 8, 20, 5, np.random.default_rng(1))
    assert 8 <= ctx <= 20 and hist.shape == (32, ctx) and target.shape == (32, 5)
    full = np.concatenate([hist, target], axis=1)
    assert np.all(np.diff(full, axis=1) == 1.0)  # contiguous, target right after history
    assert full.max() < 1040 and (full < 100).sum() + (full >= 1000).sum() == full.size


def test_padded_forecast_equals_forecast_alone():
    torch.manual_seed(0)
    model = GRUForecaster(GRUConfig(1, 8, 2, 1, 0.0, "cho2014")).eval()
    rng = np.random.default_rng(0)
    short, long = rng.normal(size=7), rng.normal(size=30)
    both, _, _ = forecast(model, [short, long], 5, Scaler())
    alone, _, _ = forecast(model, [short], 5, Scaler())
    np.testing.assert_allclose(both[0], alone[0], atol=1e-5)
    # and equals the model's own no-grad rollout in scaled space
    loc, scale = Scaler().fit(short.reshape(-1, 1))
    x = torch.tensor(((short - loc) / scale).reshape(1, -1, 1), dtype=torch.float32)
    ref = model.rollout(x, 5)[0, :, 0].numpy() * scale[0] + loc[0]
    np.testing.assert_allclose(alone[0], ref, atol=1e-5)
    _, pred = rollout(model, x[..., 0], 5)
    np.testing.assert_allclose(pred.detach().numpy()[0] * scale[0] + loc[0], ref, atol=1e-5)
