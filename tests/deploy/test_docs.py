"""The deployment page (docs/deployment.md) names things that exist: files, services, settings."""

from __future__ import annotations

import re

from deployfiles import ROOT, env_names_in, settings_fields

SECTIONS = ("## Containers", "## Scaling out")


def deploy_doc() -> str:
    return (ROOT / "docs" / "deployment.md").read_text()


def test_sections_exist_and_say_the_build_is_untested_here():
    doc = deploy_doc()
    for section in SECTIONS:
        assert re.search(rf"^{section}$", doc, re.M), section
    assert "no Docker engine" in doc and "untested" in doc


def test_quickstart_commands_match_the_compose_file(compose: dict):
    doc = deploy_doc()
    assert "docker compose up" in doc
    for profile, service in (("gpu", "serve-gpu"), ("monitoring", None)):
        assert f"docker compose --profile {profile} up" in doc
        assert profile in compose["services"][service or "prometheus"]["profiles"]
    assert "docker compose --profile gpu up serve-gpu" in doc
    for target in ("cpu", "gpu"):
        assert f"docker build --target {target} -t gru-serve:{target} ." in doc


def test_named_files_exist():
    doc = deploy_doc()
    paths = set(re.findall(r"\b((?:deploy|tests/deploy)/[\w./-]+\w)", doc))
    paths |= {p for p in re.findall(r"`([.\w/-]+)`", doc) if p in (".env.example", "Dockerfile")}
    assert "deploy/k8s/gpu.yaml" in paths and "deploy/kserve/inferenceservice.yaml" in paths
    for path in paths:
        assert (ROOT / path).exists(), path


def test_setting_names_are_settings():
    names = env_names_in(deploy_doc())
    assert {"GRU_SERVE_TOKEN_SECRET", "GRU_SERVE_MODEL_PATH"} <= names
    assert names <= settings_fields(), names - settings_fields()
