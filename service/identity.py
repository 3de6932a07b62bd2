"""Which weights a server serves: the digest resume tokens are bound to and /v1/models shows.

An artifact exported by `gru-serve export` records the SHA-256 of its weights in its metadata
(`weights_sha256`, the same for the cpu and cuda graphs of one checkpoint). An artifact without
it (one written by another tool) is identified by the SHA-256 of the whole file instead: two
different files then never share a digest, at the price of also telling apart the same
weights with different metadata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from export.contract import ArtifactMeta


def weights_digest(meta: ArtifactMeta, path: Path) -> str:
    recorded = getattr(meta, "weights_sha256", "")
    if recorded:
        return recorded
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
