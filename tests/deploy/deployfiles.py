"""Deployment files read as data: the Dockerfile, docker-compose.yml, Kubernetes manifests.

No Docker engine or cluster runs here, so the tests parse the files and check them against
the application itself (its settings, its command, its probe paths). Parsers only: the
fixtures that hold the parsed files are in conftest.py.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from service.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV_NAME = re.compile(r"\b(" + ENV_PREFIX + r"[A-Z0-9_]+)\b")


# ------------------------------------------------------------------------------ Dockerfile


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None


@dataclass
class Stage:
    name: str
    base: str  # an image reference or the name of an earlier stage
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Image:
    """What a target stage ends up with, after inheriting from its parent stages."""

    stages: list[Stage]  # root first
    env: dict[str, str]
    cmd: list[str] | None
    healthcheck_cmd: list[str] | None
    healthcheck_options: dict[str, str]
    expose: list[str]
    user: str | None
    stopsignal: str | None
    workdir: str | None

    @property
    def instructions(self) -> list[tuple[str, str]]:
        return [ins for stage in self.stages for ins in stage.instructions]

    @property
    def own(self) -> list[tuple[str, str]]:
        """The target stage's own instructions, in order."""
        return self.stages[-1].instructions

    def copies(self, own_only: bool = True) -> list[Copy]:
        return [
            parse_copy(a) for k, a in (self.own if own_only else self.instructions) if k == "COPY"
        ]


class Dockerfile:
    def __init__(self, text: str) -> None:
        self.stages: list[Stage] = []
        for keyword, args in logical_lines(text):
            if keyword == "FROM":
                words = args.split()
                words = [w for w in words if not w.startswith("--")]
                name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
                self.stages.append(Stage(name=name or str(len(self.stages)), base=words[0]))
            elif keyword != "ARG" or self.stages:
                self.stages[-1].instructions.append((keyword, args))
        self.by_name = {s.name: s for s in self.stages}

    def chain(self, target: str) -> list[Stage]:
        chain = [self.by_name[target]]
        while chain[0].base in self.by_name:
            chain.insert(0, self.by_name[chain[0].base])
        return chain

    def image(self, target: str) -> Image:
        chain = self.chain(target)
        img = Image(chain, {}, None, None, {}, [], None, None, None)
        for stage in chain:
            for keyword, args in stage.instructions:
                if keyword == "ENV":
                    img.env.update(parse_env(args))
                elif keyword == "CMD":
                    img.cmd = json.loads(args)
                elif keyword == "HEALTHCHECK":
                    img.healthcheck_options, img.healthcheck_cmd = parse_healthcheck(args)
                elif keyword == "EXPOSE":
                    img.expose += args.split()
                elif keyword == "USER":
                    img.user = args.strip()
                elif keyword == "STOPSIGNAL":
                    img.stopsignal = args.strip()
                elif keyword == "WORKDIR":
                    img.workdir = args.strip()
        return img


def logical_lines(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV NAME value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def parse_healthcheck(args: str) -> tuple[dict[str, str], list[str] | None]:
    if args.strip().upper() == "NONE":
        return {}, None
    opts, _, cmd = args.partition(" CMD ")
    options = dict(o.lstrip("-").split("=", 1) for o in opts.split())
    return options, json.loads(cmd)


def parse_copy(args: str) -> Copy:
    words = args.split() if not args.rstrip().endswith("]") else None
    if words is None:
        raise AssertionError(f"COPY in JSON form is not parsed here: {args}")
    from_stage = None
    while words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            from_stage = flag.split("=", 1)[1]
    return Copy(sources=words[:-1], dest=words[-1], from_stage=from_stage)


# ------------------------------------------------------------------------------ helpers


def settings_fields() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def env_names_in(text: str) -> set[str]:
    return set(ENV_NAME.findall(text))


def interpolate_defaults(value: str) -> str:
    """Compose-style `${NAME:-default}` -> default (what an empty environment gives)."""
    return re.sub(r"\$\{[A-Za-z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def validate_settings(env: dict[str, str]) -> Settings:
    """Build Settings from GRU_SERVE_* values exactly as the service would (fails on a bad one)."""
    kwargs = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()}
    return Settings(**kwargs)


def dockerignore_admits(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        alts = {pat, pat[3:]} if pat.startswith("**/") else {pat}
        if any(fnmatch.fnmatchcase(c, a) for c in candidates for a in alts):
            ignored = not negate
    return not ignored


def read_dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def target_requirements(target: str) -> list[str]:
    """The image target's dependency lines, as deploy/requirements.py writes them for pip."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "requirements.py"), target],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return proc.stdout.split()
