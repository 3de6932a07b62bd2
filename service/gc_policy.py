"""The garbage collector's settings for a serving process.

CPython's cyclic collector runs every 700 net container allocations (gen0) and, at most
every 100 of those, walks every tracked object (gen2). After the imports and the model load
that is hundreds of thousands of long-lived objects (FastAPI, pydantic, numpy, onnxruntime),
so under load a full walk every few hundred requests stalls the event loop and the batcher's
worker together: it set the tail of REST latency (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import gc

# Per-request garbage is almost all freed by reference counting; a larger gen0 budget runs
# the collector about 30x less often for the little that is cyclic. gen1 and gen2 keep
# CPython's defaults, so full collections of cyclic garbage stay as regular as before.
GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def tune_for_serving() -> None:
    """Call once everything long-lived is loaded, before serving: the objects alive now are
    moved out of the collector's sight (gc.freeze; they are still freed by reference
    counting), and young collections run less often."""
    gc.collect()  # garbage made while loading is freed, not frozen
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
