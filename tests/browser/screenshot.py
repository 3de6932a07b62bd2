"""Writes docs/playground.png: the playground on the bundled model, an example series streamed
through it and a forecast forked from the end. Needs what the browser tests need.

    .venv/bin/python tests/browser/screenshot.py [OUT]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: servers.py

from playground_page import (  # noqa: E402
    ROOT,
    PlaygroundPage,
    browser_missing,
    start_browser,
    start_server,
)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "playground.png"
    if why := browser_missing():
        print(f"screenshot.py: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as logs:
        server = start_server(Path(logs))
        driver = start_browser(width=1400, height=930)
        try:
            page = PlaygroundPage(driver, server.base_url)
            page.open()
            page.choose("series", "m3-N1907")
            page.choose("speed", "max")
            page.click("start")
            page.wait_phase("done")
            page.click("forecast")
            page.wait(page.forecast_points, "the forecast")
            page.screenshot(out)
        finally:
            driver.quit()
            server.stop()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
