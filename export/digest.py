"""The weights digest: what tells two models apart when their name and version agree.

SHA-256 over the GRU variant and every weight array of the checkpoint (each layer's input,
recurrent and bias arrays in PyTorch's layout, then the head), as little-endian float32 with
its shape. It is taken from the checkpoint's weights, not from a graph, so a checkpoint's
cpu and cuda artifacts share it; resume tokens are bound to it (service/tokens.py).
"""

from __future__ import annotations

import hashlib

import numpy as np

from export.graph import ForecasterWeights


def weights_digest(weights: ForecasterWeights, variant: str) -> str:
    h = hashlib.sha256(variant.encode())
    arrays = [
        a for lw in weights.layers for a in (lw.weight_ih, lw.weight_hh, lw.bias_ih, lw.bias_hh)
    ]
    for a in [*arrays, weights.head_weight, weights.head_bias]:
        a = np.ascontiguousarray(a, dtype="<f4")
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
