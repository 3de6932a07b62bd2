"""What every `gru-serve` command shares: the user-error type, the one-line argument parser,
the output-path and extras checks.

A top-level package of its own so that model/, export/ and service/ can all use it without
importing each other. Standard library only: the serving image imports it too.
"""

from cli_common.errors import CliError

__all__ = ["CliError"]
