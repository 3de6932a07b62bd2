"""Every example in the README and in docs/api.md runs as written against a real server.

A server is started as `make serve` starts it (the bundled model). Each `sh` and `python`
block runs with the documented address replaced by the server's; a block the page marks
`<!-- not run: why -->` is skipped. The README's Python examples run with nothing importable
but what `make serve` installs. A block followed by a JSON block must answer that JSON
(numbers to the two decimals shown).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deployfiles import ROOT
from docblocks import Block, blocks, runnable
from servers import ServerProcess, launch
from servingsite import serving_only_argv

README = ROOT / "README.md"
API = ROOT / "docs" / "api.md"
EXAMPLES = [*runnable(README), *runnable(API)]
GRU_SERVE = Path(sys.executable).parent / "gru-serve"


def user_env() -> dict[str, str]:
    """The environment of a user's shell: no GRU_SERVE_* or PYTHON* leaking in from the tests,
    and the virtual environment not activated (the README says how to)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRU_SERVE_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServerProcess:
    cmd = [str(GRU_SERVE)] if GRU_SERVE.exists() else [sys.executable, "-m", "service.cli"]
    cmd += ["serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu"]
    log = tmp_path_factory.mktemp("doc-examples") / "serve.log"
    srv = launch(cmd, user_env(), log)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def close(shown, actual) -> bool:
    """`actual` matches what the page shows: same keys and lengths, numbers to 2 decimals."""
    if isinstance(shown, dict):
        return (
            isinstance(actual, dict)
            and shown.keys() == actual.keys()
            and all(close(v, actual[k]) for k, v in shown.items())
        )
    if isinstance(shown, list):
        return (
            isinstance(actual, list)
            and len(shown) == len(actual)
            and all(close(a, b) for a, b in zip(shown, actual, strict=True))
        )
    if isinstance(shown, float):
        return isinstance(actual, int | float) and math.isclose(shown, actual, abs_tol=0.006)
    return shown == actual


def run(block: Block, port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    text = block.text
    for address in ("127.0.0.1:8000", "localhost:8000"):
        text = text.replace(address, f"127.0.0.1:{port}")
    if block.lang == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", text]
    elif block.page == README:  # with only what `make serve` installs
        argv = serving_only_argv(text, tmp_path / "site")
    else:
        argv = [sys.executable, "-c", text]
    return subprocess.run(
        argv, cwd=ROOT, env=user_env(), capture_output=True, text=True, timeout=120
    )


def test_the_pages_have_examples_to_run():
    langs = {(b.page.name, b.lang) for b in EXAMPLES}
    assert {
        ("README.md", "sh"),
        ("README.md", "python"),
        ("api.md", "sh"),
        ("api.md", "python"),
    } <= langs
    # every block left out says why
    for page in (README, API):
        for b in blocks(page):
            if b.lang in ("sh", "python") and b.not_run is not None:
                assert len(b.not_run) > 5, b


@pytest.mark.parametrize("block", EXAMPLES, ids=str)
def test_example_runs_as_written(server: ServerProcess, tmp_path: Path, block: Block):
    p = run(block, server.port, tmp_path)
    assert p.returncode == 0, f"{block}\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr and p.stdout.strip(), f"{block}\n{p.stderr}"
    assert '"error"' not in p.stdout, f"{block}\n{p.stdout}"
    if block.output is not None:
        shown = json.loads(block.output)
        assert close(shown, json.loads(p.stdout)), f"{block}\n{p.stdout}"
