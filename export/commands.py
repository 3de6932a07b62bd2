"""`gru-serve export`: checkpoint -> ONNX artifact."""

from __future__ import annotations

import argparse


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to the ONNX artifact the service loads")
    p.set_defaults(run=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    from service.cli import CliError

    raise CliError("not implemented yet")
