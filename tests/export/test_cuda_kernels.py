"""The CUDA kernel list kept in export/cuda_kernels.py and the node check built on it; and
node placement as onnxruntime reports it (export/placement.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import meta_for, torch_model
from onnx import TensorProto, helper, numpy_helper

from export.checkpoint_weights import weights_from_model
from export.contract import OPSET
from export.cuda_graph import build_cuda_model
from export.cuda_kernels import (
    CUDA_KERNELS,
    KERNELS,
    installed_cuda_kernels,
    parse,
    unsupported_nodes,
)
from export.graph import build_model
from export.placement import CPU, RECORD_OPTION, NodePlacement, read_placement, record_placement
from service.runtime import cuda_device_count


def tiny(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def test_table_parses_into_disjoint_ranges():
    assert len(CUDA_KERNELS) == 146  # ai.onnx operators with a CUDA kernel in the document
    for op, kernels in CUDA_KERNELS.items():
        spans = sorted((k.first, k.last if k.last is not None else 10**6) for k in kernels)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end < start, op  # a schema version maps to one kernel
    scan = CUDA_KERNELS["Scan"]
    assert [k for k in scan if k.covers(11)][0].last == 15
    assert not [k for k in CUDA_KERNELS["Where"] if k.covers(16)][0].last  # 16+: open-ended
    assert CUDA_KERNELS["Where"][0].types == frozenset({1, 6, 7, 9})
    assert parse("Foo 3-5 f32\nFoo 6+ b")["Foo"][1].types == frozenset({9})
    with pytest.raises(ValueError, match="bad opset range"):
        parse("Foo x3 f32")
    assert "Clip 13+ f32 i64" in KERNELS  # no int32 Clip on CUDA, as the document lists


def test_every_operator_of_the_cuda_graph_is_listed_at_its_version():
    model = torch_model("cho2014")
    proto = build_cuda_model(weights_from_model(model), replace(meta_for(model), target="cuda"))
    ops = {n.op_type for n in proto.graph.node}
    for node in proto.graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                ops |= {n.op_type for n in a.g.node}
    for op in ops:
        since = onnx.defs.get_schema(op, OPSET).since_version
        assert any(k.covers(since) for k in CUDA_KERNELS[op]), op
    assert {"Scan", "MatMul", "Sigmoid", "Tanh", "Mul", "Sub", "Where", "ScatterND"} <= ops


def test_check_flags_unlisted_ops_types_domains_and_shape_computations():
    f = TensorProto.FLOAT
    det = tiny([helper.make_node("Det", ["a"], ["b"])], [vi("a", f, [2, 2])], [vi("b", f, [])])
    assert unsupported_nodes(det) == ["node 0 (Det): no CUDA kernel for opset version 11"]
    clip_i32 = tiny(
        [helper.make_node("Clip", ["a"], ["b"])],
        [vi("a", TensorProto.INT32, [2])],
        [vi("b", TensorProto.INT32, [2])],
    )
    assert unsupported_nodes(clip_i32) == ["node 0 (Clip): CUDA kernel does not take INT32"]
    foreign = tiny(
        [helper.make_node("FusedMatMul", ["a", "a"], ["b"], domain="com.microsoft")],
        [vi("a", f, [2, 2])],
        [vi("b", f, [2, 2])],
    )
    foreign.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert "domain 'com.microsoft'" in unsupported_nodes(foreign)[0]
    # Shape -> Add on the host -> Reshape's shape argument: the Add moves, the Reshape stays.
    shape = tiny(
        [
            helper.make_node("Shape", ["a"], ["s"]),
            helper.make_node("Add", ["s", "zero"], ["s2"]),
            helper.make_node("Reshape", ["a", "s2"], ["b"]),
        ],
        [vi("a", f, [2, 3])],
        [vi("b", f, [2, 3])],
        [numpy_helper.from_array(np.zeros(2, np.int64), "zero")],
    )
    assert unsupported_nodes(shape) == [
        "node 1 (Add): onnxruntime moves it to the CPU (a shape computation)"
    ]


def test_gru_attributes_cudnn_cannot_run_are_flagged():
    for variant, flagged in (("cho2014", 2), ("cudnn", 0)):
        model = torch_model(variant)
        proto = build_model(weights_from_model(model), meta_for(model))
        assert len(unsupported_nodes(proto)) == flagged


@pytest.mark.skipif(cuda_device_count() == 0, reason="needs the CUDA provider (a GPU)")
def test_the_kept_table_matches_the_installed_cuda_provider():
    """On a GPU machine: the registry the document is generated from agrees with the table for
    every operator the cuda graph uses."""
    installed = installed_cuda_kernels()
    if installed is None:
        # seen with onnxruntime-gpu 1.31.1 on an H200 without TensorRT's libraries: listing
        # the kernels loads every provider library and crashes the (child) process
        pytest.skip(
            "this onnxruntime build cannot list its kernels here (see installed_cuda_kernels)"
        )
    for op in ("Scan", "MatMul", "Add", "Sigmoid", "Tanh", "Mul", "Sub", "Where", "Less"):
        ranges = {(k.first, k.last) for k in CUDA_KERNELS[op]}
        assert ranges <= set(installed[op]), op


# ---- placement as onnxruntime reports it ----------------------------------------------------
def placed_session(proto: onnx.ModelProto, record: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if record:
        record_placement(so)
    return ort.InferenceSession(proto.SerializeToString(), so, providers=[CPU])


def test_placement_counts_every_node_bodies_included():
    model = torch_model("cho2014", num_layers=2)
    cuda = build_cuda_model(weights_from_model(model), replace(meta_for(model), target="cuda"))
    placed = read_placement(placed_session(cuda))
    assert placed is not None and set(placed.counts()) == {CPU}
    top = len(cuda.graph.node)
    body = sum(len(a.g.node) for n in cuda.graph.node for a in n.attribute if a.HasField("g"))
    # onnxruntime may fuse a few nodes while optimising; the Scan bodies are in the count
    assert top < placed.counts()[CPU] <= top + body
    assert placed.recurrent_providers() == {CPU} and "Scan" in placed.ops_on(CPU)
    cpu = read_placement(placed_session(build_model(weights_from_model(model), meta_for(model))))
    assert cpu is not None and cpu.ops_on(CPU).count("GRU") == 1  # each op type once


def test_placement_is_none_when_the_session_cannot_tell():
    model = torch_model("cho2014")
    proto = build_model(weights_from_model(model), meta_for(model))
    assert read_placement(placed_session(proto, record=False)) is None
    assert read_placement(object()) is None  # an onnxruntime without the report
    so = ort.SessionOptions()
    record_placement(so)
    assert so.get_session_config_entry(RECORD_OPTION) == "1"


def test_node_placement_summaries():
    p = NodePlacement((("CUDA", "MatMul"), (CPU, "GRU"), ("CUDA", "Add"), (CPU, "GRU")))
    assert p.counts() == {"CUDA": 2, CPU: 2}
    assert p.ops_on(CPU) == ["GRU"] and p.ops_on("CUDA") == ["MatMul", "Add"]
    assert p.recurrent_providers() == {CPU}
