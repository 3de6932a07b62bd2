"""REST section: /v1/forecast on the service vs the floor and naive apps (bench/apps.py), each
a real uvicorn process on 127.0.0.1, at 1, 16 and 64 closed-loop clients; plus the service's
start-to-ready time and resident memory."""

from __future__ import annotations

import json
import math
import statistics

from bench import procs, wrk
from bench.load import run_load
from bench.results import table

PATH = "/v1/forecast"
GOALS = {
    "vs_floor_rps": 0.8,
    "vs_naive_rps": 3.0,
    "p99_vs_floor": 1.5,
    "ready_s": 1.5,
    "rss_mb": 150,
    "cpu_vs_previous": 1.5,  # with --previous-model: server CPU per request, new / previous
}


def request_body(length: int, horizon: int) -> bytes:
    series = [round(10 + 3 * math.sin(i / 4) + 0.1 * (i % 5), 3) for i in range(length)]
    return json.dumps({"series": [series], "horizon": horizon, "quantiles": [0.1, 0.9]}).encode()


def measure(server: procs.Server, body: bytes, levels, seconds: float, batches: bool) -> list[dict]:
    rows = []
    for clients in levels:
        before = server.batch_counters() if batches else None
        cpu0, loop0 = server.cpu_s(), server.loop_cpu_s()
        r = run_load(server.port, PATH, body, clients, seconds)
        cpu = server.cpu_s() - cpu0  # warm-up included: divided by every request answered
        loop = server.loop_cpu_s() - loop0
        mean_batch = procs.mean_rows(before, server.batch_counters()) if before else None
        answered = max(1, sum(r.statuses.values()))
        rows.append(
            {
                "clients": clients,
                "rps": round(r.rps, 1),
                "p50_ms": round(r.pct_ms(50), 2),
                "p99_ms": round(r.pct_ms(99), 2),
                "server_cpu_ms_per_req": round(1000 * cpu / answered, 3),
                # of it, the main thread's: the event loop (the service's model runs elsewhere)
                "loop_cpu_ms_per_req": round(1000 * loop / answered, 3),
                "ok": r.ok,
                "errors": r.errors,
                "statuses": {str(k): v for k, v in r.statuses.items()},
                "mean_batch_rows": round(mean_batch, 2) if mean_batch is not None else None,
            }
        )
        print(f"  {server.name:8s} {clients:3d} clients: {rows[-1]}", flush=True)
        if wrk.available():  # the same level again, driven by wrk
            cpu0 = server.cpu_s()
            w = wrk.run_wrk(server.port, PATH, body, clients, seconds)
            cpu = server.cpu_s() - cpu0
            rows[-1]["wrk"] = {
                "rps": round(w.rps, 1),
                "p50_ms": round(w.p50_ms, 2),
                "p99_ms": round(w.p99_ms, 2),
                "server_cpu_ms_per_req": round(1000 * cpu / max(1, w.requests), 3),
                "non_2xx": w.non_2xx + w.socket_errors,
            }
            print(f"  {server.name:8s} {clients:3d} clients (wrk): {rows[-1]['wrk']}", flush=True)
    return rows


def compare_cpu(
    model,
    previous,
    body: bytes,
    levels,
    seconds: float,
    rounds: int = 2,
    previous_tree=None,
    label: str = "previous model",
) -> dict:
    """Server CPU per request (and req/s and p99, means over the rounds) of the service on
    `model` against the same service on `previous` (another artifact), or, with
    `previous_tree`, against the code of another revision serving `previous`: both up at once,
    measured in turn at every level, `rounds` times each, so the machine's swings hit both
    sides of the ratio alike."""
    servers = {}
    try:
        for name, path, tree in (("service", model, None), ("previous", previous, previous_tree)):
            port = procs.free_port()
            cmd = procs.serve_cmd(path, port)
            servers[name] = procs.start(name, cmd, port, "/readyz", tree=tree)
        cpu: dict[str, dict[int, list[float]]] = {n: {c: [] for c in levels} for n in servers}
        rps: dict[str, dict[int, list[float]]] = {n: {c: [] for c in levels} for n in servers}
        p99: dict[str, dict[int, list[float]]] = {n: {c: [] for c in levels} for n in servers}
        for c in levels:
            for _ in range(rounds):
                for name, server in servers.items():
                    cpu0 = server.cpu_s()
                    r = run_load(server.port, PATH, body, c, seconds)
                    used = server.cpu_s() - cpu0
                    cpu[name][c].append(1000 * used / max(1, sum(r.statuses.values())))
                    rps[name][c].append(r.rps)
                    p99[name][c].append(r.pct_ms(99))
    finally:
        for server in servers.values():
            server.stop()
    out = {}
    for c in levels:
        new, old = statistics.mean(cpu["service"][c]), statistics.mean(cpu["previous"][c])
        out[str(c)] = {
            "service_cpu_ms_per_req": round(new, 3),
            "previous_cpu_ms_per_req": round(old, 3),
            "ratio": round(new / old, 2),
            "service_rps": round(statistics.mean(rps["service"][c]), 1),
            "previous_rps": round(statistics.mean(rps["previous"][c]), 1),
            "service_p99_ms": round(statistics.mean(p99["service"][c]), 2),
            "previous_p99_ms": round(statistics.mean(p99["previous"][c]), 2),
        }
        r = out[str(c)]
        print(f"  {c:3d} clients: CPU ms/req service {new:.3f}, {label} {old:.3f}; req/s "
              f"{r['service_rps']} / {r['previous_rps']}; p99 ms "
              f"{r['service_p99_ms']} / {r['previous_p99_ms']}")  # fmt: skip
    return out


def run(args) -> tuple[dict, str]:
    model, model_desc = procs.artifact(args.model)
    levels = args.levels
    body = request_body(args.length, args.horizon)
    print(f"REST bench on {model_desc}: {PATH}, 1 series of {args.length}, horizon {args.horizon}")

    # start-to-ready of the real command, a few times (the first pays cold file caches)
    ready = []
    for _ in range(args.starts):
        port = procs.free_port()
        s = procs.start("service", procs.serve_cmd(model, port), port, "/readyz")
        ready.append(s.ready_s)
        s.stop()
    print(f"  service start to ready: {[round(x, 3) for x in ready]} s")

    results: dict = {"model": model_desc, "request": {"path": PATH, "series_length": args.length,
                     "horizon": args.horizon, "quantiles": [0.1, 0.9]},
                     "seconds_per_level": args.seconds, "levels": {}}  # fmt: skip
    memory = {}
    for name in ("service", "floor", "naive"):
        port = procs.free_port()
        if name == "service":
            server = procs.start(name, procs.serve_cmd(model, port), port, "/readyz")
        else:
            server = procs.start(name, procs.app_cmd(name, model, port), port, "/readyz")
        try:
            results["levels"][name] = measure(server, body, levels, args.seconds, name == "service")
            memory[name] = server.memory_mb()
        finally:
            server.stop()
    results["memory_mb"] = {k: {m: round(v, 1) for m, v in d.items()} for k, d in memory.items()}
    results["start_to_ready_s"] = {
        "runs": [round(x, 3) for x in ready],
        "median": round(statistics.median(ready), 3),
    }

    by = {n: {r["clients"]: r for r in rows} for n, rows in results["levels"].items()}
    ratios = {}
    for c in levels:
        s, f, n = by["service"][c], by["floor"][c], by["naive"][c]
        ratios[c] = {
            "vs_floor_rps": round(s["rps"] / f["rps"], 2),
            "vs_naive_rps": round(s["rps"] / n["rps"], 2),
            "p99_vs_floor": round(s["p99_ms"] / f["p99_ms"], 2),
        }
    results["ratios"] = {str(c): r for c, r in ratios.items()}
    top = max(levels)
    with_wrk = "wrk" in by["service"][top]
    if with_wrk:
        for c in levels:
            s, f = by["service"][c]["wrk"], by["floor"][c]["wrk"]
            ratios[c]["wrk_vs_floor_rps"] = round(s["rps"] / f["rps"], 2)
            ratios[c]["wrk_p99_vs_floor"] = round(s["p99_ms"] / f["p99_ms"], 2)
    svc_rss = memory["service"]["VmRSS"]
    goals = {
        f"service >= {GOALS['vs_floor_rps']} x floor req/s at {top}": ratios[top]["vs_floor_rps"] >= GOALS["vs_floor_rps"],
        f"service >= {GOALS['vs_naive_rps']} x naive req/s at {top}": ratios[top]["vs_naive_rps"] >= GOALS["vs_naive_rps"],
        f"service p99 <= {GOALS['p99_vs_floor']} x floor p99 at {top}": ratios[top]["p99_vs_floor"] <= GOALS["p99_vs_floor"],
        f"start to ready <= {GOALS['ready_s']} s (median)": results["start_to_ready_s"]["median"] <= GOALS["ready_s"],
        f"service RSS <= {GOALS['rss_mb']} MB": svc_rss <= GOALS["rss_mb"],
    }  # fmt: skip
    if with_wrk:
        goals[f"service >= {GOALS['vs_floor_rps']} x floor req/s at {top} (wrk)"] = ratios[top]["wrk_vs_floor_rps"] >= GOALS["vs_floor_rps"]  # fmt: skip
        goals[f"service p99 <= {GOALS['p99_vs_floor']} x floor p99 at {top} (wrk)"] = ratios[top]["wrk_p99_vs_floor"] <= GOALS["p99_vs_floor"]  # fmt: skip
    if args.previous_model:
        print(f"  server CPU per request against the previous model {args.previous_model}:")
        cost = compare_cpu(model, args.previous_model, body, levels, args.seconds)
        results["vs_previous_model"] = {"previous": args.previous_model, "levels": cost}
        goals[f"service CPU/req <= {GOALS['cpu_vs_previous']} x previous model's at {top}"] = (
            cost[str(top)]["ratio"] <= GOALS["cpu_vs_previous"]
        )
    if args.previous_code:
        print(f"  server CPU per request against the code of {args.previous_code}:")
        tree = procs.checkout(args.previous_code)
        cost = compare_cpu(model, model, body, levels, args.seconds, previous_tree=tree,
                           label=f"code of {args.previous_code}")  # fmt: skip
        results["vs_previous_code"] = {"previous": args.previous_code, "levels": cost}
    results["goals"] = goals
    return results, markdown(results, levels, ratios)


def markdown(res: dict, levels, ratios) -> str:
    req = res["request"]
    rows = []
    for name in ("service", "floor", "naive"):
        for r in res["levels"][name]:
            mb = r["mean_batch_rows"]
            if name == "naive":
                mb = 1.0  # one onnxruntime run per step per request, by construction
            rows.append([name, r["clients"], r["rps"], r["p50_ms"], r["p99_ms"],
                         "-" if mb is None else mb, r["server_cpu_ms_per_req"],
                         r["loop_cpu_ms_per_req"], r["errors"]])  # fmt: skip
    header = ["app", "clients", "req/s", "p50 ms", "p99 ms", "mean batch rows",
              "server CPU ms/req", "of it event loop", "non-200"]  # fmt: skip
    perf = table(header, rows)
    top, floor = (max(res["levels"][n], key=lambda r: r["clients"]) for n in ("service", "floor"))
    off_loop = top["server_cpu_ms_per_req"] - top["loop_cpu_ms_per_req"]
    perf += (
        f"\n\nAt {top['clients']} clients the service spends "
        f"{top['server_cpu_ms_per_req']} ms of CPU per request: "
        f"{top['loop_cpu_ms_per_req']} ms on the event loop (HTTP, JSON, validation, "
        f"batching) and {off_loop:.3f} ms off it (onnxruntime runs and the scaling around "
        f"them). The floor, which runs no model, spends {floor['server_cpu_ms_per_req']} ms, "
        f"{floor['loop_cpu_ms_per_req']} ms of it on its event loop."
    )
    rat = table(
        ["clients", "service/floor req/s", "service/naive req/s", "service p99 / floor p99"],
        [[c, ratios[c]["vs_floor_rps"], ratios[c]["vs_naive_rps"], ratios[c]["p99_vs_floor"]]
         for c in levels],
    )  # fmt: skip
    if all("wrk" in r for r in res["levels"]["service"]):
        wrk_rows = [
            [name, r["clients"], r["wrk"]["rps"], r["wrk"]["p50_ms"], r["wrk"]["p99_ms"],
             r["wrk"]["server_cpu_ms_per_req"], r["wrk"]["non_2xx"]]
            for name in ("service", "floor", "naive") for r in res["levels"][name]
        ]  # fmt: skip
        wrk_table = table(
            ["app", "connections", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "non-2xx"],
            wrk_rows,
        )
        wrk_ratios = table(
            ["connections", "service/floor req/s", "service p99 / floor p99"],
            [[c, ratios[c]["wrk_vs_floor_rps"], ratios[c]["wrk_p99_vs_floor"]] for c in levels],
        )
        rat += (
            "\n\nThe same levels driven by wrk (one thread, the same body; "
            f"{res['seconds_per_level']:.0f} s each):\n\n{wrk_table}\n\n{wrk_ratios}"
        )
    mem = res["memory_mb"]
    other = table(
        ["figure", "value"],
        [
            ["service start to ready (median of runs)", f"{res['start_to_ready_s']['median']} s {res['start_to_ready_s']['runs']}"],
            ["service RSS after the load (peak)", f"{mem['service']['VmRSS']} MB ({mem['service']['VmHWM']} MB)"],
            ["floor RSS (peak)", f"{mem['floor']['VmRSS']} MB ({mem['floor']['VmHWM']} MB)"],
            ["naive RSS (peak)", f"{mem['naive']['VmRSS']} MB ({mem['naive']['VmHWM']} MB)"],
        ],
    )  # fmt: skip
    goals = table(
        ["goal", "met"], [[g, "yes" if ok else "**no**"] for g, ok in res["goals"].items()]
    )
    for key, what in (("vs_previous_model", "model"), ("vs_previous_code", "code")):
        if key not in res:
            continue
        prev = res[key]
        cost = table(
            ["clients", "service CPU ms/req", f"previous {what} CPU ms/req", "ratio",
             "service req/s", f"previous {what} req/s", "service p99 ms",
             f"previous {what} p99 ms"],
            [[c, r["service_cpu_ms_per_req"], r["previous_cpu_ms_per_req"], r["ratio"],
              r["service_rps"], r["previous_rps"], r["service_p99_ms"], r["previous_p99_ms"]]
             for c, r in prev["levels"].items()],
        )  # fmt: skip
        other += (
            f"\n\nThe same service on the previous {what} ({prev['previous']}), in turn:\n\n{cost}"
        )
    return (
        f"`POST {req['path']}`, one series of {req['series_length']} values, horizon "
        f"{req['horizon']}, quantiles 0.1 and 0.9; model: {res['model']}. Closed loop, "
        f"{res['seconds_per_level']} s per level after 0.5 s warm-up; client and servers share "
        f"the machine's cores.\n\n{perf}\n\n{rat}\n\n{other}\n\n{goals}\n"
    )


def add_arguments(p) -> None:
    p.add_argument("--length", type=int, default=48, help="values in the bench series")
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--starts", type=int, default=3, help="service starts timed")
    p.add_argument(
        "--previous-model",
        help="another artifact: also compare the service's CPU per request on it, side by side",
    )
    p.add_argument(
        "--previous-code",
        metavar="REV",
        help="a git revision: also compare the service's CPU per request, req/s and p99 with "
        "that revision's code serving the same model, side by side (before/after figures of a "
        "change)",
    )
