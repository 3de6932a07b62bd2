"""The artifact contract: what the exporter writes and the service reads.

Dependency-free apart from numpy on purpose: the service imports it without onnx or torch.
Everything the service needs to serve a model travels in the ONNX file's `metadata_props`
under the keys below, so the file can be served with nothing beside it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

OPSET = 14
VARIANTS = ("cho2014", "cudnn")
# Graph families exported from one checkpoint: "cpu" runs ONNX GRU nodes (one per layer, or per
# member and layer for an ensemble); "cuda"
# spells the step out in operators the CUDA execution provider runs (export/cuda_graph.py).
TARGETS = ("cpu", "cuda")

# Graph inputs and outputs. Layout 0 (time first) because onnxruntime's GRU rejects layout 1.
INPUT_X = "x"  # float32 [T, B, input_size]
INPUT_H0 = "h0"  # float32 [num_layers, B, hidden_size]
INPUT_LENS = "seq_lens"  # int32 [B]: each row's valid length, 1 <= len <= T
OUTPUT_Y = (
    "y"  # float32 [T, B, output_size]: head output after each step (undefined past a row's length)
)
OUTPUT_HN = "h_n"  # float32 [num_layers, B, hidden_size]: state after each row's last valid step
OUTPUT_HSEQ = "h_seq"  # float32 [T, num_layers, B, hidden_size]: state after every step (zeros past a row's length)

# The slot buffer of a `cuda` artifact (service/device_state.py): a run starts from h0's rows
# followed by the rows of `read_slots`; afterwards row write_rows[k] of h_n is stored in slot
# write_slots[k] of `state_out`. A plain run feeds them empty (empty_slot_feeds).
INPUT_STATE = "state"  # float32 [num_layers, slots, hidden_size]
INPUT_READ_SLOTS = "read_slots"  # int64 [R]
INPUT_WRITE_SLOTS = "write_slots"  # int64 [W]
INPUT_WRITE_ROWS = "write_rows"  # int64 [W]
OUTPUT_STATE = "state_out"  # float32 [num_layers, slots, hidden_size]: `state` with the writes

SLOT_INPUTS = (INPUT_STATE, INPUT_READ_SLOTS, INPUT_WRITE_SLOTS, INPUT_WRITE_ROWS)

META_PREFIX = "gru_serve."


def takes_slots(session: Any) -> bool:
    """Whether an onnxruntime session's graph has the slot buffer inputs (a `cuda` artifact)."""
    return set(SLOT_INPUTS) <= {i.name for i in session.get_inputs()}


def empty_slot_feeds(num_layers: int, hidden_size: int) -> dict[str, np.ndarray]:
    """The slot inputs of a `cuda` artifact for a run that uses no slots: nothing is gathered
    or scattered, and `state_out` comes back empty."""
    empty = np.zeros(0, np.int64)
    return {
        INPUT_STATE: np.zeros((num_layers, 0, hidden_size), np.float32),
        INPUT_READ_SLOTS: empty,
        INPUT_WRITE_SLOTS: empty,
        INPUT_WRITE_ROWS: empty,
    }


@dataclass(frozen=True)
class Scaler:
    """Per-series standardisation, fitted on the history a request sends (what training saw).

    scaled = (value - loc) / scale, with loc/scale the mean/std of the history per feature and
    scale floored at `min_scale` so a constant series stays finite.
    """

    rule: str = "standard"
    min_scale: float = 1e-3

    def fit(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # history (T, F) -> loc (F,), scale (F,). float32 sums and squares overflow for finite
        # values near float32's limit (1e30 squared, 3e38 + 3e38): such histories are fitted
        # in float64. A loc or scale that still does not fit float32 comes back as infinity.
        if history.dtype == np.float32 and history.ndim == 2 and history.shape[0] > 0:
            loc, scale = _fit_f32(history, self.min_scale)
            # finite (NaN compares False; an infinite or NaN loc makes scale NaN too)
            if np.maximum.reduce(scale) < np.inf:
                return loc, scale
        x = np.asarray(history, np.float64)
        loc = x.mean(axis=0)
        scale = np.maximum(x.std(axis=0), self.min_scale)
        with np.errstate(over="ignore"):
            return loc.astype(np.float32), scale.astype(np.float32)


def _fit_f32(history: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scaler.fit's numbers for a (T, F) float32 history, bit for bit: the ufunc steps of
    numpy's own mean(axis=0) and std(axis=0), without their Python wrappers (which cost the
    service more than the arithmetic, once per request)."""
    n = np.intp(history.shape[0])  # numpy divides by its count as an intp
    loc = np.add.reduce(history, axis=0)
    np.true_divide(loc, n, out=loc, casting="unsafe")
    dev = np.subtract(history, loc[None])  # the same sums std's own mean step makes
    np.square(dev, out=dev)
    var = np.add.reduce(dev, axis=0)
    np.true_divide(var, n, out=var, casting="unsafe")
    np.sqrt(var, out=var)
    return loc, np.maximum(var, min_scale).astype(np.float32)


@dataclass(frozen=True)
class ArtifactMeta:
    name: str
    version: str
    variant: str
    input_size: int
    hidden_size: int
    num_layers: int
    output_size: int
    scaler: Scaler = field(default_factory=Scaler)
    # Quantile offsets in scaled space, added to the point forecast: offsets[level][step] for
    # steps 1..S = len(offsets[level]); past the table a row keeps widening like a random
    # walk's error: step s >= S (0-based) gets offsets[level][S - 1] * sqrt((s + 1) / S)
    # (service.core.quantile_offsets).
    quantile_levels: tuple[float, ...] = ()
    quantile_offsets: tuple[tuple[float, ...], ...] = ()
    context_length: int = 0  # history length the model wants (0: not stated)
    horizon: int = 0  # horizon it was trained and calibrated for (0: not stated)
    frequencies: tuple[str, ...] = ()  # frequency names it knows, e.g. ("yearly", "monthly")
    # Per frequency name (one of `frequencies`): offsets like `quantile_offsets`, one row per
    # level of quantile_levels in the same order. A frequency without a table uses the pooled
    # `quantile_offsets`.
    quantile_offsets_by_frequency: dict[str, tuple[tuple[float, ...], ...]] = field(
        default_factory=dict
    )
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # provenance of the training data
    versions: dict = field(default_factory=dict)  # torch / onnx versions that made it
    opset: int = OPSET
    target: str = "cpu"  # the graph family (TARGETS)
    weights_sha256: str = ""  # export.digest.weights_digest of the checkpoint ("": not recorded)

    def to_props(self) -> dict[str, str]:
        d = asdict(self)
        if d["target"] == "cpu":
            # Absent means cpu: the default artifact stays byte-identical to the ones exported
            # before targets existed, and those still read as what they are.
            del d["target"]
        if not d["weights_sha256"]:
            del d["weights_sha256"]  # artifacts written without a digest stay as they were
        return {META_PREFIX + k: json.dumps(v) for k, v in d.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ArtifactMeta:
        """Parse metadata_props; raises ValueError naming the first missing or bad key."""
        raw: dict = {}
        for key, text in props.items():
            if key.startswith(META_PREFIX):
                try:
                    raw[key[len(META_PREFIX) :]] = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"metadata {key!r} is not valid JSON: {e}") from None
        for required in (
            "name",
            "version",
            "variant",
            "input_size",
            "hidden_size",
            "num_layers",
            "output_size",
        ):
            if required not in raw:
                raise ValueError(f"metadata {META_PREFIX}{required} is missing")
        if raw["variant"] not in VARIANTS:
            raise ValueError(f"metadata variant {raw['variant']!r} is not one of {VARIANTS}")
        digest = raw.get("weights_sha256", "")
        if digest and not (
            isinstance(digest, str)
            and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(
                f"metadata weights_sha256 must be 64 lowercase hex digits, got {digest!r}"
            )
        if raw.get("target", "cpu") not in TARGETS:
            raise ValueError(f"metadata target {raw['target']!r} is not one of {TARGETS}")
        for k in ("input_size", "hidden_size", "num_layers", "output_size"):
            if not isinstance(raw[k], int) or raw[k] < 1:
                raise ValueError(f"metadata {k} must be a positive integer, got {raw[k]!r}")
        levels = tuple(float(q) for q in raw.get("quantile_levels", ()))
        offsets = tuple(tuple(float(v) for v in row) for row in raw.get("quantile_offsets", ()))
        if len(levels) != len(offsets) or any(not 0 < q < 1 for q in levels):
            raise ValueError("metadata quantile_levels/quantile_offsets do not match")
        known = {f for f in cls.__dataclass_fields__}
        rest = {k: v for k, v in raw.items() if k in known}
        rest["scaler"] = Scaler(**raw.get("scaler", {}))
        rest["quantile_levels"], rest["quantile_offsets"] = levels, offsets
        rest.update(frequency_fields(raw, len(levels), "metadata"))
        return cls(**rest)


def frequency_fields(raw: dict, n_levels: int, where: str) -> dict[str, Any]:
    """context_length, horizon, frequencies and quantile_offsets_by_frequency read from `raw`
    (parsed metadata or a checkpoint's info; absent keys get their defaults), validated and
    normalised to ArtifactMeta's types. Raises ValueError naming the bad key, prefixed by
    `where` ("metadata", "checkpoint info")."""
    out: dict[str, Any] = {}
    for key in ("context_length", "horizon"):
        v = raw.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{where} {key} must be a non-negative integer, got {v!r}")
        out[key] = v
    names = raw.get("frequencies", ())
    if (
        not isinstance(names, list | tuple)
        or not all(isinstance(f, str) and f for f in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"{where} frequencies must be a list of distinct non-empty names, got {names!r}"
        )
    out["frequencies"] = tuple(names)
    tables = raw.get("quantile_offsets_by_frequency", {})
    if not isinstance(tables, dict):
        raise ValueError(
            f"{where} quantile_offsets_by_frequency must be an object (frequency -> offset "
            f"rows), got {type(tables).__name__}"
        )
    parsed: dict[str, tuple[tuple[float, ...], ...]] = {}
    for name, rows in tables.items():
        key = f"{where} quantile_offsets_by_frequency[{name!r}]"
        if name not in out["frequencies"]:
            raise ValueError(f"{key}: {name!r} is not one of frequencies {list(names)}")
        problem = _rows_problem(rows, n_levels)
        if problem:
            raise ValueError(
                f"{key} must hold {n_levels} non-empty row(s) of finite numbers, one per "
                f"quantile level: {problem}"
            )
        parsed[name] = tuple(tuple(float(v) for v in row) for row in rows)
    out["quantile_offsets_by_frequency"] = parsed
    return out


def _rows_problem(rows: object, n_levels: int) -> str | None:
    """What is wrong with an offset table (None when it is n_levels non-empty rows of finite
    numbers)."""
    if not isinstance(rows, list | tuple):
        return f"got {type(rows).__name__}"
    if len(rows) != n_levels:
        return f"got {len(rows)} row(s)"
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple) or not row:
            return f"row {i} is {row!r}"
        for v in row:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return f"row {i} holds {v!r}"
    return None
