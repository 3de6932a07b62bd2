"""argparse, with the CLI's promise kept: a usage error is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage and then the error (two or more lines); this prints the error.

    Sub-parsers inherit the class (`add_subparsers` uses the parent's type), so one root
    parser of this class covers every command.
    """

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
