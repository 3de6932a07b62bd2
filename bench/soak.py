"""Soak: the service under steady mixed load for a long time, watched for drift.

`python -m bench.soak [--seconds 600] [--interval 10]` (or `make soak SOAK_SECONDS=...`):

1. Starts `gru-serve serve` on 127.0.0.1 (the bundled model) and measures its capacity:
   REST `POST /v1/forecast` closed loop, and `WS /v1/stream` steps closed loop, each alone.
2. Runs both at once, paced, for `--seconds`: REST at `--load` x `--rest-share` of the REST
   capacity and streams at `--load` x (1 - `--rest-share`) of the stream capacity, so the
   service as a whole runs at about `--load` (70%) of what it can do. REST is driven by wrk
   when it is on PATH (one paced run per interval), else by the paced Python client below.
3. Every `--interval` seconds records the server's RSS and CPU, each load's throughput,
   latency percentiles and errors, and writes bench/soak.json, bench/soak.md and bench/soak.png.

Verdicts, after the warm-up (`--warmup`, by default a quarter of the run, at most 60 s):
RSS growth under 5 %, no errors, and latency flat: the median of the per-interval p50 and
p99 in the last third of the run within 1.5x of the first third's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import procs
from bench.load import _read_response, build_request
from bench.load import run_load as rest_closed_loop
from bench.rest import request_body
from bench.results import machine, table
from bench.stream import HISTORY, WsClient, client_frame
from bench.stream import run_load as stream_closed_loop
from bench.wrk import run_wrk

HERE = Path(__file__).resolve().parent
GOALS = {"rss_growth_pct": 5.0, "errors": 0, "drift": 1.5}
REST_CLIENTS = 32  # connections for the capacity run and the paced load
STREAM_SESSIONS = 64
PATH = "/v1/forecast"


# ---- paced load ------------------------------------------------------------------------------------
@dataclass
class Records:
    """(completion time, latency s) of answered requests or steps, and errors, as they come."""

    done: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    def window(self, t0: float, t1: float) -> tuple[np.ndarray, int]:
        lat = np.array([lat for t, lat in self.done if t0 <= t < t1])
        return lat, sum(1 for t, _ in self.errors if t0 <= t < t1)


async def paced_rest_client(port: int, request: bytes, period_s: float, stop: float, rec: Records):
    """One keep-alive connection sending a request every `period_s` (late answers delay the
    next send, never pile up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.perf_counter() + period_s * np.random.random()  # spread the clients' phases
    try:
        while (now := time.perf_counter()) < stop:
            if next_at > now:
                await asyncio.sleep(next_at - now)
            t0 = time.perf_counter()
            writer.write(request)
            status, _, _ = await _read_response(reader)
            t1 = time.perf_counter()
            if status == 200:
                rec.done.append((t1, t1 - t0))
            else:
                rec.errors.append((t1, f"HTTP {status}"))
            next_at = max(next_at + period_s, t1)
    except Exception as e:  # any failure of a connection is an error of the soak
        rec.errors.append((time.perf_counter(), f"{type(e).__name__}: {e}"))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def paced_session(port: int, period_s: float, stop: float, rec: Records) -> None:
    """One stream session sending a step every `period_s` and timing its output."""
    try:
        ws = await WsClient.connect(port, "/v1/stream")
    except (OSError, RuntimeError) as e:
        rec.errors.append((time.perf_counter(), f"connect: {e}"))
        return
    try:
        ws.writer.write(client_frame(json.dumps({"type": "start", "history": HISTORY}).encode()))
        await ws.recv()
        next_at = time.perf_counter() + period_s * np.random.random()
        i = 0
        while (now := time.perf_counter()) < stop:
            if next_at > now:
                await asyncio.sleep(next_at - now)
            x = round(10 + 3 * np.sin(i / 4), 3)
            t0 = time.perf_counter()
            ws.writer.write(client_frame(json.dumps({"type": "step", "x": x}).encode()))
            answer = json.loads(await ws.recv())
            t1 = time.perf_counter()
            if answer.get("type") == "output":
                rec.done.append((t1, t1 - t0))
            else:
                rec.errors.append((t1, f"stream {answer.get('type')}: {answer.get('code')}"))
            next_at = max(next_at + period_s, t1)
            i += 1
    except Exception as e:  # any failure of a session is an error of the soak
        rec.errors.append((time.perf_counter(), f"stream {type(e).__name__}: {e}"))
    finally:
        await ws.close()


def wrk_interval(
    port: int, body_file: Path, rate: float, seconds: float, latency_ms: float
) -> dict:
    """One paced wrk run. wrk's delay() is a pause between an answer and the next request,
    not a rate: each connection pauses its share of the period less the last run's median
    latency."""
    delay_ms = max(0, round(REST_CLIENTS * 1000 / rate - latency_ms))
    r = run_wrk(port, PATH, body_file.read_bytes(), REST_CLIENTS, seconds, delay_ms)
    return {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "errors": r.non_2xx + r.socket_errors}  # fmt: skip


# ---- the run ---------------------------------------------------------------------------------------
def pct_ms(lat: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(lat, q) * 1000), 2) if len(lat) else None


def measure_capacity(port: int, body: bytes, seconds: float, use_wrk: bool) -> dict:
    rest = rest_closed_loop(port, PATH, body, REST_CLIENTS, seconds)
    cap = {"rest_rps": round(rest.rps, 1), "rest_client": "python"}
    if use_wrk:
        cap.update(rest_rps=round(run_wrk(port, PATH, body, REST_CLIENTS, seconds).rps, 1))
        cap["rest_client"] = "wrk"
    steps, _ = stream_closed_loop(port, STREAM_SESSIONS, True, seconds)
    cap["stream_steps_per_s"] = round(len(steps) / seconds, 1)
    return cap


async def soak(server: procs.Server, body: bytes, args, rates: dict, use_wrk: bool) -> list[dict]:
    interval, n = args.interval, max(1, round(args.seconds / args.interval))
    start = time.perf_counter()
    stop = start + n * interval
    rest, streams = Records(), Records()
    tasks = [
        asyncio.create_task(paced_session(server.port, STREAM_SESSIONS / rates["stream"], stop, streams))
        for _ in range(STREAM_SESSIONS)
    ]  # fmt: skip
    if not use_wrk:
        request = build_request(PATH, body, server.port)
        period = REST_CLIENTS / rates["rest"]
        tasks += [
            asyncio.create_task(paced_rest_client(server.port, request, period, stop, rest))
            for _ in range(REST_CLIENTS)
        ]
    tmp = Path(tempfile.mkdtemp())
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    rows = []
    loop = asyncio.get_running_loop()
    cpu0 = server.cpu_s()
    latency_ms = 0.0
    for i in range(n):
        t0, t1 = start + i * interval, start + (i + 1) * interval
        if use_wrk:
            w = await loop.run_in_executor(
                None, wrk_interval, server.port, body_file, rates["rest"], interval, latency_ms
            )
            latency_ms = w["p50_ms"]
        await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
        if not use_wrk:
            lat, errors = rest.window(t0, t1)
            w = {"rps": round(len(lat) / interval, 1), "p50_ms": pct_ms(lat, 50),
                 "p99_ms": pct_ms(lat, 99), "errors": errors}  # fmt: skip
        s_lat, s_err = streams.window(t0, t1)
        cpu = server.cpu_s()
        rows.append(
            {
                "t_s": round((i + 1) * interval, 1),
                "rss_mb": round(server.memory_mb()["VmRSS"], 1),
                "server_cpu_pct": round(100 * (cpu - cpu0) / interval, 1),
                "rest_rps": round(w["rps"], 1),
                "rest_p50_ms": w["p50_ms"],
                "rest_p99_ms": w["p99_ms"],
                "rest_errors": w["errors"],
                "stream_steps_per_s": round(len(s_lat) / interval, 1),
                "stream_p50_ms": pct_ms(s_lat, 50),
                "stream_p99_ms": pct_ms(s_lat, 99),
                "stream_errors": s_err,
            }
        )
        cpu0 = cpu
        print("  " + json.dumps(rows[-1]), flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    shutil.rmtree(tmp, ignore_errors=True)
    kinds = sorted({e for _, e in rest.errors + streams.errors})
    if kinds:
        print(f"  errors: {kinds[:10]}", flush=True)
    return rows


def drift(rows: list[dict], key: str) -> float | None:
    """Median of `key` over the last third of the rows / over the first third."""
    values = [r[key] for r in rows if r[key] is not None]
    third = len(values) // 3
    if third == 0:
        return None
    first, last = np.median(values[:third]), np.median(values[-third:])
    return round(float(last / first), 3) if first else None


def summarise(rows: list[dict], warmup_s: float) -> dict:
    steady = [r for r in rows if r["t_s"] > warmup_s] or rows[-1:]
    base, end = steady[0]["rss_mb"], steady[-1]["rss_mb"]
    summary = {
        "rss_after_warmup_mb": base,
        "rss_end_mb": end,
        "rss_max_mb": max(r["rss_mb"] for r in steady),
        "rss_growth_pct": round(100 * (end - base) / base, 2),
        "errors": sum(r["rest_errors"] + r["stream_errors"] for r in rows),
        "drift": {
            k: drift(steady, k)
            for k in ("rest_p50_ms", "rest_p99_ms", "stream_p50_ms", "stream_p99_ms")
        },  # fmt: skip
    }
    drifts = [d for d in summary["drift"].values() if d is not None]
    summary["met"] = {
        "rss_growth_pct": summary["rss_growth_pct"] < GOALS["rss_growth_pct"],
        "errors": summary["errors"] == GOALS["errors"],
        "flat_latency": bool(drifts) and max(drifts) <= GOALS["drift"],
    }
    return summary


# ---- outputs ---------------------------------------------------------------------------------------
def plot(rows: list[dict], warmup_s: float, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [r["t_s"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for ax, kind in zip(axes[:2], ("rest", "stream"), strict=True):
        for q, style in (("p50", "-"), ("p99", "--")):
            ax.plot(t, [r[f"{kind}_{q}_ms"] for r in rows], style, label=q)
        ax.set_ylabel(f"{'REST' if kind == 'rest' else 'stream step'} latency, ms")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right")
    rss = [r["rss_mb"] for r in rows]
    axes[2].plot(t, rss, color="tab:green")
    axes[2].set_ylim(0, 1.2 * max(rss))  # from zero: growth shows at its true size
    axes[2].set_ylabel("server RSS, MB")
    axes[2].set_xlabel("seconds into the soak (end of each interval)")
    for ax in axes:
        ax.axvspan(0, warmup_s, color="0.9", zorder=0)
        ax.grid(alpha=0.3)
    axes[0].set_title("Soak at ~70% of capacity (shaded: warm-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def markdown(res: dict) -> str:
    s, cap, rates, g = res["summary"], res["capacity"], res["rates"], GOALS
    yes = {True: "yes", False: "**no**"}
    rows = [
        [r["t_s"], r["rss_mb"], r["server_cpu_pct"], r["rest_rps"], r["rest_p50_ms"],
         r["rest_p99_ms"], r["rest_errors"], r["stream_steps_per_s"], r["stream_p50_ms"],
         r["stream_p99_ms"], r["stream_errors"]]
        for r in res["intervals"]
    ]  # fmt: skip
    d = s["drift"]
    return "\n".join(
        [
            "# Soak",
            "",
            f"`python -m bench.soak --seconds {res['seconds']:g} --interval {res['interval']:g}` "
            f"({res['finished']}), {res['model']}, on {res['machine']['cpus']} CPUs shared with "
            "the load generators (and whatever else ran on the machine).",
            "",
            f"Capacity measured first, each load alone, closed loop: REST {cap['rest_rps']} req/s "
            f"({REST_CLIENTS} connections, {cap['rest_client']}), streams "
            f"{cap['stream_steps_per_s']} steps/s ({STREAM_SESSIONS} sessions). Soak load, both at "
            f"once and paced: REST {rates['rest']:.0f} req/s ({res['rest_client']}) and streams "
            f"{rates['stream']:.0f} steps/s, i.e. {res['load']:.0%} of capacity split "
            f"{res['rest_share']:.0%} / {1 - res['rest_share']:.0%}. Warm-up: the first "
            f"{res['warmup_s']:g} s.",
            "",
            "| figure | goal | measured | met |",
            "| --- | --- | --- | --- |",
            f"| RSS growth after warm-up | < {g['rss_growth_pct']:g} % | {s['rss_growth_pct']} % "
            f"({s['rss_after_warmup_mb']} -> {s['rss_end_mb']} MB, max {s['rss_max_mb']}) "
            f"| {yes[s['met']['rss_growth_pct']]} |",
            f"| errors (REST non-200 and socket errors, stream errors and drops) | 0 "
            f"| {s['errors']} | {yes[s['met']['errors']]} |",
            f"| latency drift: median per-interval p50 / p99, last third / first third after "
            f"warm-up | <= {g['drift']:g} | REST {d['rest_p50_ms']} / {d['rest_p99_ms']}, "
            f"stream {d['stream_p50_ms']} / {d['stream_p99_ms']} | {yes[s['met']['flat_latency']]} |",
            "",
            "![latency and memory over the soak](soak.png)",
            "",
            table(
                [
                    "t s",
                    "RSS MB",
                    "server CPU %",
                    "REST req/s",
                    "REST p50 ms",
                    "REST p99 ms",
                    "REST errors",
                    "stream steps/s",
                    "stream p50 ms",
                    "stream p99 ms",
                    "stream errors",
                ],
                rows,
            ),  # fmt: skip
            "",
        ]
    )


def run_async(coro):
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600, help="soak duration (default 600)")
    p.add_argument("--interval", type=float, default=10, help="seconds per sample (default 10)")
    p.add_argument("--warmup", type=float, help="seconds not judged (default: a quarter, <= 60)")
    p.add_argument("--load", type=float, default=0.7, help="fraction of capacity (default 0.7)")
    p.add_argument("--rest-share", type=float, default=0.5, help="REST's part of the load")
    p.add_argument("--capacity-seconds", type=float, default=5, help="per capacity run")
    p.add_argument("--model", help="ONNX artifact to serve (default: artifacts/gru.onnx)")
    p.add_argument("--no-wrk", action="store_true", help="drive REST with the Python client")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where soak.{json,md,png} go")
    args = p.parse_args()
    if not 0 < args.load <= 1 or not 0 <= args.rest_share <= 1 or args.interval <= 0:
        p.error("--load must be in (0, 1], --rest-share in [0, 1], --interval > 0")
    if args.seconds < 3 * args.interval:
        p.error("--seconds must cover at least three intervals")
    warmup_s = args.warmup if args.warmup is not None else min(60.0, args.seconds / 4)
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    model, model_desc = procs.artifact(args.model)
    body = request_body(48, 12)
    port = procs.free_port()
    cmd = procs.serve_cmd(model, port, access_log="false", log_level="warning",
                          max_sessions=4 * STREAM_SESSIONS)  # fmt: skip
    server = procs.start("service", cmd, port, "/readyz")
    try:
        print("measuring capacity ...", flush=True)
        capacity = measure_capacity(port, body, args.capacity_seconds, use_wrk)
        print(f"  {capacity}", flush=True)
        rates = {
            "rest": max(1.0, args.load * args.rest_share * capacity["rest_rps"]),
            "stream": max(1.0, args.load * (1 - args.rest_share) * capacity["stream_steps_per_s"]),
        }
        print(f"soaking {args.seconds:g} s at {rates} ...", flush=True)
        rows = run_async(soak(server, body, args, rates, use_wrk))
    finally:
        server.stop()
    res = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "model": model_desc,
        "seconds": args.seconds,
        "interval": args.interval,
        "warmup_s": warmup_s,
        "load": args.load,
        "rest_share": args.rest_share,
        "rest_client": "wrk (paced)" if use_wrk else "python (paced)",
        "capacity": capacity,
        "rates": {k: round(v, 1) for k, v in rates.items()},
        "goals": GOALS,
        "intervals": rows,
        "summary": summarise(rows, warmup_s),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "soak.json").write_text(json.dumps(res, indent=2) + "\n")
    plotted = plot(rows, warmup_s, args.out_dir / "soak.png")
    (args.out_dir / "soak.md").write_text(markdown(res))
    print(json.dumps(res["summary"], indent=2))
    print(f"written: {args.out_dir}/soak.json, soak.md" + (", soak.png" if plotted else ""))
    sys.exit(0 if all(res["summary"]["met"].values()) else 1)


if __name__ == "__main__":
    main()
