"""Forecast windows, scaled exactly as the service scales a request.

The service standardises each series with `export.contract.Scaler` fitted on the whole
history a request sends, runs the GRU from a zero state over that history, then feeds
its predictions back. Training and evaluation go through the same three steps here.
"""

from __future__ import annotations

import numpy as np
import torch

from export.contract import Scaler
from model.gru import GRUForecaster


def fit_scaler(history: torch.Tensor, scaler: Scaler) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch twin of Scaler.fit for a batch: history (B, T) -> loc (B, 1), scale (B, 1)."""
    loc = history.mean(dim=1, keepdim=True)
    scale = history.std(dim=1, unbiased=False, keepdim=True).clamp_min(scaler.min_scale)
    return loc, scale


def rollout(
    model: GRUForecaster, x: torch.Tensor, horizon: int, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable free-running forecast from a zero state.

    x (B, T) scaled history, right-padded when `lengths` (B,) is given ->
    (one-step predictions over the history (B, T), forecast (B, horizon)).
    """
    y, h = model(x.unsqueeze(-1), None, lengths)  # (B, T, 1), (L, B, H)
    y = y.squeeze(-1)
    # head output at each row's last real step (padding comes after it)
    step = y[:, -1:] if lengths is None else y.gather(1, (lengths - 1).unsqueeze(1))
    preds = [step]
    for _ in range(horizon - 1):
        out, h = model(step.unsqueeze(-1), h)
        step = out.squeeze(-1)
        preds.append(step)
    return y, torch.cat(preds, dim=1)


def sample_batch(
    trains: list[np.ndarray],
    batch: int,
    min_ctx: int,
    max_ctx: int,
    horizon: int,
    rng: np.random.Generator,
) -> tuple[int, np.ndarray, np.ndarray]:
    """Random training windows with one shared context length (no padding needed).

    Series are drawn uniformly, not by length, so weekly co2 does not drown the yearly ones.
    Returns (context length, history (B, L), target (B, horizon)) in raw units.
    """
    longest = max(len(t) for t in trains) - horizon
    ctx = int(rng.integers(min_ctx, min(max_ctx, longest) + 1))
    usable = [t for t in trains if len(t) >= ctx + horizon]
    hist = np.empty((batch, ctx))
    target = np.empty((batch, horizon))
    for i, k in enumerate(rng.integers(0, len(usable), size=batch)):
        t = usable[k]
        end = int(rng.integers(ctx, len(t) - horizon + 1))
        hist[i] = t[end - ctx : end]
        target[i] = t[end : end + horizon]
    return ctx, hist, target


def scaled_pair(hist: np.ndarray, target: np.ndarray, scaler: Scaler):
    """Raw (B, L), (B, H) -> scaled tensors, the scaler fitted on the history only."""
    h = torch.as_tensor(hist, dtype=torch.float32)
    loc, scale = fit_scaler(h, scaler)
    t = torch.as_tensor(target, dtype=torch.float32)
    return (h - loc) / scale, (t - loc) / scale


@torch.no_grad()
def forecast(
    model: GRUForecaster, histories: list[np.ndarray], horizon: int, scaler: Scaler
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Serve-style forecasts for histories of any lengths.

    Returns (point forecasts in raw units (N, horizon), loc (N,), scale (N,)).
    """
    model.eval()
    n, longest = len(histories), max(len(h) for h in histories)
    x = np.zeros((n, longest), dtype=np.float32)
    locs, scales = np.empty(n, np.float32), np.empty(n, np.float32)
    for i, h in enumerate(histories):
        loc, scale = scaler.fit(np.asarray(h, dtype=np.float64).reshape(-1, 1))
        locs[i], scales[i] = loc[0], scale[0]
        x[i, : len(h)] = (h - loc[0]) / scale[0]
    lengths = torch.as_tensor([len(h) for h in histories])
    _, pred = rollout(model, torch.from_numpy(x), horizon, lengths)
    return pred.numpy() * scales[:, None] + locs[:, None], locs, scales
