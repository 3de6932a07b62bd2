"""Signed resume tokens: a stream's whole state, carried by the client.

A GRU state is only layers x hidden floats, so a session can travel with the client and
continue on any replica that holds the same model and secret (docs/design.md, "State,
streams and tokens"): no sticky routing, no shared store.

Layout (then base64url without padding):

    payload = header | model name | model version | [frequency] | quantiles (float64)
              | loc | scale | h | last_y
    token   = payload | HMAC-SHA256(secret, payload)            (32 bytes)

header (little-endian): format 1, struct "<BBQHHHHBBB": format version, flags, step index,
layers, hidden, input features, outputs, number of quantile levels, name length, version
length. Format 2 (written only for a stream with a `frequency` option) appends one byte, the
frequency name's length (UTF-8), and the name follows the version. A stream without a
frequency gets a format 1 token, byte for byte what servers before format 2 wrote and read.
Other arrays are little-endian float32; last_y (the scaled prediction of the next observation)
is present only when flag HAS_LAST_Y is set. Floats are stored bit-exactly, so a resumed
stream continues with exactly the numbers the original would have used.

Format 3 (written by a server that knows its model's weights digest, that is every server
since tokens were bound to weights) has format 2's header, frequency length 0 when there is
none, and the first 16 bytes of the weights' SHA-256 after the frequency name. A server reads
a token only when that digest is its own: a token of other weights is a token_mismatch even
under the same model name and version, and so is a format 1 or 2 token, which names no
weights.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import struct
from dataclasses import dataclass

import numpy as np

from export.contract import ArtifactMeta
from service.errors import InvalidInput, InvalidToken, TokenMismatch

log = logging.getLogger("gru_serve.tokens")

FORMAT_VERSION = 1  # a token without a frequency
FORMAT_WITH_FREQUENCY = 2
FORMAT_WITH_DIGEST = 3
_HEADERS = {
    FORMAT_VERSION: struct.Struct("<BBQHHHHBBB"),
    FORMAT_WITH_FREQUENCY: struct.Struct("<BBQHHHHBBBB"),  # + frequency name length
    FORMAT_WITH_DIGEST: struct.Struct("<BBQHHHHBBBB"),  # as 2; a digest after the names
}
DIGEST_BYTES = 16
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_HEADER = _HEADERS[FORMAT_VERSION]
_MAC_BYTES = 32
_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")

# flags
HAS_LAST_Y = 1
RETURN_HIDDEN = 2
TOKEN_EACH_OUTPUT = 4
OUTPUT_ON_REQUEST = 8
BINARY_OUTPUT = 16


@dataclass
class TokenState:
    """Everything a session needs to continue: state, position, scaling and options."""

    h: np.ndarray  # (L, H) float32, model units
    step: int  # index of the next observation
    loc: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    last_y: np.ndarray | None = None  # (O,) scaled prediction of the next observation
    quantiles: tuple[float, ...] = ()
    flags: int = 0
    frequency: str | None = None  # the stream's `frequency` option
    model: str = ""
    version: str = ""


_random_secret: bytes | None = None


def resolve_secret(configured: str | None) -> bytes:
    """The configured secret, or one random secret per process (warned about once)."""
    global _random_secret
    if configured:
        return configured.encode()
    if _random_secret is None:
        _random_secret = secrets.token_bytes(32)
        log.warning(
            "GRU_SERVE_TOKEN_SECRET is not set: resume tokens are signed with a random "
            "per-process secret and only this process will accept them"
        )
    return _random_secret


def token_identity(token: object) -> tuple[str, str] | None:
    """The model name and version a token names, read without verifying it: enough to pick
    the model version whose codec then verifies it. None when it cannot be read."""
    if not isinstance(token, str) or not token or not _B64URL.issuperset(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    header = _HEADERS.get(raw[0]) if raw else None
    if header is None or len(raw) < header.size:
        return None
    nn, nv = header.unpack_from(raw)[8:10]
    off = header.size
    if len(raw) < off + nn + nv:
        return None
    name = raw[off : off + nn].decode(errors="replace")
    return name, raw[off + nn : off + nn + nv].decode(errors="replace")


class TokenCodec:
    def __init__(self, secret: bytes, meta: ArtifactMeta, digest: str | None = None) -> None:
        """`digest`: the served weights' SHA-256 (hex); tokens are then format 3, bound to it."""
        if not secret:
            raise ValueError("the token secret must not be empty")
        self._secret = secret
        self.meta = meta
        self.digest = digest
        self._digest = bytes.fromhex(digest)[:DIGEST_BYTES] if digest else None
        self._name = meta.name.encode()[:255]
        self._version = meta.version.encode()[:255]

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def encode(self, st: TokenState) -> str:
        m = self.meta
        if len(st.quantiles) > 255:  # one header byte counts them
            raise InvalidInput(
                f"a resume token holds at most 255 quantile levels, got {len(st.quantiles)}",
                "options.quantiles",
            )
        flags = st.flags & ~HAS_LAST_Y | (HAS_LAST_Y if st.last_y is not None else 0)
        counts = (
            FORMAT_VERSION,
            flags,
            st.step,
            m.num_layers,
            m.hidden_size,
            m.input_size,
            m.output_size,
            len(st.quantiles),
            len(self._name),
            len(self._version),
        )
        if self._digest is not None:
            freq = (st.frequency or "").encode()
            if len(freq) > 255:
                raise InvalidInput(
                    "a resume token holds a frequency name of at most 255 bytes",
                    "options.frequency",
                )
            header = _HEADERS[FORMAT_WITH_DIGEST].pack(FORMAT_WITH_DIGEST, *counts[1:], len(freq))
            head = [header, self._name, self._version, freq, self._digest]
        elif st.frequency is None:
            head = [_HEADERS[FORMAT_VERSION].pack(*counts), self._name, self._version]
        else:
            freq = st.frequency.encode()
            if len(freq) > 255:  # one header byte holds its length
                raise InvalidInput(
                    "a resume token holds a frequency name of at most 255 bytes",
                    "options.frequency",
                )
            header = _HEADERS[FORMAT_WITH_FREQUENCY].pack(
                FORMAT_WITH_FREQUENCY, *counts[1:], len(freq)
            )
            head = [header, self._name, self._version, freq]
        parts = [
            *head,
            np.asarray(st.quantiles, _F64).tobytes(),
            np.asarray(st.loc, _F32).tobytes(),
            np.asarray(st.scale, _F32).tobytes(),
            np.asarray(st.h, _F32).tobytes(),
        ]
        if st.last_y is not None:
            parts.append(np.asarray(st.last_y, _F32).tobytes())
        payload = b"".join(parts)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def decode(self, token: object) -> TokenState:
        """Verify and unpack; raises InvalidToken / TokenMismatch with a message naming why."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("the resume token must be a non-empty string", "resume")
        if len(token) % 4 == 1 and _B64URL.issuperset(token):
            # no base64 text has this length: a token cut short
            raise InvalidToken("the resume token is truncated", "resume")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidToken("the resume token is not valid base64url", "resume") from None
        if len(raw) < _HEADER.size + _MAC_BYTES:
            raise InvalidToken("the resume token is truncated", "resume")
        fmt = raw[0]
        header = _HEADERS.get(fmt)
        if header is None:
            raise InvalidToken(
                f"resume token format {fmt} is not supported (this server reads formats "
                f"{', '.join(map(str, _HEADERS))})",
                "resume",
            )
        if len(raw) < header.size + _MAC_BYTES:
            raise InvalidToken("the resume token is truncated", "resume")
        _, flags, step, L, H, F, O, nq, nn, nv, *rest = header.unpack_from(raw)
        nf = rest[0] if rest else 0
        nd = DIGEST_BYTES if fmt == FORMAT_WITH_DIGEST else 0
        floats = 2 * F + L * H + (O if flags & HAS_LAST_Y else 0)
        expected = header.size + nn + nv + nf + nd + 8 * nq + 4 * floats + _MAC_BYTES
        if len(raw) < expected:
            raise InvalidToken("the resume token is truncated", "resume")
        if len(raw) > expected:
            raise InvalidToken("the resume token has trailing data", "resume")
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken(
                "the resume token's signature does not match: it was altered or signed with "
                "another secret",
                "resume",
            )
        off = header.size
        raw_name, raw_version = payload[off : off + nn], payload[off + nn : off + nn + nv]
        name, version = raw_name.decode(errors="replace"), raw_version.decode(errors="replace")
        off += nn + nv
        frequency = payload[off : off + nf].decode(errors="replace") if rest else None
        if fmt == FORMAT_WITH_DIGEST and not nf:
            frequency = None
        off += nf
        digest = payload[off : off + nd] if nd else None
        off += nd
        m = self.meta
        # Compared as stored: encode keeps at most 255 bytes of each, so a longer name or
        # version must be compared truncated too, or its own tokens would never match.
        if (raw_name, raw_version) != (self._name, self._version) or (
            m.num_layers,
            m.hidden_size,
            m.input_size,
            m.output_size,
        ) != (L, H, F, O):
            raise TokenMismatch(
                f"the resume token belongs to model {name!r} version {version!r}; this server "
                f"serves {m.name!r} version {m.version!r}",
                "resume",
            )
        if digest != self._digest:
            theirs = digest.hex() if digest else "none (a token from before weights digests)"
            ours = self._digest.hex() if self._digest else "none"
            raise TokenMismatch(
                f"the resume token belongs to other weights of model {name!r} version "
                f"{version!r} (weights digest {theirs}; this server's: {ours})",
                "resume",
            )
        if frequency is not None and frequency not in m.frequencies:
            raise TokenMismatch(
                f"the resume token's frequency {frequency!r} is not one this model knows "
                f"({', '.join(m.frequencies) or 'none'})",
                "resume",
            )
        q = np.frombuffer(payload, _F64, count=nq, offset=off)
        off += 8 * nq
        values = np.frombuffer(payload, _F32, count=floats, offset=off).astype(np.float32)
        loc, scale, values = values[:F], values[F : 2 * F], values[2 * F :]
        h, values = values[: L * H].reshape(L, H), values[L * H :]
        last_y = values[:O].copy() if flags & HAS_LAST_Y else None
        if not (np.isfinite(h).all() and np.isfinite(loc).all() and (scale > 0).all()):
            raise InvalidToken("the resume token holds non-finite values", "resume")
        return TokenState(
            h=h.copy(),
            step=step,
            loc=loc.copy(),
            scale=scale.copy(),
            last_y=last_y,
            quantiles=tuple(float(v) for v in q),
            flags=flags,
            frequency=frequency,
            model=name,
            version=version,
        )
