"""Units: data units <-> the model's scaled units, in float32, with overflow checked.

The one place this arithmetic lives. REST forecasts, stream steps and stream forecasts all
come through here, so their numbers agree; a value that leaves float32 is an InvalidInput
("values too large to scale"), never an inf in an answer.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np

from export.contract import ArtifactMeta
from service.errors import InvalidInput

TOO_LARGE = "values too large to scale: the scaled values or results exceed float32's range"


def _finite(v: np.ndarray) -> bool:
    """np.isfinite(v).all(); in plain Python for a few values, where numpy's fixed costs
    (the ufunc, then ndarray.all's wrapper) outweigh the check."""
    if v.size <= 16:
        return all(map(math.isfinite, v.ravel().tolist()))
    return bool(np.isfinite(v).all())


# The public helpers set their own errstate; the underscored ones leave it to the caller, so
# a request's whole preparation (or answer) pays for one errstate instead of one per call.


def fit_scaler(meta: ArtifactMeta, x: np.ndarray, field: str) -> tuple[np.ndarray, np.ndarray]:
    """The artifact's scaler fitted on x (T, F) (in float64 where float32 overflows);
    InvalidInput when loc or scale do not fit in float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _fit_scaler(meta, x, field)


def _fit_scaler(meta: ArtifactMeta, x: np.ndarray, field: str) -> tuple[np.ndarray, np.ndarray]:
    loc, scale = meta.scaler.fit(x)
    if not (_finite(loc) and _finite(scale)):
        raise InvalidInput(TOO_LARGE, field)
    return loc, scale


def scale_in(x: np.ndarray, loc: np.ndarray, scale: np.ndarray, field: str) -> np.ndarray:
    """(x - loc) / scale in float32; redone in float64 when x - loc overflows float32 midway."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _scale_in(x, loc, scale, field)


def _scale_in(x: np.ndarray, loc: np.ndarray, scale: np.ndarray, field: str) -> np.ndarray:
    z = (x - loc) / scale
    if not _finite(z):
        z = ((x.astype(np.float64) - loc) / scale).astype(np.float32)
        if not _finite(z):
            raise InvalidInput(TOO_LARGE, field)
    return z


def scale_out(y: np.ndarray, loc: np.ndarray, scale: np.ndarray, field: str | None) -> np.ndarray:
    """y * scale + loc (model units -> data units); InvalidInput when it leaves float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _scale_out(y, loc, scale, field)


def _scale_out(y: np.ndarray, loc: np.ndarray, scale: np.ndarray, field: str | None) -> np.ndarray:
    v = y * scale + loc
    if not _finite(v):
        raise InvalidInput(TOO_LARGE, field)
    return v


def to_data_units(
    mean_scaled: np.ndarray,
    offsets: Mapping[float, np.ndarray | float],
    loc: np.ndarray,
    scale: np.ndarray,
    field: str | None,
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """A scaled mean (N, O) and scaled-space quantile offsets per level (one per row, (N,), or
    one float for every row) -> (mean, {level: values}) in data units. The one place this
    arithmetic lives: REST forecasts, stream steps and stream forecasts all come through here,
    so their numbers agree. InvalidInput when a value leaves float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _to_data_units(mean_scaled, offsets, loc, scale, field)


def _to_data_units(
    mean_scaled: np.ndarray,
    offsets: Mapping[float, np.ndarray | float],
    loc: np.ndarray,
    scale: np.ndarray,
    field: str | None,
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    if offsets and _all_f32(mean_scaled, offsets, loc, scale):
        # All float32: the mean and every level stacked in one array, through the same
        # float32 operations element for element (so the same bits), checked once.
        out = np.empty((1 + len(offsets), *mean_scaled.shape), np.float32)
        out[0] = mean_scaled
        for k, off in enumerate(offsets.values(), 1):
            np.add(mean_scaled, off[:, None] if isinstance(off, np.ndarray) else off, out=out[k])
        np.multiply(out, scale, out=out)
        np.add(out, loc, out=out)
        if not _finite(out):
            raise InvalidInput(TOO_LARGE, field)
        return out[0], dict(zip(offsets, out[1:], strict=True))
    mean = _scale_out(mean_scaled, loc, scale, field)
    quantiles = {
        q: _scale_out(
            mean_scaled + (off[:, None] if isinstance(off, np.ndarray) else off), loc, scale, field
        )
        for q, off in offsets.items()
    }
    return mean, quantiles


_F32 = np.dtype(np.float32)


def _all_f32(
    mean_scaled: np.ndarray,
    offsets: Mapping[float, np.ndarray | float],
    loc: np.ndarray,
    scale: np.ndarray,
) -> bool:
    """Whether the stacked path computes in the general path's dtypes: float32 arrays, and
    offsets that are float32 (N,) arrays or Python floats (weak scalars, added in float32)."""
    if not (mean_scaled.dtype == _F32 and loc.dtype == _F32 and scale.dtype == _F32):
        return False
    if mean_scaled.ndim != 2:
        return False
    for off in offsets.values():
        if isinstance(off, np.ndarray):
            if off.dtype != _F32 or off.shape != mean_scaled.shape[:1]:
                return False
        elif type(off) is not float:
            return False
    return True


# ---- one step, one value: scale_in / scale_out without numpy --------------------------------
# For a (1, 1) step numpy's fixed costs (errstate, four ufuncs, two isfinite) outweigh the
# arithmetic. The same float32 numbers come from Python floats rounded to float32 after each
# operation: float64 holds more than twice float32's precision, so rounding an exact-in-float64
# (or correctly rounded) +, -, * or / once more to float32 gives exactly numpy's float32 result.
# Anything that would leave float32's range (or is not finite) returns None: the numpy path
# then answers as it always did (its float64 redo, or the 'too large to scale' error).
_F32_BYTES = struct.Struct("<f")


def _f32(v: float) -> float:
    """v rounded to float32 (OverflowError past float32's range)."""
    return _F32_BYTES.unpack(_F32_BYTES.pack(v))[0]


def scale_in_one(x: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """scale_in for x (1, 1): (x - loc) / scale in float32, or None."""
    try:
        z = _f32(_f32(float(x[0, 0]) - float(loc[0])) / float(scale[0]))
    except OverflowError:
        return None
    return np.array([[z]], np.float32) if math.isfinite(z) else None


def scale_out_one(
    y: np.ndarray, loc: np.ndarray, scale: np.ndarray, offsets: dict[float, float]
) -> tuple[np.ndarray, dict[float, np.ndarray]] | None:
    """scale_out of y (1, 1) and of y + each offset: (ys, qs) shaped as advance's, or None."""
    if y.shape != (1, 1):
        return None
    v, lo, sc = float(y[0, 0]), float(loc[0]), float(scale[0])
    try:
        m = _f32(_f32(v * sc) + lo)
        qs = {q: _f32(_f32(_f32(v + off) * sc) + lo) for q, off in offsets.items()}
    except OverflowError:
        return None
    if not (math.isfinite(m) and all(math.isfinite(u) for u in qs.values())):
        return None
    return np.array([[m]], np.float32), {q: np.array([[u]], np.float32) for q, u in qs.items()}


# ---- a batch at a time: forecasts, scaled and unscaled in the batcher's worker --------------
@dataclass
class Row:
    """One forecast row's units: its scaling (given by a state, else fitted on x), its
    interval offsets per level and step, and, once run, its answer in data units."""

    field: str
    offsets: Mapping[float, np.ndarray]  # the core's cached table: rows of a request share it
    loc: np.ndarray | None = None
    scale: np.ndarray | None = None
    mean: np.ndarray | None = None  # (horizon, F)
    quantiles: dict[float, np.ndarray] = dc_field(default_factory=dict)


class BatchUnits:
    """The batcher's RowUnits for forecasts: rows of one shape are fitted, scaled and brought
    back together, with the same float32 operations as the one-row functions above (so the
    same bits); a row whose values leave float32 takes the one-row path, which redoes it in
    float64 or refuses it with its own field."""

    def __init__(self, meta: ArtifactMeta) -> None:
        self.meta = meta

    def scale(self, rows: list[Row], xs: list[np.ndarray]) -> list[np.ndarray | Exception]:
        out: list[np.ndarray | Exception | None] = [None] * len(rows)
        with np.errstate(over="ignore", invalid="ignore"):
            for idx in _groups([(x.shape, rows[i].loc is None) for i, x in enumerate(xs)]):
                x = np.stack([xs[i] for i in idx])  # (B, T, F)
                if rows[idx[0]].loc is None:
                    loc, scale = _fit_stacked(x, self.meta.scaler.min_scale)
                else:
                    loc = np.stack([rows[i].loc for i in idx])  # type: ignore[misc]
                    scale = np.stack([rows[i].scale for i in idx])  # type: ignore[misc]
                z = (x - loc[:, None]) / scale[:, None]
                ok = np.isfinite(z).all(axis=(1, 2)) & np.isfinite(loc).all(axis=1)
                for b, i in enumerate(idx):
                    if ok[b] and np.isfinite(scale[b]).all():
                        rows[i].loc, rows[i].scale, out[i] = loc[b], scale[b], z[b]
                    else:
                        out[i] = self._one(rows[i], xs[i])
        return out  # type: ignore[return-value]

    def _one(self, row: Row, x: np.ndarray) -> np.ndarray | Exception:
        try:
            if row.loc is None:
                row.loc, row.scale = _fit_scaler(self.meta, x, row.field)
            return _scale_in(x, row.loc, row.scale, row.field)  # type: ignore[arg-type]
        except InvalidInput as e:
            return e

    def unscale(self, rows: list[Row], paths: list[np.ndarray]) -> list[Exception | None]:
        out: list[Exception | None] = [None] * len(rows)
        with np.errstate(over="ignore", invalid="ignore"):
            for idx in _groups([(p.shape, id(rows[i].offsets)) for i, p in enumerate(paths)]):
                levels = list(rows[idx[0]].offsets)
                y = np.stack([paths[i] for i in idx])  # (B, horizon, F)
                loc = np.stack([rows[i].loc for i in idx])[:, None]  # type: ignore[misc]
                scale = np.stack([rows[i].scale for i in idx])[:, None]  # type: ignore[misc]
                if not (y.dtype == loc.dtype == scale.dtype == _F32):
                    for i in idx:
                        out[i] = self._one_back(rows[i], paths[i])
                    continue
                v = np.empty((1 + len(levels), *y.shape), np.float32)
                v[0] = y
                for k, q in enumerate(levels, 1):
                    np.add(y, rows[idx[0]].offsets[q][None, :, None], out=v[k])
                np.multiply(v, scale, out=v)
                np.add(v, loc, out=v)
                ok = np.asarray(np.isfinite(v).all(axis=(0, 2, 3)))  # (B,), typed as an array
                for b, i in enumerate(idx):
                    if ok[b]:
                        rows[i].mean = v[0, b]
                        rows[i].quantiles = {q: v[k, b] for k, q in enumerate(levels, 1)}
                    else:
                        out[i] = InvalidInput(TOO_LARGE, rows[i].field)
        return out

    def _one_back(self, row: Row, path: np.ndarray) -> Exception | None:
        try:
            assert row.loc is not None and row.scale is not None  # set when the row was scaled
            row.mean, row.quantiles = _to_data_units(
                path, row.offsets, row.loc, row.scale, row.field
            )
        except InvalidInput as e:
            return e
        return None


def _fit_stacked(x: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scaler.fit of each (T, F) row of x (B, T, F), in float32: the reductions of
    export.contract's one-row fit along axis 1 (numpy sums each row in the same order)."""
    n = np.intp(x.shape[1])
    loc = np.add.reduce(x, axis=1)
    np.true_divide(loc, n, out=loc, casting="unsafe")
    dev = np.subtract(x, loc[:, None])
    np.square(dev, out=dev)
    var = np.add.reduce(dev, axis=1)
    np.true_divide(var, n, out=var, casting="unsafe")
    np.sqrt(var, out=var)
    return loc, np.maximum(var, min_scale).astype(np.float32)


def _groups(keys: list) -> list[list[int]]:
    """Indices grouped by equal key, in first-seen order."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())
