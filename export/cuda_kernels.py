"""The operators onnxruntime's CUDA execution provider implements, and a check of a graph
against them.

Source: the "Operators implemented by CUDAExecutionProvider" table (domain ai.onnx) of
docs/OperatorKernels.md in the onnxruntime repository, snapshot at commit 001d12d2 (a main
branch listing opsets up to 25, i.e. onnxruntime 1.23 or later; the CUDA kernels of the
operators gru-serve uses are the same across these releases). Re-derive the table when
onnxruntime moves on: on a machine where the CUDA provider loads,
`installed_cuda_kernels()` reads the same registry the document is generated from.

Table format, one kernel per line: `op  opsets  types`, where opsets is `a-b`, `a` or `a+`
(the ONNX opset versions of the op's schema the kernel is registered for) and types lists
which of float (f32), int32 (i32), int64 (i64) and bool (b) the kernel takes or gives in any
argument; other element types are left out because gru-serve graphs use only these four.

Beyond the table, two placement rules of onnxruntime's: a GRU, LSTM or RNN node whose
attributes cuDNN cannot run goes to the CPU (for GRU, any linear_before_reset other than 1:
the cho2014 variant); and a node computing on the host output of a Shape or Size node (with
only small constants or graph inputs besides) is moved to the CPU as a shape computation,
unless the kernel reads that argument on the host anyway (HOST_ARGS).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

KERNELS = """
Abs 13+ f32 i32 i64
Abs 6-12 f32 i32 i64
Add 14+ f32 i32 i64
Add 13 f32 i32 i64
Add 7-12 f32 i32 i64
Affine 1+ f32
And 7+ b
ArgMax 13+ f32 i64
ArgMax 12 f32 i64
ArgMax 1-11 f32 i64
ArgMin 13+ f32 i64
ArgMin 12 f32 i64
ArgMin 1-11 f32 i64
Attention 24+ f32 i64 b
Attention 23 f32 b
AveragePool 22+ f32
AveragePool 19-21 f32
AveragePool 11-18 f32
AveragePool 10 f32
AveragePool 7-9 f32
BatchNormalization 15+ f32
BatchNormalization 14 f32
BatchNormalization 9-13 f32
BatchNormalization 7-8 f32
Cast 23+ f32 i32 i64 b
Cast 21-22 f32 i32 i64 b
Cast 19-20 f32 i32 i64 b
Cast 13-18 f32 i32 i64 b
Cast 9-12 f32 i32 i64 b
Cast 6-8 f32 i32 i64 b
Ceil 13+ f32
Ceil 6-12 f32
Clip 13+ f32 i64
Clip 12 f32 i64
Clip 11 f32
Clip 6-10 f32
Compress 11+ f32 i32 i64 b
Compress 9-10 f32 i32 i64 b
Concat 13+ f32 i32 i64 b
Concat 11-12 f32 i32 i64 b
Concat 4-10 f32 i32 i64 b
ConcatFromSequence 11+ f32 i32 i64 b
ConstantOfShape 9+ f32 i32 i64 b
Conv 22+ f32
Conv 11-21 f32
Conv 1-10 f32
ConvTranspose 11+ f32
ConvTranspose 1-10 f32
Cos 7+ f32
Crop 1+ f32
CumSum 14+ f32 i32 i64
CumSum 11-13 f32 i32 i64
DepthToSpace 13+ f32
DepthToSpace 11-12 f32
DepthToSpace 1-10 f32
DequantizeLinear 21+ f32
DequantizeLinear 19-20 f32
DequantizeLinear 13-18 f32
DequantizeLinear 10-12 f32
Div 14+ f32 i32 i64
Div 13 f32 i32 i64
Div 7-12 f32 i32 i64
Dropout 13+ f32 b
Dropout 12 f32 b
Dropout 10-11 f32 b
Dropout 7-9 f32
DynamicSlice 1+ f32 i32 i64 b
Einsum 12+ f32
Elu 6+ f32
Equal 13+ f32 i32 i64 b
Equal 11-12 f32 i32 i64 b
Equal 7-10 i32 i64 b
Erf 13+ f32
Erf 9-12 f32
Exp 13+ f32
Exp 6-12 f32
Expand 13+ f32 i32 i64 b
Expand 8-12 f32 i32 i64 b
EyeLike 9+ f32 i32 i64
Flatten 13+ f32 i32 i64 b
Flatten 11-12 f32 i32 i64 b
Flatten 9-10 f32 i32 i64 b
Flatten 1-8 f32 i32 i64 b
Floor 13+ f32
Floor 6-12 f32
GRU 14+ f32 i32
GRU 7-13 f32 i32
Gather 13+ f32 i32 i64 b
Gather 11-12 f32 i32 i64 b
Gather 1-10 f32 i32 i64 b
GatherElements 13+ f32 i32 i64 b
GatherElements 11-12 f32 i32 i64 b
GatherND 13+ f32 i64 b
GatherND 12 f32 i64 b
GatherND 11 f32 i64 b
Gelu 20+ f32
Gemm 13+ f32
Gemm 11-12 f32
Gemm 9-10 f32
Gemm 7-8 f32
GlobalAveragePool 1+ f32
GlobalMaxPool 1+ f32
Greater 13+ f32 i32 i64 b
Greater 9-12 f32 i32 i64 b
Greater 7-8 f32 b
GreaterOrEqual 16+ f32 i32 i64 b
GreaterOrEqual 12-15 f32 i32 i64 b
GridSample 22+ f32
GridSample 20-21 f32
GridSample 16-19 f32
HardSigmoid 22+ f32
HardSigmoid 6-21 f32
HardSwish 22+ f32
HardSwish 14-21 f32
Identity 19+ f32 i32 i64 b
Identity 14-18 f32 i32 i64 b
Identity 13 f32 i32 i64 b
Identity 1-12 f32 i32 i64 b
If 19+ f32 i32 i64 b
If 13-18 f32 i32 i64 b
If 11-12 f32 i32 i64 b
If 1-10 f32 i32 i64 b
ImageScaler 1+ f32
InstanceNormalization 6+ f32
IsInf 20+ f32 b
IsInf 10-19 f32 b
IsNaN 20+ f32 b
IsNaN 13-19 f32 b
IsNaN 9-12 f32 b
LRN 13+ f32
LRN 1-12 f32
LSTM 14+ f32 i32
LSTM 7-13 f32 i32
LayerNormalization 17+ f32
LayerNormalization 1-16 f32
LeakyRelu 16+ f32
LeakyRelu 6-15 f32
Less 13+ f32 i32 i64 b
Less 9-12 f32 i32 i64 b
Less 7-8 f32 b
LessOrEqual 16+ f32 i32 i64 b
LessOrEqual 12-15 f32 i32 i64 b
Log 13+ f32
Log 6-12 f32
LogSoftmax 13+ f32
LogSoftmax 11-12 f32
LogSoftmax 1-10 f32
Loop 19+ f32 i32 i64 b
Loop 13-18 f32 i32 i64 b
Loop 11-12 f32 i32 i64 b
Loop 1-10 f32 i32 i64 b
MatMul 13+ f32
MatMul 9-12 f32
MatMul 1-8 f32
MatMulInteger 10+ i32
Max 13+ f32 i32 i64
Max 12 f32 i32 i64
Max 6-11 f32
MaxPool 12+ f32 i64
MaxPool 11 f32 i64
MaxPool 10 f32 i64
MaxPool 8-9 f32 i64
MaxPool 1-7 f32
MemcpyFromHost 1+ f32 i32 i64 b
MemcpyToHost 1+ f32 i32 i64 b
Min 13+ f32 i32 i64
Min 12 f32 i32 i64
Min 6-11 f32
Mod 13+ f32 i32 i64
Mod 10-12 f32 i32 i64
Mul 14+ f32 i32 i64
Mul 13 f32 i32 i64
Mul 7-12 f32 i32 i64
Neg 13+ f32 i32 i64
Neg 6-12 f32 i32 i64
NonZero 13+ f32 i32 i64 b
NonZero 9-12 f32 i32 i64 b
Not 1+ b
OneHot 11+ f32 i32 i64
Or 7+ b
PRelu 16+ f32
PRelu 9-15 f32
PRelu 7-8 f32
Pad 18+ f32 i64 b
Pad 13-17 f32 i64 b
Pad 11-12 f32 i64
Pad 2-10 f32
ParametricSoftplus 1+ f32
Pow 15+ f32 i32 i64
Pow 13-14 f32 i32 i64
Pow 12 f32 i32 i64
Pow 7-11 f32
QuantizeLinear 21+ f32
QuantizeLinear 19-20 f32
QuantizeLinear 13-18 f32
QuantizeLinear 10-12 f32
RMSNormalization 23+ f32
RNN 14+ f32 i32
RNN 7-13 f32 i32
RandomNormal 1+ f32
RandomNormalLike 1+ f32 i32 i64 b
RandomUniform 1+ f32
RandomUniformLike 1+ f32 i32 i64 b
Range 11+ f32 i32 i64
Reciprocal 13+ f32
Reciprocal 6-12 f32
ReduceL1 18+ f32 i32 i64
ReduceL1 1-17 f32 i32
ReduceL2 18+ f32 i32 i64
ReduceL2 1-17 f32 i32
ReduceLogSum 18+ f32 i64
ReduceLogSum 1-17 f32
ReduceLogSumExp 18+ f32 i64
ReduceLogSumExp 1-17 f32
ReduceMax 18+ f32 i32 i64
ReduceMax 1-17 f32 i32 i64
ReduceMean 18+ f32 i32 i64
ReduceMean 1-17 f32 i32
ReduceMin 18+ f32 i32 i64
ReduceMin 1-17 f32 i32 i64
ReduceProd 18+ f32 i32 i64
ReduceProd 1-17 f32 i32
ReduceSum 13+ f32 i32 i64
ReduceSum 1-12 f32 i32 i64
ReduceSumSquare 18+ f32 i64
ReduceSumSquare 1-17 f32
Relu 14+ f32
Relu 13 f32
Relu 6-12 f32
Reshape 23+ f32 i32 i64 b
Reshape 21-22 f32 i32 i64 b
Reshape 19-20 f32 i32 i64 b
Reshape 14-18 f32 i32 i64 b
Reshape 13 f32 i32 i64 b
Reshape 5-12 f32 i32 i64 b
Reshape 1-4 f32 i32 i64 b
Resize 19+ f32 i32 i64
Resize 18 f32 i32 i64
Resize 13-17 f32 i32 i64
Resize 11-12 f32 i32 i64
Resize 10 f32 i32
ReverseSequence 10+ f32 i32 i64 b
RoiAlign 10+ f32 i64
RotaryEmbedding 23+ f32 i64
Round 11+ f32
ScaledTanh 1+ f32
Scan 19+ f32 i32 i64 b
Scan 16-18 f32 i32 i64 b
Scan 11-15 f32 i32 i64 b
Scan 9-10 f32 i32 i64 b
Scan 8 f32 i32 i64 b
Scatter 9-10 f32 i32 i64 b
ScatterElements 18+ f32 i32 i64 b
ScatterElements 16-17 f32 i32 i64 b
ScatterElements 13-15 f32 i32 i64 b
ScatterElements 11-12 f32 i32 i64 b
ScatterND 18+ f32 i32 i64 b
ScatterND 16-17 f32 i32 i64 b
ScatterND 13-15 f32 i32 i64 b
ScatterND 11-12 f32 i32 i64 b
Selu 6+ f32
SequenceAt 11+ f32 i32 i64 b
SequenceConstruct 11+ f32 i32 i64 b
SequenceEmpty 11+ f32 i32 i64 b
SequenceErase 11+ f32 i32 i64 b
SequenceInsert 11+ f32 i32 i64 b
SequenceLength 11+ f32 i32 i64 b
Shape 23+ f32 i32 i64 b
Shape 21-22 f32 i32 i64 b
Shape 19-20 f32 i32 i64 b
Shape 15-18 f32 i32 i64 b
Shape 13-14 f32 i32 i64 b
Shape 1-12 f32 i32 i64 b
Shrink 9+ f32 i32 i64
Sigmoid 13+ f32
Sigmoid 6-12 f32
Sign 13+ f32 i32 i64
Sin 7+ f32
Size 13+ f32 i32 i64 b
Size 1-12 f32 i32 i64 b
Slice 13+ f32 i32 i64 b
Slice 11-12 f32 i32 i64 b
Slice 10 f32 i32 i64 b
Slice 1-9 f32 i32 i64 b
Softmax 13+ f32
Softmax 11-12 f32
Softmax 1-10 f32
Softplus 1+ f32
Softsign 1+ f32
SpaceToDepth 13+ f32
SpaceToDepth 1-12 f32
Split 18+ f32 i32 i64 b
Split 13-17 f32 i32 i64 b
Split 11-12 f32 i32 i64 b
Split 2-10 f32 i32 i64 b
Sqrt 13+ f32
Sqrt 6-12 f32
Squeeze 23+ f32 i32 i64 b
Squeeze 21-22 f32 i32 i64 b
Squeeze 13-20 f32 i32 i64 b
Squeeze 11-12 f32 i32 i64 b
Squeeze 1-10 f32 i32 i64 b
Sub 14+ f32 i32 i64
Sub 13 f32 i32 i64
Sub 7-12 f32 i32 i64
Sum 13+ f32
Sum 8-12 f32
Sum 6-7 f32
Tanh 13+ f32
Tanh 6-12 f32
TensorScatter 24+ f32 i32 i64 b
ThresholdedRelu 10+ f32
ThresholdedRelu 1-9 f32
Tile 13+ f32 i32 i64
Tile 6-12 f32 i32 i64
TopK 11+ f32 i32 i64
TopK 10 f32 i32 i64
TopK 1-9 f32 i32 i64
Transpose 23+ f32 i32 i64 b
Transpose 21-22 f32 i32 i64 b
Transpose 13-20 f32 i32 i64 b
Transpose 1-12 f32 i32 i64 b
Trilu 14+ f32 i32 i64 b
Unsqueeze 23+ f32 i32 i64 b
Unsqueeze 21-22 f32 i32 i64 b
Unsqueeze 13-20 f32 i32 i64 b
Unsqueeze 11-12 f32 i32 i64 b
Unsqueeze 1-10 f32 i32 i64 b
Upsample 9 f32 i32
Upsample 7-8 f32 i32
Where 16+ f32 i32 i64 b
Where 9-15 f32 i32 i64 b
Xor 7+ b
"""

_TYPE_CODES = {"f32": 1, "i32": 6, "i64": 7, "b": 9}  # onnx.TensorProto element types
# Arguments the CUDA kernels read from host memory (shapes, axes, counts), by input index.
HOST_ARGS = {
    "ConstantOfShape": {0},
    "Expand": {1},
    "If": {0},
    "Loop": {0, 1},
    "Pad": {1, 2, 3},
    "Range": {0, 1, 2},
    "Reshape": {1},
    "Resize": {1, 2, 3},
    "Slice": {1, 2, 3, 4},
    "Split": {1},
    "Squeeze": {1},
    "Tile": {1},
    "TopK": {1},
    "Unsqueeze": {1},
}
SMALL_CONSTANT = 100  # elements: onnxruntime lets a shape computation read such constants
_RANGE = re.compile(r"^(\d+)(?:-(\d+)|(\+))?$")


@dataclass(frozen=True)
class Kernel:
    op: str
    first: int  # first schema version it is registered for
    last: int | None  # last one, None when open-ended
    types: frozenset[int]  # onnx element types among float, int32, int64, bool

    def covers(self, since_version: int) -> bool:
        return self.first <= since_version and (self.last is None or since_version <= self.last)


def parse(table: str) -> dict[str, list[Kernel]]:
    """The table above as op -> kernels."""
    kernels: dict[str, list[Kernel]] = {}
    for line in table.strip().splitlines():
        op, opsets, *types = line.split()
        m = _RANGE.match(opsets)
        if m is None:
            raise ValueError(f"bad opset range {opsets!r} in {line!r}")
        first = int(m.group(1))
        last = None if m.group(3) else int(m.group(2) or first)
        codes = frozenset(_TYPE_CODES[t] for t in types)
        kernels.setdefault(op, []).append(Kernel(op, first, last, codes))
    return kernels


CUDA_KERNELS = parse(KERNELS)


def _types(model: Any) -> dict[str, int]:
    """Element type of every value of the model, subgraphs included (shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    types: dict[str, int] = {}

    def visit(graph: Any) -> None:
        for init in graph.initializer:
            types[init.name] = init.data_type
        for vi in (*graph.input, *graph.output, *graph.value_info):
            if vi.type.HasField("tensor_type"):
                types[vi.name] = vi.type.tensor_type.elem_type
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    visit(attr.g)

    visit(inferred.graph)
    return types


def unsupported_nodes(model: Any) -> list[str]:
    """Why each node of `model` (a ModelProto; bodies of Scan, Loop and If included) would not
    run on the CUDA provider; empty when every node would. Needs the onnx package."""
    import onnx
    from onnx import helper

    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    types = _types(model)
    problems: list[str] = []

    def check(graph: Any, where: str) -> None:
        for k, node in enumerate(graph.node):
            label = f"{where}node {k} ({node.op_type}{' ' + node.name if node.name else ''})"
            for attr in node.attribute:
                if attr.HasField("g"):
                    check(attr.g, f"{label} / ")
            if node.domain not in ("", "ai.onnx"):
                problems.append(f"{label}: domain {node.domain!r} has no CUDA kernels listed")
                continue
            try:
                since = onnx.defs.get_schema(node.op_type, opset).since_version
            except onnx.defs.SchemaError:
                problems.append(f"{label}: not an ONNX operator at opset {opset}")
                continue
            kernels = [k for k in CUDA_KERNELS.get(node.op_type, []) if k.covers(since)]
            if not kernels:
                problems.append(f"{label}: no CUDA kernel for opset version {since}")
                continue
            names = [n for n in (*node.input, *node.output) if n]
            unknown = [n for n in names if n not in types]
            if unknown:
                problems.append(f"{label}: element type of {unknown} unknown")
                continue
            wrong = sorted({types[n] for n in names} - kernels[0].types)
            if wrong:
                bad = [onnx.TensorProto.DataType.Name(t) for t in wrong]
                problems.append(f"{label}: CUDA kernel does not take {', '.join(bad)}")
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "GRU" and attrs.get("linear_before_reset", 0) != 1:
                problems.append(f"{label}: cuDNN runs only linear_before_reset=1")
            if node.op_type in ("GRU", "LSTM", "RNN") and (
                {"activation_alpha", "activation_beta", "clip"} & attrs.keys()
            ):
                problems.append(f"{label}: cuDNN runs no activation parameters or clip")

    check(model.graph, "")
    problems += _shape_computations(model.graph, "", set())
    return problems


def _shape_computations(graph: Any, where: str, outer: set[str]) -> list[str]:
    """Nodes onnxruntime would move to the CPU as shape computations: in graph order, a node
    reading a host value (a Shape or Size output, or the output of a node moved before) where
    its kernel does not expect one, and nothing but small constants or graph inputs besides."""
    small = {
        i.name for i in graph.initializer if int(np.prod(i.dims, dtype=np.int64)) <= SMALL_CONSTANT
    }
    inputs = {i.name for i in graph.input}
    host = set(outer)
    moved: list[str] = []
    for k, node in enumerate(graph.node):
        label = f"{where}node {k} ({node.op_type}{' ' + node.name if node.name else ''})"
        for attr in node.attribute:
            if attr.HasField("g"):
                moved += _shape_computations(attr.g, f"{label} / ", host)
        if node.op_type in ("Shape", "Size"):
            host.update(node.output)
            continue
        args = [(i, n) for i, n in enumerate(node.input) if n]
        reads_host = [i for i, n in args if n in host]
        if not reads_host or any(i in HOST_ARGS.get(node.op_type, ()) for i in reads_host):
            continue
        if all(n in host or n in small or n in inputs for _, n in args):
            host.update(node.output)
            moved.append(f"{label}: onnxruntime moves it to the CPU (a shape computation)")
    return moved


def installed_cuda_kernels() -> dict[str, list[tuple[int, int | None]]] | None:
    """The ai.onnx kernels the installed onnxruntime registers for the CUDA provider, as
    op -> [(first, last)]; None when the CUDA provider cannot be loaded here (call it only
    where a GPU is present: loading the provider without CUDA libraries logs errors).

    Read in a child process: listing the kernels loads every provider library of the build,
    and onnxruntime-gpu 1.31 crashes the whole process where one of them (TensorRT's, without
    its libraries) fails to load."""
    code = (
        "import json\n"
        "from onnxruntime.capi import onnxruntime_pybind11_state as C\n"
        "print(json.dumps([[d.op_name, d.domain, d.provider, list(d.version_range)]"
        " for d in C.get_all_opkernel_def()]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return None
    out: dict[str, list[tuple[int, int | None]]] = {}
    for op, domain, provider, (first, last) in json.loads(done.stdout.splitlines()[-1]):
        if provider != "CUDAExecutionProvider" or domain not in ("", "ai.onnx"):
            continue
        out.setdefault(op, []).append((first, None if last >= 2**31 - 1 else last))
    return out or None
