"""POST /v1/hidden: next-step hidden states, the stateless block a client chains itself."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import CoreDep
from service.errors import InvalidInput
from service.schemas import HiddenOutput, HiddenRequest, HiddenResponse
from service.translate import to_array

router = APIRouter(prefix="/v1", tags=["hidden"])


@router.post("/hidden", response_model=HiddenResponse)
async def create_hidden(req: HiddenRequest, core: CoreDep) -> HiddenResponse:
    """Run each item's steps from its state (zeros when absent); model units, no scaling."""
    if len(req.inputs) > core.settings.max_items:
        raise InvalidInput(
            f"{len(req.inputs)} items exceed the limit of {core.settings.max_items}", "inputs"
        )
    xs, hs = [], []
    for i, item in enumerate(req.inputs):
        xs.append(core.check_sequence(to_array(item.x, f"inputs.{i}.x"), f"inputs.{i}.x"))
        h = core.zero_state() if item.h is None else to_array(item.h, f"inputs.{i}.h")
        hs.append(core.check_state(h, f"inputs.{i}.h"))
    if req.return_sequence:
        # The answer holds T x (L x H + O) numbers per item: bound it before any work is done.
        m = core.meta
        values = sum(x.shape[0] for x in xs) * (m.num_layers * m.hidden_size + m.output_size)
        limit = core.settings.max_hidden_sequence_values
        if values > limit:
            raise InvalidInput(
                f"return_sequence would return {values} numbers, over the limit of {limit}; "
                "send fewer or shorter items",
                "return_sequence",
            )
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
