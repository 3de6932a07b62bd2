"""Resume tokens: exact round trip, and a clear error (never a crash) for every bad token."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pytest
from service_helpers import tiny_meta

from service.errors import InvalidInput
from service.tokens import (
    RETURN_HIDDEN,
    InvalidToken,
    TokenCodec,
    TokenMismatch,
    TokenState,
    resolve_secret,
)

META = tiny_meta()


def _state(last_y: bool = True) -> TokenState:
    rng = np.random.default_rng(0)
    return TokenState(
        h=rng.standard_normal((META.num_layers, META.hidden_size)).astype(np.float32),
        step=123456789,
        loc=np.array([3.25], np.float32),
        scale=np.array([0.7], np.float32),
        last_y=np.array([-0.3], np.float32) if last_y else None,
        quantiles=(0.1, 0.9),
        flags=RETURN_HIDDEN,
    )


def _codec(secret: bytes = b"s3cret", **meta) -> TokenCodec:
    return TokenCodec(secret, dataclasses.replace(META, **meta) if meta else META)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("last_y", [True, False])
def test_token_round_trip_is_bit_exact(last_y):
    st = _state(last_y)
    back = _codec().decode(_codec().encode(st))
    assert back.h.tobytes() == st.h.tobytes()
    assert back.step == st.step
    assert back.loc.tobytes() == st.loc.tobytes() and back.scale.tobytes() == st.scale.tobytes()
    assert back.quantiles == (0.1, 0.9)  # float64: levels come back exactly
    assert back.flags & RETURN_HIDDEN
    assert (back.model, back.version) == (META.name, META.version)
    if last_y:
        assert back.last_y.tobytes() == st.last_y.tobytes()
    else:
        assert back.last_y is None


def test_token_is_compact_url_safe_text():
    token = _codec().encode(_state())
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    # header 21 + name + version + 2 float64 levels + float32 loc, scale, h (2 x 8), last_y + MAC
    L, H = META.num_layers, META.hidden_size
    assert len(_raw(token)) == 21 + len("tiny") + len("0.0.1") + 16 + 4 * (2 + L * H + 1) + 32


def test_token_with_a_frequency_round_trips_as_format_2():
    st = dataclasses.replace(_state(), frequency="monthly")
    token = _codec().encode(st)
    raw = _raw(token)
    assert raw[0] == 2
    L, H = META.num_layers, META.hidden_size
    # one more header byte (the frequency's length), then the name after the version
    assert (
        len(raw) == 22 + len("tiny") + len("0.0.1") + len("monthly") + 16 + 4 * (2 + L * H + 1) + 32
    )
    assert raw[22 + len("tiny0.0.1") :].startswith(b"monthly")
    back = _codec().decode(token)
    assert back.frequency == "monthly"
    assert back.h.tobytes() == st.h.tobytes() and back.step == st.step
    assert back.quantiles == (0.1, 0.9) and back.flags & RETURN_HIDDEN


def test_token_without_a_frequency_stays_format_1():
    token = _codec().encode(_state())
    assert _raw(token)[0] == 1
    assert _codec().decode(token).frequency is None


def test_token_frequency_the_model_does_not_know_is_a_mismatch():
    token = _codec().encode(dataclasses.replace(_state(), frequency="monthly"))
    with pytest.raises(TokenMismatch) as e:
        _codec(frequencies=("yearly",)).decode(token)
    assert e.value.field == "resume"
    assert e.value.message == (
        "the resume token's frequency 'monthly' is not one this model knows (yearly)"
    )


def test_token_signed_with_another_secret_is_rejected():
    token = _codec(b"other").encode(_state())
    with pytest.raises(InvalidToken, match="signature does not match"):
        _codec().decode(token)


def test_forged_token_is_rejected():
    raw = bytearray(_raw(_codec().encode(_state())))
    raw[-40] ^= 0x01  # one bit of the hidden state changed
    with pytest.raises(InvalidToken, match="signature does not match") as e:
        _codec().decode(_b64(bytes(raw)))
    assert e.value.code == "invalid_token" and e.value.field == "resume"


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_truncated_token_is_rejected(keep):
    token = _codec().encode(_state())
    with pytest.raises(InvalidToken, match="truncated|base64url"):
        _codec().decode(token[: int(len(token) * keep)])


def test_token_with_trailing_data_is_rejected():
    with pytest.raises(InvalidToken, match="trailing"):
        _codec().decode(_b64(_raw(_codec().encode(_state())) + b"xx"))


@pytest.mark.parametrize("bad", ["", "!!!not base64!!!", 42, None, ["a"]])
def test_garbage_token_is_rejected(bad):
    with pytest.raises(InvalidToken):
        _codec().decode(bad)


def test_token_of_another_model_version_is_a_mismatch():
    token = _codec(version="0.0.2").encode(_state())
    with pytest.raises(TokenMismatch, match="version '0.0.2'") as e:
        _codec().decode(token)
    assert e.value.code == "token_mismatch"


def test_token_of_another_model_name_is_a_mismatch():
    with pytest.raises(TokenMismatch, match="'other'"):
        _codec().decode(_codec(name="other").encode(_state()))


def test_unknown_token_format_is_rejected():
    raw = bytearray(_raw(_codec().encode(_state())))
    raw[0] = 99
    with pytest.raises(InvalidToken, match="format 99"):
        _codec().decode(_b64(bytes(raw)))


def test_random_secret_is_one_per_process_and_warned_once(caplog):
    with caplog.at_level("WARNING", logger="gru_serve.tokens"):
        first, second = resolve_secret(None), resolve_secret(None)
    assert first == second and len(first) == 32
    assert sum("TOKEN_SECRET" in r.getMessage() for r in caplog.records) <= 1
    assert resolve_secret("configured") == b"configured"


def test_token_of_model_with_name_and_version_over_255_bytes_round_trips():
    codec = _codec(name="m" * 300, version="é" * 200)  # 400 bytes of UTF-8: cut mid-character
    back = codec.decode(codec.encode(_state()))
    assert back.step == 123456789 and back.quantiles == (0.1, 0.9)
    assert back.model == "m" * 255
    other = _codec(name="m" * 255 + "x", version="é" * 200)  # same first 255 bytes
    assert other.decode(codec.encode(_state())).step == 123456789
    with pytest.raises(TokenMismatch):
        _codec(name="n" * 300, version="é" * 200).decode(codec.encode(_state()))


def test_token_with_over_255_quantile_levels_is_refused_clearly():
    st = dataclasses.replace(_state(), quantiles=tuple(np.linspace(0.1, 0.9, 256)))
    with pytest.raises(InvalidInput) as e:
        _codec().encode(st)
    assert e.value.field == "options.quantiles" and "255" in e.value.message
    st255 = dataclasses.replace(st, quantiles=st.quantiles[:255])
    assert len(_codec().decode(_codec().encode(st255)).quantiles) == 255


def test_max_quantiles_cannot_exceed_what_a_token_holds(make_settings):
    from pydantic import ValidationError

    assert make_settings(max_quantiles=255).max_quantiles == 255
    with pytest.raises(ValidationError, match="max_quantiles"):
        make_settings(max_quantiles=256)


# ---- bound to the weights ----------------------------------------------------------------------
DIGEST_A, DIGEST_B = "ab" * 32, "cd" * 32


def test_a_digest_bound_token_is_format_3_and_round_trips():
    codec = TokenCodec(b"s3cret", META, DIGEST_A)
    for frequency in (None, "monthly"):
        st = dataclasses.replace(_state(), frequency=frequency)
        raw = _raw(codec.encode(st))
        assert raw[0] == 3 and bytes.fromhex(DIGEST_A)[:16] in raw
        back = codec.decode(codec.encode(st))
        assert back.frequency == frequency and back.h.tobytes() == st.h.tobytes()


def test_a_token_of_other_weights_is_a_mismatch_under_the_same_name_and_version():
    token = TokenCodec(b"s3cret", META, DIGEST_A).encode(_state())
    with pytest.raises(TokenMismatch, match="other weights") as e:
        TokenCodec(b"s3cret", META, DIGEST_B).decode(token)
    assert DIGEST_A[:32] in e.value.message and e.value.field == "resume"


def test_a_token_without_a_digest_is_a_mismatch_for_a_bound_server():
    token = _codec().encode(_state())  # format 1: names no weights
    with pytest.raises(TokenMismatch, match="before weights digests"):
        TokenCodec(b"s3cret", META, DIGEST_A).decode(token)
