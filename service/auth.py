"""API-key authentication as pure ASGI middleware (HTTP and websocket alike).

Installed only when `api_keys` is set. A request presents `Authorization: Bearer <key>` or
`X-API-Key: <key>`; a websocket may instead offer the subprotocols `gru-serve` and
`gru-serve.key.<base64url of the key>`, the one way a browser can send a key with a websocket
(it cannot set headers there), and is then answered `gru-serve`. The SHA-256 digest of the
key is compared with the digest of every configured key in constant time
(hmac.compare_digest on equal-length digests, no early exit), so timing says nothing about
which key, prefix or length was close. Probes stay open
(/healthz, /readyz and /v2/health/*), and so do the pages a browser opens (`/` and the
playground's files: service/routes/playground.py), which hold no model data.

Refusals: HTTP gets 401 with WWW-Authenticate and the JSON error shape of its API (the OIP's
`{"error": "..."}` under /v2, `{"error": {"code", "message"}}` elsewhere); a websocket is
closed with 1008 (policy violation) before it is accepted, so no session ever opens (the
client sees the handshake refused with 403).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized, error_body
from service.routes.playground import OPEN_PATHS as PAGE_PATHS

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}) | PAGE_PATHS
SUBPROTOCOL = "gru-serve"
KEY_SUBPROTOCOL = "gru-serve.key."  # + the key, base64url without padding
WS_1008_POLICY_VIOLATION = 1008
_MESSAGE = "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def presented_key(headers) -> bytes | None:
    """The key from `Authorization: Bearer` or `X-API-Key` (raw ASGI header pairs)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.strip()
    return None


def subprotocol_key(subprotocols) -> bytes | None:
    """The key a websocket offers as the subprotocol `gru-serve.key.<base64url>`."""
    for p in subprotocols:
        if p.startswith(KEY_SUBPROTOCOL):
            encoded = p[len(KEY_SUBPROTOCOL) :]
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) or None
            except (binascii.Error, ValueError):
                return None
    return None


def answering_subprotocol(send: Send) -> Send:
    """Accept with `gru-serve`: a browser that offered subprotocols drops a handshake that
    names none, and the answer must not echo the key."""

    async def wrapped(message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": SUBPROTOCOL}
        await send(message)

    return wrapped


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        # digests, not keys: compare_digest leaks the length when lengths differ
        self.digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def allowed(self, key: bytes | None) -> bool:
        ok = False
        candidate = hashlib.sha256(key or b"").digest()
        for d in self.digests:  # every key is compared: no early exit
            ok |= hmac.compare_digest(candidate, d)
        return ok and key is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        offered = (scope.get("subprotocols") or ()) if kind == "websocket" else ()
        if key is None and offered:
            key = subprotocol_key(offered)
        if self.allowed(key):
            if SUBPROTOCOL in offered:
                send = answering_subprotocol(send)
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": WS_1008_POLICY_VIOLATION})
            return
        data = json.dumps(error_body(scope["path"], Unauthorized(_MESSAGE))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    (b"www-authenticate", b'Bearer realm="gru-serve"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})
