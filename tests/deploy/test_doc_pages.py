"""The README fits on a few screens and leads into docs/; every page's links resolve inside
the repository; the facts the pages state (settings, defaults, the model's context length
and horizon, the module map) are the code's."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from deployfiles import ROOT
from docblocks import PAGES, anchors, links, prose

from model.settings import TrainSettings
from service.settings import Settings

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_readme_is_short_and_leads_into_every_doc_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    top = "\n".join(lines[:25])  # the contents, before the quickstart
    for page in sorted(DOCS.glob("*.md")):
        assert f"](docs/{page.name})" in top, page.name
    for section in ("#quickstart", "#the-bundled-model", "#examples", "#benchmarks"):
        assert f"]({section})" in top, section


def test_readme_shows_the_playground_and_how_to_get_the_command():
    text = README.read_text()
    assert "![" in text and "](docs/playground.png)" in text
    assert "(docs/playground.md)" in text
    assert "source .venv/bin/activate" in text and ".venv/bin/gru-serve" in text
    assert "pip install -e '.[train]'" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve_inside_the_repository(page: Path):
    for target in links(page):
        assert "://" not in target and not target.startswith("mailto:"), (page.name, target)
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.is_relative_to(ROOT), (page.name, target)
        assert dest.exists(), (page.name, target)
        if anchor:
            assert anchor in anchors(dest), (page.name, target, sorted(anchors(dest)))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_speak_to_users_about_this_repository_only(page: Path):
    text = page.read_text()
    outside = "/".join(["..", "shared"])
    assert outside not in text and "DESIGN.md" not in text, page.name
    for phrase in ("the issue", "issues'", "our machine", "the team", "the shared 2-core machine"):
        assert phrase not in prose(page).lower(), (page.name, phrase)
    for url in re.findall(r"https?://[^\s)`'\"]+", text):
        # only the server's own address, or an example origin (the reserved .example domain)
        assert re.match(r"https?://(127\.0\.0\.1|localhost|[\w.-]+\.example)([:/]|$)", url), (
            page.name,
            url,
        )


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = "/".join(["..", "shared"])
    for name in files:
        path = ROOT / name
        if path.suffix in (".png", ".onnx", ".pt") or not path.is_file():
            continue
        assert outside not in path.read_text(errors="replace"), name


def shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return "empty"
    if isinstance(value, Path):
        return value.relative_to(ROOT).as_posix()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_setting_is_in_the_one_settings_table_with_its_default():
    text = (DOCS / "operations.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", text, re.M))
    assert set(Settings.model_fields) <= set(rows), set(Settings.model_fields) - set(rows)
    for name, field in Settings.model_fields.items():
        cell = rows[name].strip().strip("`")
        assert cell.startswith(shown(field.default)), (name, cell, shown(field.default))
    # and the README sends readers there instead of keeping a second table
    assert "](docs/operations.md#settings)" in README.read_text()
    assert not re.search(r"^\| `max_batch_rows` \|", README.read_text(), re.M)


def test_context_length_horizon_and_training_defaults_are_documented():
    import onnxruntime as ort

    from export.contract import ArtifactMeta

    session = ort.InferenceSession(
        str(ROOT / "artifacts" / "gru.onnx"), providers=["CPUExecutionProvider"]
    )
    meta = ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map)
    d = TrainSettings()
    text = README.read_text()
    assert f"**`context_length` = {meta.context_length}**" in text
    assert f"**`horizon` = {meta.horizon}**" in text
    assert f"`--horizon` (default **{d.horizon}**)" in text
    assert f"`--context-length`\n(default **{d.context_length}**)" in text
    model = (DOCS / "model.md").read_text()
    assert f"| `context_length` | {meta.context_length} |" in model
    assert f"| `horizon` | {meta.horizon} |" in model
    assert f"`--horizon` (default {d.horizon})" in model
    assert f"`--context-length` (default {d.context_length})" in model


def python_modules(package: str) -> set[str]:
    return {
        p.relative_to(ROOT / package).as_posix()
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }


def test_the_module_map_names_every_module_and_only_real_ones():
    design = (DOCS / "design.md").read_text()
    mapped = design[design.index("## Module map") :]
    named = set(re.findall(r"`([\w/]+\.py)`", mapped))
    for package in ("cli_common", "model", "export", "service"):
        for module in python_modules(package):
            assert Path(module).name in {Path(n).name for n in named}, f"{package}/{module}"
    every = {
        Path(m).name
        for pkg in ("cli_common", "model", "export", "service")
        for m in python_modules(pkg)
    }
    for name in named:
        assert Path(name).name in every, name
