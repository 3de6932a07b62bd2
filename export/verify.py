"""Numeric proof that an ONNX graph computes what its source torch module computes.

DESIGN.md section 2: exporters have silently emitted the wrong GRU variant before, so no
artifact is written without this check. torch is imported lazily (only the export command,
which already runs torch, calls in here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_X,
    OUTPUT_HN,
    OUTPUT_Y,
    empty_slot_feeds,
    takes_slots,
)

TOLERANCE = 1e-5


def random_batch(
    input_size: int, num_layers: int, hidden_size: int, batch: int, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, T, F), h0 (L, B, H), lengths (B,): mixed lengths, one full row, one of length 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, input_size)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (num_layers, batch, hidden_size)).astype(np.float32)
    lengths = rng.integers(1, steps + 1, size=batch).astype(np.int32)
    lengths[0] = steps
    lengths[-1] = 1 if batch > 1 else steps
    return x, h0, lengths


def run_onnx(
    session: Any, x: np.ndarray, h0: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Batch-first in and out, like the torch module: x (B, T, F) -> y (B, T, O), h_n (L, B, H)."""
    feeds = {
        INPUT_X: np.ascontiguousarray(
            x.transpose(1, 0, 2), dtype=np.float32
        ),  # layout 0: (T, B, F)
        INPUT_H0: np.ascontiguousarray(h0, dtype=np.float32),
        INPUT_LENS: np.asarray(lengths, dtype=np.int32),
    }
    if takes_slots(session):  # a cuda-target graph
        feeds.update(empty_slot_feeds(h0.shape[0], h0.shape[2]))
    y, h_n = session.run([OUTPUT_Y, OUTPUT_HN], feeds)
    return y.transpose(1, 0, 2), h_n


def run_torch(
    model: Any, x: np.ndarray, h0: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        y, h_n = model(
            torch.from_numpy(x), torch.from_numpy(h0), torch.from_numpy(lengths.astype(np.int64))
        )
    return y.numpy(), h_n.numpy()


def max_abs_error(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], lengths: np.ndarray
) -> float:
    """Largest |a - b| over y at each row's valid steps and over h_n (y past a length is undefined)."""
    (ya, ha), (yb, hb) = a, b
    valid = np.arange(ya.shape[1])[None, :] < np.asarray(lengths)[:, None]  # (B, T)
    err_y = np.abs(ya - yb)[valid].max(initial=0.0)
    return float(max(err_y, np.abs(ha - hb).max(initial=0.0)))


def check_parity(
    model: Any, onnx_bytes: bytes, batch: int = 8, steps: int = 48, seed: int = 0
) -> float:
    """Max abs error between the torch module and onnxruntime (CPU EP) on a random batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    c = model.config
    x, h0, lengths = random_batch(c.input_size, c.num_layers, c.hidden_size, batch, steps, seed)
    return max_abs_error(
        run_torch(model, x, h0, lengths), run_onnx(session, x, h0, lengths), lengths
    )
