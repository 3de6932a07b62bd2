"""Graph section: the bundled cpu artifact as exported (a GRU node per ensemble member) against
the same weights kept one block-diagonal GRU node per layer (export/graph.py), one onnxruntime
run at a time with the service's thread settings, the two forms in turn for each shape."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from bench.gpu import checkpoint_weights, percentile, time_calls
from bench.results import table

CASES = ((72, 1), (72, 16), (72, 64), (1, 1), (1, 64))  # (T steps, B rows): reads and steps
MIN_CALLS = 200


def sessions(checkpoint: str) -> tuple[dict, Any, int]:
    """{form: onnxruntime session} of the checkpoint's two graphs, its metadata, its members."""
    import onnxruntime as ort

    from export.graph import build_model, member_count

    weights, meta = checkpoint_weights(checkpoint)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1  # the service's defaults
    forms = {
        "per member": build_model(weights, meta),
        "one node": build_model(weights, meta, split_members=False),
    }
    return (
        {
            form: ort.InferenceSession(
                g.SerializeToString(), so, providers=["CPUExecutionProvider"]
            )
            for form, g in forms.items()
        },
        meta,
        member_count(weights),
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="artifacts/checkpoint.pt", help="graph section")


def median_us(session: Any, feeds: dict) -> float:
    """Median microseconds of one run (bench.gpu's timing: warm-up, then a second or more)."""
    return percentile(time_calls(lambda: session.run(None, feeds), MIN_CALLS, 1.0), 50) * 1e6


def run(args) -> tuple[dict, str]:
    from export.contract import INPUT_H0, INPUT_LENS, INPUT_X

    runs, meta, members = sessions(args.checkpoint)
    L, H, F = meta.num_layers, meta.hidden_size, meta.input_size
    rows = []
    for T, B in CASES:
        rng = np.random.default_rng(T * B)
        feeds = {
            INPUT_X: rng.normal(size=(T, B, F)).astype(np.float32),
            INPUT_H0: np.zeros((L, B, H), np.float32),
            INPUT_LENS: np.full(B, T, np.int32),
        }
        us = {form: median_us(session, feeds) for form, session in runs.items()}
        rows.append({"T": T, "B": B, **{k: round(v, 1) for k, v in us.items()},
                     "one node / per member": round(us["one node"] / us["per member"], 2)})  # fmt: skip
    data = {"checkpoint": args.checkpoint, "members": members, "rows": rows, "goals": {}}
    md = (
        f"One onnxruntime run (median microseconds, 1 thread) of `{args.checkpoint}` "
        f"({members} members): as exported, a GRU node per member, and the same weights as one "
        "GRU node per layer. T steps of B rows: T = 72 is a forecast's history read, T = 1 a "
        "rollout or stream step.\n\n"
        + table(
            ["T", "B", "per member us", "one node us", "one node / per member"],
            [
                [r["T"], r["B"], r["per member"], r["one node"], r["one node / per member"]]
                for r in rows
            ],
        )  # fmt: skip
    )
    return data, md
