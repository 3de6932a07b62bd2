"""`gru-serve train` and `gru-serve evaluate` (torch is imported only when they run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli_common import CliError
from cli_common.extras import require_train_extra
from cli_common.identity import check_identity
from cli_common.paths import check_output_dir, check_output_file

DEFAULT_CHECKPOINT = "artifacts/checkpoint.pt"
DEFAULT_REPORT_DIR = "artifacts/report"
DEFAULT_ARTIFACT = "artifacts/gru.onnx"
# The statsmodels backtests of a competition-trained model: the horizon they always had.
STATSMODELS_HORIZON = 12


def _data_flags(p: argparse.ArgumentParser, title: str, csv_help: str) -> None:
    g = p.add_argument_group(title)
    g.add_argument("--csv", metavar="FILE", help=csv_help)
    g.add_argument(
        "--column", metavar="NAME", help="the value column of --csv (no default: needed with --csv)"
    )
    g.add_argument(
        "--time-column",
        metavar="NAME",
        help="timestamps: sort the rows, infer the frequency, fill absent steps "
        "(default: the rows in file order)",
    )
    g.add_argument(
        "--season",
        type=int,
        metavar="N",
        help="seasonal period (default: from the time column's frequency, else none)",
    )


def add_train(sub: argparse._SubParsersAction) -> None:
    from model.settings import VARIANTS, TrainSettings  # torch-free: the defaults live there

    d = TrainSettings()
    p = sub.add_parser(
        "train",
        help="train the GRU forecaster and write a checkpoint",
        description="Train the global GRU forecaster and write a self-describing checkpoint. "
        "Default data: the training parts of the M1, M3 and Tourism competitions (an "
        "ensemble of --members GRUs combined into one); with --csv: one GRU on one column. "
        "Needs the 'train' extra (pip install -e '.[train]').",
    )
    _data_flags(
        p,
        "data (default: the M1, M3 and Tourism competitions' training parts)",
        "train one GRU on one column of this CSV file (default: the competitions)",
    )
    p.add_argument(
        "--variant",
        default=d.variant,
        choices=VARIANTS,
        help="GRU formula: reset gate before (cho2014) or after (cudnn) the recurrent matrix "
        "(default %(default)s)",
    )
    p.add_argument(
        "--hidden-size",
        type=int,
        metavar="N",
        default=d.hidden_size,
        help="hidden units (per member) (default %(default)s)",
    )
    p.add_argument(
        "--layers",
        type=int,
        metavar="N",
        default=d.num_layers,
        help="GRU layers (default %(default)s)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        metavar="X",
        default=d.dropout,
        help="dropout between layers, in [0, 1); needs --layers 2 or more (default %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        default=d.epochs,
        help="most epochs per model (default %(default)s)",
    )
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        metavar="N",
        default=d.steps_per_epoch,
        help="batches per epoch (default %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        default=d.batch_size,
        help="windows per batch (default %(default)s)",
    )
    p.add_argument(
        "--lr",
        type=float,
        metavar="X",
        default=d.lr,
        help="Adam learning rate (default %(default)s)",
    )
    p.add_argument(
        "--cosine-lr",
        action=argparse.BooleanOptionalAction,
        default=d.cosine,
        help="decay the learning rate on a cosine (default %(default)s)",
    )
    p.add_argument(
        "--members",
        type=int,
        metavar="N",
        default=d.members,
        help="ensemble members, competitions only (default %(default)s)",
    )
    p.add_argument(
        "--patience",
        type=int,
        metavar="N",
        default=d.patience,
        help="stop after this many epochs without a validation gain (default %(default)s)",
    )
    p.add_argument(
        "--horizon",
        type=int,
        metavar="N",
        default=d.horizon,
        help="forecast steps trained and calibrated for, --csv only (default %(default)s; the "
        "competitions bring their own: 6 to 24)",
    )
    p.add_argument(
        "--min-context",
        type=int,
        metavar="N",
        default=d.min_context,
        help="shortest training history, --csv only (default %(default)s)",
    )
    p.add_argument(
        "--context-length",
        type=int,
        metavar="N",
        default=d.context_length,
        help="--csv: longest training history, recommended to clients; competitions: the "
        "history the members are validated at while training (default %(default)s)",
    )
    p.add_argument(
        "--name",
        default=d.name,
        help="the model's name in the checkpoint, the artifact and /v1/models (default %(default)s)",
    )
    p.add_argument(
        "--version",
        dest="model_version",
        metavar="VERSION",
        default=d.version,
        help="the model's version (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, metavar="N", default=d.seed, help="random seed (default %(default)s)"
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="MINUTES",
        default=d.max_minutes,
        help="stop a model (ensemble member) after this many minutes (default %(default)s)",
    )
    p.add_argument(
        "--out",
        default=DEFAULT_CHECKPOINT,
        metavar="FILE",
        help="checkpoint to write (default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: show it)")
    p.set_defaults(run=run_train)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model: a competition benchmark, or backtests against baselines",
        description="With --benchmark: forecast every series of the M3, M1 or Tourism "
        "competition through the serving core (the ONNX artifact, as /v1/forecast answers) "
        "and score the official held-out parts against Naive2, seasonal naive, Theta and "
        "ETS. Without it: rolling-origin backtests of the checkpoint on the statsmodels "
        "series (or on --csv) against naive, seasonal naive and ETS. Writes a markdown "
        "report, its JSON and plots to --out-dir. Needs the 'train' extra "
        "(pip install -e '.[train]').",
    )
    p.add_argument(
        "--benchmark",
        choices=("m3", "m1", "tourism"),
        help="score this competition's official split through the serving core "
        "(default: the backtests)",
    )
    p.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        metavar="FILE",
        help="ONNX artifact for --benchmark (default %(default)s)",
    )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        metavar="FILE",
        help="checkpoint for the backtests (default %(default)s)",
    )
    p.add_argument(
        "--out-dir",
        default=DEFAULT_REPORT_DIR,
        metavar="DIR",
        help="report directory, created if needed (default %(default)s)",
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="first recompute a --csv checkpoint's quantile offsets with the current calibration "
        "(weights untouched) and rewrite it atomically (default: off)",
    )
    _data_flags(
        p,
        "data for the backtests (default: the statsmodels series)",
        "backtest on one column of this CSV file, the one a --csv checkpoint was fitted on "
        "(default: the statsmodels series)",
    )
    p.set_defaults(run=run_evaluate)


def _check_csv_flags(args):
    if args.csv is None and (args.column or args.time_column or args.season is not None):
        raise CliError("--column, --time-column and --season need --csv")
    if args.season is not None and args.season < 1:
        raise CliError(f"--season must be >= 1, got {args.season}")


def _load_series(args):
    from model.data import DataError, load_bundled, load_csv

    _check_csv_flags(args)
    if args.csv is None:
        return load_bundled()
    if not args.column:
        raise CliError("--csv needs --column NAME")
    try:
        return [load_csv(args.csv, args.column, args.time_column, args.season)]
    except DataError as e:
        raise CliError(str(e)) from None


def _settings(args):
    from model.settings import TrainSettings

    positive = (
        "hidden_size",
        "layers",
        "epochs",
        "steps_per_epoch",
        "batch_size",
        "horizon",
        "min_context",
        "context_length",
        "members",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 <= args.dropout < 1.0:
        raise CliError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.dropout > 0 and args.layers < 2:
        # dropout sits between layers: with one layer it would silently do nothing
        raise CliError(f"--dropout {args.dropout} needs --layers 2 or more, got {args.layers}")
    if not args.lr > 0 or args.lr != args.lr:
        raise CliError(f"--lr must be > 0, got {args.lr}")
    if args.patience < 1 or not args.max_minutes > 0:
        raise CliError("--patience and --max-minutes must be positive")
    check_identity(args.name, args.model_version)
    if args.context_length < args.min_context:
        raise CliError(
            f"--context-length {args.context_length} is below --min-context {args.min_context}"
        )
    return TrainSettings(
        name=args.name,
        version=args.model_version,
        variant=args.variant,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        dropout=args.dropout,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        cosine=args.cosine_lr,
        patience=args.patience,
        horizon=args.horizon,
        min_context=args.min_context,
        context_length=args.context_length,
        seed=args.seed,
        max_minutes=args.max_minutes,
        members=args.members,
    )


def run_train(args: argparse.Namespace) -> int:
    # Everything the user can get wrong is checked before the minutes of training.
    require_train_extra()
    settings = _settings(args)
    _check_csv_flags(args)
    out = Path(args.out)
    check_output_file(out, "--out")
    if args.csv is None:
        from model.bundled import train_bundled
        from model.checkpoint import save_checkpoint

        model, info = train_bundled(settings, progress=not args.no_progress)
        save_checkpoint(out, model, info)
        m = info["metrics"]
        print(
            f"wrote {out}: {len(m['members'])} member(s), validation sMAPE M3 "
            f"{m['validation_smape_m3']:.2f}, context length {info['context_length']}"
        )
        return 0
    series = _load_series(args)
    from model.train import check_lengths, train_and_save

    try:
        check_lengths(series, settings)
    except ValueError as e:
        raise CliError(str(e)) from None
    info = train_and_save(series, settings, out, progress=not args.no_progress)
    m = info["metrics"]
    print(
        f"wrote {out}: validation MASE {m['validation_mase']:.3f}, test MASE {m['test_mase']:.3f}, "
        f"best epoch {m['best_epoch']} ({m['stopped_by']}, {m['train_seconds']:.0f} s)"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    require_train_extra()
    _check_csv_flags(args)
    out_dir = Path(args.out_dir)
    check_output_dir(out_dir, "--out-dir")
    if args.benchmark:
        return _run_benchmark(args, out_dir)
    from model.checkpoint import load_checkpoint

    try:
        model, info = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    on_competitions = "datasets" in info.get("data", {})
    if on_competitions and args.recalibrate:
        raise CliError("--recalibrate applies to checkpoints trained with --csv")
    if args.recalibrate:
        check_output_file(Path(args.checkpoint), "--checkpoint")
    if args.csv is None and any(
        s["source"].startswith("csv:") for s in info["data"].get("series", [])
    ):
        raise CliError("this checkpoint was trained on a CSV: pass the same --csv and --column")
    series = _load_series(args)
    horizon = int(info["horizon"])
    if on_competitions:
        # none of these series was trained on; backtest them at their usual horizon
        from dataclasses import replace

        series = [replace(s, seen=False) for s in series]
        horizon = STATSMODELS_HORIZON
    from model.train import TrainSettings, check_lengths

    try:
        check_lengths(series, TrainSettings(horizon=horizon, min_context=1))
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.recalibrate:
        from model.train import recalibrate

        info = recalibrate(Path(args.checkpoint), series)
        v = info["metrics"]["validation_interval_coverage"] or {}
        t = info["metrics"]["test_interval_coverage"]
        print(
            f"recalibrated {args.checkpoint}: interval coverage "
            + ", ".join(
                f"{k} validation {v[k] * 100:.1f}% test {t[k] * 100:.1f}%"
                if k in v
                else f"{k} test {t[k] * 100:.1f}%"
                for k in t
            )
        )
    from model.evaluate import write_report

    report = write_report(model, info, series, out_dir, horizon)
    m = report["mean_mase"]
    print(
        f"wrote {out_dir}/evaluation.md: mean MASE GRU {m['gru']:.3f}, naive {m['naive']:.3f}, "
        f"seasonal naive {m['seasonal_naive']:.3f}, ETS {m['ets']:.3f}"
    )
    return 0


def _run_benchmark(args: argparse.Namespace, out_dir: Path) -> int:
    artifact = Path(args.artifact)
    if not artifact.is_file():
        raise CliError(f"--artifact {artifact} does not exist")
    from model.benchmark import write_benchmark

    result = write_benchmark(args.benchmark, artifact, out_dir)
    t = result["table"]["all"]
    print(
        f"wrote {out_dir}/benchmark-{args.benchmark}.md: sMAPE GRU {t['smape']['gru']:.2f}, "
        f"Naive2 {t['smape']['naive2']:.2f}, Theta {t['smape']['theta']:.2f}, "
        f"ETS {t['smape']['ets']:.2f}"
    )
    return 0
