"""POST /v1/hidden: next-step hidden states, the stateless block a client chains itself."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import CoreDep
from service.routes.documented import REST_BODY
from service.routes.json_route import JsonRoute
from service.schemas import HiddenOutput, HiddenRequest, HiddenResponse
from service.translate import to_array

router = APIRouter(prefix="/v1", tags=["hidden"], route_class=JsonRoute)


@router.post("/hidden", response_model=HiddenResponse, responses=REST_BODY)
async def create_hidden(req: HiddenRequest, core: CoreDep) -> HiddenResponse:
    """Run each item's steps from its state (zeros when absent); model units, no scaling."""
    core.check_items(len(req.inputs), "inputs", "items")
    xs, hs = [], []
    for i, item in enumerate(req.inputs):
        xs.append(core.check_sequence(to_array(item.x, f"inputs.{i}.x"), f"inputs.{i}.x"))
        h = core.zero_state() if item.h is None else to_array(item.h, f"inputs.{i}.h")
        hs.append(core.check_state(h, f"inputs.{i}.h"))
    results = await core.hidden(xs, hs, req.return_sequence)
    return HiddenResponse(
        model=core.meta.name,
        version=core.meta.version,
        outputs=[
            HiddenOutput(
                h=r.h.tolist(),
                y=r.y[-1].tolist(),
                h_seq=r.h_seq.tolist() if req.return_sequence and r.h_seq is not None else None,
                y_seq=r.y.tolist() if req.return_sequence else None,
            )
            for r in results
        ],
    )
