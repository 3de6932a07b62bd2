"""JSON <-> numpy for the transport layer: arrays in, plain lists out, clear errors for ragged input."""

from __future__ import annotations

import numpy as np

from service.errors import InvalidInput


def to_array(value: list, field: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidInput("rows must all have the same number of values", field) from None


def series_out(values: np.ndarray) -> list:
    """(T, F) -> a list of numbers when F == 1 (univariate), else a list of rows."""
    return values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()


def quantile_key(q: float) -> str:
    return f"{q:g}"
