"""`gru-serve serve`."""

from __future__ import annotations

import argparse


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the ONNX artifact over HTTP and websocket")
    p.set_defaults(run=_not_yet)


def _not_yet(args: argparse.Namespace) -> int:
    from service.cli import CliError

    raise CliError("not implemented yet")
