"""Print the serving requirements of one image target, read from pyproject.toml.

    python deploy/requirements.py cpu|gpu [pyproject.toml]

The base dependencies in pyproject.toml are the serving set. They choose the onnxruntime
build by platform marker, which would pick onnxruntime-gpu inside any Linux x86_64 image;
this script picks per target instead, so an image never holds both packages:
  cpu: plain `onnxruntime` (same version range), no CUDA libraries;
  gpu: `onnxruntime-gpu[cuda,cudnn]`, the CUDA and cuDNN libraries as PyPI wheels.
Stdlib only: it runs in the Dockerfile's builder stage before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ORT_CPU = "onnxruntime"
ORT_GPU = "onnxruntime-gpu"
GPU_EXTRAS = "[cuda,cudnn]"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def _split(requirement: str) -> tuple[str, str, str, str]:
    """(normalised name, extras, version spec, marker) of one PEP 508 string."""
    spec, _, marker = requirement.partition(";")
    m = _NAME.match(spec)
    if m is None:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    name, extras, version = m.group(1), m.group(2) or "", m.group(3).strip()
    return re.sub(r"[-_.]+", "-", name).lower(), extras, version, marker.strip()


def serving_requirements(target: str, pyproject: Path) -> list[str]:
    if target not in ("cpu", "gpu"):
        raise ValueError(f"target must be 'cpu' or 'gpu', got {target!r}")
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    keep = ORT_CPU if target == "cpu" else ORT_GPU
    out: list[str] = []
    found = False
    for requirement in deps:
        name, extras, version, marker = _split(requirement)
        if name in (ORT_CPU, ORT_GPU):
            if name == keep:
                # The platform marker is what this script replaces: drop it.
                out.append(f"{name}{GPU_EXTRAS if target == 'gpu' else extras}{version}")
                found = True
            continue
        out.append(requirement.strip())
    if not found:
        raise ValueError(f"pyproject.toml lists no {keep} dependency")
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    pyproject = Path(argv[1]) if len(argv) == 2 else Path("pyproject.toml")
    try:
        lines = serving_requirements(argv[0], pyproject)
    except ValueError as e:
        print(f"requirements.py: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
