"""POST /v1/timeseries/forecast: the same forecasts through KServe's time-series schema."""

from __future__ import annotations

import calendar
import time
import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter

from service.deps import CoreDep
from service.errors import InvalidInput
from service.routes.documented import REST_BODY
from service.routes.json_route import JsonRoute
from service.schemas import (
    TimeSeriesForecast,
    TimeSeriesOutput,
    TimeSeriesRequest,
    TimeSeriesResponse,
)
from service.translate import quantile_key, series_out, to_array

router = APIRouter(prefix="/v1/timeseries", tags=["forecast"], route_class=JsonRoute)

_FIXED = {"S": timedelta(seconds=1), "T": timedelta(minutes=1), "H": timedelta(hours=1),
          "D": timedelta(days=1), "W": timedelta(weeks=1)}  # fmt: skip
_MONTHS = {"M": 1, "Q": 3, "Y": 12}
_ALIASES = {"second": "S", "minute": "T", "hour": "H", "day": "D", "week": "W",
            "month": "M", "quarter": "Q", "year": "Y"}  # fmt: skip
_KINDS = ("univariate_time_series", "multivariate_time_series")
# KServe frequency -> the model's frequency name whose calibrated quantiles it gets (when the
# model lists that name in `frequencies`); any other frequency gets the pooled intervals.
_CALIBRATED = {"Y": "yearly", "Q": "quarterly", "M": "monthly"}


def model_frequency(frequency: str, known: tuple[str, ...]) -> str | None:
    """The model frequency whose intervals a KServe `frequency` gets, or None (pooled)."""
    name = _CALIBRATED.get(_ALIASES.get(frequency, frequency))
    return name if name in known else None


def add_steps(start: datetime, frequency: str, steps: int) -> datetime:
    """`start` moved by `steps` periods; months clamp to the month's last day (Jan 31 + 1M = Feb 28/29)."""
    f = _ALIASES.get(frequency, frequency)
    if f in _FIXED:
        return start + _FIXED[f] * steps
    months = start.month - 1 + _MONTHS[f] * steps
    year, month = start.year + months // 12, months % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


@router.post("/forecast", response_model=TimeSeriesResponse, responses=REST_BODY)
async def create_timeseries_forecast(req: TimeSeriesRequest, core: CoreDep) -> TimeSeriesResponse:
    """Forecast each named series; `frequency` and `start_timestamp` give the forecast's start,
    and Y, Q and M (year, quarter, month) also pick the quantiles calibrated for yearly,
    quarterly and monthly series when the model has them."""
    core.check_items(len(req.inputs), "inputs")
    horizon = core.check_horizon(req.options.horizon, "options.horizon")
    levels = core.check_quantiles(req.options.quantiles or [], "options.quantiles")
    series, starts, frequencies = [], [], []
    for i, inp in enumerate(req.inputs):
        field = f"inputs.{i}"
        if inp.type not in _KINDS:
            raise InvalidInput(f"type must be one of {_KINDS}, got {inp.type!r}", f"{field}.type")
        if _ALIASES.get(inp.frequency, inp.frequency) not in {*_FIXED, *_MONTHS}:
            raise InvalidInput(f"unknown frequency {inp.frequency!r}", f"{field}.frequency")
        x = core.check_sequence(to_array(inp.series, f"{field}.series"), f"{field}.series")
        series.append(x)
        frequencies.append(model_frequency(inp.frequency, core.meta.frequencies))
        start = None
        if inp.start_timestamp is not None:
            try:
                first = datetime.fromisoformat(inp.start_timestamp)
            except ValueError:
                raise InvalidInput(
                    "start_timestamp is not an ISO 8601 timestamp", f"{field}.start_timestamp"
                ) from None
            try:
                start = add_steps(first, inp.frequency, x.shape[0]).isoformat()
            except (OverflowError, ValueError):  # past year 9999
                raise InvalidInput(
                    "start_timestamp plus the series' length is past the year 9999",
                    f"{field}.start_timestamp",
                ) from None
        starts.append(start)
    fields = [f"inputs.{i}.series" for i in range(len(series))]
    results = await core.forecast(series, horizon, levels, fields=fields, frequencies=frequencies)
    content = [
        TimeSeriesForecast(
            type=inp.type,
            name=inp.name,
            mean_forecast=series_out(r.mean),
            frequency=inp.frequency,
            start_timestamp=start,
            quantiles={quantile_key(q): series_out(v) for q, v in r.quantiles.items()} or None,
        )
        for inp, r, start in zip(req.inputs, results, starts, strict=True)
    ]
    rid = uuid.uuid4().hex
    return TimeSeriesResponse(
        id=rid,
        created_at=int(time.time()),
        model=core.meta.name,
        outputs=[TimeSeriesOutput(id=rid, content=content)],
    )
