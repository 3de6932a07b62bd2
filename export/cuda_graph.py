"""The `cuda` target: the same forecaster with each GRU step spelled out in plain operators.

onnxruntime's CUDA provider runs an ONNX `GRU` node through cuDNN, which only implements
`linear_before_reset = 1`: a `cho2014` GRU node lands on the CPU in a CUDA session. Here the
step is MatMul, Add, Split, Sigmoid, Tanh, Mul, Sub and Where, and a sequence goes through one
`Scan` per layer, all of which the CUDA provider runs (export/cuda_kernels.py checks it).

The graph keeps the artifact contract (x, h0, seq_lens -> y, h_n, h_seq, with the GRU node's
semantics for mixed lengths: a row past its length keeps its state, its h_seq is zero and its
next layer reads zeros) and adds the slot buffer of the contract (INPUT_STATE ...): inputs
that let a stream step gather and scatter its states on the device. A plain run feeds them
empty (export.contract.empty_slot_feeds) and they cost nothing. They are required inputs, not
initializers with defaults, because onnxruntime's IO binding cannot bind the latter.

No node computes a shape: a node fed by a Shape output is one onnxruntime may move to the CPU,
so the step counter that masks finished rows is carried by the Scan itself. The `loop` and
`step` recurrences exist to measure the alternatives (bench/gpu.py); the exported artifact uses
`scan`. A `Loop` needs its trip count on the host, which takes a Shape node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_READ_SLOTS,
    INPUT_STATE,
    INPUT_WRITE_ROWS,
    INPUT_WRITE_SLOTS,
    INPUT_X,
    OUTPUT_HN,
    OUTPUT_HSEQ,
    OUTPUT_STATE,
    OUTPUT_Y,
    ArtifactMeta,
)
from export.graph import ForecasterWeights, LayerWeights, finish_model

RECURRENCES = ("scan", "loop", "step")
FLOAT, INT32, INT64, BOOL = (
    TensorProto.FLOAT,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.BOOL,
)


class _Graph:
    """Nodes and initializers of one graph under construction."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def split(self, value: str, parts: list[str]) -> list[str]:
        """`value` [B, k * H] -> k tensors [B, H] named `parts`."""
        self.nodes.append(helper.make_node("Split", [value], parts, axis=1))
        return parts


def _layer_params(g: _Graph, i: int, layer: LayerWeights, variant: str) -> dict[str, str]:
    """Initializers of layer i, laid out for the unrolled step (gate columns r, z, n)."""
    H = layer.weight_hh.shape[1]
    f32 = np.float32
    p = {"Wx": g.const(f"l{i}_Wx", layer.weight_ih.T.astype(f32))}  # (in, 3H)
    if variant == "cho2014":
        # c = tanh(W_h x + U_h (r * h) + b_hn): b_hn sits outside r, so every bias merges into
        # the input projection, computed for all steps at once.
        p["bx"] = g.const(f"l{i}_bx", (layer.bias_ih + layer.bias_hh).astype(f32))
        p["U_rz"] = g.const(f"l{i}_U_rz", layer.weight_hh[: 2 * H].T.astype(f32))  # (H, 2H)
        p["U_h"] = g.const(f"l{i}_U_h", layer.weight_hh[2 * H :].T.astype(f32))  # (H, H)
    else:
        # n = tanh(W_n x + b_in + r * (U_n h + b_hn)): b_hn stays inside the reset product.
        bh = layer.bias_hh.astype(f32)
        merged = layer.bias_ih.astype(f32) + np.concatenate([bh[: 2 * H], np.zeros(H, f32)])
        p["bx"] = g.const(f"l{i}_bx", merged)
        p["U"] = g.const(f"l{i}_U", layer.weight_hh.T.astype(f32))  # (H, 3H)
        p["b_hn"] = g.const(f"l{i}_b_hn", bh[2 * H :])
    return p


def _step(
    g: _Graph, pre: str, p: dict[str, str], variant: str, h: str, t: str, xp: str, lens: str
) -> tuple[str, str, str]:
    """One step of one layer: h [B, H], t [1] int32, xp [B, 3H] (projected input), lens [B, 1]
    -> (state after the step, t + 1, the step's h_seq row: zero where the row has ended)."""
    xr, xz, xh = g.split(xp, [f"{pre}xr", f"{pre}xz", f"{pre}xh"])
    if variant == "cho2014":
        hr, hz = g.split(g.op("MatMul", [h, p["U_rz"]], f"{pre}hrz"), [f"{pre}hr", f"{pre}hz"])
        r = g.op("Sigmoid", [g.op("Add", [xr, hr], f"{pre}ar")], f"{pre}r")
        z = g.op("Sigmoid", [g.op("Add", [xz, hz], f"{pre}az")], f"{pre}z")
        rh = g.op("Mul", [r, h], f"{pre}rh")
        cand = g.op("Add", [xh, g.op("MatMul", [rh, p["U_h"]], f"{pre}urh")], f"{pre}ac")
        c = g.op("Tanh", [cand], f"{pre}c")
        # (1 - z) * h + z * c, as h + z * (c - h)
        dz = g.op("Mul", [z, g.op("Sub", [c, h], f"{pre}c_h")], f"{pre}dz")
        h_new = g.op("Add", [h, dz], f"{pre}h_new")
    else:
        hg = g.op("MatMul", [h, p["U"]], f"{pre}hg")
        hr, hz, hn = g.split(hg, [f"{pre}hr", f"{pre}hz", f"{pre}hn"])
        r = g.op("Sigmoid", [g.op("Add", [xr, hr], f"{pre}ar")], f"{pre}r")
        z = g.op("Sigmoid", [g.op("Add", [xz, hz], f"{pre}az")], f"{pre}z")
        un = g.op("Add", [hn, p["b_hn"]], f"{pre}un")
        n = g.op(
            "Tanh", [g.op("Add", [xh, g.op("Mul", [r, un], f"{pre}run")], f"{pre}an")], f"{pre}n"
        )
        # (1 - z) * n + z * h, as n + z * (h - n)
        dz = g.op("Mul", [z, g.op("Sub", [h, n], f"{pre}h_n")], f"{pre}dz")
        h_new = g.op("Add", [n, dz], f"{pre}h_new")
    live = g.op("Less", [t, lens], f"{pre}live")  # [B, 1]: this step is within the row's length
    h_out = g.op("Where", [live, h_new, h], f"{pre}h_out")
    seq = g.op("Where", [live, h_new, "zero_f"], f"{pre}seq")
    t_next = g.op("Add", [t, "one_i32"], f"{pre}t_next")
    return h_out, t_next, seq


def _vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _recur(
    g: _Graph, i: int, p: dict[str, str], variant: str, recurrence: str, h0: str, xp: str
) -> tuple[str, str]:
    """Run layer i over xp [T, B, 3H] from h0 [B, H] -> (h_final [B, H], seq [T, B, H])."""
    if recurrence == "step":  # exactly one step, no control flow (the host loop's graph)
        xp_t = g.op("Squeeze", [xp, "axis0"], f"l{i}_xp_t")
        h, _, seq = _step(g, f"l{i}s_", p, variant, h0, "zero_i32", xp_t, "lens_col")
        return h, g.op("Unsqueeze", [seq, "axis0"], f"l{i}_seq")
    body = _Graph()
    pre = f"l{i}b_"
    h_in, t_in = f"{pre}h", f"{pre}t"
    rows = ["B", None]  # a [B, H] or [B, 3H] tensor
    state_in = [_vi(h_in, FLOAT, rows), _vi(t_in, INT32, [1])]
    if recurrence == "scan":
        xp_t = f"{pre}xp_t"
        inputs = [*state_in, _vi(xp_t, FLOAT, rows)]
    else:  # Loop: iteration number and condition first; the step's input read by index
        it, cond = f"{pre}iter", f"{pre}cond"
        inputs = [_vi(it, INT64, []), _vi(cond, BOOL, []), *state_in]
        xp_t = body.op("Gather", [xp, it], f"{pre}xp_t", axis=0)
    h_out, t_next, seq = _step(body, pre, p, variant, h_in, t_in, xp_t, "lens_col")
    outputs = [_vi(h_out, FLOAT, rows), _vi(t_next, INT32, [1]), _vi(seq, FLOAT, rows)]
    if recurrence == "loop":
        outputs.insert(0, _vi(body.op("Identity", [cond], f"{pre}cond_out"), BOOL, []))
    graph = helper.make_graph(body.nodes, f"layer{i}_{recurrence}", inputs, outputs, body.inits)
    h_fin, t_fin, seq_all = f"l{i}_h_n", f"l{i}_t", f"l{i}_seq"
    if recurrence == "scan":
        g.nodes.append(
            helper.make_node(
                "Scan", [h0, "zero_i32", xp], [h_fin, t_fin, seq_all], name=f"scan{i}",
                body=graph, num_scan_inputs=1,
            )
        )  # fmt: skip
    else:
        g.nodes.append(
            helper.make_node(
                "Loop", ["trip_count", "", h0, "zero_i32"], [h_fin, t_fin, seq_all],
                name=f"loop{i}", body=graph,
            )
        )  # fmt: skip
    return h_fin, seq_all


def build_cuda_model(
    weights: ForecasterWeights, meta: ArtifactMeta, recurrence: str = "scan"
) -> onnx.ModelProto:
    """The complete `cuda` artifact (meta.target must be "cuda"); passes onnx.checker (full).

    recurrence "scan" is the artifact; "loop" and "step" (one step, T must be 1) are the
    alternatives bench/gpu.py measures.
    """
    if meta.target != "cuda":
        raise ValueError(f"build_cuda_model builds target 'cuda', metadata says {meta.target!r}")
    if recurrence not in RECURRENCES:
        raise ValueError(f"recurrence {recurrence!r} is not one of {RECURRENCES}")
    L, H, F, O = meta.num_layers, meta.hidden_size, meta.input_size, meta.output_size
    if len(weights.layers) != L:
        raise ValueError(f"metadata says {L} layers, weights have {len(weights.layers)}")
    g = _Graph()
    g.const("axis0", np.array([0], np.int64))
    g.const("axis1", np.array([1], np.int64))
    g.const("axes02", np.array([0, 2], np.int64))
    g.const("zero_i32", np.zeros(1, np.int32))
    g.const("one_i32", np.ones(1, np.int32))
    g.const("zero_f", np.zeros(1, np.float32))
    g.const("zero_i64", np.zeros((), np.int64))

    g.op("Unsqueeze", [INPUT_LENS, "axis1"], "lens_col")  # [B, 1]
    gathered = g.op("Gather", [INPUT_STATE, INPUT_READ_SLOTS], "gathered", axis=1)
    start = g.op("Concat", [INPUT_H0, gathered], "h_start", axis=1)  # [L, B, H]
    if recurrence == "loop":
        shape = g.op("Shape", [INPUT_X], "x_shape")
        g.op("Gather", [shape, "zero_i64"], "trip_count", axis=0)

    layer_in, finals, seqs = INPUT_X, [], []
    for i, lw in enumerate(weights.layers):
        p = _layer_params(g, i, lw, meta.variant)
        h0_i = g.op(
            "Gather", [start, g.const(f"layer{i}", np.array(i, np.int64))], f"h0_{i}", axis=0
        )
        xp = g.op("Add", [g.op("MatMul", [layer_in, p["Wx"]], f"l{i}_xw"), p["bx"]], f"l{i}_xp")
        h_fin, seq = _recur(g, i, p, meta.variant, recurrence, h0_i, xp)
        finals.append(g.op("Unsqueeze", [h_fin, "axis0"], f"l{i}_h_n1"))
        seqs.append(g.op("Unsqueeze", [seq, "axis1"], f"l{i}_seq1"))
        layer_in = seq  # zeros past a row's length, as the GRU node's Y
    g.op("Concat", finals, OUTPUT_HN, axis=0)
    g.op("Concat", seqs, OUTPUT_HSEQ, axis=1)
    head_w = g.const("head_W", weights.head_weight.T.astype(np.float32))  # (H, O)
    head_b = g.const("head_b", weights.head_bias.astype(np.float32))
    g.op("Add", [g.op("MatMul", [layer_in, head_w], "head_mm"), head_b], OUTPUT_Y)

    # Slot writes: state_out[l, write_slots[k]] = h_n[l, write_rows[k]], indices built as
    # (layer, slot) pairs [L, W, 2] by broadcasting, without a shape computation.
    g.const("layer_ids", np.arange(L, dtype=np.int64).reshape(L, 1, 1))
    g.const("zeros_l11", np.zeros((L, 1, 1), np.int64))
    updates = g.op("Gather", [OUTPUT_HN, INPUT_WRITE_ROWS], "slot_updates", axis=1)
    slot_1w1 = g.op("Unsqueeze", [INPUT_WRITE_SLOTS, "axes02"], "slot_1w1")
    slots = g.op("Add", [slot_1w1, "zeros_l11"], "slot_lw1")
    layers = g.op("Add", [g.op("Mul", [slots, "zero_i64"], "zero_lw1"), "layer_ids"], "layer_lw1")
    index = g.op("Concat", [layers, slots], "slot_index", axis=2)
    g.op("ScatterND", [INPUT_STATE, index, updates], OUTPUT_STATE)

    graph = helper.make_graph(
        g.nodes,
        "gru_forecaster_cuda",
        inputs=[
            _vi(INPUT_X, FLOAT, ["T", "B", F]),
            _vi(INPUT_H0, FLOAT, [L, "B", H]),
            _vi(INPUT_LENS, INT32, ["B"]),
            _vi(INPUT_STATE, FLOAT, [L, "S", H]),
            _vi(INPUT_READ_SLOTS, INT64, ["R"]),
            _vi(INPUT_WRITE_SLOTS, INT64, ["W"]),
            _vi(INPUT_WRITE_ROWS, INT64, ["W"]),
        ],
        outputs=[
            _vi(OUTPUT_Y, FLOAT, ["T", "B", O]),
            _vi(OUTPUT_HN, FLOAT, [L, "B", H]),
            _vi(OUTPUT_HSEQ, FLOAT, ["T", L, "B", H]),
            _vi(OUTPUT_STATE, FLOAT, [L, "S", H]),
        ],
        initializer=g.inits,
    )
    return finish_model(graph, meta)
