"""Dynamic batching: the Batcher tested directly with a fake run function (deterministic), the
core's results alone vs in a batch, admission control, and the same over a real uvicorn."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest
from service_helpers import batch_rows

from service.batching import Batcher, BatcherStopped, JobResult
from service.core import InferenceCore, SeriesState
from service.errors import Overloaded, ServiceError
from service.runtime import Runtime

L, H, F = 2, 3, 1
BAD = -999.0  # a row holding this value makes the fake run fail
GUARD_S = 20.0  # generous bound so a broken batcher fails the test instead of hanging it


class FakeRun:
    """Stands in for Runtime.run: y is the running sum of x plus h0's first unit; h_n adds the
    row's valid sum to h0. Records (rows, padded T) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, x, h0, lens, want_seq):
        T, B, _ = x.shape
        self.calls.append((B, T))
        if (x == BAD).any():
            raise ValueError("bad row in batch")
        y = np.cumsum(x, axis=0) + h0[0, :, :1][None]  # (T, B, 1)
        total = np.array([x[: lens[b], b].sum() for b in range(B)], np.float32)
        h_n = h0 + total[None, :, None]
        h_seq = (
            np.stack([h0 + np.cumsum(x, 0)[t][None, :, :1] for t in range(T)]) if want_seq else None
        )
        return y.astype(np.float32), h_n.astype(np.float32), h_seq

    @staticmethod
    def expected(x: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.cumsum(x, axis=0) + h[0, :1], h + x.sum()


def job(value: float, T: int = 2, h: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    return np.full((T, F), value, np.float32), np.full((L, H), h, np.float32)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD_S))


async def started(fake: FakeRun, max_rows: int, max_wait_s: float, **kw) -> Batcher:
    b = Batcher(fake, max_rows, max_wait_s, **kw)
    b.start()
    return b


class PermitRun(FakeRun):
    """A run that starts only once the test releases a permit on `gate`, one per run."""

    def __init__(self, gate: threading.Semaphore) -> None:
        super().__init__()
        self.gate = gate

    def __call__(self, x, h0, lens, want_seq):
        assert self.gate.acquire(timeout=GUARD_S)
        return super().__call__(x, h0, lens, want_seq)


# ---- the Batcher, deterministically -----------------------------------------------------------
def test_batch_is_closed_by_size_without_waiting():
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=4, max_wait_s=60.0)  # waiting would trip GUARD_S
        futures = [b.submit(*job(i)) for i in range(8)]
        results = await asyncio.gather(*futures)
        await b.stop()
        return results

    results = run(main())
    assert fake.calls == [(4, 2), (4, 2)]
    for i, r in enumerate(results):
        y, h = FakeRun.expected(*job(i))
        np.testing.assert_array_equal(r.y, y)
        np.testing.assert_array_equal(r.h, h)


def test_batch_is_closed_by_wait_when_not_full():
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=100, max_wait_s=0.02)
        results = await asyncio.gather(*[b.submit(*job(i)) for i in range(3)])
        await b.stop()
        return results

    results = run(main())
    assert fake.calls == [(3, 2)]
    assert [float(r.y[-1, 0]) for r in results] == [0.0, 2.0, 4.0]


def test_batch_waits_for_stragglers_while_idle():
    """A job arriving within max_wait of the first joins its batch."""
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=2, max_wait_s=60.0)
        first = b.submit(*job(1.0))
        await asyncio.sleep(0.05)  # the batcher is now waiting for more rows
        assert not first.done()
        second = b.submit(*job(2.0))
        await asyncio.gather(first, second)
        await b.stop()

    run(main())
    assert fake.calls == [(2, 2)]


def test_rows_queued_during_a_run_run_next_shared_evenly():
    """Busy, each run takes half of what the previous run and the queue hold together: the
    5 rows behind a 1-row run go as 3 then 2, not as one run of 5 (then one of 1, ...)."""
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=64, max_wait_s=0.0)
        first = b.submit(*job(1.0))
        await asyncio.sleep(0)  # the loop takes the first job alone (no wait)
        later = [b.submit(*job(float(i))) for i in range(5)]
        results = await asyncio.gather(first, *later)
        await b.stop()
        return b, results

    b, results = run(main())
    assert [rows for rows, _ in fake.calls] == [1, 3, 2]
    assert (b.runs, b.rows) == (3, 6)
    for i, r in enumerate(results[1:]):  # each row still gets its own answer
        np.testing.assert_allclose(r.y, FakeRun.expected(*job(float(i)))[0])


def test_a_large_queue_behind_a_small_run_splits_into_even_runs():
    gate = threading.Semaphore(0)
    fake = PermitRun(gate)

    async def main():
        b = await started(fake, max_rows=64, max_wait_s=0.0)
        first = [b.submit(*job(1.0)) for _ in range(2)]
        await asyncio.sleep(0.02)  # the loop took both rows; their run waits on the gate
        later = [b.submit(*job(2.0)) for _ in range(62)]
        b._cycle_s = 1.0  # one second a run, to read expected_wait_s in runs
        wait = b.expected_wait_s(1)
        for _ in range(3):
            gate.release()
        await asyncio.gather(*first, *later)
        await b.stop()
        return wait

    # a new row waits for the run in flight, then the run of 33 ahead of it: it is in the third
    assert run(main()) == 2.0
    # (2 + 62) / 2 = 32, then 30 left: all of them (under half of 32 + 30 = 31 rounded up)
    assert [rows for rows, _ in fake.calls] == [2, 32, 30]


def test_an_idle_batcher_takes_every_queued_row_up_to_max_rows():
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=4, max_wait_s=0.0)
        futures = [b.submit(*job(float(i))) for i in range(6)]  # all queued before it looks
        await asyncio.gather(*futures)
        await b.stop()

    run(main())
    assert [rows for rows, _ in fake.calls] == [4, 2]


def test_rows_of_different_lengths_get_their_own_slices():
    fake = FakeRun()
    jobs = [job(1.0, T=1, h=0.5), job(2.0, T=10), job(3.0, T=2, h=-1.0), job(4.0, T=9)]

    async def main():
        b = await started(fake, max_rows=8, max_wait_s=0.0)
        results = await asyncio.gather(*[b.submit(x, h) for x, h in jobs])
        await b.stop()
        return results

    results = run(main())
    # one batch, split in two length groups to bound padding: lengths {1, 2} and {9, 10}
    assert sorted(fake.calls) == [(2, 2), (2, 10)]
    for (x, h), r in zip(jobs, results, strict=True):
        y, h_n = FakeRun.expected(x, h)
        assert r.y.shape == (x.shape[0], 1)
        np.testing.assert_allclose(r.y, y)
        np.testing.assert_allclose(r.h, h_n)
        assert r.h_seq is None


def test_sequence_only_for_rows_that_ask():
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=8, max_wait_s=0.0)
        a = b.submit(*job(1.0, T=3), want_seq=True)
        c = b.submit(*job(2.0, T=3), want_seq=False)
        results = await asyncio.gather(a, c)
        await b.stop()
        return results

    with_seq, without = run(main())
    assert with_seq.h_seq is not None and with_seq.h_seq.shape == (3, L, H)
    assert without.h_seq is None


def test_run_error_fails_exactly_its_batch():
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=2, max_wait_s=0.01)
        futures = [b.submit(*job(v)) for v in (BAD, 1.0, 2.0, 3.0)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        # the batcher survives: a later job is served
        later = await b.submit(*job(5.0))
        await b.stop()
        return results, later

    results, later = run(main())
    assert fake.calls[:2] == [(2, 2), (2, 2)]
    assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)
    assert str(results[0]) == "bad row in batch"
    assert isinstance(results[2], JobResult) and float(results[2].y[-1, 0]) == 4.0
    assert isinstance(results[3], JobResult) and float(results[3].y[-1, 0]) == 6.0
    assert float(later.y[-1, 0]) == 10.0


def test_batcher_crash_fails_every_pending_future():
    """A bug in the loop itself (here: the observer raises) must not leave callers waiting."""
    fake = FakeRun()

    def observer(stats):
        raise RuntimeError("observer bug")

    async def main():
        b = await started(fake, max_rows=1, max_wait_s=0.0, observer=observer)
        futures = [b.submit(*job(float(i))) for i in range(4)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        after = b.submit(*job(9.0))
        after_exc = await asyncio.gather(after, return_exceptions=True)
        await b.stop()
        return results, after_exc[0]

    results, after = run(main())
    assert fake.calls == [(1, 2)]  # only the first batch ran
    assert isinstance(results[0], JobResult)  # resolved before the observer raised
    assert all(isinstance(r, BatcherStopped) for r in results[1:]), results
    assert "observer bug" in str(results[1])
    assert isinstance(after, BatcherStopped)


def test_cancelled_job_is_dropped_before_running():
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=8, max_wait_s=0.0)
        futures = [b.submit(*job(float(i))) for i in range(3)]
        futures[1].cancel()
        results = await asyncio.gather(futures[0], futures[2])
        await b.stop()
        return results

    results = run(main())
    assert fake.calls == [(2, 2)]
    assert [float(r.y[-1, 0]) for r in results] == [0.0, 4.0]


def test_stop_fails_queued_jobs_and_refuses_new_ones():
    fake = FakeRun()

    async def main():
        b = Batcher(fake, 8, 0.0)  # never started: jobs stay queued
        queued = b.submit(*job(1.0))
        await b.stop()
        late = b.submit(*job(2.0))
        return await asyncio.gather(queued, late, return_exceptions=True)

    queued, late = run(main())
    assert isinstance(queued, BatcherStopped) and isinstance(late, BatcherStopped)
    assert fake.calls == []


class GatedRun(FakeRun):
    """FakeRun whose first call runs `during` on the event loop and waits for it: whatever
    `during` submits is queued while that run is in the worker, deterministically."""

    def __init__(self, loop: asyncio.AbstractEventLoop, during) -> None:
        super().__init__()
        self.loop, self.during = loop, during

    def __call__(self, x, h0, lens, want_seq):
        if not self.calls:
            done = threading.Event()
            self.loop.call_soon_threadsafe(lambda: (self.during(), done.set()))
            assert done.wait(GUARD_S)
        return super().__call__(x, h0, lens, want_seq)


def rollouts(chunk: int, horizons: list[int]) -> tuple[list[JobResult], list[tuple[int, int]]]:
    """Rows 0.01 * (i + 1) with a rollout of horizons[i] steps each, all submitted at once."""
    fake = FakeRun()

    async def main():
        b = await started(fake, max_rows=16, max_wait_s=0.0, rollout_chunk=chunk)
        futures = [
            b.submit(*job(0.01 * (i + 1), T=2 + i % 3, h=0.001 * i), steps=n)
            for i, n in enumerate(horizons)
        ]
        results = await asyncio.gather(*futures)
        await b.stop()
        return results

    return run(main()), fake.calls


def test_chunked_rollouts_equal_unchunked_ones_exactly():
    horizons = [0, 1, 5, 31, 32, 33, 70]
    whole, whole_calls = rollouts(10_000, horizons)
    for chunk in (1, 4, 32):
        chunked, calls = rollouts(chunk, horizons)
        assert max(T for _, T in calls) == 4  # the histories ran once, never again
        for a, b in zip(whole, chunked, strict=True):
            np.testing.assert_array_equal(a.y, b.y)
            np.testing.assert_array_equal(a.h, b.h)
            if a.rollout is None:
                assert b.rollout is None
            else:
                assert b.rollout is not None and b.rollout.shape == a.rollout.shape
                np.testing.assert_array_equal(a.rollout, b.rollout)
        # a rollout step of each row runs once in either case: only the grouping differs
        rolled = sum(B for B, T in calls if T == 1)
        assert rolled == sum(B for B, T in whole_calls if T == 1) == sum(horizons)
    assert [r.rollout.shape[0] if r.rollout is not None else 0 for r in whole] == [
        0 if n == 0 else n + 1 for n in horizons
    ]


def test_row_submitted_during_a_long_rollout_runs_before_it_finishes():
    """A 64-step rollout in chunks of 8: a plain row and a short rollout submitted while its
    first chunk runs are answered long before it."""
    finished: list[str] = []

    async def main():
        b: Batcher | None = None
        late: list[asyncio.Future] = []

        def submit_late():
            assert b is not None
            for name, steps in (("plain", 0), ("short", 3)):
                f = b.submit(*job(0.5, T=2), steps=steps)
                f.add_done_callback(lambda _, n=name: finished.append(n))
                late.append(f)

        fake = GatedRun(asyncio.get_running_loop(), submit_late)
        b = await started(fake, max_rows=8, max_wait_s=0.0, rollout_chunk=8)
        long = b.submit(*job(0.001, T=3), steps=64)
        long.add_done_callback(lambda _: finished.append("long"))
        long_result = await long
        late_results = await asyncio.gather(*late)
        await b.stop()
        return long_result, late_results, fake.calls

    long_result, (plain, short), calls = run(main())
    assert finished == ["plain", "short", "long"]
    # the late rows ran in the second worker call: after the first chunk, before the second
    first_chunk = 1 + 8  # the long row's history, then 8 rollout steps
    assert calls[:first_chunk] == [(1, 3)] + [(1, 1)] * 8
    # the next run takes half of the last run (1 row) and the queue (3) together: the two
    # late rows, in arrival order, ahead of the long row's continuation
    assert calls[first_chunk] == (2, 2)  # both late rows' histories together
    assert calls[first_chunk + 1 : first_chunk + 4] == [(1, 1)] * 3  # the short rollout
    assert calls[first_chunk + 4 :] == [(1, 1)] * (64 - 8)  # then the long row, alone
    assert long_result.rollout is not None and long_result.rollout.shape == (65, 1)
    assert plain.rollout is None
    assert short.rollout is not None and short.rollout.shape == (4, 1)
    # numbers as if each row had run alone
    y, h = FakeRun.expected(*job(0.5, T=2))
    np.testing.assert_array_equal(plain.y, y)
    np.testing.assert_array_equal(plain.h, h)


# ---- the core on the real runtime ---------------------------------------------------------------
FORECASTS = [  # (series, horizon): different lengths and horizons
    ([1.0, 2.0, 3.0, 2.0, 1.0], 3),
    ([10.0, 12.0], 7),
    ([0.5], 1),
    ([float(np.sin(i / 3)) for i in range(40)], 5),
    ([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0], 12),
    ([-1.0, -2.0, -1.5], 2),
]
HIDDEN = [  # x lengths 1..9
    [[float(np.cos(i + k))] for i in range(n)] for k, n in enumerate((1, 4, 9, 2, 7))
]


async def core_for(settings) -> InferenceCore:
    core = InferenceCore(Runtime(settings), settings)
    await core.start()
    return core


def test_core_results_identical_alone_and_batched(make_settings):
    settings = make_settings(max_wait_us=2000)

    async def main():
        core = await core_for(settings)
        f_args = [(np.array(s, np.float32)[:, None], h) for s, h in FORECASTS]
        h_args = [np.array(x, np.float32) for x in HIDDEN]
        alone_f = [await core.forecast([x], h, [0.1, 0.9]) for x, h in f_args]
        alone_h = [await core.hidden([x], [core.zero_state()], True) for x in h_args]
        runs0, rows0 = core.batcher.runs, core.batcher.rows
        together = await asyncio.gather(
            *[core.forecast([x], h, [0.1, 0.9]) for x, h in f_args],
            *[core.hidden([x], [core.zero_state()], True) for x in h_args],
        )
        mean_rows = (core.batcher.rows - rows0) / (core.batcher.runs - runs0)
        await core.stop()
        return alone_f, alone_h, together, mean_rows

    alone_f, alone_h, together, mean_rows = run(main())
    batched_f, batched_h = together[: len(FORECASTS)], together[len(FORECASTS) :]
    for (a,), (b,) in zip(alone_f, batched_f, strict=True):
        assert a.mean.shape == b.mean.shape
        assert np.max(np.abs(a.mean - b.mean)) <= 1e-6
        for q in (0.1, 0.9):
            assert np.max(np.abs(a.quantiles[q] - b.quantiles[q])) <= 1e-6
        assert np.max(np.abs(a.state.h - b.state.h)) <= 1e-6
    for (a,), (b,) in zip(alone_h, batched_h, strict=True):
        assert np.max(np.abs(a.h - b.h)) <= 1e-6
        assert np.max(np.abs(a.y - b.y)) <= 1e-6
        assert np.max(np.abs(a.h_seq - b.h_seq)) <= 1e-6
    assert mean_rows > 1.0  # rows of concurrent requests really shared runs


def test_many_series_of_one_request_advance_together(make_settings, tiny_reference):
    """A forecast is one batcher job per series: histories in length groups, then every
    series' rollout steps share one onnxruntime run per step (rows leave when done)."""
    settings = make_settings()
    calls: list[tuple[int, int]] = []

    async def main():
        core = await core_for(settings)
        real = core.batcher._run

        def counting(x, h0, lens, want_seq):
            calls.append((x.shape[1], x.shape[0]))  # (rows, padded T)
            return real(x, h0, lens, want_seq)

        core.batcher._run = counting
        series = [np.array(s, np.float32)[:, None] for s, _ in FORECASTS]
        out = await core.forecast(series, 4)
        runs = core.batcher.runs
        await core.stop()
        return out, runs

    out, runs = run(main())
    assert runs == 1  # one batch, one event-loop round trip
    # lengths 1, 2 | 3, 5 | 8 | 40 (padding bounded at 2x), then 3 steps of all 6 rows
    assert calls == [(2, 2), (2, 5), (1, 8), (1, 40), (6, 1), (6, 1), (6, 1)]
    for (s, _), f in zip(FORECASTS, out, strict=True):
        ref = tiny_reference.forecast(s, 4)["mean"]
        assert np.max(np.abs(f.mean - ref)) <= 1e-5


def test_rollouts_of_different_horizons_share_steps(make_settings):
    """Rows leave the rolling batch once their own horizon is reached."""
    settings = make_settings()
    calls: list[int] = []

    async def main():
        core = await core_for(settings)
        real = core.batcher._run

        def counting(x, h0, lens, want_seq):
            calls.append(x.shape[1])
            return real(x, h0, lens, want_seq)

        core.batcher._run = counting
        x = np.array([1.0, 2.0, 3.0], np.float32)[:, None]
        futures = [core.batcher.submit(x, core.zero_state(), steps=n) for n in (0, 1, 3)]
        results = await asyncio.gather(*futures)
        await core.stop()
        return results

    results = run(main())
    assert calls == [3, 2, 1, 1]  # history of 3 rows, then 2, 1, 1 rolling rows
    assert results[0].rollout is None
    assert [r.rollout.shape for r in results[1:]] == [(2, 1), (4, 1)]
    # the same row with a shorter horizon is a prefix of the longer one
    assert np.max(np.abs(results[1].rollout - results[2].rollout[:2])) <= 1e-6


def test_admission_refuses_at_once_over_the_row_limit(make_settings):
    settings = make_settings(max_queue_rows=3)

    async def main():
        core = await core_for(settings)
        x = np.array([[1.0], [2.0]], np.float32)
        outcomes = []
        try:
            await core.forecast([x] * 4, 2)  # 4 rows > 3 on its own
        except Overloaded as e:
            outcomes.append(("too-big", e.status, e.headers.get("Retry-After")))
        with core.admit(2):  # 2 rows in flight: 1 more fits, 2 do not
            ok = await core.forecast([x], 2)
            outcomes.append(("fits", len(ok)))
            try:
                await core.hidden([x, x], [core.zero_state()] * 2, False)
            except Overloaded as e:
                outcomes.append(("full", e.status, e.headers.get("Retry-After")))
        assert core.inflight_rows == 0
        again = await core.forecast([x] * 3, 2)  # load dropped: served again
        outcomes.append(("recovered", len(again)))
        await core.stop()
        return outcomes

    assert run(main()) == [
        ("too-big", 503, "1"),
        ("fits", 1),
        ("full", 503, "1"),
        ("recovered", 3),
    ]


def test_state_continuation_in_core_matches_longer_history(make_settings):
    settings = make_settings()

    async def main():
        core = await core_for(settings)
        a = np.array([1.0, 2.0, 1.5], np.float32)[:, None]
        b = np.array([0.5, 3.0], np.float32)[:, None]
        (first,) = await core.forecast([a], 1)
        (cont,) = await core.forecast([b], 3, states=[first.state])
        loc, scale = first.state.loc, first.state.scale
        zero = SeriesState(core.zero_state(), loc, scale)
        (whole,) = await core.forecast([np.concatenate([a, b])], 3, states=[zero])
        await core.stop()
        return cont, whole

    cont, whole = run(main())
    assert np.max(np.abs(cont.mean - whole.mean)) <= 1e-6
    assert np.max(np.abs(cont.state.h - whole.state.h)) <= 1e-6


# ---- over a real uvicorn ------------------------------------------------------------------------
def _requests():
    out = [
        ("/v1/forecast", {"series": [s], "horizon": h, "quantiles": [0.1, 0.9]})
        for s, h in FORECASTS
    ]
    out.append(("/v1/forecast", {"series": [s for s, _ in FORECASTS], "horizon": 4}))
    out += [("/v1/hidden", {"inputs": [{"x": x}], "return_sequence": True}) for x in HIDDEN]
    return out


def _numbers(body) -> np.ndarray:
    """Every number of a response body, in order (model/version/ids aside)."""
    flat: list[float] = []

    def walk(v):
        if isinstance(v, dict):
            for k in sorted(v):
                walk(v[k])
        elif isinstance(v, list):
            for e in v:
                walk(e)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat.append(float(v))

    walk(body)
    return np.array(flat)


def test_concurrent_http_requests_match_sequential_ones(serve_process):
    server = serve_process(max_wait_us=3000)
    requests = _requests()

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as c:
            alone = []
            for path, body in requests:
                r = await c.post(path, json=body)
                assert r.status_code == 200, r.text
                alone.append(r.json())
            before = batch_rows((await c.get("/metrics")).text)
            rounds = []
            for _ in range(3):
                rs = await asyncio.gather(*[c.post(p, json=b) for p, b in requests])
                assert all(r.status_code == 200 for r in rs)
                rounds.append([r.json() for r in rs])
            after = batch_rows((await c.get("/metrics")).text)
            return alone, rounds, before, after

    alone, rounds, before, after = run(main())
    # the equality above would hold without batching too: show the rounds really shared runs
    rows, runs = after[0] - before[0], after[1] - before[1]
    assert runs > 0 and rows / runs > 1.0
    for batch in rounds:
        for a, b in zip(alone, batch, strict=True):
            na, nb = _numbers(a), _numbers(b)
            assert na.shape == nb.shape and na.size > 0
            assert np.max(np.abs(na - nb)) <= 1e-6


@pytest.mark.parametrize("path", ["/v1/forecast", "/v1/hidden"])
def test_full_queue_answers_503_at_once_then_recovers(serve_process, path):
    server = serve_process(max_queue_rows=2)
    if path == "/v1/forecast":
        body = {"series": [[1.0, 2.0, 3.0]], "horizon": 300}  # holds its row for 300 runs
    else:
        body = {"inputs": [{"x": [[0.1]] * 3000}]}

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as c:
            expected = (await c.post(path, json=body)).json()
            rs = await asyncio.gather(*[c.post(path, json=body) for _ in range(32)])
            after = await c.post(path, json=body)
            return expected, rs, after

    expected, rs, after = run(main())
    refused = [r for r in rs if r.status_code == 503]
    served = [r for r in rs if r.status_code == 200]
    assert len(refused) + len(served) == 32
    assert refused, "32 concurrent requests never filled a 2-row queue"
    assert served, "no request was served"
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
    for r in served:
        assert r.json() == expected
    assert after.status_code == 200 and after.json() == expected


def test_stop_during_a_run_lets_it_finish_and_resolves_its_jobs():
    """The run's jobs are off the queue when stop() cancels the loop: they get their results."""
    entered, gate = threading.Event(), threading.Event()

    class SlowRun(FakeRun):
        def __call__(self, x, h0, lens, want_seq):
            entered.set()
            assert gate.wait(GUARD_S)
            return super().__call__(x, h0, lens, want_seq)

    slow = SlowRun()

    async def main():
        b = await started(slow, max_rows=8, max_wait_s=0.0)
        running = [b.submit(*job(1.0)), b.submit(*job(2.0))]
        assert await asyncio.to_thread(entered.wait, GUARD_S)
        queued = b.submit(*job(3.0))  # arrives while the run is in flight
        stopping = asyncio.create_task(b.stop())
        await asyncio.sleep(0.05)
        still_running = not stopping.done()
        gate.set()
        await stopping
        return still_running, await asyncio.gather(*running, queued, return_exceptions=True)

    still_running, (a, b_, queued) = run(main())
    assert still_running  # stop waited for the run
    assert isinstance(a, JobResult) and float(a.y[-1, 0]) == 2.0
    assert isinstance(b_, JobResult) and float(b_.y[-1, 0]) == 4.0
    assert isinstance(queued, BatcherStopped)
    assert slow.calls == [(2, 2)]


def test_batcher_stopped_is_a_503_service_error():
    async def main():
        b = Batcher(FakeRun(), 8, 0.0)
        await b.stop()
        return await asyncio.gather(b.submit(*job(1.0)), return_exceptions=True)

    (late,) = run(main())
    assert isinstance(late, ServiceError)
    assert (late.status, late.code, late.headers) == (503, "not_ready", {"Retry-After": "1"})


def test_batcher_crash_makes_the_server_not_ready_and_requests_503(make_client):
    c = make_client()
    batcher = c.app.state.service.core.batcher

    def observer(stats):
        raise RuntimeError("observer bug")

    batcher._observer = observer  # a bug in the loop itself: it dies after this batch
    body = {"series": [[1.0, 2.0, 3.0]], "horizon": 2}
    assert c.post("/v1/forecast", json=body).status_code == 200  # resolved before the bug
    r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and "observer bug" in r.json()["reason"]
    assert c.get("/v2/health/ready").status_code == 503
    r = c.post("/v1/forecast", json=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "not_ready"
    assert "batcher crashed" in r.json()["error"]["message"]


# ---- shedding by deadline ---------------------------------------------------------------------
def test_expected_wait_follows_the_queue_at_the_busy_pace():
    gate = threading.Semaphore(0)

    async def main():
        b = await started(PermitRun(gate), max_rows=2, max_wait_s=0.0)
        idle = b.expected_wait_s()
        futures = [b.submit(*job(float(i))) for i in range(12)]
        for _ in range(3):  # three runs back to back, each released after 20 ms
            await asyncio.sleep(0.02)
            gate.release()
        while b.runs < 3:
            await asyncio.sleep(0.005)
        cycle = b._cycle_s
        queued = b.queued
        in_flight = b._inflight is not None
        wait = b.expected_wait_s(1)
        for _ in range(12):
            gate.release()
        await asyncio.gather(*futures)
        await b.stop()
        return idle, cycle, queued, in_flight, wait

    idle, cycle, queued, in_flight, wait = run(main())
    assert idle == 0.0  # an idle batcher: a new row runs at once
    assert cycle > 0.015  # runs started about 20 ms apart
    # the run in flight, then one run per 2 queued rows ahead
    assert wait == pytest.approx(((1 if in_flight else 0) + queued // 2) * cycle)
    assert queued >= 2 and wait >= cycle


def test_admission_refuses_at_once_past_the_queue_deadline(make_settings):
    rt = Runtime(make_settings())
    core = InferenceCore(rt, make_settings(queue_deadline_ms=50))

    async def main():
        await core.start()
        core.batcher._cycle_s = 0.04  # runs 40 ms apart ...
        for _ in range(5):  # ... and 5 rows queued: 2 full runs of 2 rows ahead of a new row
            core.batcher._queue.append(object())  # type: ignore[arg-type]
        core.batcher.max_rows = 2
        try:
            with pytest.raises(Overloaded) as refused, core.admit(1):
                pass
            core.batcher._queue.clear()
            with core.admit(1):  # the queue drained: admitted
                admitted = True
        finally:
            await core.stop()
        return refused.value, admitted

    err, admitted = run(main())
    assert admitted
    assert err.status == 503 and err.headers == {"Retry-After": "1"}
    assert "80 ms" in err.message and "50 ms deadline" in err.message
