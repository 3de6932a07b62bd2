"""The CLI's shared pieces sit below model/, export/ and service/, and dead fields stay gone."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of `package` imports (at any depth: lazy imports count)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_model_and_export_commands_do_not_import_the_service_cli():
    for package in ("model", "export"):
        for path, names in imported_modules(package).items():
            assert "service.cli" not in names and "service.commands" not in names, path
    for path in ("model/commands.py", "export/commands.py"):
        names = imported_modules(path.split("/")[0])[path]
        assert not {n for n in names if n.split(".")[0] == "service"}, path
        assert "cli_common" in names, path


def test_cli_common_imports_only_the_standard_library():
    import sys

    for path, names in imported_modules("cli_common").items():
        tops = {n.split(".")[0] for n in names} - {"cli_common", "__future__"}
        assert tops <= set(sys.stdlib_module_names), (path, tops)


def test_one_cli_error_class():
    from cli_common import CliError
    from cli_common.errors import CliError as Same

    assert CliError is Same
    import service.cli

    assert not hasattr(service.cli, "CliError") or service.cli.CliError is CliError


def test_dead_fields_are_gone(tiny_artifact):
    from service.runtime import Runtime
    from service.settings import Settings
    from service.tokens import TokenState

    assert "extra" not in {f.name for f in dataclasses.fields(TokenState)}
    runtime = Runtime(Settings(model_path=tiny_artifact, device="cpu"))
    runtime.warmup(rounds=1)
    assert not hasattr(runtime, "ready")  # readiness lives in the app's state, not here
