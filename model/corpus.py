"""The bundled model's training corpus: the training parts of M1, M3 and Tourism.

A seeded share of the series gives up the last `h` points of its training part as a
validation window (history before it, the `h` points as actuals); everything else trains.
Every choice (epochs, ensemble members, context length, interval calibration) is made on
these windows. The held-out parts `xx` are not read here at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.baselines import mase_scale
from model.competitions import FREQUENCIES, CompetitionSeries, load_all

# The training horizon and context range per frequency. Horizons are M3's (tourism's monthly
# 24 and yearly 4 forecast by rolling the same model further or less far).
HORIZONS = {"yearly": 6, "quarterly": 8, "monthly": 18, "other": 8}
CONTEXTS = {"yearly": (6, 40), "quarterly": (8, 72), "monthly": (24, 104), "other": (8, 80)}


@dataclass(frozen=True)
class Window:
    """One validation forecast: the history a client would send and what came next."""

    dataset: str
    name: str
    frequency: str
    history: np.ndarray  # (T,) the training part minus its last `horizon` points
    actual: np.ndarray  # (horizon,)
    mase_scale: float  # seasonal-difference MAE of the history


@dataclass
class Corpus:
    train: dict[str, list[np.ndarray]]  # frequency -> training values, one array per series
    validation: list[Window]
    counts: dict[str, dict[str, int]]  # dataset -> {"series": n, "validation": n}

    def weights(self) -> dict[str, float]:
        """Batch share per frequency: as many batches as it has series."""
        n = {f: len(v) for f, v in self.train.items() if v}
        total = sum(n.values())
        return {f: k / total for f, k in n.items()}


def split(series: list[CompetitionSeries], val_share: float, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    held = rng.random(len(series)) < val_share
    train: dict[str, list[np.ndarray]] = {f: [] for f in FREQUENCIES}
    validation: list[Window] = []
    counts: dict[str, dict[str, int]] = {}
    for s, v in zip(series, held, strict=True):
        c = counts.setdefault(s.dataset, {"series": 0, "validation": 0})
        c["series"] += 1
        x = s.x
        if v and len(x) > s.horizon + 2:
            hist, actual = x[: -s.horizon], x[-s.horizon :]
            validation.append(
                Window(s.dataset, s.name, s.frequency, hist, actual, mase_scale(hist, s.period))
            )
            c["validation"] += 1
            x = hist
        train[s.frequency].append(x)
    return Corpus(train, validation, counts)


def competition_corpus(val_share: float = 0.2, seed: int = 0) -> Corpus:
    return split(load_all(), val_share, seed)
