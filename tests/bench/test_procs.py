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


def test_loop_cpu_counts_the_main_thread_only(tmp_path):
    """A process that spins in a second thread while its main thread sleeps: the process's
    CPU grows, its main thread's barely."""
    import sys
    import time

    from bench.procs import Server

    spin = (
        "import threading, time\n"
        "def spin():\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.6: pass\n"
        "threading.Thread(target=spin).start()\n"
        "time.sleep(2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", spin])
    try:
        server = Server("spin", proc, 0, 0.0, tmp_path / "log")
        time.sleep(1.2)  # the thread has spun its 0.6 s of CPU
        total, loop = server.cpu_s(), server.loop_cpu_s()
    finally:
        proc.kill()
        proc.wait()
    assert total >= 0.5
    assert loop < 0.2
