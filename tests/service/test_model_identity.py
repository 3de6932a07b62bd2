"""Model identity: two artifacts with the same name and version but other weights are told
apart: /v1/models shows each one's weights digest, and a resume token from one is refused by
the other with token_mismatch."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from service_helpers import wait_ready

from service.app import create_app
from service.settings import Settings
from tests.conftest import write_tiny_artifact

SECRET = "shared-by-both"


def _client(path) -> TestClient:
    settings = Settings(model_path=path, device="cpu", token_secret=SECRET, access_log=False)
    return TestClient(create_app(settings))


def test_a_token_of_other_weights_is_refused_with_token_mismatch(tmp_path):
    one = write_tiny_artifact(tmp_path / "one.onnx", seed=0)
    two = write_tiny_artifact(tmp_path / "two.onnx", seed=1)  # same name "tiny", version 0.0.1
    with _client(one) as a, _client(two) as b:
        wait_ready(a)
        wait_ready(b)
        info_a, info_b = (c.get("/v1/models").json()["models"][0] for c in (a, b))
        assert (info_a["name"], info_a["version"]) == (info_b["name"], info_b["version"])
        # tiny artifacts record no weights digest: each is its file's SHA-256
        assert info_a["weights_sha256"] == hashlib.sha256(one.read_bytes()).hexdigest()
        assert info_b["weights_sha256"] == hashlib.sha256(two.read_bytes()).hexdigest()
        with a.websocket_connect("/v1/stream") as ws:
            ws.send_json({"type": "start", "history": [1.0, 2.0, 3.0]})
            assert ws.receive_json()["type"] == "ready"
            ws.send_json({"type": "state"})
            token = ws.receive_json()["token"]
        with b.websocket_connect("/v1/stream") as ws:
            ws.send_json({"type": "start", "resume": token})
            err = ws.receive_json()
        with a.websocket_connect("/v1/stream") as ws:  # its own server still takes it
            ws.send_json({"type": "start", "resume": token})
            ready = ws.receive_json()
    assert (err["type"], err["code"], err["field"]) == ("error", "token_mismatch", "resume")
    assert "other weights" in err["message"]
    assert ready["type"] == "ready" and ready["step"] == 3


def test_an_artifact_that_records_its_weights_digest_is_known_by_it(tmp_path):
    path = write_tiny_artifact(tmp_path / "m.onnx", weights_sha256="ab" * 32)
    with _client(path) as c:
        wait_ready(c)
        assert c.get("/v1/models").json()["models"][0]["weights_sha256"] == "ab" * 32
