"""An independent plain-NumPy GRU forecaster, written from the formulas of docs/design.md
("The GRU, two variants").

It shares no code with model/ or export/ on purpose: it is the third witness in the parity
tests (PyTorch == onnxruntime == this). It works in float64 so its own rounding is far below
the 1e-5 tolerance, and it takes per-gate matrices (W_r, U_r, b_r, ...) exactly as the
formulas name them; `gates_from_pytorch` is the only place that knows PyTorch's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Gates:
    """One layer's parameters named as in the formulas. x-side W_* (H, in), h-side U_* (H, H)."""

    W_r: np.ndarray
    W_z: np.ndarray
    W_h: np.ndarray
    U_r: np.ndarray
    U_z: np.ndarray
    U_h: np.ndarray
    b_r: np.ndarray
    b_z: np.ndarray
    b_h: np.ndarray  # cho2014: the candidate's one bias; cudnn: b_wh (the x-side one)
    b_uh: np.ndarray | None = None  # cudnn only: the bias inside r * (U_h h + b_uh)


def gates_from_pytorch(weight_ih, weight_hh, bias_ih, bias_hh, variant: str) -> Gates:
    """Split PyTorch-layout parameters (rows r, z, n; one bias per side) into named gates."""
    f64 = [np.asarray(a, dtype=np.float64) for a in (weight_ih, weight_hh, bias_ih, bias_hh)]
    (W_r, W_z, W_h), (U_r, U_z, U_h), (bi_r, bi_z, bi_n), (bh_r, bh_z, bh_n) = (
        np.split(a, 3, axis=0) for a in f64
    )
    # r and z see both biases only as a sum, in either variant.
    common = dict(
        W_r=W_r, W_z=W_z, W_h=W_h, U_r=U_r, U_z=U_z, U_h=U_h, b_r=bi_r + bh_r, b_z=bi_z + bh_z
    )
    if variant == "cho2014":
        # reset is applied before U_h, so U_h's bias is outside r and merges with W_h's.
        return Gates(**common, b_h=bi_n + bh_n)
    if variant == "cudnn":
        return Gates(**common, b_h=bi_n, b_uh=bh_n)
    raise ValueError(f"unknown variant {variant!r}")


def sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # the tanh form never overflows


def step(g: Gates, x: np.ndarray, h: np.ndarray, variant: str) -> np.ndarray:
    """One step of one layer: x (B, in), h (B, H) -> h_t (B, H)."""
    r = sigmoid(x @ g.W_r.T + h @ g.U_r.T + g.b_r)
    z = sigmoid(x @ g.W_z.T + h @ g.U_z.T + g.b_z)
    if variant == "cho2014":
        c = np.tanh(x @ g.W_h.T + (r * h) @ g.U_h.T + g.b_h)
        return (1.0 - z) * h + z * c
    n = np.tanh(x @ g.W_h.T + g.b_h + r * (h @ g.U_h.T + g.b_uh))
    return (1.0 - z) * n + z * h


def forecaster(
    layers: list[Gates],
    head_weight: np.ndarray,
    head_bias: np.ndarray,
    x: np.ndarray,
    h0: np.ndarray,
    lengths: np.ndarray,
    variant: str,
    return_states: bool = False,
) -> tuple[np.ndarray, ...]:
    """Stacked layers plus the linear head.

    x (B, T, F), h0 (L, B, H), lengths (B,) -> y (B, T, O), h_n (L, B, H). A row's state is
    frozen once t >= its length, so h_n is the state after its last valid step; y past a
    row's length is whatever the head makes of the frozen state (callers ignore it).
    With `return_states`, also h_seq (B, T, L, H): every layer's state after every step.
    """
    x = np.asarray(x, dtype=np.float64)
    lengths = np.asarray(lengths)
    B, T, _ = x.shape
    hs = [np.asarray(h, dtype=np.float64).copy() for h in h0]  # per layer (B, H)
    W = np.asarray(head_weight, dtype=np.float64)
    b = np.asarray(head_bias, dtype=np.float64)
    ys, states = [], []
    for t in range(T):
        valid = (t < lengths)[:, None]  # (B, 1)
        inp = x[:, t]
        for i, g in enumerate(layers):
            hs[i] = np.where(valid, step(g, inp, hs[i], variant), hs[i])
            inp = hs[i]
        ys.append(inp @ W.T + b)
        states.append(np.stack(hs, axis=1))  # (B, L, H)
    if return_states:
        return np.stack(ys, axis=1), np.stack(hs), np.stack(states, axis=1)
    return np.stack(ys, axis=1), np.stack(hs)
