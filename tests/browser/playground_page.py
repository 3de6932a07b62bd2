"""The playground page in headless Chromium (selenium, with the system's chromium and
chromedriver), a gru-serve process for it to talk to, and what the browser saw: requests,
websocket frames and console messages from Chromium's performance and browser logs.

Shared by the browser tests (tests/browser/) and screenshot.py. Selenium is imported only
where a browser starts, so that without it the tests are skipped, not broken.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servers import ServerProcess, launch

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_ONNX = ROOT / "artifacts" / "gru.onnx"
ARTIFACTS = ROOT / "build" / "test-artifacts"  # screenshots kept after the run (git ignores build/)
WAIT_S = 10.0
KEY = "playground-key"  # the API key of the tests' keyed server
INSTALL = (
    "install headless Chromium with `apt-get install chromium chromium-driver` (Debian; "
    ".ci/run does it) and selenium with `pip install -e '.[dev]'`"
)


# ---- the browser ----------------------------------------------------------------------------------
def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return f"selenium is not installed: {INSTALL}"
    if chromium_binary() is None:
        return f"no chromium binary on PATH: {INSTALL}"
    if shutil.which("chromedriver") is None:
        return f"no chromedriver on PATH: {INSTALL}"
    return None


def start_browser(width: int = 1400, height: int = 1000):
    """Headless Chromium through the system chromedriver (no driver download, no network)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary() or "chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


# ---- a server for the page ------------------------------------------------------------------------
def start_server(log_dir: Path, model: Path = BUNDLED_ONNX, **flags: str) -> ServerProcess:
    """`gru-serve serve` on 127.0.0.1 (a port the kernel picks), ready; the caller stops it."""
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--device", "cpu", "--model-path", str(model)]
    for name, value in flags.items():
        cmd += ["--" + name.replace("_", "-"), value]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRU_SERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    server = launch(cmd, env, log_dir / f"serve-{time.monotonic_ns()}.log")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


# ---- the page -------------------------------------------------------------------------------------
class PlaygroundPage:
    def __init__(self, driver, base_url: str) -> None:
        self.driver, self.base_url = driver, base_url
        self._performance: list[dict] = []
        self._console: list[dict] = []

    # navigation and input
    def open(self) -> None:
        self.driver.get(self.base_url + "/playground")
        self.wait(lambda: self.attribute("body", "data-loaded") == "true", "the page to load")

    def element(self, selector: str):
        return self.driver.find_element("css selector", selector)

    def attribute(self, selector: str, name: str) -> str | None:
        return self.element(selector).get_attribute(name)

    def click(self, element_id: str) -> None:
        self.element(f"#{element_id}").click()

    def choose(self, select_id: str, value: str) -> None:
        self.element(f"#{select_id} option[value='{value}']").click()

    def fill(self, element_id: str, text: str) -> None:
        field = self.element(f"#{element_id}")
        field.clear()
        field.send_keys(text)

    def wait(self, condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; status: {self.text('#status')!r}, "
                    f"errors on the page: {self.errors()!r}"
                )
            time.sleep(0.02)

    # what the page shows
    def text(self, selector: str) -> str:
        return self.element(selector).text

    def phase(self) -> str | None:
        return self.attribute("#status", "data-phase")

    def wait_phase(self, *phases: str) -> str:
        return self.wait(lambda: self.phase() in phases and self.phase(), f"phase {phases}")

    def errors(self) -> str:
        return self.element("#errors").text

    def card(self) -> dict[str, str]:
        return self.driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#card-facts dd')]"
            ".map((d) => [d.dataset.field, d.textContent]))"
        )

    def predictions(self) -> list[dict]:
        """The one-step predictions drawn: step, y, interval, and where the point sits."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll('circle.pred-point')].map((c) => ({"
            "step: Number(c.dataset.step), y: Number(c.dataset.y), lo: Number(c.dataset.lo),"
            "hi: Number(c.dataset.hi), cy: Number(c.getAttribute('cy'))}))"
        )

    def forecast_points(self) -> list[dict]:
        return self.driver.execute_script(
            "return [...document.querySelectorAll('circle.fc-point')].map((c) => ({"
            "index: Number(c.dataset.index), y: Number(c.dataset.y), lo: Number(c.dataset.lo),"
            "hi: Number(c.dataset.hi), cy: Number(c.getAttribute('cy'))}))"
        )

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), path
        return path

    # what the browser did (Chromium's logs are drained on reading: keep them)
    def _collect(self) -> None:
        for entry in self.driver.get_log("performance"):
            self._performance.append(json.loads(entry["message"])["message"])
        self._console += self.driver.get_log("browser")

    def events(self, method: str) -> list[dict]:
        self._collect()
        return [e["params"] for e in self._performance if e["method"] == method]

    def requested_urls(self) -> list[str]:
        urls = [p["request"]["url"] for p in self.events("Network.requestWillBeSent")]
        return urls + [p["url"] for p in self.events("Network.webSocketCreated")]

    def failed_requests(self) -> list[str]:
        failed = [
            f"{p['response']['status']} {p['response']['url']}"
            for p in self.events("Network.responseReceived")
            if p["response"]["status"] >= 400
        ]
        failed += [f"failed: {p['errorText']}" for p in self.events("Network.loadingFailed")]
        failed += [
            f"websocket handshake {p['response']['status']}"
            for p in self.events("Network.webSocketHandshakeResponseReceived")
            if p["response"]["status"] != 101
        ]
        return failed

    def console_problems(self) -> list[str]:
        self._collect()
        return [e["message"] for e in self._console if e["level"] in ("SEVERE", "WARNING")]

    def websockets(self) -> list[dict]:
        """Each websocket the page opened: its handshake and the JSON frames both ways."""
        self._collect()
        sockets: dict[str, dict] = {}
        for e in self._performance:
            p = e["params"]
            if e["method"] == "Network.webSocketCreated":
                sockets[p["requestId"]] = {"url": p["url"], "sent": [], "received": []}
            elif e["method"] == "Network.webSocketWillSendHandshakeRequest":
                sockets[p["requestId"]]["request_headers"] = p["request"]["headers"]
            elif e["method"] == "Network.webSocketHandshakeResponseReceived":
                sockets[p["requestId"]]["response_headers"] = p["response"]["headers"]
            elif e["method"] in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
                kind = "sent" if e["method"].endswith("Sent") else "received"
                sockets[p["requestId"]][kind].append(json.loads(p["response"]["payloadData"]))
        return list(sockets.values())
