"""Training data: real series bundled with statsmodels, or one column of the user's CSV.

Every series is univariate, regular in time, and gap-free after loading: missing
observations are filled by time interpolation and the count is kept for the checkpoint's
provenance, never dropped silently (dropping would shift the seasonal phase).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class DataError(ValueError):
    """The data cannot be used as asked (bad file, column, too short): a user error."""


@dataclass
class Series:
    name: str
    values: np.ndarray  # (T,) float64, no NaN
    period: int  # seasonal period for seasonal-naive, ETS and the MASE scale; 1 = none
    source: str
    missing_filled: int = 0
    seen: bool = True  # False: held out of training entirely, evaluated as an unseen series
    start: str = ""
    freq: str = ""
    extra: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "length": int(len(self.values)),
            "period": self.period,
            "missing_filled": self.missing_filled,
            "seen_in_training": self.seen,
            "start": self.start,
            "freq": self.freq,
        }


def _fill(s: pd.Series) -> tuple[np.ndarray, int]:
    """Interpolate gaps in time (linear in the index, which is regular), edges by nearest value."""
    missing = int(s.isna().sum())
    if missing:
        method = "time" if isinstance(s.index, pd.DatetimeIndex) else "linear"
        s = s.interpolate(method=method, limit_direction="both")
    return s.to_numpy(dtype=np.float64), missing


def _quarterly(df: pd.DataFrame, col: str) -> pd.Series:
    idx = pd.PeriodIndex.from_fields(
        year=df["year"].astype(int), quarter=df["quarter"].astype(int), freq="Q"
    )
    return pd.Series(df[col].to_numpy(dtype=float), index=idx.to_timestamp())


def _series(name, s: pd.Series, period, source, freq, seen=True) -> Series:
    values, missing = _fill(s)
    start = str(s.index[0].date()) if isinstance(s.index, pd.DatetimeIndex) else str(s.index[0])
    return Series(name, values, period, source, missing, seen, start, freq)


def load_bundled() -> list[Series]:
    """The bundled training set. Series with seen=False never enter training windows."""
    import statsmodels.api as sm
    from statsmodels.datasets import elec_equip

    out = []
    co2 = sm.datasets.co2.load_pandas().data["co2"]  # weekly, 59 weeks missing
    out.append(_series("co2", co2, 52, "statsmodels.datasets.co2", "W-SAT"))

    sun = sm.datasets.sunspots.load_pandas().data
    sun_s = pd.Series(sun["SUNACTIVITY"].to_numpy(float), index=sun["YEAR"].astype(int))
    out.append(_series("sunspots", sun_s, 11, "statsmodels.datasets.sunspots", "Y"))

    # El Nino is stored wide (one row per year, one column per month): unstack to monthly.
    nino = sm.datasets.elnino.load_pandas().data
    months = nino.columns[1:]
    nino_s = pd.Series(
        nino[months].to_numpy(float).ravel(),
        index=pd.date_range(
            f"{int(nino['YEAR'].iloc[0])}-01-01", periods=nino[months].size, freq="MS"
        ),
    )
    out.append(_series("elnino", nino_s, 12, "statsmodels.datasets.elnino", "MS"))

    elec = elec_equip.load_pandas().data.iloc[:, 0]
    out.append(_series("elec_equip", elec, 12, "statsmodels.datasets.elec_equip", "MS"))

    macro = sm.datasets.macrodata.load_pandas().data
    for col in ("realgdp", "realcons", "cpi", "tbilrate", "infl"):
        out.append(
            _series(
                f"macro_{col}", _quarterly(macro, col), 4, "statsmodels.datasets.macrodata", "QS"
            )
        )

    # Held out entirely: the global model must forecast series it never saw.
    out.append(
        _series(
            "macro_unemp",
            _quarterly(macro, "unemp"),
            4,
            "statsmodels.datasets.macrodata",
            "QS",
            seen=False,
        )
    )
    nile = sm.datasets.nile.load_pandas().data
    nile_s = pd.Series(nile["volume"].to_numpy(float), index=nile["year"].astype(int))
    out.append(_series("nile", nile_s, 1, "statsmodels.datasets.nile", "Y", seen=False))
    ii = sm.datasets.interest_inflation.load_pandas().data
    out.append(
        _series(
            "interest_R",
            _quarterly(ii, "R"),
            4,
            "statsmodels.datasets.interest_inflation",
            "QS",
            seen=False,
        )
    )
    return out


_PERIODS = {
    "W": 52,
    "M": 12,
    "MS": 12,
    "ME": 12,
    "Q": 4,
    "QS": 4,
    "QE": 4,
    "D": 7,
    "h": 24,
    "H": 24,
}


def _period_for(freq: str | None) -> int:
    if not freq:
        return 1
    base = freq.split("-")[0].lstrip("0123456789")
    return _PERIODS.get(base, 1)


def load_csv(
    path: str | Path, column: str, time_column: str | None = None, period: int | None = None
) -> Series:
    """One numeric column of a CSV as a regular, gap-free series."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    try:
        df = pd.read_csv(path)
    except Exception as e:  # pandas raises several types for unreadable files
        raise DataError(
            f"cannot read {path} as CSV ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    for col in (column, time_column):
        if col is not None and col not in df.columns:
            raise DataError(
                f"column {col!r} not in {path.name} (columns: {', '.join(map(str, df.columns))})"
            )
    values = pd.to_numeric(df[column], errors="coerce")
    bad = int((values.isna() & df[column].notna()).sum())
    if bad:
        raise DataError(f"column {column!r} has {bad} non-numeric value(s)")
    if values.notna().sum() == 0:
        raise DataError(f"column {column!r} has no numeric values (all empty or NaN)")
    if not np.isfinite(values.dropna()).all():
        raise DataError(f"column {column!r} contains infinite values")
    freq = ""
    s = pd.Series(values.to_numpy(float))
    if time_column is not None:
        raw_times = df[time_column]
        if pd.api.types.is_numeric_dtype(raw_times):
            # Numbers (years, step counts) only order the rows: pandas would read them as
            # nanoseconds since 1970, so no calendar grid is inferred from them.
            times = raw_times
        else:
            times = pd.to_datetime(raw_times, errors="coerce")
        if times.isna().any():
            raise DataError(f"time column {time_column!r} has values that are not dates")
        if times.duplicated().any():
            raise DataError(f"time column {time_column!r} has duplicate timestamps")
        s = pd.Series(values.to_numpy(float), index=pd.Index(times)).sort_index()
        inferred = _infer_freq(s.index) if isinstance(s.index, pd.DatetimeIndex) else None
        if inferred:
            # Absent rows are missing observations: put them back on the grid as NaN to fill.
            grid = pd.date_range(s.index[0], s.index[-1], freq=inferred)
            if s.index.isin(grid).all():
                s = s.reindex(grid)
                freq = inferred
    filled, missing = _fill(s)
    start = str(s.index[0].date()) if isinstance(s.index, pd.DatetimeIndex) else str(s.index[0])
    return Series(
        column, filled, period or _period_for(freq), f"csv:{path.name}", missing, True, start, freq
    )


def _infer_freq(index: pd.DatetimeIndex) -> str | None:
    """The most common frequency over short runs: gaps (missing rows) break pd.infer_freq."""
    found: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' future-behaviour notice about the return type
        for i in range(0, max(1, len(index) - 4), 3):
            try:
                f = pd.infer_freq(index[i : i + 5])
            except (TypeError, ValueError):
                f = None
            if f:
                found[str(f)] = found.get(str(f), 0) + 1
    return max(found, key=lambda f: found[f]) if found else None


@dataclass(frozen=True)
class Split:
    """Index ranges of one series: train [0, val_start), validation, test = the last tail."""

    n: int
    val_start: int
    test_start: int


def split_series(n: int, horizon: int) -> Split:
    """Time-ordered: test = last 2*horizon points, validation = the 2*horizon before.

    A 2*horizon tail gives horizon + 1 rolling forecast origins, each with a full horizon.
    """
    tail = 2 * horizon
    return Split(n, n - 2 * tail, n - tail)


def origins(start: int, end: int, horizon: int) -> list[int]:
    """Forecast origins in [start, end): every origin whose horizon ends by `end`."""
    return list(range(start, end - horizon + 1))
