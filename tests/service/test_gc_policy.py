"""The serving process's garbage-collector policy (service/gc_policy.py)."""

from __future__ import annotations

import gc

import pytest

import service.shutdown
from service import gc_policy
from service.cli import main


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_policy_freezes_what_is_alive_and_raises_the_young_budget(restore_gc):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    kept = [[i] for i in range(1000)]  # long-lived containers, tracked by the collector
    gc_policy.tune_for_serving()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (20_000, 10, 10)  # gen0 raised, gen1 and gen2 as CPython's


def test_serve_applies_it_after_the_model_loads(restore_gc, monkeypatch, tiny_artifact):
    seen = {}

    def fake_serve(app, config, grace_s):  # instead of binding and serving
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(service.shutdown, "serve", fake_serve)
    assert main(["serve", "--model-path", str(tiny_artifact), "--port", "0"]) == 0
    assert seen["threshold"] == (20_000, 10, 10)
    assert seen["frozen"] > 10_000  # the imports and the loaded model
