"""bench/procs.py: a revision's code checked out for a side-by-side run."""

from __future__ import annotations

import shutil
import subprocess

from bench.procs import ROOT, checkout


def test_checkout_holds_the_revisions_files():
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD~1"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = checkout(head)
    try:
        for path in ("service/app.py", "bench/rest.py"):
            committed = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{head}:{path}"], capture_output=True, check=True
            ).stdout
            assert (tree / path).read_bytes() == committed
        assert not (tree / ".git").exists()
    finally:
        shutil.rmtree(tree)
