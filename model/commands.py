"""`gru-serve train` and `gru-serve evaluate` (torch is imported only when they run)."""

from __future__ import annotations

import argparse


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the GRU forecaster and write a checkpoint")
    p.set_defaults(run=_not_yet)


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint against baselines on held-out tails")
    p.set_defaults(run=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    from service.cli import CliError

    raise CliError("not implemented yet")
