"""Shared by the export tests: small torch forecasters, their ONNX sessions and NumPy twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from reference import Gates, forecaster, gates_from_pytorch

from export.checkpoint_weights import weights_from_model
from export.contract import ArtifactMeta
from export.graph import build_model
from export.verify import run_onnx, run_torch
from model.checkpoint import save_checkpoint
from model.gru import GRUConfig, GRUForecaster

TOL = 1e-5


def torch_model(
    variant: str,
    input_size: int = 1,
    hidden_size: int = 16,
    num_layers: int = 2,
    output_size: int = 1,
    seed: int = 0,
    scale: float = 0.6,
) -> GRUForecaster:
    """Weights wider than nn.GRU's init (+-0.25 at H=16) so the gates saturate sometimes."""
    torch.manual_seed(seed)
    cfg = GRUConfig(input_size, hidden_size, num_layers, output_size, 0.0, variant)
    model = GRUForecaster(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-scale, scale)
    return model.eval()


def meta_for(model: GRUForecaster, **overrides) -> ArtifactMeta:
    c = model.config
    fields = dict(
        name="test",
        version="0.0.0",
        variant=c.variant,
        input_size=c.input_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_layers,
        output_size=c.output_size,
    )
    fields.update(overrides)
    return ArtifactMeta(**fields)


def onnx_bytes(model: GRUForecaster, **meta_overrides) -> bytes:
    return build_model(
        weights_from_model(model), meta_for(model, **meta_overrides)
    ).SerializeToString()


def session_for(model: GRUForecaster) -> ort.InferenceSession:
    return ort.InferenceSession(onnx_bytes(model), providers=["CPUExecutionProvider"])


def reference_params(model: GRUForecaster) -> tuple[list[Gates], np.ndarray, np.ndarray]:
    """Per-gate matrices pulled out of the module's PyTorch-layout parameters."""
    v = model.config.variant
    layers = [
        gates_from_pytorch(
            *(
                getattr(m, n).detach().numpy()
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ),
            variant=v,
        )
        for m in model.layers
    ]
    return layers, model.head.weight.detach().numpy(), model.head.bias.detach().numpy()


def run_reference(model: GRUForecaster, x, h0, lengths) -> tuple[np.ndarray, np.ndarray]:
    layers, W, b = reference_params(model)
    return forecaster(layers, W, b, x, h0, lengths, model.config.variant)


def run_three(model, session, x, h0, lengths):
    """(torch, onnxruntime, numpy) outputs, each (y (B, T, O), h_n (L, B, H))."""
    return (
        run_torch(model, x, h0, lengths),
        run_onnx(session, x, h0, lengths),
        run_reference(model, x, h0, lengths),
    )


def write_checkpoint(path: Path, variant: str = "cho2014", seed: int = 0, **info_overrides) -> Path:
    """A small but complete checkpoint, shaped like the ones `gru-serve train` writes."""
    model = torch_model(variant, hidden_size=8, seed=seed)
    info = dict(
        name="tiny-ckpt",
        version="0.1.0",
        scaler={"rule": "standard", "min_scale": 1e-3},
        quantile_levels=[0.1, 0.9],
        quantile_offsets=[[-1.0, -1.5], [1.0, 1.5]],
        metrics={"mase": {"gru": 0.9, "seasonal_naive": 1.1}},
        data={"source": "unit test"},
        versions={"torch": str(torch.__version__)},
        context_length=24,
    )
    info.update(info_overrides)
    return save_checkpoint(path, model, info)
