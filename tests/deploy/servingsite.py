"""A Python that can import only what the serving image installs: the standard library, the
code, and the distributions `deploy/requirements.py cpu` pulls in (as installed here).

This checkout's venv holds much more (torch, onnx, pytest, httpx, ...); running code with
`serving_only_python` shows that it needs nothing `make serve` (or the cpu image) does not
install.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

from deployfiles import ROOT, target_requirements
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# onnxruntime and onnxruntime-gpu install the same module: either stands in for the other.
ALIASES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu")}


def parsed_requirements(target: str) -> list[Requirement]:
    return [Requirement(line) for line in target_requirements(target)]


def installed(name: str) -> md.Distribution:
    for candidate in ALIASES.get(canonicalize_name(name), (name,)):
        try:
            return md.distribution(candidate)
        except md.PackageNotFoundError:
            continue
    raise AssertionError(f"{name} is a serving dependency but is not installed here")


def closure(requirements: list[Requirement]) -> dict[str, md.Distribution]:
    """Every distribution the requirements pull in, by canonical name."""
    found: dict[str, md.Distribution] = {}
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        dist = installed(req.name)
        key = canonicalize_name(req.name)
        if key in found and not extras:
            continue
        found[key] = dist
        for sub in map(Requirement, dist.requires or []):
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, frozenset(sub.extras)))
    return found


def site_with_only(dists: dict[str, md.Distribution], where: Path) -> Path:
    """A directory of links to the top-level files of `dists` and nothing else."""
    where.mkdir()
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or (where / top).exists():
                continue
            if (base / top).exists():
                (where / top).symlink_to(base / top)
    return where


def serving_only_argv(script: str, where: Path) -> list[str]:
    """argv running `script` with only the serving install importable: `-S` (no
    site-packages), then links to the serving distributions (made in `where`) and the code."""
    site = site_with_only(closure(parsed_requirements("cpu")), where)
    prelude = f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]\n"
    return [sys.executable, "-S", "-c", prelude + script]
