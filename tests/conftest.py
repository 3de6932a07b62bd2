"""Fixtures shared by the whole suite: tiny random-weight artifacts written to temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from export.contract import ArtifactMeta
from export.cuda_graph import build_cuda_model
from export.graph import build_model, random_weights

# Shedding by deadline judges the machine's recent pace; on a loaded test machine a stalled
# moment would turn answers the tests compare into 503s. Tests of shedding set it themselves.
os.environ["GRU_SERVE_QUEUE_DEADLINE_MS"] = "0"

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_ONNX = ROOT / "artifacts" / "gru.onnx"


def tiny_meta(variant: str = "cho2014", **overrides) -> ArtifactMeta:
    fields = dict(
        name="tiny",
        version="0.0.1",
        variant=variant,
        input_size=1,
        hidden_size=8,
        num_layers=2,
        output_size=1,
        quantile_levels=(0.1, 0.9),
        quantile_offsets=((-1.0, -1.5, -2.0), (1.0, 1.5, 2.0)),
        context_length=16,
        horizon=3,
        frequencies=("yearly", "quarterly", "monthly", "other"),
        # quarterly and other have no table of their own: they get the pooled offsets.
        # Rows of different lengths: widening past a row's end is per row.
        quantile_offsets_by_frequency={
            "yearly": ((-2.0, -3.0), (2.5, 3.5)),
            "monthly": ((-0.5, -0.6, -0.7, -0.8), (0.4, 0.45, 0.5)),
        },
    )
    fields.update(overrides)
    return ArtifactMeta(**fields)


def write_tiny_artifact(path: Path, variant: str = "cho2014", seed: int = 0, **overrides) -> Path:
    meta = tiny_meta(variant, **overrides)
    build = build_cuda_model if meta.target == "cuda" else build_model  # target="cuda": Scan graph
    onnx.save(build(random_weights(meta, seed=seed), meta), path)
    return path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 8-unit cho2014 forecaster with random weights."""
    return write_tiny_artifact(tmp_path_factory.mktemp("artifact") / "tiny.onnx")
