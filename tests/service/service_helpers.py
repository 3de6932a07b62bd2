"""Helpers for service tests (imported by tests/service/conftest.py and by test modules as
`from service_helpers import ...`): readiness polling, a real `gru-serve serve` subprocess on a
loopback port it picks itself (tests/servers.py), and an independent NumPy reference of the
served forecaster (weights rebuilt from the tiny artifact's seed, formulas from
tests/reference.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from reference import forecaster, gates_from_pytorch
from servers import READY_TIMEOUT_S, ServerProcess, launch

from export.contract import ArtifactMeta
from export.graph import random_weights

ROOT = Path(__file__).resolve().parents[2]


def _root_conftest():
    # Both conftest files import as "conftest"; load the root one under its own name.
    spec = importlib.util.spec_from_file_location(
        "gru_tests_conftest", ROOT / "tests" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ROOT_CONFTEST = _root_conftest()
tiny_meta = _ROOT_CONFTEST.tiny_meta
write_tiny_artifact = _ROOT_CONFTEST.write_tiny_artifact

GRU_SERVE = Path(sys.executable).with_name("gru-serve")


def wait_ready(client: TestClient, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll /readyz until 200 (warm-up runs in a task after start-up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get("/readyz")
        if r.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s} s: {r.status_code} {r.text}")
        time.sleep(0.01)


# ---- a real server process (ServerProcess and launch: tests/servers.py) ----------------------------
def batch_rows(metrics_text: str) -> tuple[float, float]:
    """(rows, onnxruntime runs) so far, from /metrics' gru_batch_rows histogram _sum and _count."""
    values = {}
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("gru_batch_rows_sum", "gru_batch_rows_count"):
            values[name] = float(value)
    return values["gru_batch_rows_sum"], values["gru_batch_rows_count"]


def serve_command(**flags) -> list[str]:
    """`gru-serve serve --flag value ...` (flag names as Settings fields, underscores allowed)."""
    cmd = [str(GRU_SERVE)] if GRU_SERVE.exists() else [sys.executable, "-m", "service.cli"]
    cmd.append("serve")
    for name, value in flags.items():
        cmd += ["--" + name.replace("_", "-"), str(value)]
    return cmd


def serve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without GRU_SERVE_* leaking in, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRU_SERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["GRU_SERVE_QUEUE_DEADLINE_MS"] = "0"  # see tests/conftest.py
    env.update(extra or {})
    return env


def start_server(
    log_dir: Path, env: dict[str, str] | None = None, wait: bool = True, **flags
) -> ServerProcess:
    """Start `gru-serve serve` on 127.0.0.1, port 0 (the port it binds is read from its log)
    unless `port` is given, and, by default, wait for readiness. The caller must `stop()` it
    (the `serve_process` fixture does)."""
    flags.setdefault("host", "127.0.0.1")
    flags.setdefault("device", "cpu")
    flags.setdefault("port", 0)
    log_path = log_dir / f"serve-{time.monotonic_ns()}.log"
    server = launch(serve_command(**flags), serve_env(env), log_path)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
    return server


# ---- the independent reference ---------------------------------------------------------------------
class Reference:
    """The served forecaster in float64 NumPy (tests/reference.py), with the service's contract
    re-derived here: per-series standard scaling fitted on the history, rollout feeding the
    point forecast back, quantile offsets in scaled space."""

    def __init__(self, meta: ArtifactMeta, seed: int = 0) -> None:
        self.meta = meta
        w = random_weights(meta, seed=seed)  # what write_tiny_artifact serialised
        self.layers = [
            gates_from_pytorch(lw.weight_ih, lw.weight_hh, lw.bias_ih, lw.bias_hh, meta.variant)
            for lw in w.layers
        ]
        self.head_w, self.head_b = w.head_weight, w.head_bias

    def zeros(self) -> np.ndarray:
        return np.zeros((self.meta.num_layers, self.meta.hidden_size))

    def run(self, x, h=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (T, F), h (L, H) -> y (T, O), h_n (L, H), h_seq (T, L, H), model units."""
        x = np.asarray(x, np.float64)
        if x.ndim == 1:
            x = x[:, None]
        h = self.zeros() if h is None else np.asarray(h, np.float64)
        y, h_n, h_seq = forecaster(
            self.layers,
            self.head_w,
            self.head_b,
            x[None],
            h[:, None],
            np.array([len(x)]),
            self.meta.variant,
            return_states=True,
        )
        return y[0], h_n[:, 0], h_seq[0]

    def scaler(self, history) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(history, np.float64)
        x = x[:, None] if x.ndim == 1 else x
        return x.mean(axis=0), np.maximum(x.std(axis=0), self.meta.scaler.min_scale)

    def forecast(self, history, horizon: int, state=None) -> dict:
        """-> {"mean" (horizon, F) data units, "scaled" (horizon, F), "h" (L, H), "loc", "scale"}.

        `state` is (h, loc, scale) to continue from instead of zeros and a fresh fit."""
        x = np.asarray(history, np.float64)
        x = x[:, None] if x.ndim == 1 else x
        if state is None:
            h0 = None
            loc, scale = self.scaler(x)
        else:
            h0, loc, scale = (np.asarray(a, np.float64) for a in state)
        y, h, _ = self.run((x - loc) / scale, h0)
        after = h
        steps = [y[-1]]
        for _ in range(horizon - 1):
            y, h, _ = self.run(steps[-1][None], h)
            steps.append(y[-1])
        scaled = np.stack(steps)
        return {
            "mean": scaled * scale + loc,
            "scaled": scaled,
            "h": after,
            "loc": loc,
            "scale": scale,
        }

    def offset(self, level: float, step: int, frequency: str | None = None) -> float:
        """Scaled-space offset of `level` at 0-based `step`: the frequency's rows when the
        metadata has a table for it (else the pooled rows), a row of S steps widened past its
        end as row[S-1] * sqrt((step + 1) / S), 0 at the median, linear in the level between
        calibrated levels."""
        rows = self.meta.quantile_offsets_by_frequency.get(frequency, self.meta.quantile_offsets)
        table = {0.5: 0.0}
        for q, row in zip(self.meta.quantile_levels, rows, strict=True):
            S = len(row)
            table[q] = row[step] if step < S else row[-1] * ((step + 1) / S) ** 0.5
        qs = sorted(table)
        return float(np.interp(level, qs, [table[q] for q in qs]))


def make_artifact(
    path: Path, variant: str = "cho2014", seed: int = 0, **meta
) -> tuple[Path, Reference]:
    """A tiny artifact plus its reference (for tests that need other sizes or variants)."""
    write_tiny_artifact(path, variant, seed, **meta)
    return path, Reference(tiny_meta(variant, **meta), seed=seed)
