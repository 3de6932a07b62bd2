"""Train the global GRU forecaster on many series; write a self-describing checkpoint."""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export.contract import Scaler
from model.backtest import backtest
from model.calibrate import calibrate, coverage_on_test
from model.checkpoint import save_checkpoint
from model.data import Series, split_series
from model.gru import GRUConfig, GRUForecaster
from model.quantiles import LEVELS
from model.settings import TrainSettings
from model.windows import rollout, sample_batch, scaled_pair

SCALER = Scaler(rule="standard", min_scale=1e-3)


def min_length(settings: TrainSettings) -> int:
    """Shortest series that yields a training window plus validation and test tails."""
    return 4 * settings.horizon + settings.min_context + settings.horizon


def check_lengths(series: list[Series], settings: TrainSettings) -> None:
    need = min_length(settings)
    for s in series:
        if len(s.values) < need:
            raise ValueError(
                f"series {s.name!r} has {len(s.values)} observations; horizon {settings.horizon} "
                f"and min context {settings.min_context} need at least {need}"
            )


def _val_score(model, series, settings) -> float:
    """Mean validation MASE over seen series (early stopping criterion: what we report)."""
    scores = [
        backtest(model, s, "validation", settings.horizon, settings.context_length, SCALER)
        .mase()
        .mean()
        for s in series
    ]
    return float(np.mean(scores))


def new_model(settings: TrainSettings, seed: int) -> GRUForecaster:
    torch.manual_seed(seed)
    config = GRUConfig(
        1, settings.hidden_size, settings.num_layers, 1, settings.dropout, settings.variant
    )
    return GRUForecaster(config)


def fit(
    model: GRUForecaster,
    sample: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    validate: Callable[[GRUForecaster], float],
    settings: TrainSettings,
    seed: int,
    on_epoch: Callable[[dict], object] | None = None,
) -> dict:
    """Train `model` in place on windows from `sample(rng)` (raw history (B, L), target (B, h));
    keep the weights with the lowest `validate(model)`. Returns what happened, for the info."""
    # Matrices here are tiny (batch 128 x hidden 56): extra threads only spin, and on a
    # 2-core machine they made a step 8x slower than one thread did.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    # Cosine decay: validation swings a lot between epochs at a constant rate.
    total = settings.epochs * settings.steps_per_epoch
    sched = (
        torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda i: (
                settings.lr_floor
                + (1 - settings.lr_floor) * 0.5 * (1 + np.cos(np.pi * min(i, total) / total))
            ),
        )
        if settings.cosine
        else None
    )
    best, best_state, best_epoch, bad, history = float("inf"), None, 0, 0, []
    t0, stopped = time.monotonic(), "epochs"
    for epoch in range(settings.epochs):
        model.train()
        losses = []
        for _ in range(settings.steps_per_epoch):
            hist, target = sample(rng)
            x, y = scaled_pair(hist, target, SCALER)  # (B, L), (B, H)
            one_step, pred = rollout(model, x, y.shape[1])
            loss = (pred - y).abs().mean()
            loss = loss + settings.teacher_weight * (one_step[:, :-1] - x[:, 1:]).abs().mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # rollouts can explode early on
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
        score = validate(model)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "validation": score}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if score < best:
            best, best_state, best_epoch, bad = (
                score,
                copy.deepcopy(model.state_dict()),
                epoch + 1,
                0,
            )
        else:
            bad += 1
            if bad >= settings.patience:
                stopped = "early stopping"
                break
        if time.monotonic() - t0 > settings.max_minutes * 60:
            stopped = "time budget"
            break
    if best_state is None:  # every validation score was NaN
        raise RuntimeError("training never produced a finite validation score")
    model.load_state_dict(best_state)
    model.eval()
    return {
        "best_epoch": best_epoch,
        "best_validation": best,
        "stopped_by": stopped,
        "train_seconds": round(time.monotonic() - t0, 1),
        "history": history,
    }


def train(series: list[Series], settings: TrainSettings, progress: bool = True):
    """One model on the given series (a CSV column): windows from each series' training span,
    early stopping on the validation tails' MASE. Returns (model, info for the checkpoint)."""
    check_lengths(series, settings)
    seen = [s for s in series if s.seen]
    # Windows come from the training part only: validation and test tails stay unseen.
    trains = [s.values[: split_series(len(s.values), settings.horizon).val_start] for s in seen]
    max_ctx = min(settings.context_length, max(len(t) for t in trains) - settings.horizon)

    def sample(rng):
        _, hist, target = sample_batch(
            trains, settings.batch_size, settings.min_context, max_ctx, settings.horizon, rng
        )
        return hist, target

    model = new_model(settings, settings.seed)
    bar = tqdm(total=settings.epochs, desc="train", unit="epoch", disable=not progress)
    run = fit(
        model,
        sample,
        lambda m: _val_score(m, seen, settings),
        settings,
        settings.seed,
        lambda row: (bar.update(), bar.set_postfix(val_mase=f"{row['validation']:.3f}")),
    )
    bar.close()
    info = _info(model, series, settings, run)
    return model, info


def _info(model, series, settings, run: dict) -> dict:
    seen = [s for s in series if s.seen]
    h, ctx = settings.horizon, settings.context_length
    val = [backtest(model, s, "validation", h, ctx, SCALER) for s in seen]
    test = [backtest(model, s, "test", h, ctx, SCALER) for s in series]
    offsets, calibration = calibrate(model, series, h, ctx, SCALER, LEVELS)
    test_cov = coverage_on_test(model, series, h, ctx, SCALER, LEVELS, offsets)
    splits = {}
    for s in series:
        sp = split_series(len(s.values), h)
        splits[s.name] = {
            "train": sp.val_start,
            "validation": sp.test_start - sp.val_start,
            "test": sp.n - sp.test_start,
        }
    return {
        "name": settings.name,
        "version": settings.version,
        "scaler": asdict(SCALER),
        "quantile_levels": list(LEVELS),
        "quantile_offsets": offsets,
        "quantile_calibration": calibration,
        "horizon": h,
        "context_length": ctx,
        "metrics": {
            "validation_mase": float(np.mean([b.mase().mean() for b in val])),
            "test_mase": float(np.mean([b.mase().mean() for b in test])),
            "test_mase_by_series": {b.series.name: float(b.mase().mean()) for b in test},
            "validation_interval_coverage": calibration["validation_coverage"],
            "test_interval_coverage": test_cov,
            "best_epoch": run["best_epoch"],
            "stopped_by": run["stopped_by"],
            "train_seconds": run["train_seconds"],
            "history": [
                {"epoch": r["epoch"], "train_loss": r["train_loss"], "val_mase": r["validation"]}
                for r in run["history"]
            ],
        },
        "data": {
            "series": [s.provenance() for s in series],
            "missing_values_filled": int(sum(s.missing_filled for s in series)),
            "missing_value_rule": "time interpolation on the regular grid; edges take the nearest value",
            "split_rule": f"per series, time-ordered: test = last {2 * h}, validation = the {2 * h} before, train = the rest",
            "splits": splits,
        },
        "versions": {
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "train": asdict(settings),
    }


def train_and_save(
    series: list[Series], settings: TrainSettings, out: Path, progress: bool = True
) -> dict:
    model, info = train(series, settings, progress)
    save_checkpoint(out, model, info)
    return info


def recalibrate(path: Path, series: list[Series]) -> dict:
    """Recompute a checkpoint's quantile offsets (weights untouched) and save it atomically.

    Returns the updated info. The series must be those the checkpoint was trained on.
    """
    from model.checkpoint import load_checkpoint

    model, info = load_checkpoint(path)
    h, ctx = int(info["horizon"]), int(info["context_length"])
    scaler = Scaler(**info["scaler"])
    levels = tuple(info["quantile_levels"])
    offsets, calibration = calibrate(model, series, h, ctx, scaler, levels)
    info["quantile_offsets"] = offsets
    info["quantile_calibration"] = calibration
    info["metrics"]["validation_interval_coverage"] = calibration["validation_coverage"]
    info["metrics"]["test_interval_coverage"] = coverage_on_test(
        model, series, h, ctx, scaler, levels, offsets
    )
    save_checkpoint(path, model, info)
    return info
