"""POST /v1/forecast: point and quantile forecasts for one or many series."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic_core import to_json

from service.core import Forecast, InferenceCore, SeriesState
from service.deps import CoreDep
from service.errors import InvalidInput
from service.routes.documented import REST_BODY
from service.routes.json_route import JsonRoute
from service.schemas import (
    ForecastRequest,
    ForecastResponse,
    ForecastState,
)
from service.translate import quantile_key, series_out, to_array

router = APIRouter(prefix="/v1", tags=["forecast"], route_class=JsonRoute)


@router.post("/forecast", response_model=ForecastResponse, responses=REST_BODY)
async def create_forecast(req: ForecastRequest, core: CoreDep) -> Response:
    """Forecast `horizon` steps after each series, with optional quantiles and states."""
    return Response(await forecast_json(req, core), media_type="application/json")


async def forecast_json(req: ForecastRequest, core: InferenceCore) -> bytes:
    """The answer's JSON bytes (or a ServiceError); the M3 benchmark calls it too."""
    core.check_items(len(req.series), "series")
    if req.state is not None and len(req.state) != len(req.series):
        raise InvalidInput(
            f"expected one state per series ({len(req.series)}), got {len(req.state)}", "state"
        )
    horizon = core.check_horizon(req.horizon)
    levels = core.check_quantiles(req.quantiles)
    frequency = core.check_frequency(req.frequency)
    series = [
        core.check_sequence(to_array(v, f"series.{i}"), f"series.{i}")
        for i, v in enumerate(req.series)
    ]
    states = [
        parse_state(core, st, f"state.{i}")
        for i, st in enumerate(req.state or [None] * len(series))
    ]
    frequencies = None if frequency is None else [frequency] * len(series)
    results = await core.forecast(series, horizon, levels, states, frequencies=frequencies)
    # Serialised here, to the bytes FastAPI's response_model path writes (pydantic's JSON
    # encoder, same field order, `state: null` included): that path validates the response
    # model twice (construction, then FastAPI) on numbers the core made. The model stays in
    # the decorator for the OpenAPI schema.
    forecasts = [_forecast_out(r, req.return_state) for r in results]
    body = {"model": core.meta.name, "version": core.meta.version, "forecasts": forecasts}
    return to_json(body)


def _forecast_out(r: Forecast, with_state: bool) -> dict:
    # Values are finite here: the core answers 422 when scaling leaves float32's range.
    return {
        "mean": series_out(r.mean),
        "quantiles": {quantile_key(q): series_out(v) for q, v in r.quantiles.items()},
        "state": {
            "h": r.state.h.tolist(),
            "loc": r.state.loc.tolist(),
            "scale": r.state.scale.tolist(),
        }
        if with_state
        else None,
    }


def parse_state(core, st: ForecastState | None, field: str) -> SeriesState | None:
    if st is None:
        return None
    return SeriesState(
        h=core.check_state(to_array(st.h, f"{field}.h"), f"{field}.h"),
        loc=core.check_scaling(to_array(st.loc, f"{field}.loc"), f"{field}.loc"),
        scale=core.check_scaling(
            to_array(st.scale, f"{field}.scale"), f"{field}.scale", positive=True
        ),
    )
