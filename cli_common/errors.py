"""The one exception type a command raises for input the user can fix."""

from __future__ import annotations


class CliError(Exception):
    """Bad user input: printed as one line on stderr, exit code 2, no traceback."""
