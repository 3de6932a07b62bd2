"""The two comparison servers of the REST bench, each run by uvicorn like the service:

- floor: FastAPI with the service's request and response schemas that answers a constant
  (shaped like the real answer) without touching the model: the framework's own cost.
- naive: the same schemas, one onnxruntime run per step of each request (no batching), in a
  plain `def` handler (FastAPI's thread pool), on the service's Runtime and session options.

`python -m bench.apps floor|naive --model PATH --port N`
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI

from service.app import NO_TELEMETRY
from service.core import quantile_offsets
from service.runtime import Runtime
from service.schemas import ForecastRequest, ForecastResponse, SeriesForecast
from service.settings import Settings
from service.translate import quantile_key, series_out


def floor_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(**NO_TELEMETRY)
    meta = runtime.meta
    cache: dict[tuple, ForecastResponse] = {}

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/forecast", response_model=ForecastResponse)
    async def create_forecast(req: ForecastRequest) -> ForecastResponse:
        key = (len(req.series), req.horizon, tuple(req.quantiles))
        if key not in cache:  # a constant per request shape, built once
            values = np.zeros((req.horizon, meta.input_size), np.float32)
            cache[key] = ForecastResponse(
                model=meta.name,
                version=meta.version,
                forecasts=[
                    SeriesForecast(
                        mean=series_out(values),
                        quantiles={quantile_key(q): series_out(values) for q in req.quantiles},
                    )
                ]
                * len(req.series),
            )
        return cache[key]

    return app


def naive_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(**NO_TELEMETRY)
    meta = runtime.meta

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/forecast", response_model=ForecastResponse)
    def create_forecast(req: ForecastRequest) -> ForecastResponse:
        out = []
        zeros = np.zeros((meta.num_layers, 1, meta.hidden_size), np.float32)
        for s in req.series:
            x = np.asarray(s, np.float32).reshape(len(s), -1)
            loc, scale = meta.scaler.fit(x)
            seq = ((x - loc) / scale)[:, None]  # (T, 1, F)
            y, h, _ = runtime.run(seq, zeros, np.array([len(x)], np.int32))
            steps = [y[-1, 0]]
            for _ in range(req.horizon - 1):
                y, h, _ = runtime.run(steps[-1][None, None], h, np.ones(1, np.int32))
                steps.append(y[-1, 0])
            scaled = np.stack(steps)  # (horizon, F)
            quantiles = {
                quantile_key(q): series_out((scaled + off[:, None]) * scale + loc)
                for q, off in quantile_offsets(
                    meta, req.quantiles, req.horizon, req.frequency
                ).items()
            }
            out.append(SeriesForecast(mean=series_out(scaled * scale + loc), quantiles=quantiles))
        return ForecastResponse(model=meta.name, version=meta.version, forecasts=out)

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["floor", "naive"])
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    runtime = Runtime(Settings(model_path=args.model, device="cpu"))
    runtime.warmup()
    app = floor_app(runtime) if args.kind == "floor" else naive_app(runtime)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
