"""The pages a browser opens: `/` (links) and `/playground` with its script, styles and
example series. Static files only, read once from service/playground/: the page itself calls
GET /v1/models and WS /v1/stream like any other client, with the key the user types in.

These paths are open even with API keys on (service/auth.py): a browser cannot send a key
when it navigates, and the files hold no model data.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(tags=["playground"])

# path -> (file in service/playground/, media type)
PAGES: dict[str, tuple[str, str]] = {
    "/": ("home.html", "text/html; charset=utf-8"),
    "/playground": ("index.html", "text/html; charset=utf-8"),
    # ES modules: the session and controls, then what they import
    "/playground/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/playground/chart.js": ("chart.js", "text/javascript; charset=utf-8"),
    "/playground/card.js": ("card.js", "text/javascript; charset=utf-8"),
    "/playground/dom.js": ("dom.js", "text/javascript; charset=utf-8"),
    "/playground/playground.css": ("playground.css", "text/css; charset=utf-8"),
    "/playground/examples.json": ("examples.json", "application/json"),
}
OPEN_PATHS = frozenset(PAGES)

# Same-origin only: the page loads nothing from elsewhere and needs no network beyond the
# server that served it (`'self'` covers its own ws:// and wss:// origin).
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _endpoint(body: bytes, media_type: str):
    async def serve_file() -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    return serve_file


for _path, (_name, _media_type) in PAGES.items():
    _body = files("service.playground").joinpath(_name).read_bytes()
    router.add_api_route(
        _path, _endpoint(_body, _media_type), methods=["GET"], include_in_schema=False
    )
