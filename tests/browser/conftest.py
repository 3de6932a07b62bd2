"""Browser tests: headless Chromium against real `gru-serve serve` processes on the bundled
model. Without chromium, chromedriver or selenium every test here is skipped, and the skip
says how to install them (.ci/run installs them, so CI runs these tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playground_page import KEY, PlaygroundPage, browser_missing, start_browser, start_server
from servers import ServerProcess

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = browser_missing()
    if why is None:
        return
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("playground"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(tmp_path_factory.mktemp("playground-keys"), api_keys=KEY)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def driver():
    d = start_browser()
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def page(driver, server: ServerProcess) -> PlaygroundPage:
    """The playground of the keyless server, opened and loaded."""
    p = PlaygroundPage(driver, server.base_url)
    p.open()
    return p
