"""Model metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.repository import Served
from service.routes.documented import REST_READ
from service.schemas import ModelInfo, ModelsResponse
from service.state import state_of

router = APIRouter(prefix="/v1", tags=["models"])


def model_info(served: Served) -> ModelInfo:
    rt = served.runtime
    m = rt.meta
    return ModelInfo(
        name=m.name,
        version=m.version,
        variant=m.variant,
        input_size=m.input_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        output_size=m.output_size,
        quantile_levels=list(m.quantile_levels),
        context_length=m.context_length,
        horizon=m.horizon,
        frequencies=list(m.frequencies),
        target=m.target,
        weights_sha256=served.digest,
        provider=rt.placement.provider,
        recurrent_nodes=rt.placement.recurrent_nodes,
        nodes=dict(rt.placement.nodes),
        stream_states="host" if served.core.device_states is None else "device",
        metrics=m.metrics,
        data=m.data,
    )


@router.get("/models", response_model=ModelsResponse, responses=REST_READ)
async def list_models(request: Request) -> ModelsResponse:
    """The served model: name, version, variant, target, sizes, quantile levels, context
    length, horizon, known frequencies, provider, node placement and training metrics."""
    return ModelsResponse(models=[model_info(s) for s in state_of(request).served()])
