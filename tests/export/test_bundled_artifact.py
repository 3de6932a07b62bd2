"""The committed artifact (artifacts/gru.onnx) is what `gru-serve export` makes of the
committed checkpoint (artifacts/checkpoint.pt). No skip when either is missing: the bundled
model is part of the deliverable, so its absence is a failure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import TOL, run_reference

from export.checkpoint_weights import meta_from_checkpoint, weights_from_model
from export.contract import ArtifactMeta
from export.digest import weights_digest
from export.graph import member_count
from export.verify import max_abs_error, run_onnx, run_torch
from model.checkpoint import load_checkpoint
from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "artifacts" / "checkpoint.pt"
ARTIFACT = ROOT / "artifacts" / "gru.onnx"


@pytest.fixture(scope="module")
def bundled():
    assert CHECKPOINT.is_file(), f"{CHECKPOINT} is missing: run `make train`"
    assert ARTIFACT.is_file(), f"{ARTIFACT} is missing: run `make export`"
    model, info = load_checkpoint(CHECKPOINT)
    session = ort.InferenceSession(str(ARTIFACT), providers=["CPUExecutionProvider"])
    meta = ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map)
    return model, info, session, meta


def real_looking_batch(meta: ArtifactMeta, steps: int, seed: int = 0):
    """Seasonal series with trend, noise and level shifts, scaled the way the service scales
    a request (meta.scaler fitted per series), rows of mixed lengths."""
    rng = np.random.default_rng(seed)
    F, B = meta.input_size, 4
    t = np.arange(steps)[:, None]
    x = np.empty((B, steps, F), dtype=np.float32)
    for b, period in enumerate([12, 52, 7, 24]):
        raw = (
            rng.uniform(-50, 300)
            + rng.uniform(-0.5, 0.5) * t
            + rng.uniform(1, 20) * np.sin(2 * np.pi * t / period + rng.uniform(0, 6))
            + rng.normal(0, rng.uniform(0.1, 3), (steps, F))
        )
        loc, scale = meta.scaler.fit(raw)
        x[b] = (raw - loc) / scale
    lengths = np.array([steps, max(1, steps // 2), 1, max(1, steps - 5)], dtype=np.int32)
    return x, lengths


def test_bundled_metadata_matches_checkpoint(bundled):
    model, info, _, meta = bundled
    expected = meta_from_checkpoint(model.config, info, versions={})
    digest = weights_digest(weights_from_model(model), model.config.variant)
    assert meta.weights_sha256 == digest  # the served weights are the checkpoint's
    assert replace(meta, versions={}) == replace(expected, versions={}, weights_sha256=digest)
    assert {k: meta.versions[k] for k in expected.versions} == expected.versions
    assert {"torch", "onnx", "onnxruntime"} <= meta.versions.keys()
    assert meta.quantile_levels and meta.metrics  # the service needs both from the file alone


def test_bundled_graph_is_one_gru_node_per_member_and_layer(bundled):
    """The bundled ensemble's members run as GRU nodes of their own (export/graph.py)."""
    model, info, _, meta = bundled
    k = member_count(weights_from_model(model))
    assert k == info["train"]["members"] > 1
    proto = onnx.load(ARTIFACT)
    onnx.checker.check_model(proto, full_check=True)
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == k * meta.num_layers
    lbr = 1 if meta.variant == "cudnn" else 0
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == lbr and attrs.get("layout", 0) == 0
        assert attrs["hidden_size"] == meta.hidden_size // k


@pytest.mark.parametrize("steps", [1, 24, 104])
def test_bundled_outputs_equal_checkpoint_module(bundled, steps):
    model, info, session, meta = bundled
    x, lengths = real_looking_batch(meta, steps, seed=steps)
    rng = np.random.default_rng(steps)
    for h0 in (
        np.zeros((meta.num_layers, len(lengths), meta.hidden_size), np.float32),  # a fresh request
        rng.uniform(-1, 1, (meta.num_layers, len(lengths), meta.hidden_size)).astype(np.float32),
    ):
        onnx_out = run_onnx(session, x, h0, lengths)
        torch_out = run_torch(model, x, h0, lengths)
        assert max_abs_error(onnx_out, torch_out, lengths) <= TOL
        assert max_abs_error(onnx_out, run_reference(model, x, h0, lengths), lengths) <= TOL


def test_export_reproduces_bundled_artifact(bundled, tmp_path, capsys):
    """Same graph and weights, bit for bit; metadata equal apart from the exporting versions
    (a fresh clone may resolve other onnx/onnxruntime releases)."""
    out = tmp_path / "gru.onnx"
    assert main(["export", "--checkpoint", str(CHECKPOINT), "--out", str(out)]) == 0
    capsys.readouterr()
    fresh, committed = onnx.load(out), onnx.load(ARTIFACT)
    assert fresh.graph.SerializeToString() == committed.graph.SerializeToString()
    fresh_meta = ArtifactMeta.from_props({p.key: p.value for p in fresh.metadata_props})
    assert replace(fresh_meta, versions={}) == replace(bundled[3], versions={})
