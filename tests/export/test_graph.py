"""The artifact's structure and metadata: what the service relies on besides the numbers."""

from __future__ import annotations

import json
import re

import onnx
import onnxruntime as ort
import pytest
from export_helpers import meta_for, onnx_bytes, torch_model

from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_X,
    META_PREFIX,
    OPSET,
    OUTPUT_HN,
    OUTPUT_Y,
    ArtifactMeta,
    Scaler,
)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(("variant", "lbr"), [("cho2014", 0), ("cudnn", 1)])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_one_gru_node_per_layer(variant, lbr, num_layers):
    model = torch_model(variant, num_layers=num_layers)
    proto = onnx.load_from_string(onnx_bytes(model))
    onnx.checker.check_model(proto, full_check=True)
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == num_layers
    for node in grus:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == lbr
        assert attrs.get("layout", 0) == 0  # onnxruntime rejects layout 1
        assert attrs["hidden_size"] == model.config.hidden_size
        assert attrs.get("direction", b"forward") == b"forward"
        assert node.input[4] == INPUT_LENS  # sequence_lens wired in, not left empty
    assert {op.domain: op.version for op in proto.opset_import}[""] == OPSET


def test_inputs_and_outputs_have_dynamic_time_and_batch():
    model = torch_model("cho2014", input_size=3, hidden_size=16, num_layers=2, output_size=3)
    proto = onnx.load_from_string(onnx_bytes(model))
    ins = {v.name: v for v in proto.graph.input}
    outs = {v.name: v for v in proto.graph.output}
    assert _dims(ins[INPUT_X]) == ["T", "B", 3]
    assert _dims(ins[INPUT_H0]) == [2, "B", 16]
    assert _dims(ins[INPUT_LENS]) == ["B"]
    assert ins[INPUT_LENS].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert _dims(outs[OUTPUT_Y]) == ["T", "B", 3]
    assert _dims(outs[OUTPUT_HN]) == [2, "B", 16]


def full_meta(model) -> ArtifactMeta:
    return meta_for(
        model,
        name="co2-gru",
        version="1.2.3",
        scaler=Scaler(rule="standard", min_scale=0.01),
        quantile_levels=(0.05, 0.5, 0.95),
        quantile_offsets=((-2.0, -2.5), (0.0, 0.0), (2.0, 2.5)),
        metrics={"mase": {"gru": 0.81, "ets": 0.78}, "coverage": [0.9, 0.88]},
        data={"series": ["co2", "sunspots"], "source": "statsmodels 0.14"},
        versions={"torch": "2.13.0", "onnx": "1.23.2"},
    )


@pytest.mark.parametrize("variant", ["cho2014", "cudnn"])
def test_metadata_round_trips_through_onnxruntime(variant):
    model = torch_model(variant)
    meta = full_meta(model)
    data = onnx_bytes(model, **{k: getattr(meta, k) for k in meta.__dataclass_fields__})
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    assert ArtifactMeta.from_props(props) == meta
    assert json.loads(props[META_PREFIX + "opset"]) == OPSET


def _good_props() -> dict[str, str]:
    return full_meta(torch_model("cho2014")).to_props()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop(META_PREFIX + "name"), "gru_serve.name is missing"),
        (lambda p: p.pop(META_PREFIX + "hidden_size"), "gru_serve.hidden_size is missing"),
        (lambda p: p.update({META_PREFIX + "variant": '"lstm"'}), "variant 'lstm'"),
        (lambda p: p.update({META_PREFIX + "hidden_size": "0"}), "hidden_size must be a positive"),
        (lambda p: p.update({META_PREFIX + "num_layers": '"2"'}), "num_layers must be a positive"),
        (lambda p: p.update({META_PREFIX + "metrics": "{not json"}), "metrics' is not valid JSON"),
        (lambda p: p.update({META_PREFIX + "quantile_levels": "[0.1]"}), "quantile_levels"),
        (lambda p: p.update({META_PREFIX + "quantile_levels": "[0, 0.5, 1.5]"}), "quantile_levels"),
    ],
)
def test_from_props_rejects_missing_or_bad_keys(change, message):
    props = _good_props()
    change(props)
    with pytest.raises(ValueError, match=re.escape(message)):
        ArtifactMeta.from_props(props)
