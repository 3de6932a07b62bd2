"""GET /metrics: counts move by exactly the traffic sent, batcher histograms, gauges, model info."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import WebSocketDisconnect

from service.batching import BatchStats
from service.metrics import Metrics

HIDDEN = "/v1/hidden"
INFER = "/v2/models/tiny/infer"


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, metric: str, **labels) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def delta(before, after, metric: str, **labels) -> float:
    return value(after, metric, **labels) - value(before, metric, **labels)


def test_counts_move_by_exactly_the_traffic_sent(client) -> None:
    before = scrape(client)
    rows = 0
    for n in (1, 3, 2):  # 3 good /v1/hidden requests, 6 rows
        items = [{"x": [[0.1], [0.2], [0.3]]} for _ in range(n)]
        assert client.post(HIDDEN, json={"inputs": items}).status_code == 200
        rows += n
    for _ in range(2):  # 2 invalid ones (422), which never reach the batcher
        assert client.post(HIDDEN, json={"inputs": [{"x": []}]}).status_code == 422
    x = {"name": "x", "shape": [4, 2, 1], "datatype": "FP32", "data": [0.5] * 8}
    assert client.post(INFER, json={"inputs": [x]}).status_code == 200  # 4 rows
    rows += 4
    assert client.get("/v2/models/nope").status_code == 404
    after = scrape(client)

    def d(name, **labels):
        return delta(before, after, name, **labels)

    assert d("gru_request_success_total", route=HIDDEN, status="200") == 3
    assert d("gru_request_failure_total", route=HIDDEN, status="422") == 2
    assert d("gru_request_success_total", route="/v2/models/{name}/infer", status="200") == 1
    assert d("gru_request_failure_total", route="/v2/models/{name}", status="404") == 1
    assert d("gru_request_duration_seconds_count", route=HIDDEN) == 5
    assert d("gru_request_duration_seconds_sum", route=HIDDEN) > 0
    # every row queued once, every run observed once
    assert d("gru_batch_rows_sum") == rows
    assert d("gru_queue_duration_seconds_count") == rows
    runs = d("gru_batch_rows_count")
    assert 1 <= runs <= 4  # 4 requests; concurrent ones may share a run
    assert d("gru_compute_duration_seconds_count") == runs
    assert d("gru_request_rejected_total", route=HIDDEN) == 0
    # the scrape before counts once under its own route
    assert d("gru_request_success_total", route="/metrics", status="200") == 1
    assert value(after, "gru_queue_rows") == 0 and value(after, "gru_inflight_rows") == 0


def test_batch_steps_and_rows_histograms(client) -> None:
    before = scrape(client)
    items = [{"x": [[0.0]] * 5}, {"x": [[0.0]] * 5}]
    assert client.post(HIDDEN, json={"inputs": items}).status_code == 200
    after = scrape(client)
    runs = delta(before, after, "gru_batch_rows_count")
    assert runs in (1, 2)
    assert delta(before, after, "gru_batch_steps_sum") == 5 * runs
    if runs == 1:
        assert delta(before, after, "gru_batch_rows_bucket", le="2.0") == 1
        assert delta(before, after, "gru_batch_rows_bucket", le="1.0") == 0


def test_rejected_requests_are_counted(make_client) -> None:
    c = make_client(max_queue_rows=2)
    before = scrape(c)
    items = [{"x": [[1.0]]}] * 3  # 3 rows > 2: refused at once
    r = c.post(HIDDEN, json={"inputs": items})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert c.post(HIDDEN, json={"inputs": items[:2]}).status_code == 200
    after = scrape(c)
    assert delta(before, after, "gru_request_rejected_total", route=HIDDEN) == 1
    assert delta(before, after, "gru_request_failure_total", route=HIDDEN, status="503") == 1
    assert delta(before, after, "gru_request_success_total", route=HIDDEN, status="200") == 1


def test_model_info(client) -> None:
    s = scrape(client)
    labels = dict(name="tiny", provider="CPUExecutionProvider", variant="cho2014", version="0.0.1")
    assert value(s, "gru_model_info", **labels) == 1


def test_each_app_has_its_own_registry(make_client) -> None:
    a, b = make_client(), make_client()
    for _ in range(3):
        a.get("/v1/models")
    sa, sb = scrape(a), scrape(b)
    assert value(sa, "gru_request_success_total", route="/v1/models", status="200") == 3
    assert value(sb, "gru_request_success_total", route="/v1/models", status="200") == 0


def test_unauthorised_requests_are_labelled_with_their_route(make_client) -> None:
    c = make_client(api_keys="k")
    assert c.post(HIDDEN, json={"inputs": []}).status_code == 401
    s = scrape(c, **{"X-API-Key": "k"})
    assert value(s, "gru_request_failure_total", route=HIDDEN, status="401") == 1
    assert c.get("/no/such/path", headers={"X-API-Key": "k"}).status_code == 404
    s = scrape(c, **{"X-API-Key": "k"})
    assert value(s, "gru_request_failure_total", route="unmatched", status="404") == 1


# ---- the Metrics object directly (hooks for the batcher and the stream handler) -----------------
def render(m: Metrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_batch_observer_records_every_row_wait() -> None:
    m = Metrics()
    m.observe_batch(BatchStats(rows=3, steps=7, queue_wait_s=[0.001, 0.002, 0.2], compute_s=0.004))
    s = render(m)
    assert value(s, "gru_queue_duration_seconds_count") == 3
    assert np.isclose(value(s, "gru_queue_duration_seconds_sum"), 0.203)
    assert value(s, "gru_queue_duration_seconds_bucket", le="0.005") == 2
    assert value(s, "gru_compute_duration_seconds_count") == 1
    assert np.isclose(value(s, "gru_compute_duration_seconds_sum"), 0.004)
    assert value(s, "gru_batch_rows_sum") == 3 and value(s, "gru_batch_steps_sum") == 7


def test_queue_gauges_read_live_values_at_scrape() -> None:
    m = Metrics()
    core = SimpleNamespace(batcher=SimpleNamespace(queued=7), inflight_rows=3)
    rt = SimpleNamespace(
        meta=SimpleNamespace(name="n", version="v", variant="cudnn"),
        placement=SimpleNamespace(provider="CUDAExecutionProvider"),
    )
    m.bind(rt, core)
    assert value(render(m), "gru_queue_rows") == 7
    core.batcher.queued = 11
    s = render(m)
    assert value(s, "gru_queue_rows") == 11 and value(s, "gru_inflight_rows") == 3
    labels = dict(name="n", provider="CUDAExecutionProvider", variant="cudnn", version="v")
    assert value(s, "gru_model_info", **labels) == 1


def test_session_hooks() -> None:
    m = Metrics()
    for _ in range(4):
        m.session_opened()
    m.session_closed()
    m.session_closed(evicted=True)
    m.stream_rejected()
    s = render(m)
    assert value(s, "gru_stream_sessions_active") == 2
    assert value(s, "gru_stream_sessions_opened_total") == 4
    assert value(s, "gru_stream_sessions_closed_total") == 1
    assert value(s, "gru_stream_sessions_evicted_total") == 1
    assert value(s, "gru_request_rejected_total", route="/v1/stream") == 1


def test_stream_sessions_through_the_websocket(client) -> None:
    before = scrape(client)
    with client.websocket_connect("/v1/stream") as ws:
        ws.send_json({"type": "start"})
        assert ws.receive_json()["type"] == "ready"
        during = scrape(client)
        ws.send_json({"type": "close"})
    after = scrape(client)
    assert value(during, "gru_stream_sessions_active") == 1
    assert delta(before, during, "gru_stream_sessions_opened_total") == 1
    assert value(after, "gru_stream_sessions_active") == 0
    assert delta(before, after, "gru_stream_sessions_closed_total") == 1
    assert delta(before, after, "gru_stream_sessions_evicted_total") == 0
    assert delta(before, after, "gru_request_success_total", route="/v1/stream", status="101") == 1
    assert value(after, "gru_request_duration_seconds_count", route="/v1/stream") == 0


def test_stream_session_over_the_limit_is_rejected(make_client) -> None:
    c = make_client(max_sessions=1)
    before = scrape(c)
    with c.websocket_connect("/v1/stream") as first:
        first.send_json({"type": "start"})
        assert first.receive_json()["type"] == "ready"
        with c.websocket_connect("/v1/stream") as second:
            second.send_json({"type": "start"})
            with pytest.raises(WebSocketDisconnect) as e:
                second.receive_json()
            assert e.value.code == 1013
    after = scrape(c)
    assert delta(before, after, "gru_request_rejected_total", route="/v1/stream") == 1
    assert delta(before, after, "gru_stream_sessions_opened_total") == 1
