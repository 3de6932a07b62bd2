"""JSON <-> numpy for the transport layer: arrays in, plain lists out, clear errors for ragged input."""

from __future__ import annotations

import numpy as np

from service.errors import InvalidInput


def to_array(value: list, field: str) -> np.ndarray:
    """JSON numbers -> float32; a finite number past float32's range (1e39) is refused as too
    large, not reported as the infinity the cast would make of it."""
    try:
        with np.errstate(over="ignore"):
            a = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidInput("rows must all have the same number of values", field) from None
    if not np.isfinite(a).all() and np.isfinite(np.asarray(value, dtype=np.float64)).all():
        raise InvalidInput(
            "values too large to scale: beyond float32's range (about +-3.4e38)", field
        )
    return a


def series_out(values: np.ndarray) -> list:
    """(T, F) -> a list of numbers when F == 1 (univariate), else a list of rows."""
    return values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()


def quantile_key(q: float) -> str:
    return f"{q:g}"
