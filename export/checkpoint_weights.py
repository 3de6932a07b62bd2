"""A loaded checkpoint -> what export/graph.py builds from: ForecasterWeights + ArtifactMeta.

No torch import here: the functions only read tensors they are handed (`.detach().cpu()
.numpy()`), so graph.py and this module stay importable without torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from export.contract import ArtifactMeta, Scaler, frequency_fields
from export.graph import ForecasterWeights, LayerWeights


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def weights_from_model(model: Any) -> ForecasterWeights:
    """Copy a GRUForecaster's parameters (PyTorch r, z, n layout) into numpy."""
    layers = [
        LayerWeights(_np(m.weight_ih), _np(m.weight_hh), _np(m.bias_ih), _np(m.bias_hh))
        for m in model.layers
    ]
    return ForecasterWeights(layers, _np(model.head.weight), _np(model.head.bias))


def _jsonable(value: Any) -> Any:
    """Tensors and numpy scalars in info become plain lists/numbers, so metadata is JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _merge_versions(trained: dict, exporting: dict[str, str]) -> dict:
    merged = {**trained, **exporting}
    if "torch" not in merged and "export_torch" in exporting:  # an old checkpoint without versions
        merged["torch"] = exporting["export_torch"]
    return merged


def meta_from_checkpoint(config: Any, info: dict, versions: dict[str, str]) -> ArtifactMeta:
    """Build the artifact's metadata from a checkpoint's config and info.

    `versions` (what exports: onnx, onnxruntime, export_torch) is added to the checkpoint's
    own (what trained it), so the file records both. `context_length`, `horizon`,
    `frequencies` and `quantile_offsets_by_frequency` are copied when the info has them (absent:
    the ArtifactMeta defaults). Raises ValueError naming the first missing or malformed field.
    """
    for key in ("name", "version"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise ValueError(f"checkpoint info has no {key!r} string")
    try:
        scaler = Scaler(**info.get("scaler", {}))
    except TypeError as e:
        raise ValueError(f"checkpoint info 'scaler' is malformed: {e}") from None
    levels = tuple(float(q) for q in info.get("quantile_levels", ()))
    offsets = tuple(tuple(float(v) for v in row) for row in info.get("quantile_offsets", ()))
    if len(levels) != len(offsets):
        raise ValueError(
            f"checkpoint has {len(levels)} quantile levels but {len(offsets)} offset rows"
        )
    keys = ("context_length", "horizon", "frequencies", "quantile_offsets_by_frequency")
    extra_fields = frequency_fields(
        {k: _jsonable(info[k]) for k in keys if k in info}, len(levels), "checkpoint info"
    )
    meta = ArtifactMeta(
        name=info["name"],
        version=info["version"],
        variant=config.variant,
        input_size=config.input_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        output_size=config.output_size,
        scaler=scaler,
        quantile_levels=levels,
        quantile_offsets=offsets,
        **extra_fields,
        metrics=_jsonable(info.get("metrics", {})),
        data=_jsonable(info.get("data", {})),
        versions=_merge_versions(_jsonable(info.get("versions", {})), versions),
    )
    try:
        meta.to_props()  # fail here, with a clear message, if something is still not JSON
    except TypeError as e:
        raise ValueError(f"checkpoint info does not serialise to metadata: {e}") from None
    return meta
