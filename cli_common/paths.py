"""Output paths checked before the long work: a run must not train for minutes, then fail.

Nothing is left behind by a check: no directory is created, and the probe file that proves
a directory writable is removed at once (`os.access` is no proof: root passes it on a
read-only or virtual file system).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cli_common.errors import CliError


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (what a later mkdir -p would build on)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(directory: Path, flag: str, path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".gru-serve-probe-"):
            pass
    except OSError as e:
        raise CliError(f"{flag} {path}: cannot write in {directory}: {e.strerror or e}") from None


def _check_parent(path: Path, flag: str) -> None:
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise CliError(f"{flag} {path}: {base} is a file, not a directory")
    _check_writable_dir(base, flag, path)


def check_output_file(path: Path, flag: str) -> None:
    """A file the command will write (or replace); nothing is created here."""
    if path.is_dir():
        raise CliError(f"{flag} {path} is a directory, expected a file path")
    _check_parent(path, flag)


def check_output_dir(path: Path, flag: str) -> None:
    """A directory the command will create if needed and write into; nothing is created here."""
    if path.exists():
        if not path.is_dir():
            raise CliError(f"{flag} {path} is a file, expected a directory")
        _check_writable_dir(path, flag, path)
        return
    _check_parent(path, flag)
