"""`python -m bench.gpu` (`make bench-gpu`): the CPU and CUDA providers on one machine.

Builds both graph families of one checkpoint in memory and measures, per batch size:
- step: one stream step for B streams. On the CPU the states live on the host (what the
  service does); on CUDA they stay in the device slot buffer (service/device_state.py).
- forecast: B series, a CONTEXT-step history then HORIZON - 1 rollout steps feeding each
  prediction back, through `Runtime.run` (what the batcher's worker does).
Throughput is rows per second (streams stepped, series forecast); p50 and p99 are the
latencies of one call. Then the recurrence forms of the cuda graph (Scan, Loop, a host loop
over a one-step graph) on each provider. On a machine without a usable NVIDIA GPU the CUDA
rows say why they are missing. Writes results.json, results.md and throughput.png.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "gpu"
BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
CONTEXT, HORIZON = 72, 18  # the bundled model's context length and horizon
FORM_CASES = ((72, 1), (72, 64), (72, 1024), (1, 1), (1, 1024))  # (T, B)
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
STEP_GOAL = 10.0  # batch-4096 step: CUDA at least this many times the CPU's throughput


@dataclass(frozen=True)
class Graphs:
    """Serialized graphs of one checkpoint: the two artifacts and the measured alternatives."""

    cpu: bytes  # target cpu: ONNX GRU nodes
    cuda: bytes  # target cuda: Scan
    loop: bytes  # the cuda graph with Loop
    step: bytes  # the cuda graph's one step, for a host loop


def checkpoint_weights(checkpoint: str) -> tuple[Any, Any]:
    """(ForecasterWeights, ArtifactMeta) of a checkpoint, as `gru-serve export` reads them."""
    from export.checkpoint_weights import meta_from_checkpoint, weights_from_model
    from model.checkpoint import load_checkpoint

    model, info = load_checkpoint(checkpoint)
    return weights_from_model(model), meta_from_checkpoint(model.config, info, versions={})


def build_graphs(checkpoint: str) -> Graphs:
    from export.cuda_graph import build_cuda_model
    from export.graph import build_model

    weights, meta = checkpoint_weights(checkpoint)
    cuda = replace(meta, target="cuda")
    return Graphs(
        build_model(weights, meta).SerializeToString(),
        *(build_cuda_model(weights, cuda, r).SerializeToString() for r in ("scan", "loop", "step")),
    )


# ---- the machine ----------------------------------------------------------------------------
def gpu_name() -> str | None:
    """The first CUDA device's name from the driver, None without one."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    dev, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
    if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(dev), 0):
        return None
    if lib.cuDeviceGetName(name, 256, dev):
        return None
    return name.value.decode(errors="replace")


def machine() -> dict:
    import onnxruntime as ort

    from bench.results import machine as host

    return {**host(), "gpu": gpu_name(), "onnxruntime": ort.__version__}


# ---- timing -------------------------------------------------------------------------------------
def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation, as numpy's default."""
    return float(np.percentile(np.asarray(samples, np.float64), q))


def time_calls(call: Callable[[], Any], min_calls: int, max_seconds: float) -> list[float]:
    """Seconds per call: two warm-up calls, then at least `min_calls` and as many more as
    fit in `max_seconds`."""
    for _ in range(2):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < max_seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    return times


def cell(rows: int, times: list[float]) -> dict:
    mean = sum(times) / len(times)
    return {
        "throughput": rows / mean,
        "p50_ms": percentile(times, 50) * 1e3,
        "p99_ms": percentile(times, 99) * 1e3,
        "calls": len(times),
    }


# ---- the workloads --------------------------------------------------------------------------------
def runtime_for(path: Path, provider: str, threads: int) -> Any:
    """The service's own Runtime on `path`; raises DeviceError where CUDA is not usable."""
    from service.runtime import Runtime
    from service.settings import Settings

    device = "cuda" if provider == CUDA else "cpu"
    return Runtime(Settings(model_path=path, device=device, intra_op_threads=threads))


def step_call(rt: Any, batch: int, on_device: bool) -> tuple[Callable[[], Any], dict]:
    """One step of `batch` streams; `on_device`: states in the slot buffer."""
    m = rt.meta
    x = np.random.default_rng(batch).normal(size=(1, batch, m.input_size)).astype(np.float32)
    if on_device:
        from service.device_state import DeviceState

        states = DeviceState(rt.session, m, batch)
        slots = np.array([states.allocate() for _ in range(batch)], np.int64)
        pointer = states.buffer.data_ptr()
        calls = 0

        def call() -> np.ndarray:
            nonlocal calls
            calls += 1
            return states.step(x, slots)

        def info() -> dict:
            return {
                "state": f"{states.device}:{states.device_id} slot buffer",
                "buffer_moved": states.buffer.data_ptr() != pointer,
                # counted by DeviceState: states that entered from the host (the starts) and
                # reads back to the host, over all the steps run
                "steps": calls,
                "state_uploads": states.uploads,
                "state_reads": states.reads,
            }

        return call, {"info": info}
    h = np.zeros((m.num_layers, batch, m.hidden_size), np.float32)
    lens = np.ones(batch, np.int32)

    def call() -> None:
        nonlocal h
        _, h, _ = rt.run(x, h, lens)

    return call, {"info": lambda: {"state": "host"}}


def forecast_call(rt: Any, batch: int) -> Callable[[], Any]:
    m = rt.meta
    rng = np.random.default_rng(batch)
    history = rng.normal(size=(CONTEXT, batch, m.input_size)).astype(np.float32)
    h0 = np.zeros((m.num_layers, batch, m.hidden_size), np.float32)
    full, one = np.full(batch, CONTEXT, np.int32), np.ones(batch, np.int32)

    def call() -> np.ndarray:
        y, h, _ = rt.run(history, h0, full)
        step = y[-1:]
        for _ in range(HORIZON - 1):
            step, h, _ = rt.run(step, h, one)
        return step

    return call


# ---- recurrence forms --------------------------------------------------------------------------------
def host_loop(session: Any, x: np.ndarray, h0: np.ndarray, lens: np.ndarray) -> tuple:
    """The sequence through the one-step graph, one run per step, the state kept where the
    session computes (IO binding). x [T, B, F], h0 [L, B, H], lens [B] -> (y [T, B, O],
    h_n [L, B, H]) with the artifact's semantics: a row past its length keeps its state."""
    import onnxruntime as ort

    from export.contract import (
        INPUT_H0,
        INPUT_LENS,
        INPUT_X,
        OUTPUT_HN,
        OUTPUT_Y,
        empty_slot_feeds,
    )

    on_gpu = session.get_providers()[0] == CUDA
    device = "cuda" if on_gpu else "cpu"
    L, B, H = h0.shape
    h = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(h0, np.float32), device, 0)
    ys = []
    for t in range(x.shape[0]):
        io = session.io_binding()
        io.bind_cpu_input(INPUT_X, np.ascontiguousarray(x[t : t + 1], np.float32))
        io.bind_ortvalue_input(INPUT_H0, h)
        # the step graph counts from 0: length 1 runs the step, 0 keeps the state
        io.bind_cpu_input(INPUT_LENS, (t < lens).astype(np.int32))
        for name, value in empty_slot_feeds(L, H).items():
            io.bind_cpu_input(name, value)
        io.bind_output(OUTPUT_Y, "cpu")
        io.bind_output(OUTPUT_HN, device)
        session.run_with_iobinding(io)
        y, h = io.get_outputs()
        ys.append(y.numpy())
    return np.concatenate(ys), h.numpy()


def form_call(form: str, session: Any, feeds: dict) -> Callable[[], Any]:
    """One sequence run of a recurrence form: the host loop runs the one-step graph per step."""
    from export.contract import INPUT_H0, INPUT_LENS, INPUT_X, OUTPUT_HN, OUTPUT_Y

    if form == "host loop":
        return lambda: host_loop(session, feeds[INPUT_X], feeds[INPUT_H0], feeds[INPUT_LENS])
    return lambda: session.run([OUTPUT_Y, OUTPUT_HN], feeds)


def forms_section(graphs: Graphs, providers: list[str], min_calls: int, seconds: float) -> list:
    import onnxruntime as ort

    from export.contract import INPUT_H0, INPUT_LENS, INPUT_X, ArtifactMeta, empty_slot_feeds
    from service.runtime import provider_chain

    rows = []
    for provider in providers:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        chain = provider_chain(list(dict.fromkeys([provider, CPU])))
        sessions = {
            form: ort.InferenceSession(data, so, providers=chain)
            for form, data in (
                ("scan", graphs.cuda),
                ("loop", graphs.loop),
                ("host loop", graphs.step),
            )
        }
        m = ArtifactMeta.from_props(sessions["scan"].get_modelmeta().custom_metadata_map)
        L, H, F = m.num_layers, m.hidden_size, m.input_size
        for T, B in FORM_CASES:
            feeds = {
                INPUT_X: np.random.default_rng(T * B).normal(size=(T, B, F)).astype(np.float32),
                INPUT_H0: np.zeros((L, B, H), np.float32),
                INPUT_LENS: np.full(B, T, np.int32),
                **empty_slot_feeds(L, H),
            }
            row = {"provider": provider, "T": T, "B": B}
            for form, s in sessions.items():
                row[form] = (
                    percentile(time_calls(form_call(form, s, feeds), min_calls, seconds), 50) * 1e3
                )
            rows.append(row)
    return rows


# ---- the run ------------------------------------------------------------------------------------------
def cuda_unavailable() -> str | None:
    """Why the CUDA rows cannot be measured here, None when they can."""
    import onnxruntime as ort

    from service.runtime import cuda_device_count

    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    if cuda_device_count() == 0:
        return "no CUDA device (no NVIDIA driver or GPU on this machine)"
    return None


def run(args: argparse.Namespace) -> dict:
    graphs = build_graphs(args.checkpoint)
    missing = cuda_unavailable()
    configs = [  # (provider, artifact, step states on the device)
        (CPU, "cpu", False),
        (CPU, "cuda", False),
        (CUDA, "cuda", True),
    ]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"cpu": Path(tmp, "gru.onnx"), "cuda": Path(tmp, "gru-cuda.onnx")}
        paths["cpu"].write_bytes(graphs.cpu)
        paths["cuda"].write_bytes(graphs.cuda)
        for provider, artifact, on_device in configs:
            base = {"provider": provider, "artifact": artifact}
            reason = missing if provider == CUDA else None
            rt = None
            if reason is None:
                try:
                    rt = runtime_for(paths[artifact], provider, args.cpu_threads)
                except Exception as e:  # DeviceError: CUDA not usable, or nodes off the GPU
                    reason = str(e)
            for workload in ("step", "forecast"):
                for batch in args.batches:
                    row = {**base, "workload": workload, "batch": batch}
                    if rt is None:
                        rows.append({**row, "unavailable": reason})
                        continue
                    row["nodes"] = dict(rt.placement.nodes)
                    if workload == "step":
                        call, extra = step_call(rt, batch, on_device)
                    else:
                        call, extra = forecast_call(rt, batch), {}
                    row.update(cell(batch, time_calls(call, args.min_calls, args.seconds)))
                    if "info" in extra:
                        row.update(extra["info"]())
                    rows.append(row)
                    print(_row_line(row), file=sys.stderr)
    providers = [CPU] + ([CUDA] if missing is None else [])
    forms = forms_section(graphs, providers, args.min_calls, args.seconds) if args.forms else []
    return {
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "checkpoint": args.checkpoint,
            "batches": list(args.batches),
            "context": CONTEXT,
            "horizon": HORIZON,
            "cpu_threads": args.cpu_threads or os.cpu_count(),
            "min_calls": args.min_calls,
            "seconds_per_cell": args.seconds,
        },
        "rows": rows,
        "forms": forms,
        "goal": step_goal(rows),
    }


def step_goal(rows: list[dict]) -> dict:
    """Batch-4096 step throughput, CUDA (device states) over the best CPU row."""
    step = [r for r in rows if r["workload"] == "step" and r["batch"] == 4096 and "throughput" in r]
    cpu = max((r["throughput"] for r in step if r["provider"] == CPU), default=None)
    gpu = max((r["throughput"] for r in step if r["provider"] == CUDA), default=None)
    if cpu is None or gpu is None:
        return {"measured": False, "goal": f">= {STEP_GOAL:g}x"}
    ratio = gpu / cpu
    return {
        "measured": True,
        "ratio": ratio,
        "met": ratio >= STEP_GOAL,
        "goal": f">= {STEP_GOAL:g}x",
    }


# ---- reporting --------------------------------------------------------------------------------------------
def _row_line(r: dict) -> str:
    return (
        f"{r['workload']:8} {r['provider']:22} {r['artifact']:4} B={r['batch']:<5} "
        f"{r['throughput']:12.0f} rows/s  p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms"
    )


def markdown(result: dict) -> str:
    m = result["machine"]
    gpu = m["gpu"] or "none"
    lines = [
        "# GPU benchmark",
        "",
        f"Measured {result['measured_at']} by `make bench-gpu`: GPU **{gpu}**; "
        f"{m['cpus']} CPU(s) ({m['cpu']}); onnxruntime {m['onnxruntime']}; "
        f"CPU provider with {result['settings']['cpu_threads']} thread(s).",
        "",
        "| workload | provider | artifact | batch | rows/s | p50 ms | p99 ms | calls |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        head = f"| {r['workload']} | {r['provider']} | {r['artifact']} | {r['batch']} |"
        if "unavailable" in r:
            lines.append(f"{head} unavailable | | | |")
        else:
            lines.append(
                f"{head} {r['throughput']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['calls']} |"
            )
    reasons = sorted({r["unavailable"] for r in result["rows"] if "unavailable" in r})
    lines += ["", *(f"Unavailable: {why}." for why in reasons)]
    g = result["goal"]
    if g["measured"]:
        verdict = "met" if g["met"] else "not met"
        lines.append(
            f"Batch-4096 step, CUDA over CPU: {g['ratio']:.1f}x (goal {g['goal']}: {verdict})."
        )
    else:
        lines.append(f"Batch-4096 step, CUDA over CPU: not measured (goal {g['goal']}).")
    device_rows = [r for r in result["rows"] if r.get("state", "").startswith("cuda")]
    if device_rows:
        moved = any(r["buffer_moved"] for r in device_rows)
        steps = sum(r.get("steps", 0) for r in device_rows)
        reads = sum(r.get("state_reads", 0) for r in device_rows)
        uploads = sum(r.get("state_uploads", 0) for r in device_rows)
        starts = sum(r["batch"] for r in device_rows)
        lines.append(
            "Stream states on CUDA: one slot buffer bound as the step's input and output; "
            f"over {steps:,} steps, states read back to the host: {reads}, states "
            f"uploaded: {uploads} (the {starts:,} streams' starts); buffer moved: {moved}."
        )
    if result["forms"]:
        lines += [
            "",
            "Recurrence forms of the cuda graph, median ms per call (T steps, B rows):",
            "",
            "| provider | T | B | Scan | Loop | host loop |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for f in result["forms"]:
            lines.append(
                f"| {f['provider']} | {f['T']} | {f['B']} | {f['scan']:.3f} | {f['loop']:.3f} "
                f"| {f['host loop']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> bool:
    """Throughput against batch, one panel per workload; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, workload in zip(axes, ("step", "forecast"), strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in result["rows"]:
            if r["workload"] == workload and "throughput" in r:
                label = f"{r['provider'].removesuffix('ExecutionProvider')}, {r['artifact']} graph"
                series.setdefault(label, []).append((r["batch"], r["throughput"]))
        for label, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch (rows)", ylabel="rows / s", title=workload)
        ax.grid(True, which="both", alpha=0.3)
        if series:
            ax.legend(fontsize=8)
    gpu = result["machine"]["gpu"] or "no GPU"
    fig.suptitle(f"gru-serve on {gpu} and {result['machine']['cpus']} CPU(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "results.md"]
    written[0].write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    written[1].write_text(markdown(result))
    if plot(result, out_dir / "throughput.png"):
        written.append(out_dir / "throughput.png")
    return written


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return batches


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="artifacts/checkpoint.pt")
    p.add_argument("--batches", type=parse_batches, default=BATCHES, help="e.g. 1,64,4096")
    p.add_argument("--seconds", type=float, default=1.0, help="measured seconds per cell")
    p.add_argument("--min-calls", type=int, default=5, help="calls per cell at least")
    p.add_argument("--cpu-threads", type=int, default=0, help="CPU provider threads (0: all cores)")
    p.add_argument("--no-forms", dest="forms", action="store_false", help="skip the forms table")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    for path in write(result, args.out_dir):
        print(f"wrote {path}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
