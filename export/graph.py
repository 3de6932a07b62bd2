"""Build the ONNX graph of the forecaster: standard GRU nodes per layer plus the head.

Weights come in as numpy arrays in PyTorch's layout (gate rows r, z, n) so that this module
needs neither torch nor a checkpoint: tests build random artifacts with it directly.

A layer is one GRU node, unless its weights are block-diagonal (an ensemble combined by
model/ensemble.py): then each block becomes a GRU node of its own, reading a split of the
state. Same function, but onnxruntime's dense kernels no longer multiply the zero blocks: a
3-member layer's recurrent product is 3x smaller. `python -m bench --sections graph` times
both forms of the bundled model (bench/results.md): long reads are faster, a single step of
one series a little slower (three nodes to launch instead of one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_X,
    OPSET,
    OUTPUT_HN,
    OUTPUT_HSEQ,
    OUTPUT_Y,
    ArtifactMeta,
)


@dataclass
class LayerWeights:
    """One layer in PyTorch's layout: rows ordered r, z, n."""

    weight_ih: np.ndarray  # (3H, in)
    weight_hh: np.ndarray  # (3H, H)
    bias_ih: np.ndarray  # (3H,)
    bias_hh: np.ndarray  # (3H,)


@dataclass
class ForecasterWeights:
    layers: list[LayerWeights]
    head_weight: np.ndarray  # (O, H)
    head_bias: np.ndarray  # (O,)


def to_onnx_gates(layer: LayerWeights, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch r, z, n rows -> ONNX W [1, 3H, in], R [1, 3H, H], B [1, 6H] in z, r, h order.

    ONNX interpolates H_t = (1 - z) * h~ + z * H_{t-1}. That is the cudnn form as is; for
    cho2014 (h_t = (1 - z) * h + z * c) the ONNX gate must be 1 - z = sigmoid(-a), so the
    update gate's weights and biases are negated.
    """

    def zrh(a: np.ndarray) -> np.ndarray:
        r, z, n = np.split(a, 3, axis=0)
        if variant == "cho2014":
            z = -z
        return np.concatenate([z, r, n], axis=0)

    W = zrh(layer.weight_ih)[None]
    R = zrh(layer.weight_hh)[None]
    B = np.concatenate([zrh(layer.bias_ih), zrh(layer.bias_hh)])[None]
    return W.astype(np.float32), R.astype(np.float32), B.astype(np.float32)


def member_count(weights: ForecasterWeights) -> int:
    """The most blocks k (dividing H) in which every layer is block-diagonal: in each gate, unit
    block j reads only block j of the state, and above the first layer only block j of the layer
    below. Weights that mix all units (any single GRU) give 1; so do all-zero recurrent weights
    (a block must have some recurrent weight to count as a member)."""
    H = weights.layers[0].weight_hh.shape[1]

    def splits(lw: LayerWeights, k: int, first: bool) -> bool:
        own = np.eye(k, dtype=bool)  # [row block, column block]

        def blocks(w: np.ndarray) -> np.ndarray:  # (3H, H) -> (gate, row blk, col blk, ., .)
            return w.reshape(3, k, H // k, k, H // k).transpose(0, 1, 3, 2, 4)

        mats = [lw.weight_hh] if first else [lw.weight_hh, lw.weight_ih]
        if any(np.any(blocks(w)[:, ~own]) for w in mats):
            return False
        return bool(np.all(np.any(blocks(lw.weight_hh)[:, own], axis=(0, 2, 3))))

    for k in range(H, 1, -1):
        if H % k == 0 and all(splits(lw, k, i == 0) for i, lw in enumerate(weights.layers)):
            return k
    return 1


def member_weights(layer: LayerWeights, j: int, k: int, first: bool) -> LayerWeights:
    """Block j of k of a block-diagonal layer, as a GRU layer of H/k units."""
    size = layer.weight_hh.shape[1] // k
    H = size * k
    rows = np.concatenate([np.arange(g * H + j * size, g * H + (j + 1) * size) for g in range(3)])
    own = slice(j * size, (j + 1) * size)
    w_ih = layer.weight_ih[rows] if first else layer.weight_ih[rows, own]
    return LayerWeights(w_ih, layer.weight_hh[rows, own], layer.bias_ih[rows], layer.bias_hh[rows])


def build_model(
    weights: ForecasterWeights, meta: ArtifactMeta, split_members: bool = True
) -> onnx.ModelProto:
    """The complete artifact: graph, initializers and metadata; passes onnx.checker (full).
    split_members=False keeps an ensemble one GRU node per layer (the same function; bench/graph.py
    times the two)."""
    L, H, F, O = meta.num_layers, meta.hidden_size, meta.input_size, meta.output_size
    if meta.target != "cpu":
        raise ValueError(f"build_model builds target 'cpu', metadata says {meta.target!r}")
    if len(weights.layers) != L:
        raise ValueError(f"metadata says {L} layers, weights have {len(weights.layers)}")
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    const("axis0", np.array([0], dtype=np.int64))
    const("axis1", np.array([1], dtype=np.int64))
    k = member_count(weights) if split_members else 1
    if k > 1:
        const("member_units", np.full(k, H // k, dtype=np.int64))
    member_in = [INPUT_X] * k  # each member's input to the current layer
    finals, seqs = [], []
    for i, lw in enumerate(weights.layers):
        member_in = _layer(nodes, const, i, lw, k, member_in, i + 1 == L, meta.variant)
        finals.append(f"Yh{i}")  # [1, B, H]
        seqs.append(f"Y{i}")  # [T, 1, B, H]
    nodes.append(helper.make_node("Concat", finals, [OUTPUT_HN], axis=0))
    # Per-step states of every layer, for clients that ask for the whole trajectory.
    nodes.append(helper.make_node("Concat", seqs, [OUTPUT_HSEQ], axis=1))
    const("head_W", weights.head_weight.T.astype(np.float32))  # (H, O)
    const("head_b", weights.head_bias.astype(np.float32))
    nodes.append(helper.make_node("MatMul", [f"seq{L - 1}", "head_W"], ["head_mm"]))
    nodes.append(helper.make_node("Add", ["head_mm", "head_b"], [OUTPUT_Y]))

    graph = helper.make_graph(
        nodes,
        "gru_forecaster",
        inputs=[
            helper.make_tensor_value_info(INPUT_X, TensorProto.FLOAT, ["T", "B", F]),
            helper.make_tensor_value_info(INPUT_H0, TensorProto.FLOAT, [L, "B", H]),
            helper.make_tensor_value_info(INPUT_LENS, TensorProto.INT32, ["B"]),
        ],
        outputs=[
            helper.make_tensor_value_info(OUTPUT_Y, TensorProto.FLOAT, ["T", "B", O]),
            helper.make_tensor_value_info(OUTPUT_HN, TensorProto.FLOAT, [L, "B", H]),
            helper.make_tensor_value_info(OUTPUT_HSEQ, TensorProto.FLOAT, ["T", L, "B", H]),
        ],
        initializer=inits,
    )
    return finish_model(graph, meta)


def _layer(
    nodes: list[onnx.NodeProto],
    const: Callable[[str, np.ndarray], str],
    i: int,
    lw: LayerWeights,
    k: int,
    member_in: list[str],
    last: bool,
    variant: str,
) -> list[str]:
    """Layer i's nodes, appended to `nodes`: its slice of h0, a GRU node per member (k > 1:
    each on its Split of the slice), their outputs side by side as Y{i} [T, 1, B, H] and
    Yh{i} [1, B, H]. Returns each member's input to the next layer; seq{i} [T, B, H] is
    written for the head (last layer) or the next layer (one member)."""
    H = lw.weight_hh.shape[1]
    if k == 1:
        parts, tags = [lw], [f"{i}"]
    else:
        parts = [member_weights(lw, j, k, i == 0) for j in range(k)]
        tags = [f"{i}_{j}" for j in range(k)]
    for part, t in zip(parts, tags, strict=True):
        W, R, B = to_onnx_gates(part, variant)
        const(f"W{t}", W)
        const(f"R{t}", R)
        const(f"B{t}", B)
    const(f"h0_start{i}", np.array([i], dtype=np.int64))
    const(f"h0_end{i}", np.array([i + 1], dtype=np.int64))
    # h0 [L, B, H] -> this layer's [1, B, H] (k > 1: one [1, B, H/k] per member)
    nodes.append(
        helper.make_node("Slice", [INPUT_H0, f"h0_start{i}", f"h0_end{i}", "axis0"], [f"h0_{i}"])
    )
    if k > 1:
        split = [f"h0_{t}" for t in tags]
        nodes.append(helper.make_node("Split", [f"h0_{i}", "member_units"], split, axis=2))
    next_in = list(member_in)
    for j, t in enumerate(tags):
        nodes.append(
            helper.make_node(
                "GRU",
                [member_in[j], f"W{t}", f"R{t}", f"B{t}", INPUT_LENS, f"h0_{t}"],
                [f"Y{t}", f"Yh{t}"],
                name=f"gru{t}",
                hidden_size=H // k,
                linear_before_reset=1 if variant == "cudnn" else 0,
                layout=0,
            )
        )
        if k > 1 and not last:  # the member's own [T, B, H/k] for its block above
            nodes.append(helper.make_node("Squeeze", [f"Y{t}", "axis1"], [f"seq{t}"]))
            next_in[j] = f"seq{t}"
    if k > 1:
        nodes.append(helper.make_node("Concat", [f"Yh{t}" for t in tags], [f"Yh{i}"], axis=2))
        nodes.append(helper.make_node("Concat", [f"Y{t}" for t in tags], [f"Y{i}"], axis=3))
    if k == 1 or last:
        # [T, 1, B, H] -> [T, B, H] (the ONNX GRU zeroes rows past their length)
        nodes.append(helper.make_node("Squeeze", [f"Y{i}", "axis1"], [f"seq{i}"]))
    if k == 1:
        next_in = [f"seq{i}"]
    return next_in


def finish_model(graph: onnx.GraphProto, meta: ArtifactMeta) -> onnx.ModelProto:
    """A graph made an artifact (both targets): opset, IR version, metadata, full check."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gru-serve"
    )
    model.ir_version = 8  # readable by onnxruntime releases from 1.10 on
    helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model, full_check=True)
    return model


def random_weights(meta: ArtifactMeta, seed: int = 0, scale: float = 0.5) -> ForecasterWeights:
    """Random weights of the right shapes: the tiny models most tests serve."""
    rng = np.random.default_rng(seed)
    H, O = meta.hidden_size, meta.output_size

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, size=shape).astype(np.float32)

    layers = [
        LayerWeights(u(3 * H, meta.input_size if i == 0 else H), u(3 * H, H), u(3 * H), u(3 * H))
        for i in range(meta.num_layers)
    ]
    return ForecasterWeights(layers, u(O, H), u(O))
