"""An ensemble combined into one block-diagonal GRU computes each member exactly."""

from __future__ import annotations

import pytest
import torch

from model.ensemble import combine
from model.gru import GRUConfig, GRUForecaster


def _members(k: int, layers: int, variant: str) -> list[GRUForecaster]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(GRUForecaster(GRUConfig(1, 5, layers, 1, 0.0, variant)).eval())
    return out


@pytest.mark.parametrize("variant", ["cho2014", "cudnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_combined_output_is_the_members_mean_and_state_their_concatenation(variant, layers):
    members = _members(3, layers, variant)
    model = combine(members)
    assert model.config.hidden_size == 15 and model.config.num_layers == layers
    torch.manual_seed(9)
    x = torch.randn(4, 11, 1)  # (B, T, F): the same inputs for every member
    with torch.no_grad():
        y, h = model(x)
        outs = [m(x) for m in members]
    expected_y = torch.stack([o[0] for o in outs]).mean(dim=0)
    torch.testing.assert_close(y, expected_y, atol=1e-6, rtol=0)
    # member m's state is units [5m, 5m + 5) of every layer
    torch.testing.assert_close(h, torch.cat([o[1] for o in outs], dim=2), atol=1e-6, rtol=0)


def test_combined_rollout_feeds_back_the_ensemble_mean():
    members = _members(2, 1, "cho2014")
    model = combine(members)
    torch.manual_seed(3)
    history = torch.randn(2, 9, 1)
    with torch.no_grad():
        pred = model.rollout(history, 3)
        # by hand: each step, every member reads the previous ensemble mean
        states = [m(history)[1] for m in members]
        step = torch.stack([m(history)[0][:, -1:] for m in members]).mean(dim=0)
        expected = [step]
        for _ in range(2):
            outs = [m(step, h) for m, h in zip(members, states, strict=True)]
            states = [o[1] for o in outs]
            step = torch.stack([o[0] for o in outs]).mean(dim=0)
            expected.append(step)
    torch.testing.assert_close(pred, torch.cat(expected, dim=1), atol=1e-6, rtol=0)


def test_members_of_different_sizes_are_refused():
    a = GRUForecaster(GRUConfig(1, 4, 1, 1))
    b = GRUForecaster(GRUConfig(1, 5, 1, 1))
    with pytest.raises(ValueError, match="share sizes"):
        combine([a, b])
