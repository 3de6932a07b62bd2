"""`gru-serve`: one command line for train | evaluate | export | serve.

Each area registers its own sub-command (`model/commands.py`, `export/commands.py`,
`service/commands.py`); those modules import nothing heavy at import time, so `serve`
never pulls in torch.
"""

from __future__ import annotations

import argparse
import sys


class CliError(Exception):
    """Bad user input: printed as one line on stderr, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from export import commands as export_commands
    from model import commands as model_commands
    from service import commands as service_commands

    parser = argparse.ArgumentParser(prog="gru-serve", description=__doc__.splitlines()[0])
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
    # Run as `python -m service.cli`, this file is `__main__`, whose CliError is not the class
    # the commands import; go through the package module so one class is caught.
    from service.cli import main as package_main

    sys.exit(package_main())
