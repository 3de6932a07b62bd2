"""Evaluate a checkpoint on the held-out test tails against naive, seasonal-naive and ETS.

Every method forecasts the same rolling origins of each test tail. The baselines get the
whole history before the origin (they are local models fitted per series); the GRU gets
the last `context_length` points, which is what a client sends the service.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from export.contract import Scaler
from model.backtest import Backtest, backtest
from model.baselines import ets, mase_scale, naive, seasonal_naive
from model.data import Series, split_series
from model.gru import GRUForecaster
from model.quantiles import coverage, interval_pairs

METHODS = ("gru", "naive", "seasonal_naive", "ets")


def evaluate(
    model: GRUForecaster, info: dict, series: list[Series], horizon: int | None = None
) -> tuple[dict, list[Backtest]]:
    """The report's numbers, and each series' backtest (with every method's forecasts) for
    the plot."""
    h = int(info["horizon"]) if horizon is None else horizon
    ctx = int(info["context_length"])
    scaler = Scaler(**info["scaler"])
    levels = tuple(info["quantile_levels"])
    offsets = [row[:h] for row in info["quantile_offsets"]]
    per_series: dict[str, dict[str, Any]] = {}
    all_bt: list[Backtest] = []
    for s in series:
        bt = backtest(model, s, "test", h, ctx, scaler)
        all_bt.append(bt)
        v = s.values
        scale = mase_scale(v[: split_series(len(v), h).test_start], s.period)
        preds = {
            "gru": bt.point,
            "naive": np.stack([naive(v[:o], h) for o in bt.origins]),
            "seasonal_naive": np.stack([seasonal_naive(v[:o], h, s.period) for o in bt.origins]),
            "ets": np.stack([ets(v[:o], h, s.period) for o in bt.origins]),
        }
        steps = {m: (np.abs(bt.actual - p) / scale).mean(axis=0) for m, p in preds.items()}
        per_series[s.name] = {
            "seen_in_training": s.seen,
            "period": s.period,
            "origins": len(bt.origins),
            "mase": {m: float(x.mean()) for m, x in steps.items()},
            "mase_by_step": {m: [float(e) for e in x] for m, x in steps.items()},
            "coverage": coverage(bt.actual, bt.point, bt.scale, levels, offsets),
        }
        bt.preds = preds  # kept for the plot
    return {
        "checkpoint": {
            "name": info["name"],
            "version": info["version"],
            "horizon": h,
            "context_length": ctx,
        },
        "variant": model.config.variant,
        "series": per_series,
        "mean_mase": _mean_mase(per_series, lambda r: True),
        "mean_mase_seen": _mean_mase(per_series, lambda r: r["seen_in_training"]),
        "mean_mase_unseen": _mean_mase(per_series, lambda r: not r["seen_in_training"]),
        "mase_by_step": {
            m: [
                float(np.mean([r["mase_by_step"][m][i] for r in per_series.values()]))
                for i in range(h)
            ]
            for m in METHODS
        },
        "coverage": coverage(
            np.concatenate([b.actual for b in all_bt]),
            np.concatenate([b.point for b in all_bt]),
            np.concatenate([b.scale for b in all_bt]),
            levels,
            offsets,
        ),
        "intervals": [[lo, hi] for lo, hi in interval_pairs(levels)],
        "calibration": info.get("quantile_calibration", {}).get("method", "unknown"),
        "validation_coverage": info.get("metrics", {}).get("validation_interval_coverage"),
    }, all_bt


def _mean_mase(rows: dict, keep) -> dict:
    chosen = [r for r in rows.values() if keep(r)]
    if not chosen:
        return {}
    return {m: float(np.mean([r["mase"][m] for r in chosen])) for m in METHODS}


def to_markdown(report: dict) -> str:
    ck = report["checkpoint"]
    lines = [
        "# Evaluation on the held-out test tails",
        "",
        f"Checkpoint `{ck['name']}` {ck['version']} ({report['variant']}), horizon {ck['horizon']}, "
        f"context {ck['context_length']}. MASE (lower is better; 1.0 = in-sample seasonal-naive "
        "error), averaged over the rolling origins of each test tail and over horizon steps.",
        "",
        "| series | seen in training | GRU | naive | seasonal naive | ETS | GRU vs ETS |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in report["series"].items():
        m = r["mase"]
        verdict = "GRU better" if m["gru"] < m["ets"] else "**ETS better**"
        lines.append(
            f"| {name} | {'yes' if r['seen_in_training'] else 'no'} | {m['gru']:.3f} | {m['naive']:.3f} "
            f"| {m['seasonal_naive']:.3f} | {m['ets']:.3f} | {verdict} |"
        )
    for label, key in (
        ("mean, all", "mean_mase"),
        ("mean, seen", "mean_mase_seen"),
        ("mean, unseen", "mean_mase_unseen"),
    ):
        m = report[key]
        if m:
            lines.append(
                f"| **{label}** | | **{m['gru']:.3f}** | {m['naive']:.3f} | {m['seasonal_naive']:.3f} | {m['ets']:.3f} | |"
            )
    h = len(report["mase_by_step"]["gru"])
    lines += ["", "MASE by horizon step (mean over series):", ""]
    lines.append("| method | " + " | ".join(str(i + 1) for i in range(h)) + " |")
    lines.append("| --- |" + " ---: |" * h)
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(f"{v:.2f}" for v in report["mase_by_step"][m]) + " |")
    val = report.get("validation_coverage") or {}
    lines += [
        "",
        f"Prediction interval coverage (quantile offsets: {report.get('calibration', 'unknown')}; "
        "validation = the same method calibrated only on origins before the validation tails, "
        "scored on those tails; test = the checkpoint's offsets on the test tails):",
        "",
    ]
    lines.append("| interval | nominal | validation, all series | test, all series |")
    lines.append("| --- | ---: | ---: | ---: |")
    for (lo, hi), (k, v) in zip(report["intervals"], report["coverage"].items(), strict=True):
        vv = f"{val[k] * 100:.1f}%" if k in val else "n/a"
        lines.append(f"| {lo:g}-{hi:g} | {k} | {vv} | {v * 100:.1f}% |")
    lines += ["", "![forecasts](forecasts.png)", ""]
    return "\n".join(lines)


def plot(backtests, report: dict, info: dict, path: Path, names: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    chosen = [b for b in backtests if b.series.name in names] or backtests[:4]
    levels = info["quantile_levels"]
    h = report["checkpoint"]["horizon"]
    off = np.asarray([row[:h] for row in info["quantile_offsets"]])
    (lo, hi) = report["intervals"][0]  # widest interval
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.6 * len(chosen)))
    for ax, b in zip(np.atleast_1d(axes), chosen, strict=True):
        v, h, o = (
            b.series.values,
            b.actual.shape[1],
            b.origins[0],
        )  # first origin: the whole tail ahead
        t0 = max(0, o - 4 * h)
        ax.plot(
            range(t0, min(len(v), o + 2 * h)),
            v[t0 : o + 2 * h],
            color="black",
            lw=1,
            label="actual",
        )
        steps = np.arange(o, o + h)
        ax.fill_between(
            steps,
            b.point[0] + off[levels.index(lo)] * b.scale[0],
            b.point[0] + off[levels.index(hi)] * b.scale[0],
            color="tab:blue",
            alpha=0.2,
            label=f"GRU {round((hi - lo) * 100)}% interval",
        )
        ax.plot(steps, b.point[0], color="tab:blue", label="GRU")
        ax.plot(steps, b.preds["ets"][0], color="tab:orange", ls="--", label="ETS")
        ax.plot(
            steps, b.preds["seasonal_naive"][0], color="tab:green", ls=":", label="seasonal naive"
        )
        ax.axvline(o, color="grey", lw=0.5)
        seen = "seen" if b.series.seen else "never seen in training"
        ax.set_title(f"{b.series.name} ({seen})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for everyone to read
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for everyone to read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: Path, text: str) -> None:
    write_atomic_bytes(path, text.encode())


PLOT_SERIES = ("co2", "elec_equip", "macro_unemp", "nile")


def write_report(model, info, series, out_dir: Path, horizon: int | None = None) -> dict:
    report, backtests = evaluate(model, info, series, horizon)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Plot first: if anything fails, no new table claims a plot that is not there.
    plot(backtests, report, info, out_dir / "forecasts.png", PLOT_SERIES)
    write_atomic(out_dir / "evaluation.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out_dir / "evaluation.md", to_markdown(report))
    return report
