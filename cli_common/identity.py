"""A model's name and version as `train --name/--version` and `export --name/--version` take
them: what the artifact, /v1/models and every resume token carry."""

from __future__ import annotations

from cli_common.errors import CliError

LIMIT = 255  # bytes of each that a resume token holds


def check_identity(name: str, version: str) -> None:
    for flag, value in (("--name", name), ("--version", version)):
        if not value or not value.isprintable() or value != value.strip():
            raise CliError(
                f"{flag} must be printable text without surrounding spaces, got {value!r}"
            )
        if len(value.encode()) > LIMIT:
            raise CliError(
                f"{flag} is {len(value.encode())} bytes; a model's {flag[2:]} holds at most {LIMIT}"
            )
