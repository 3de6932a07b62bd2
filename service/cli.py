"""`gru-serve`: one command line for train | evaluate | export | serve.

Each area registers its own sub-command (`model/commands.py`, `export/commands.py`,
`service/commands.py`); those modules import nothing heavy at import time, so `serve`
never pulls in torch. Every error a user can cause is one line on stderr and exit 2
(`cli_common`).
"""

from __future__ import annotations

import argparse
import sys

from cli_common import CliError
from cli_common.parser import OneLineParser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("gru-serve")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from export import commands as export_commands
    from model import commands as model_commands
    from service import commands as service_commands

    parser = OneLineParser(
        prog="gru-serve",
        description="Train a GRU forecaster, export it to ONNX, serve it. "
        "Run `gru-serve COMMAND --help` for each command's flags and defaults.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_commands.add_train(sub)
    model_commands.add_evaluate(sub)
    export_commands.add_export(sub)
    service_commands.add_serve(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CliError as e:
        print(f"gru-serve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
