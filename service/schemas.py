"""Request and response schemas of the REST API (names fixed in DESIGN.md section 7).

Strict and closed: unknown fields, strings where numbers belong, NaN and infinity are all
rejected by validation, before any work is queued.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # ints pass, "1" and true do not
Series = list[Number] | list[list[Number]]
State = list[list[Number]]


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ---- errors ----------------------------------------------------------------------------------
class ErrorDetail(Schema):
    code: str = Field(description="machine-readable error code, e.g. invalid_input, overloaded")
    message: str = Field(description="what was expected and what arrived")
    field: str | None = Field(
        None, description="dotted path of the offending field, when one is to blame"
    )


class ErrorResponse(Schema):
    error: ErrorDetail


# ---- /v1/forecast ----------------------------------------------------------------------------
class ForecastState(Schema):
    """Where a series stands: pass it back as `state` to continue without resending history."""

    h: State = Field(description="hidden state, layers x hidden")
    loc: list[Number] = Field(description="per-feature offset fitted on the first history")
    scale: list[Number] = Field(description="per-feature scale fitted on the first history")


# A request's choice of model (several models in one server, service/repository.py).
ModelName = Annotated[
    str | None,
    Field(
        description="the model to run (GET /v1/models lists them); may be left out when the "
        "server serves one model"
    ),
]
ModelVersion = Annotated[
    str | None, Field(description="the model's version; absent: the highest one served")
]


class ForecastRequest(Schema):
    series: list[Series] = Field(
        min_length=1,
        description="one or more series: a univariate series is a list of numbers, a multivariate one a list of rows",
    )
    horizon: int = Field(12, description="steps to forecast after the end of each series")
    quantiles: list[Number] = Field(default_factory=list, description="quantile levels in (0, 1)")
    state: list[ForecastState | None] | None = Field(
        None,
        description="optional, one per series: continue from a returned state instead of zeros",
    )
    return_state: bool = Field(False, description="return each series' state after its history")
    frequency: str | None = Field(
        None,
        description="the series' frequency, one of the model's `frequencies` (GET /v1/models), "
        "e.g. monthly: quantiles calibrated for it; absent: intervals pooled over all "
        "frequencies. Applies to every series of the request; the point forecast does not "
        "depend on it",
    )
    model: ModelName = None
    version: ModelVersion = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "series": [[1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0], [10, 12, 11, 13]],
                    "horizon": 3,
                    "quantiles": [0.1, 0.9],
                }
            ]
        }
    )


class SeriesForecast(Schema):
    mean: Series
    quantiles: dict[str, Series] = Field(default_factory=dict)
    state: ForecastState | None = None


class ForecastResponse(Schema):
    model: str
    version: str
    forecasts: list[SeriesForecast]


# ---- /v1/hidden ------------------------------------------------------------------------------
class HiddenItem(Schema):
    x: list[list[Number]] = Field(
        min_length=1, description="input steps x features, in model units"
    )
    h: State | None = Field(
        None, description="previous hidden state, layers x hidden (zeros when absent)"
    )


class HiddenRequest(Schema):
    inputs: list[HiddenItem] = Field(min_length=1)
    return_sequence: bool = Field(
        False, description="also return the state and output after every step"
    )
    model: ModelName = None
    version: ModelVersion = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"inputs": [{"x": [[0.1], [0.3], [-0.2]]}], "return_sequence": False}]
        }
    )


class HiddenOutput(Schema):
    h: State = Field(description="hidden state after the last step, layers x hidden")
    y: list[float] = Field(description="head output after the last step (the next-step prediction)")
    h_seq: list[State] | None = Field(
        None, description="with return_sequence: the state after each step"
    )
    y_seq: list[list[float]] | None = Field(
        None, description="with return_sequence: the output after each step"
    )


class HiddenResponse(Schema):
    model: str
    version: str
    outputs: list[HiddenOutput]


# ---- /v1/timeseries/forecast (KServe's time-series schema) -----------------------------------
class TimeSeriesInput(Schema):
    type: str = Field(
        "univariate_time_series", description="univariate_time_series | multivariate_time_series"
    )
    name: str
    series: Series
    frequency: str = Field(
        description="S, T, H, D, W, M, Q, Y or second, minute, hour, day, week, month, quarter, "
        "year. Y/year, Q/quarter and M/month get the quantiles calibrated for yearly, quarterly "
        "and monthly series when the model knows that frequency; others get pooled intervals"
    )
    start_timestamp: str | None = Field(
        None, description="ISO 8601 timestamp of the first observation"
    )


class TimeSeriesOptions(Schema):
    horizon: int
    quantiles: list[Number] | None = None


class TimeSeriesRequest(Schema):
    model: str | None = None
    version: str | None = None
    inputs: list[TimeSeriesInput] = Field(min_length=1)
    options: TimeSeriesOptions
    metadata: dict | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "gru-forecaster",
                    "inputs": [
                        {
                            "type": "univariate_time_series",
                            "name": "sales",
                            "series": [5, 7, 6, 8, 7, 9, 8, 10],
                            "frequency": "M",
                            "start_timestamp": "2024-01-01T00:00:00",
                        }
                    ],
                    "options": {"horizon": 3, "quantiles": [0.1, 0.9]},
                }
            ]
        }
    )


class TimeSeriesForecast(Schema):
    type: str
    name: str
    mean_forecast: Series
    frequency: str
    start_timestamp: str | None
    quantiles: dict[str, Series] | None = None


class TimeSeriesOutput(Schema):
    type: str = "forecast"
    id: str
    status: str = "completed"
    content: list[TimeSeriesForecast]


class TimeSeriesResponse(Schema):
    id: str
    created_at: int
    status: str = "completed"
    model: str
    outputs: list[TimeSeriesOutput]


# ---- metadata and health -----------------------------------------------------------------------
class ModelInfo(Schema):
    name: str
    version: str
    variant: str
    input_size: int
    hidden_size: int
    num_layers: int
    output_size: int
    quantile_levels: list[float]
    context_length: int = Field(
        description="history length the model was trained to read: send at least this many "
        "observations when you have them (0: not stated)"
    )
    horizon: int = Field(
        description="horizon the model was trained and its intervals calibrated for (0: not "
        "stated); longer horizons are served, their intervals widened past the calibrated "
        "steps as sqrt((step + 1) / steps calibrated)"
    )
    frequencies: list[str] = Field(
        description="frequency names accepted by `frequency` (POST /v1/forecast, stream "
        "option): quantiles calibrated for that frequency (pooled for a name without a "
        "calibration of its own)"
    )
    target: str = Field(
        description="the artifact's graph family: cpu (ONNX GRU nodes, one per layer or per "
        "ensemble member and layer) or cuda "
        "(the step in plain operators, every node on the CUDA provider)"
    )
    weights_sha256: str = Field(
        description="SHA-256 of the served weights (of the whole file for an artifact that "
        "does not record one); resume tokens are bound to it"
    )
    provider: str = Field(description="the onnxruntime provider the session really runs on")
    recurrent_nodes: str = Field(
        description="where the recurrence (GRU or Scan nodes) runs; a cpu-target cho2014 GRU "
        "stays on the CPU under CUDA, so such a model is served on the CPU"
    )
    nodes: dict[str, int] = Field(
        default_factory=dict,
        description="graph nodes (loop bodies included) per provider, as onnxruntime placed "
        "them; empty when the onnxruntime build does not report placement",
    )
    stream_states: str = Field(
        "host",
        description="where stream sessions keep their hidden states between steps: device (one "
        "slot buffer where the model runs, stepped in place) or host (see `stream_states` "
        "in the settings)",
    )
    metrics: dict
    data: dict


class ModelsResponse(Schema):
    models: list[ModelInfo]


class Health(Schema):
    status: str
    provider: str | None = None
    model: str | None = None
    version: str | None = None
    reason: str | None = None  # why not ready (warming up, warm-up failed, batcher crashed, ...)
