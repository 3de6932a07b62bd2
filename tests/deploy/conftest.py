"""Fixtures: the deployment files, parsed once per session (parsers in deployfiles.py)."""

from __future__ import annotations

import pytest
import yaml
from deployfiles import DEPLOY, ROOT, Dockerfile, yaml_docs


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return Dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict]]:
    """Every Kubernetes / KServe document, by file (relative to deploy/)."""
    files = sorted((DEPLOY / "k8s").glob("*.yaml")) + sorted((DEPLOY / "kserve").glob("*.yaml"))
    return {
        str(p.relative_to(DEPLOY)): yaml_docs(p) for p in files if p.name != "kustomization.yaml"
    }
