"""The shared results writer: sections merge into bench/results.json and bench/results.md."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
JSON_PATH = HERE / "results.json"
MD_PATH = HERE / "results.md"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load() -> dict:
    if JSON_PATH.exists():
        try:
            return json.loads(JSON_PATH.read_text())
        except json.JSONDecodeError:
            pass
    return {"sections": {}}


def write_section(name: str, data: dict, markdown: str) -> None:
    """Replace one section (its figures and its markdown) and rewrite both files."""
    results = load()
    results.setdefault("sections", {})[name] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "data": data,
        "markdown": markdown,
    }
    JSON_PATH.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    parts = ["# gru-serve benchmark results\n", "Written by `make bench` (`python -m bench`).\n"]
    for section in sorted(results["sections"]):
        s = results["sections"][section]
        m = s["machine"]
        parts.append(
            f"## {section}\n\nMeasured {s['measured_at']} on {m['cpus']} CPU(s) ({m['cpu']}), "
            f"Python {m['python']}.\n\n{s['markdown'].strip()}\n"
        )
    MD_PATH.write_text("\n".join(parts))


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
