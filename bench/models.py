"""Models section: a model repository of two models under mixed load, per-model throughput
beside the one-model figure, and the resident memory each extra loaded model costs.

Both models are copies of the same artifact (the bundled one when present), so the two-model
figures differ from the one-model one only by serving two models: two onnxruntime sessions
and two batchers sharing the machine's cores instead of one of each."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench import procs
from bench.load import LoadResult, run_load
from bench.rest import PATH, request_body
from bench.results import table


def _repository(model: Path, names: list[str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="gru-bench-repo-"))
    for name in names:
        (root / name / "1").mkdir(parents=True)
        shutil.copy(model, root / name / "1" / "model.onnx")
    return root


def _body(model: str | None, length: int, horizon: int) -> bytes:
    body = request_body(length, horizon)
    return body if model is None else body[:-1] + f', "model": "{model}"}}'.encode()


def _mixed(port: int, bodies: dict[str, bytes], clients: int, seconds: float) -> dict:
    """Each model gets `clients` connections at once; their results, by model."""
    results: dict[str, LoadResult] = {}

    def drive(name: str) -> None:
        results[name] = run_load(port, PATH, bodies[name], clients, seconds)

    threads = [threading.Thread(target=drive, args=(n,)) for n in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _row(r: LoadResult) -> dict:
    return {
        "rps": round(r.rps, 1),
        "p50_ms": round(r.pct_ms(50), 2),
        "p99_ms": round(r.pct_ms(99), 2),
        "ok": r.ok,
        "errors": r.errors,
    }


def _rss_after_warm(server: procs.Server, bodies: list[bytes]) -> float:
    for body in bodies:  # every model answers once: its arenas are allocated
        run_load(server.port, PATH, body, 1, 0.3, warmup_s=0.1)
    time.sleep(0.2)
    return server.memory_mb()["VmRSS"]


def run(args) -> tuple[dict, str]:
    model, source = procs.artifact(args.model)
    length, horizon = 72, 18
    levels = [c for c in args.levels if c > 1] or [16]
    data: dict = {"source": source, "levels": {}, "memory_mb": {}}

    # memory: one file, then repositories of 1, 2 and 4 copies
    counts = (1, 2, 4)
    for n in counts:
        root = _repository(model, [f"m{i}" for i in range(n)])
        port = procs.free_port()
        server = procs.start(f"repo{n}", procs.serve_cmd(root, port), port, "/readyz")
        try:
            bodies = [_body(f"m{i}", length, horizon) for i in range(n)]
            data["memory_mb"][str(n)] = round(_rss_after_warm(server, bodies), 1)
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    mem = data["memory_mb"]
    data["per_extra_model_mb"] = round((mem["4"] - mem["1"]) / 3, 1)
    print(f"  memory: {mem} MB; per extra model {data['per_extra_model_mb']} MB", flush=True)

    # throughput: one model alone, then two models under mixed load on one server
    one = procs.free_port()
    root = _repository(model, ["a", "b"])
    single = procs.start("one", procs.serve_cmd(model, one), one, "/readyz")
    try:
        for clients in levels:
            r = run_load(one, PATH, _body(None, length, horizon), clients, args.seconds)
            data["levels"][str(clients)] = {"one_model": _row(r)}
            print(f"  one model  {clients:3d} clients: {_row(r)}", flush=True)
    finally:
        single.stop()
    two = procs.free_port()
    server = procs.start("two", procs.serve_cmd(root, two), two, "/readyz")
    try:
        bodies = {n: _body(n, length, horizon) for n in ("a", "b")}
        for clients in levels:
            res = _mixed(two, bodies, clients // 2, args.seconds)
            entry = data["levels"][str(clients)]
            entry["two_models"] = {n: _row(r) for n, r in res.items()}
            entry["two_models_total_rps"] = round(sum(r.rps for r in res.values()), 1)
            print(f"  two models {clients:3d} clients: {entry['two_models']}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return data, markdown(data)


def markdown(data: dict) -> str:
    rows = []
    for clients, e in data["levels"].items():
        a, b = e["two_models"]["a"], e["two_models"]["b"]
        rows.append(
            [clients, e["one_model"]["rps"], e["one_model"]["p99_ms"], a["rps"], b["rps"],
             e["two_models_total_rps"], max(a["p99_ms"], b["p99_ms"])]
        )  # fmt: skip
    mem = data["memory_mb"]
    return "\n".join(
        [
            f"Model: {data['source']}, copied as two models `a` and `b` of one repository. "
            "`/v1/forecast`, one series of 72 observations, horizon 18, two quantiles; "
            "closed-loop clients, split evenly between the two models.",
            "",
            table(
                [
                    "clients",
                    "one model req/s",
                    "one model p99 ms",
                    "a req/s",
                    "b req/s",
                    "a + b req/s",
                    "two models p99 ms",
                ],
                rows,
            ),  # fmt: skip
            "",
            "Resident memory after each model answered once: "
            + ", ".join(f"{n} model(s) {v} MB" for n, v in mem.items())
            + f": about {data['per_extra_model_mb']} MB per extra loaded model.",
        ]
    )


def add_arguments(p) -> None:
    pass
