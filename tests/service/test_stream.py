"""WS /v1/stream in process (TestClient): outputs, forks, reset, tokens, limits and bad input.

Concurrency across sessions, real sockets and other processes: test_stream_server.py.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from service_helpers import make_artifact
from starlette.websockets import WebSocketDisconnect

from service.streaming.connection import Connection
from service.streaming.session import StreamSession

HISTORY = [1.0, 2.0, 3.0, 2.5, 1.5, 2.0, 3.5, 2.0]
STEPS = [2.2, 1.8, 3.1, 2.7, 0.9, 1.4]


def start(ws, **fields) -> dict:
    ws.send_json({"type": "start", **fields})
    msg = ws.receive_json()
    assert msg["type"] == "ready", msg
    return msg


def step_all(ws, xs) -> list[dict]:
    outs = []
    for x in xs:
        ws.send_json({"type": "step", "x": x})
        outs.append(ws.receive_json())
    return outs


def expect_close(ws, code: int) -> list[dict]:
    """Read until the server closes; assert its close code; return the messages before it."""
    seen = []
    with pytest.raises(WebSocketDisconnect) as e:
        for _ in range(100):
            seen.append(ws.receive_json())
    assert e.value.code == code, (e.value.code, seen)
    return seen


def expected_outputs(ref, history, steps) -> np.ndarray:
    """The reference's per-step predictions (data units) for `steps` read after `history`."""
    loc, scale = ref.scaler(history)
    x = np.asarray(list(history) + list(steps), np.float64)[:, None]
    y, _, _ = ref.run((x - loc) / scale)
    return (y * scale + loc)[len(history) :, 0]


# ---- outputs -------------------------------------------------------------------------------------
def test_stream_outputs_match_reference(client, tiny_reference):
    with client.websocket_connect("/v1/stream") as ws:
        ready = start(ws, history=HISTORY)
        assert (ready["model"], ready["version"], ready["step"]) == ("tiny", "0.0.1", len(HISTORY))
        assert len(ready["session"]) == 32
        outs = step_all(ws, STEPS)
    assert [o["type"] for o in outs] == ["output"] * len(STEPS)
    assert [o["step"] for o in outs] == list(range(len(HISTORY), len(HISTORY) + len(STEPS)))
    got = np.array([o["y"] for o in outs])
    np.testing.assert_allclose(got, expected_outputs(tiny_reference, HISTORY, STEPS), atol=1e-5)


def test_stream_several_steps_per_message_equal_one_by_one(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"return_hidden": True, "quantiles": [0.1, 0.9]})
        ws.send_json({"type": "step", "x": STEPS})
        batched = [ws.receive_json() for _ in STEPS]
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"return_hidden": True, "quantiles": [0.1, 0.9]})
        single = step_all(ws, STEPS)
    assert [o["step"] for o in batched] == [o["step"] for o in single]
    for a, b in zip(batched, single, strict=True):
        assert abs(a["y"] - b["y"]) <= 1e-6
        assert np.abs(np.array(a["h"]) - np.array(b["h"])).max() <= 1e-6
        assert set(a["quantiles"]) == {"0.1", "0.9"}
        assert a["quantiles"]["0.1"] < a["y"] < a["quantiles"]["0.9"]


def test_stream_quantiles_are_one_step_offsets(client, tiny_reference):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"quantiles": [0.1, 0.5, 0.9]})
        (o,) = step_all(ws, STEPS[:1])
    _, scale = tiny_reference.scaler(HISTORY)
    assert o["quantiles"]["0.5"] == pytest.approx(o["y"], abs=1e-6)
    for q in (0.1, 0.9):
        want = o["y"] + tiny_reference.offset(q, 0) * scale[0]
        assert o["quantiles"][f"{q:g}"] == pytest.approx(want, abs=1e-5)


# The tiny model's first-step offsets (tests/conftest.py), by hand: pooled 0.1 -1, 0.9 +1;
# yearly -2, +2.5; monthly -0.5, +0.4 (then -0.6/+0.45, -0.7/+0.5, -0.8/+0.5*sqrt(4/3)).
@pytest.mark.parametrize(
    ("frequency", "low", "high"),
    [("yearly", -2.0, 2.5), ("monthly", -0.5, 0.4), ("quarterly", -1.0, 1.0), (None, -1.0, 1.0)],
)
def test_stream_frequency_sets_the_per_step_quantiles(client, tiny_reference, frequency, low, high):
    options = {"quantiles": [0.1, 0.9, 0.3]}
    if frequency is not None:
        options["frequency"] = frequency
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options=options)
        outs = step_all(ws, STEPS[:3])
    _, scale = tiny_reference.scaler(HISTORY)
    want_y = expected_outputs(tiny_reference, HISTORY, STEPS[:3])
    for o, y in zip(outs, want_y, strict=True):
        assert o["y"] == pytest.approx(y, abs=1e-5)  # the point forecast ignores the frequency
        assert o["quantiles"]["0.1"] == pytest.approx(o["y"] + low * scale[0], abs=1e-5)
        assert o["quantiles"]["0.9"] == pytest.approx(o["y"] + high * scale[0], abs=1e-5)
        assert o["quantiles"]["0.3"] == pytest.approx(o["y"] + low / 2 * scale[0], abs=1e-5)


def test_stream_forecast_fork_uses_the_frequency_and_equals_rest(client, tiny_reference):
    options = {"quantiles": [0.1, 0.9], "frequency": "monthly"}
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options=options)
        step_all(ws, STEPS[:3])
        ws.send_json({"type": "forecast", "horizon": 6})
        fc = ws.receive_json()
    _, scale = tiny_reference.scaler(HISTORY)
    mean = np.array(fc["mean"])
    low = [-0.5, -0.6, -0.7, -0.8, -0.8 * (5 / 4) ** 0.5, -0.8 * (6 / 4) ** 0.5]
    high = [0.4, 0.45, 0.5, 0.5 * (4 / 3) ** 0.5, 0.5 * (5 / 3) ** 0.5, 0.5 * 2**0.5]
    np.testing.assert_allclose((np.array(fc["quantiles"]["0.1"]) - mean) / scale, low, atol=1e-5)
    np.testing.assert_allclose((np.array(fc["quantiles"]["0.9"]) - mean) / scale, high, atol=1e-5)
    # the same numbers as REST continuing from the same scaling, with the same frequency
    rest = client.post(
        "/v1/forecast", json={"series": [HISTORY], "horizon": 1, "return_state": True}
    ).json()["forecasts"][0]["state"]
    body = {"series": [STEPS[:3]], "horizon": 6, "state": [rest], **options}
    r = client.post("/v1/forecast", json=body).json()["forecasts"][0]
    for q in ("0.1", "0.9"):
        assert np.abs(np.array(fc["quantiles"][q]) - np.array(r["quantiles"][q])).max() <= 1e-6


def test_stream_unknown_frequency_is_an_error_listing_the_known_names(client):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "options": {"quantiles": [0.9], "frequency": "weekly"}})
        err = ws.receive_json()
        assert err == {
            "type": "error",
            "code": "invalid_input",
            "message": "unknown frequency 'weekly'; this model knows: yearly, quarterly, monthly, "
            "other",
            "field": "options.frequency",
        }
        start(ws, options={"quantiles": [0.9], "frequency": "yearly"})
        (o,) = step_all(ws, [0.0])  # no history: loc 0, scale 1
        assert o["quantiles"]["0.9"] == pytest.approx(o["y"] + 2.5, abs=1e-5)


def test_stream_without_history_reads_raw_values(client, tiny_reference):
    with client.websocket_connect("/v1/stream") as ws:
        assert start(ws)["step"] == 0
        outs = step_all(ws, STEPS)
    y, _, _ = tiny_reference.run(np.array(STEPS)[:, None])  # loc 0, scale 1
    np.testing.assert_allclose([o["y"] for o in outs], y[:, 0], atol=1e-5)


def test_stream_forecast_is_a_fork_and_equals_rest(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"quantiles": [0.1, 0.9]})
        step_all(ws, STEPS[:3])
        ws.send_json({"type": "forecast", "horizon": 5})
        fc = ws.receive_json()
        after_fork = step_all(ws, STEPS[3:])
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"quantiles": [0.1, 0.9]})
        straight = step_all(ws, STEPS)[3:]
    assert fc["type"] == "forecast" and fc["step"] == len(HISTORY) + 3
    assert [o["y"] for o in after_fork] == [o["y"] for o in straight]  # state untouched
    assert [o["step"] for o in after_fork] == [o["step"] for o in straight]
    # the same numbers as REST /v1/forecast continuing from the same history scaling:
    rest = client.post(
        "/v1/forecast",
        json={"series": [HISTORY], "horizon": 1, "return_state": True},
    ).json()["forecasts"][0]["state"]
    r = client.post(
        "/v1/forecast",
        json={"series": [STEPS[:3]], "horizon": 5, "quantiles": [0.1, 0.9], "state": [rest]},
    ).json()["forecasts"][0]
    assert np.abs(np.array(fc["mean"]) - np.array(r["mean"])).max() <= 1e-6
    for q in ("0.1", "0.9"):
        assert np.abs(np.array(fc["quantiles"][q]) - np.array(r["quantiles"][q])).max() <= 1e-6


def test_stream_forecast_before_any_observation_is_an_error(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws)
        ws.send_json({"type": "forecast", "horizon": 3})
        assert ws.receive_json()["code"] == "no_observation"
        assert step_all(ws, [1.0])[0]["type"] == "output"
        ws.send_json({"type": "forecast", "horizon": 0})
        err = ws.receive_json()
        assert (err["type"], err["code"], err["field"]) == ("error", "invalid_input", "horizon")


def test_stream_reset_starts_over_with_same_scaling(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws)
        step_all(ws, STEPS)
        ws.send_json({"type": "reset"})
        st = ws.receive_json()
        after = step_all(ws, STEPS[:2])
    with client.websocket_connect("/v1/stream") as ws:
        start(ws)
        fresh = step_all(ws, STEPS[:2])
    assert (st["type"], st["step"]) == ("state", 0) and st["token"]
    assert [(o["step"], o["y"]) for o in after] == [(o["step"], o["y"]) for o in fresh]


def test_stream_output_on_request(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"output": "on_request"})
        ws.send_json({"type": "step", "x": STEPS[:3]})
        ws.send_json({"type": "step", "x": STEPS[3:], "output": True})
        o = ws.receive_json()
        ws.send_json({"type": "state"})
        st = ws.receive_json()
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        every = step_all(ws, STEPS)
    assert (o["type"], o["step"]) == ("output", every[-1]["step"])  # only the asked-for one
    assert abs(o["y"] - every[-1]["y"]) <= 1e-6
    assert st["type"] == "state" and st["step"] == len(HISTORY) + len(STEPS)


# ---- tokens --------------------------------------------------------------------------------------
def test_stream_resume_from_token_continues_exactly(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"quantiles": [0.9], "token": True})
        outs = step_all(ws, STEPS)
    with client.websocket_connect("/v1/stream") as ws:
        ready = start(ws, resume=outs[2]["token"])
        resumed = step_all(ws, STEPS[3:])
    assert ready["step"] == len(HISTORY) + 3
    for a, b in zip(resumed, outs[3:], strict=True):  # options came back with the token
        assert (a["step"], a["y"], a["quantiles"]) == (b["step"], b["y"], b["quantiles"])
        assert a["token"] == b["token"]


def test_stream_resume_keeps_the_frequency(client):
    options = {"quantiles": [0.1, 0.9], "frequency": "yearly", "token": True}
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options=options)
        outs = step_all(ws, STEPS)
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, resume=outs[2]["token"])
        resumed = step_all(ws, STEPS[3:])
        ws.send_json({"type": "forecast", "horizon": 3})
        resumed_fc = ws.receive_json()
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options=options)
        step_all(ws, STEPS)
        ws.send_json({"type": "forecast", "horizon": 3})
        straight_fc = ws.receive_json()
    for a, b in zip(resumed, outs[3:], strict=True):
        assert (a["step"], a["y"], a["quantiles"]) == (b["step"], b["y"], b["quantiles"])
    assert resumed_fc == straight_fc
    # `options` sent with `resume` replace the token's: without a frequency, pooled quantiles
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, resume=outs[2]["token"], options={"quantiles": [0.1, 0.9]})
        (pooled,) = step_all(ws, STEPS[3:4])
    assert pooled["y"] == outs[3]["y"]
    assert pooled["quantiles"] != outs[3]["quantiles"]


@pytest.mark.parametrize(
    ("mangle", "code", "words"),
    [
        (lambda t: t[:-10], "invalid_token", "truncated"),
        (lambda t: t[:20], "invalid_token", "truncated"),
        (
            lambda t: t[:-30] + ("A" if t[-30] != "A" else "B") + t[-29:],
            "invalid_token",
            "signature",
        ),
        (lambda t: "not a token!", "invalid_token", "base64url"),
        (lambda t: 7, "invalid_token", "string"),
    ],
)
def test_stream_bad_token_is_an_error_and_session_stays_usable(client, mangle, code, words):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        ws.send_json({"type": "state"})
        token = ws.receive_json()["token"]
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "resume": mangle(token)})
        err = ws.receive_json()
        assert (err["type"], err["code"], err["field"]) == ("error", code, "resume")
        assert words in err["message"]
        assert start(ws, resume=token)["step"] == len(HISTORY)  # the genuine one still works


def test_stream_token_of_other_model_version_is_refused(make_client, tmp_path):
    other, _ = make_artifact(tmp_path / "v2.onnx", version="0.0.2")
    a = make_client(token_secret="shared")
    b = make_client(token_secret="shared", model_path=other)
    with a.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        ws.send_json({"type": "state"})
        token = ws.receive_json()["token"]
    with b.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start", "resume": token})
        err = ws.receive_json()
        assert err["code"] == "token_mismatch"
        assert "'0.0.1'" in err["message"] and "'0.0.2'" in err["message"]
        assert start(ws, history=HISTORY)["version"] == "0.0.2"


# ---- bad input: an error message, and the session goes on ----------------------------------------
@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{not json", "malformed_message", None),
        ("[1, 2]", "malformed_message", None),
        ('{"type": "jump"}', "unknown_type", "type"),
        ('{"x": 1}', "unknown_type", "type"),
        ('{"type": "step", "x": NaN}', "invalid_input", "x"),
        ('{"type": "step", "x": [1, Infinity]}', "invalid_input", "x"),
        ('{"type": "step", "x": 1e999}', "invalid_input", "x"),
        ('{"type": "step", "x": [[1, 2]]}', "invalid_input", "x"),
        ('{"type": "step", "x": "3"}', "invalid_input", "x"),
        ('{"type": "step", "x": [true]}', "invalid_input", "x"),
        ('{"type": "step", "x": []}', "invalid_input", "x"),
        ('{"type": "step"}', "invalid_input", "x"),
        ('{"type": "step", "x": 1, "extra": 2}', "invalid_input", None),
        ('{"type": "forecast", "horizon": "3"}', "invalid_input", "horizon"),
        ('{"type": "forecast", "horizon": 3, "quantiles": [0.01]}', "invalid_input", "quantiles"),
        ('{"type": "start"}', "already_started", None),
    ],
)
def test_stream_bad_message_is_an_error_and_session_stays_usable(client, frame, code, field):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        ws.send_text(frame)
        err = ws.receive_json()
        assert (err["type"], err["code"], err.get("field")) == ("error", code, field), err
        assert err["message"]
        (o,) = step_all(ws, [2.0])
        assert (o["type"], o["step"]) == ("output", len(HISTORY))


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"history": [1, float("nan")]}, "history"),
        ({"options": {"quantiles": [0.5, 2]}}, "options.quantiles"),
        ({"options": {"colour": "red"}}, "options"),
        ({"options": {"output": "sometimes"}}, "options.output"),
        ({"options": {"token": "yes"}}, "options.token"),
        ({"options": {"frequency": "weekly"}}, "options.frequency"),
        ({"options": {"frequency": "Y"}}, "options.frequency"),
        ({"options": {"frequency": 12}}, "options.frequency"),
        ({"scaling": {"loc": [0], "scale": [0]}}, "scaling.scale"),
    ],
)
def test_stream_bad_start_is_an_error_then_start_works(client, msg, field):
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_text(json.dumps({"type": "start", **msg}))  # json.dumps writes NaN
        err = ws.receive_json()
        assert (err["code"], err["field"]) == ("invalid_input", field), err
        start(ws)


def test_stream_steps_before_start_are_errors(client):
    with client.websocket_connect("/v1/stream") as ws:
        for kind in ("step", "forecast", "reset", "state"):
            ws.send_json({"type": kind, "x": 1.0} if kind == "step" else {"type": kind})
            if kind == "forecast":
                ws.send_json({"type": "forecast", "horizon": 2})
                assert ws.receive_json()["field"] == "horizon"
            assert ws.receive_json()["code"] == "not_started"
        start(ws)
        assert step_all(ws, [1.0])[0]["step"] == 0


def test_stream_too_many_steps_per_message(make_client):
    c = make_client(max_steps_per_message=4)
    with c.websocket_connect("/v1/stream") as ws:
        start(ws)
        ws.send_json({"type": "step", "x": [1.0] * 5})
        err = ws.receive_json()
        assert (err["code"], err["field"]) == ("too_many_steps", "x")
        assert "limit of 4" in err["message"]
        ws.send_json({"type": "step", "x": [1.0] * 4})
        assert [ws.receive_json()["step"] for _ in range(4)] == [0, 1, 2, 3]


def test_stream_repeated_errors_close_1008_with_token(make_client):
    c = make_client(max_stream_errors=3)
    with c.websocket_connect("/v1/stream") as ws:
        start(ws)
        ws.send_text("{")
        ws.send_json({"type": "step", "x": 1.0})  # a success resets the count
        ws.send_text("{")
        ws.send_text("{")
        ws.send_text("{")
        seen = expect_close(ws, 1008)
    assert [m["type"] for m in seen] == ["error", "output", "error", "error", "error", "state"]
    assert seen[-1]["step"] == 1 and seen[-1]["token"]


def test_stream_overload_errors_do_not_count_towards_1008(make_client):
    c = make_client(max_stream_errors=3, max_queue_rows=4)
    core = c.app.state.service.core
    with c.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        core.inflight_rows = 4  # the server is full: forecasts are refused with 503-class errors
        try:
            for _ in range(5):  # more than max_stream_errors, and no close follows
                ws.send_json({"type": "forecast", "horizon": 3})
                err = ws.receive_json()
                assert (err["type"], err["code"]) == ("error", "overloaded")
        finally:
            core.inflight_rows = 0
        ws.send_json({"type": "forecast", "horizon": 3})
        answer = ws.receive_json()
    assert answer["type"] == "forecast" and len(answer["mean"]) == 3


def test_stream_message_too_big_closes_1009(make_client):
    c = make_client(max_message_bytes=1024)
    with c.websocket_connect("/v1/stream") as ws:
        start(ws)
        ws.send_text(json.dumps({"type": "step", "x": [1.0] * 400}))
        seen = expect_close(ws, 1009)
    assert [m["type"] for m in seen] == ["state"]


# ---- binary frames -------------------------------------------------------------------------------
def test_stream_binary_steps_and_outputs(client):
    L, H = 2, 8
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY, options={"quantiles": [0.1, 0.9], "return_hidden": True})
        want = step_all(ws, STEPS)
    with client.websocket_connect("/v1/stream") as ws:
        opts = {"quantiles": [0.1, 0.9], "return_hidden": True, "binary": True}
        start(ws, history=HISTORY, options=opts)
        ws.send_bytes(np.asarray(STEPS, "<f4").tobytes())
        frames = [ws.receive_bytes() for _ in STEPS]
    for frame, w in zip(frames, want, strict=True):
        assert len(frame) == 8 + 4 * (1 + 2 + L * H)
        (step,) = struct.unpack_from("<Q", frame)
        v = np.frombuffer(frame, "<f4", offset=8)
        assert step == w["step"]
        assert abs(v[0] - w["y"]) <= 1e-6
        assert np.abs(v[1:3] - [w["quantiles"]["0.1"], w["quantiles"]["0.9"]]).max() <= 1e-6
        assert np.abs(v[3:] - np.ravel(w["h"])).max() <= 1e-6


@pytest.mark.parametrize("size", [0, 3, 5])
def test_stream_binary_frame_of_wrong_size_closes_1007(client, size):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws)
        ws.send_bytes(b"\x00" * size)
        seen = expect_close(ws, 1007)
    assert [m["type"] for m in seen] == ["state"]


def test_stream_binary_nan_is_an_error(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws)
        ws.send_bytes(np.array([1.0, np.nan], "<f4").tobytes())
        assert ws.receive_json()["code"] == "invalid_input"
        assert step_all(ws, [1.0])[0]["step"] == 0


# ---- limits and server-initiated closes ----------------------------------------------------------
def test_stream_over_max_sessions_closes_1013(make_client):
    c = make_client(max_sessions=2)
    with c.websocket_connect("/v1/stream") as a, c.websocket_connect("/v1/stream") as b:
        start(a)
        start(b)
        with c.websocket_connect("/v1/stream") as third:
            expect_close(third, 1013)
        assert step_all(a, [1.0])[0]["step"] == 0
    with c.websocket_connect("/v1/stream") as again:  # slots come back when sessions end
        start(again)


def test_stream_idle_timeout_sends_token_then_closes(make_client):
    c = make_client(session_idle_timeout_s=0.3)
    with c.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        seen = expect_close(ws, 1000)
    assert len(seen) == 1
    assert (seen[0]["type"], seen[0]["reason"], seen[0]["step"]) == (
        "state",
        "idle timeout",
        len(HISTORY),
    )


def test_stream_backpressure_bounds_the_queue(make_client, monkeypatch):
    held: list[int] = []  # queued steps after each push
    push = Connection._push

    def spy(self, cmd, front=False):
        push(self, cmd, front)
        held.append(self._units)

    monkeypatch.setattr(Connection, "_push", spy)
    c = make_client(max_queued_steps=4)
    with c.websocket_connect("/v1/stream") as ws:
        start(ws)
        for i in range(60):
            ws.send_json({"type": "step", "x": [float(i % 5), 1.0]})  # 2 steps each
        outs = [ws.receive_json() for _ in range(120)]
    assert [o["step"] for o in outs] == list(range(120))
    assert len(held) >= 60 and max(held) <= 4


def test_close_all_sends_each_session_its_token_then_1001(client):
    app = client.app
    with client.websocket_connect("/v1/stream") as a, client.websocket_connect("/v1/stream") as b:
        start(a, history=HISTORY)
        start(b)
        step_all(b, [1.0, 2.0])
        client.portal.call(app.state.service.streams.close_all)
        seen_a, seen_b = expect_close(a, 1001), expect_close(b, 1001)
    assert [(m["type"], m["step"]) for m in seen_a] == [("state", len(HISTORY))]
    assert [(m["type"], m["step"]) for m in seen_b] == [("state", 2)]
    assert seen_a[0]["reason"] == "server shutting down"


def test_stream_internal_failure_closes_1011_and_others_continue(client, monkeypatch, caplog):
    original = StreamSession.advance

    async def failing(self, x, wanted=None):
        if (x == 666).any():
            raise RuntimeError("boom")
        return await original(self, x, wanted)

    monkeypatch.setattr(StreamSession, "advance", failing)
    with (
        client.websocket_connect("/v1/stream") as bad,
        client.websocket_connect("/v1/stream") as ok,
    ):
        start(bad)
        start(ok)
        bad.send_json({"type": "step", "x": 666})
        expect_close(bad, 1011)
        assert [o["step"] for o in step_all(ok, [1.0, 2.0])] == [0, 1]
    assert any("closing it with 1011" in r.getMessage() for r in caplog.records)


def test_stream_client_close_sends_final_token(client):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, history=HISTORY)
        step_all(ws, [1.0])
        ws.send_json({"type": "close"})
        seen = expect_close(ws, 1000)
    assert [(m["type"], m["step"]) for m in seen] == [("state", len(HISTORY) + 1)]


@pytest.mark.parametrize("options", [{}, {"quantiles": [0.9]}], ids=["fast-path", "quantiles"])
def test_stream_outputs_past_float32_are_an_error_and_session_stays_usable(client, options):
    with client.websocket_connect("/v1/stream") as ws:
        start(ws, scaling={"loc": [3.4e38], "scale": [1e38]}, options=options)
        ws.send_json({"type": "step", "x": 1.0})
        err = json.loads(ws.receive_text())  # valid JSON: no bare -inf / inf
        assert (err["type"], err["code"], err["field"]) == ("error", "invalid_input", "x")
        assert err["message"].startswith("values too large to scale")
        ws.send_json({"type": "state"})
        assert ws.receive_json()["step"] == 0  # the refused step was not taken
    with client.websocket_connect("/v1/stream") as ws:
        # float32 squares of this history overflow: the scaler is fitted in float64
        ready = start(ws, history=[1e30, -1e30], options=options)
        assert ready["step"] == 2
        (o,) = step_all(ws, [5e29])
        assert o["type"] == "output" and abs(o["y"]) < 1e32
