"""The artifact's structure and metadata: what the service relies on besides the numbers."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import onnx
import onnxruntime as ort
import pytest
from export_helpers import meta_for, onnx_bytes, torch_model

from export.checkpoint_weights import meta_from_checkpoint, weights_from_model
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
from export.graph import build_model, member_count
from export.verify import max_abs_error, random_batch, run_onnx
from model.ensemble import combine


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


@pytest.mark.parametrize("num_layers", [1, 2])
def test_ensemble_exports_a_gru_node_per_member(num_layers):
    """Block-diagonal weights (model/ensemble.py) become one GRU node of H/k units per member
    and layer, reading the members' splits of the state; the state and outputs keep their
    full width. (test_parity.py proves the function is the ensemble's.)"""
    members = [
        torch_model("cho2014", hidden_size=6, num_layers=num_layers, seed=s) for s in range(3)
    ]
    model = combine(members)
    assert member_count(weights_from_model(model)) == 3
    proto = onnx.load_from_string(onnx_bytes(model))
    onnx.checker.check_model(proto, full_check=True)
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == 3 * num_layers
    assert {
        onnx.helper.get_attribute_value(a)
        for n in grus
        for a in n.attribute
        if a.name == "hidden_size"
    } == {6}
    outs = {v.name: v for v in proto.graph.output}
    assert _dims(outs[OUTPUT_HN]) == [num_layers, "B", 18]
    # kept whole on request (bench/graph.py times both): one node per layer, the same answers
    whole = build_model(weights_from_model(model), meta_for(model), split_members=False)
    assert sum(n.op_type == "GRU" for n in whole.graph.node) == num_layers
    x, h0, lengths = random_batch(1, num_layers, 18, batch=5, steps=30, seed=num_layers)
    split_out, whole_out = (
        run_onnx(
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]),
            x,
            h0,
            lengths,
        )
        for m in (proto, whole)
    )
    assert max_abs_error(split_out, whole_out, lengths) <= 1e-6


def test_member_count_needs_exact_blocks():
    """Any weight crossing two members (or a plain GRU's dense weights) keeps the layer whole."""
    assert member_count(weights_from_model(torch_model("cho2014", hidden_size=12))) == 1
    members = [torch_model("cudnn", hidden_size=4, num_layers=2, seed=s) for s in range(4)]
    weights = weights_from_model(combine(members))
    assert member_count(weights) == 4
    weights.layers[1].weight_ih[2 * 16 + 1, 5] = 1e-6  # n gate, unit 1 (member 0) reads member 1
    assert member_count(weights) == 2  # members 0+1 and 2+3 still never meet
    weights.layers[0].weight_hh[0, 15] = 1e-6  # r gate, unit 0 reads member 3's unit 15
    assert member_count(weights) == 1
    for layer in weights.layers:  # untrained zeros are not H members of one unit each
        layer.weight_hh[:] = 0.0
        layer.weight_ih[:] = 0.0
    assert member_count(weights) == 1


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
        context_length=104,
        horizon=12,
        frequencies=("yearly", "quarterly", "monthly", "other"),
        quantile_offsets_by_frequency={
            "yearly": ((-3.0, -3.5, -4.0), (0.0,), (3.25, 3.5, 4.0)),
            "monthly": ((-0.5,), (0.0, 0.0), (0.75,)),
        },
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
    back = ArtifactMeta.from_props(props)
    assert back == meta
    assert (back.context_length, back.horizon) == (104, 12)
    assert back.frequencies == ("yearly", "quarterly", "monthly", "other")
    assert back.quantile_offsets_by_frequency["yearly"][2] == (3.25, 3.5, 4.0)
    assert back.quantile_offsets_by_frequency["monthly"] == ((-0.5,), (0.0, 0.0), (0.75,))
    assert json.loads(props[META_PREFIX + "opset"]) == OPSET
    assert json.loads(props[META_PREFIX + "quantile_offsets_by_frequency"])["monthly"] == [
        [-0.5],
        [0.0, 0.0],
        [0.75],
    ]


def test_metadata_without_the_frequency_keys_loads_with_defaults():
    """An artifact written before context_length, horizon, frequencies and the per-frequency
    tables existed still loads."""
    props = _good_props()
    for key in ("context_length", "horizon", "frequencies", "quantile_offsets_by_frequency"):
        del props[META_PREFIX + key]
    meta = ArtifactMeta.from_props(props)
    assert (meta.context_length, meta.horizon, meta.frequencies) == (0, 0, ())
    assert meta.quantile_offsets_by_frequency == {}
    assert meta.quantile_offsets == ((-2.0, -2.5), (0.0, 0.0), (2.0, 2.5))


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
        (
            lambda p: p.update({META_PREFIX + "context_length": "-1"}),
            "metadata context_length must be a non-negative integer, got -1",
        ),
        (
            lambda p: p.update({META_PREFIX + "horizon": '"12"'}),
            "metadata horizon must be a non-negative integer, got '12'",
        ),
        (
            lambda p: p.update({META_PREFIX + "frequencies": '"monthly"'}),
            "metadata frequencies must be a list of distinct non-empty names",
        ),
        (
            lambda p: p.update({META_PREFIX + "frequencies": '["monthly", "monthly"]'}),
            "metadata frequencies must be a list of distinct non-empty names",
        ),
        (
            lambda p: p.update({META_PREFIX + "quantile_offsets_by_frequency": "[[1.0]]"}),
            "metadata quantile_offsets_by_frequency must be an object",
        ),
    ],
)
def test_from_props_rejects_missing_or_bad_keys(change, message):
    props = _good_props()
    change(props)
    with pytest.raises(ValueError, match=re.escape(message)):
        ArtifactMeta.from_props(props)


def _with_table(name: str, rows_json: str) -> dict[str, str]:
    props = _good_props()
    props[META_PREFIX + "quantile_offsets_by_frequency"] = f'{{"{name}": {rows_json}}}'
    return props


@pytest.mark.parametrize(
    ("name", "rows", "problem"),
    [
        ("monthly", "[[-1.0], [0.0]]", "got 2 row(s)"),  # 3 levels, 2 rows
        ("monthly", "[[-1.0], [0.0], [1.0], [2.0]]", "got 4 row(s)"),
        ("monthly", "[[-1.0], [], [1.0]]", "row 1 is []"),
        ("monthly", "[[-1.0], [0.0], [1.0, NaN]]", "row 2 holds nan"),
        ("monthly", "[[-1.0], [0.0], [Infinity]]", "row 2 holds inf"),
        ("monthly", '[[-1.0], [0.0], ["1"]]', "row 2 holds '1'"),
        ("monthly", "[[-1.0], [0.0], [true]]", "row 2 holds True"),
        ("monthly", "[[-1.0], 0.0, [1.0]]", "row 1 is 0.0"),
        ("monthly", '"wide"', "got str"),
    ],
)
def test_from_props_refuses_a_malformed_frequency_table(name, rows, problem):
    with pytest.raises(ValueError) as e:
        ArtifactMeta.from_props(_with_table(name, rows))
    message = str(e.value)
    assert message.startswith("metadata quantile_offsets_by_frequency['monthly'] must hold 3 ")
    assert "one per quantile level" in message and message.endswith(problem)


def test_from_props_refuses_a_table_for_an_unknown_frequency():
    with pytest.raises(ValueError) as e:
        ArtifactMeta.from_props(_with_table("weekly", "[[-1.0], [0.0], [1.0]]"))
    assert str(e.value) == (
        "metadata quantile_offsets_by_frequency['weekly']: 'weekly' is not one of frequencies "
        "['yearly', 'quarterly', 'monthly', 'other']"
    )


# ---- meta_from_checkpoint: the new keys come from the checkpoint's info ------------------------
CONFIG = SimpleNamespace(
    variant="cho2014", input_size=1, hidden_size=8, num_layers=1, output_size=1
)
INFO = {
    "name": "m",
    "version": "1",
    "quantile_levels": [0.1, 0.9],
    "quantile_offsets": [[-1.0, -1.5], [1.0, 1.5]],
}


def test_meta_from_checkpoint_copies_the_frequency_keys():
    info = {
        **INFO,
        "context_length": 104,
        "horizon": 18,
        "frequencies": ["yearly", "quarterly", "monthly", "other"],
        "quantile_offsets_by_frequency": {"monthly": [[-0.5, -0.75, -1], [0.5, 0.75, 1]]},
    }
    meta = meta_from_checkpoint(CONFIG, info, versions={})
    assert (meta.context_length, meta.horizon) == (104, 18)
    assert meta.frequencies == ("yearly", "quarterly", "monthly", "other")
    assert meta.quantile_offsets_by_frequency == {
        "monthly": ((-0.5, -0.75, -1.0), (0.5, 0.75, 1.0))
    }
    assert ArtifactMeta.from_props(meta.to_props()) == meta


def test_meta_from_checkpoint_without_the_keys_gets_the_defaults():
    meta = meta_from_checkpoint(CONFIG, dict(INFO), versions={})
    assert (meta.context_length, meta.horizon, meta.frequencies) == (0, 0, ())
    assert meta.quantile_offsets_by_frequency == {}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"frequencies": ["monthly"], "quantile_offsets_by_frequency": {"monthly": [[-1.0]]}},
            "checkpoint info quantile_offsets_by_frequency['monthly'] must hold 2 non-empty "
            "row(s) of finite numbers, one per quantile level: got 1 row(s)",
        ),
        (
            {"quantile_offsets_by_frequency": {"monthly": [[-1.0], [1.0]]}},
            "checkpoint info quantile_offsets_by_frequency['monthly']: 'monthly' is not one of "
            "frequencies []",
        ),
        ({"horizon": 1.5}, "checkpoint info horizon must be a non-negative integer, got 1.5"),
    ],
)
def test_meta_from_checkpoint_refuses_malformed_frequency_keys(extra, message):
    with pytest.raises(ValueError) as e:
        meta_from_checkpoint(CONFIG, {**INFO, **extra}, versions={})
    assert str(e.value) == message
