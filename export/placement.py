"""Where onnxruntime runs the nodes of a loaded artifact, as the session itself reports it.

A session asked for the CUDA provider still runs any node that provider declines on the CPU,
with copies through the host around it; `session.get_providers()` does not say so. The session
does, when it is created with RECORD_OPTION: every node it placed (the nodes inside a Scan or
Loop body included) with its provider. onnxruntime builds without that report give None.

Imports onnxruntime only: the service reads placement through this module.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

RECORD_OPTION = "session.record_ep_graph_assignment_info"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
RECURRENT_OPS = frozenset({"GRU", "Scan", "Loop"})


def record_placement(options: Any) -> None:
    """Ask a session (its SessionOptions, before creation) to keep its node placement."""
    options.add_session_config_entry(RECORD_OPTION, "1")


@dataclass(frozen=True)
class NodePlacement:
    nodes: tuple[tuple[str, str], ...]  # (provider, op type) of every node, bodies included

    def counts(self) -> dict[str, int]:
        """Nodes per provider."""
        return dict(Counter(provider for provider, _ in self.nodes))

    def ops_on(self, provider: str) -> list[str]:
        """Op types placed on `provider`, each once, in graph order."""
        return list(dict.fromkeys(op for p, op in self.nodes if p == provider))

    def recurrent_providers(self) -> set[str]:
        """Providers of the nodes that carry the recurrence (GRU, Scan, Loop)."""
        return {p for p, op in self.nodes if op in RECURRENT_OPS}


def read_placement(session: Any) -> NodePlacement | None:
    """The session's node placement; None when it cannot tell (an onnxruntime without the
    report, or a session created without RECORD_OPTION)."""
    report = getattr(session, "get_provider_graph_assignment_info", None)
    if report is None:
        return None
    try:
        subgraphs = report()
    except Exception:  # onnxruntime's Fail: the session was not asked to record
        return None
    nodes = tuple((sg.ep_name, node.op_type) for sg in subgraphs for node in sg.get_nodes())
    return NodePlacement(nodes) if nodes else None
