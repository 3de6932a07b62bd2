"""Dynamic batching of GRU jobs: many requests' rows, one onnxruntime run.

A job is one row: a sequence x (T, F) and its starting state h (L, H). Jobs from REST
requests, forecast rollouts, stream steps and OIP calls all land in one queue; the batcher
takes up to `max_rows` of them (closing a batch early only while the runtime is idle, after
`max_wait`), pads them to a common T with per-row `seq_lens`, runs once in a worker thread,
and resolves each job's future with its own slice. While a run is in flight new jobs pile up,
so batches grow with load by themselves (continuous batching); back to back, each run takes
half of the previous run and the queue together, which keeps runs even (see `_share`).

A forecast rollout advances at most `rollout_chunk` steps per worker call; a row with steps
left goes back in the queue as a continuation, so rows that arrived meanwhile share the next
runs instead of waiting behind the whole horizon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.errors import BatcherStopped

__all__ = ["Batcher", "BatchStats", "BatcherStopped", "JobResult"]

log = logging.getLogger("gru_serve.batching")

ROLLOUT_CHUNK = 32  # most rollout steps a row advances per worker call

# (x [T, B, F], h0 [L, B, H], lens [B], want_seq) -> (y [T, B, O], h_n [L, B, H], h_seq [T, L, B, H] | None)
RunFn = Callable[
    [np.ndarray, np.ndarray, np.ndarray, bool], tuple[np.ndarray, np.ndarray, np.ndarray | None]
]
# (x [T, B, F], slots [B], lens [B]) -> y [T, B, O]: rows whose state lives in a slot of the
# device buffer (service/device_state.py), read and written there by the run itself.
SlotRunFn = Callable[[np.ndarray, list[int], np.ndarray], np.ndarray]
_NO_STATE = np.zeros((0, 0), np.float32)  # a slot row's h: its state is in the buffer


class RowUnits(Protocol):
    """How rows in data units are brought into the model's units and back, a batch at a
    time, in the worker thread (the core implements it: service/core.py `Units`). Each call
    takes the rows' own unit objects (opaque here) and answers, per row, its result or the
    error that row alone fails with."""

    def scale(self, units: list[Any], xs: list[np.ndarray]) -> list[np.ndarray | Exception]: ...

    def unscale(self, units: list[Any], paths: list[np.ndarray]) -> list[Exception | None]: ...


@dataclass
class JobResult:
    y: np.ndarray  # (T, O): head output after each step
    h: np.ndarray  # (L, H): state after the last step (empty for a slot row: it stays there)
    h_seq: np.ndarray | None  # (T, L, H) when asked for
    # With `steps` > 0: (1 + steps, O), the prediction after x, then each prediction fed back
    # as the next input (a forecast rollout run inside the worker, one event-loop hop in all).
    rollout: np.ndarray | None = None


@dataclass
class _Job:
    x: np.ndarray
    h: np.ndarray
    want_seq: bool
    future: asyncio.Future
    steps: int = 0  # rollout steps still to do
    queued_at: float = field(default_factory=time.perf_counter)
    # Set on a rollout's continuation (x is its last prediction (1, O), h the state after the
    # row's last step): the original row's own result, and the rollout so far (1 + done, O).
    first: JobResult | None = None
    path: np.ndarray | None = None
    units: Any = None  # with a RowUnits: x arrives in data units, results leave in them
    slot: int | None = None  # the state lives in this slot of the device buffer


@dataclass
class BatchStats:
    """One run, handed to the observer (metrics) after it completes."""

    rows: int
    steps: int  # padded T of the run
    queue_wait_s: list[float]
    compute_s: float


class Batcher:
    def __init__(
        self,
        run: RunFn,
        max_rows: int,
        max_wait_s: float,
        observer: Callable[[BatchStats], None] | None = None,
        rollout_chunk: int = ROLLOUT_CHUNK,
        units: RowUnits | None = None,
        run_slots: SlotRunFn | None = None,
    ) -> None:
        if rollout_chunk < 1:
            raise ValueError(f"rollout_chunk must be at least 1, got {rollout_chunk}")
        self._run = run
        self.rollout_chunk = rollout_chunk
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._observer = observer
        self._units = units
        self._run_slots = run_slots
        self._queue: deque[_Job] = deque()
        # While the loop waits: resolved by the first row (queue empty) or, when gathering
        # stragglers, only once the batch is full (or by the max_wait timer). No wake-up per row.
        self._waiter: asyncio.Future | None = None
        self._until_full = False
        self._task: asyncio.Task | None = None
        # One worker thread: runs never overlap, so the event loop keeps the other core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-run")
        self._closed = False
        # The run in the worker thread, if any: its jobs are off the queue, so stop() must
        # see them resolved itself.
        self._inflight: asyncio.Future | None = None
        self.crashed: BaseException | None = None  # why the loop died, if it did
        # The pace of runs while busy (EWMA of start-to-start seconds): what a new row waits.
        self._cycle_s = 0.0
        self._last_start: float | None = None
        self.runs = 0
        self.rows = 0
        # Rows of the run in flight or just finished; 0 once the loop has gone idle (_share).
        self._last_rows = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def expected_wait_s(self, rows: int = 1) -> float:
        """How long `rows` more rows would wait before their first run starts, at the recent
        pace: the run in flight, then the runs that take the rows queued ahead of them (each
        its `_share`)."""
        runs = 1 if self._inflight is not None else 0
        ahead, last = len(self._queue), self._last_rows
        while ahead:
            take = _share(last, ahead + rows, self.max_rows)
            if take > ahead:  # the new rows start in this run
                break
            ahead, last, runs = ahead - take, take, runs + 1
        return runs * self._cycle_s

    @property
    def alive(self) -> bool:
        """Started and neither stopped nor crashed: submitted jobs will run."""
        return self._task is not None and not self._task.done() and not self._closed

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Finish nothing new: queued jobs fail with BatcherStopped; the in-flight run completes
        and its callers get its results."""
        self._closed = True
        inflight = self._inflight
        if self._task is not None:
            self._task.cancel()
            # A loop that crashed has already failed its futures and logged why: stopping
            # (the app's shutdown) must not re-raise that crash.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if inflight is not None and not inflight.done():
            # The cancelled _execute left a callback that resolves the run's jobs (it was
            # registered first, so it has run by the time this wait returns).
            await asyncio.wait({inflight})
        self._fail_pending(BatcherStopped("the server is shutting down"))
        self._executor.shutdown(wait=True)

    def submit(
        self,
        x: np.ndarray,
        h: np.ndarray,
        want_seq: bool = False,
        steps: int = 0,
        units: Any = None,
        slot: int | None = None,
    ) -> asyncio.Future:
        """Queue one row; the future resolves to a JobResult (or the run's exception).

        `steps` > 0 also rolls the row forward that many steps, feeding each prediction back
        as the next input (needs output_size == input_size), together with every other
        rolling row of the batch: JobResult.rollout. A long rollout runs `rollout_chunk` steps
        per worker call and re-queues itself in between, so other rows are not held behind it."""
        fut = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(BatcherStopped("the server is shutting down"))
            return fut
        self._queue.append(_Job(x, h, want_seq, fut, steps, units=units, slot=slot))
        w = self._waiter
        if w is not None and (not self._until_full or len(self._queue) >= self.max_rows):
            _resolve(w)
        return fut

    def submit_slot(self, x: np.ndarray, slot: int) -> asyncio.Future:
        """Queue one row whose state lives in `slot` of the device buffer (the batcher was
        given `run_slots`); it runs with the other rows of its batch, and its new state stays
        in the slot. The future resolves to a JobResult with an empty h."""
        if self._run_slots is None:
            raise RuntimeError("this batcher has no device state buffer")
        return self.submit(x, _NO_STATE, slot=slot)

    def after_inflight(self, fn: Callable[[], None]) -> None:
        """Call fn once the run now in the worker thread (if any) has finished, else now: a
        job taken off the queue runs even if its caller gave up (a cancelled job still in the
        queue never runs), so what it names must outlive that run."""
        run = self._inflight
        if run is None or run.done():
            fn()
        else:
            run.add_done_callback(lambda _: fn())

    async def _wait(self, until_full: bool, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        w = self._waiter = loop.create_future()
        self._until_full = until_full
        timer = loop.call_later(timeout, _resolve, w) if timeout is not None else None
        try:
            await w
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _fail_pending(self, exc: Exception) -> None:
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(exc)

    async def _loop(self) -> None:
        try:
            while True:
                busy = bool(self._queue)
                if not busy:
                    self._last_rows = 0  # the next run is not back to back
                    await self._wait(until_full=False)
                # Give stragglers a moment, but only up to max_wait after the first arrival.
                # A rollout's continuation does not wait: its row was gathered once already.
                head = self._queue[0]
                left = head.queued_at + self.max_wait_s - time.perf_counter()
                if len(self._queue) < self.max_rows and left > 0 and head.first is None:
                    await self._wait(until_full=True, timeout=left)
                take = min(
                    _share(self._last_rows, len(self._queue), self.max_rows), len(self._queue)
                )
                jobs = [self._queue.popleft() for _ in range(take)]
                jobs = [j for j in jobs if not j.future.done()]  # caller gave up (cancelled)
                self._last_rows = len(jobs)
                if jobs:
                    self._pace(busy)
                    await self._execute(jobs)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a bug here must not leave callers waiting forever
            log.exception("batcher crashed")
            self.crashed = e
            self._closed = True
            self._fail_pending(BatcherStopped(f"batcher crashed: {e!r}"))
            raise

    def _pace(self, busy: bool) -> None:
        now = time.perf_counter()
        if busy and self._last_start is not None:  # back to back: a cycle of the busy pace
            cycle = now - self._last_start
            self._cycle_s = cycle if self._cycle_s == 0 else 0.8 * self._cycle_s + 0.2 * cycle
        self._last_start = now

    async def _execute(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        run = self._inflight = loop.run_in_executor(self._executor, self._run_rows, jobs)
        try:
            # shielded: cancelling the loop (stop) must not orphan jobs already taken off the
            # queue; the thread finishes the run either way.
            await asyncio.shield(run)
        except asyncio.CancelledError:
            if run.done():
                self._settle(jobs, run, started)
            else:
                run.add_done_callback(lambda f: self._settle(jobs, f, started))
            raise
        except Exception:
            pass  # _settle fails exactly the jobs of this run
        self._settle(jobs, run, started)

    def _settle(self, jobs: list[_Job], run: asyncio.Future, started: float) -> None:
        """Resolve each job of a finished run with its result, or the run's exception."""
        if self._inflight is run:
            self._inflight = None
        e = BatcherStopped("the server is shutting down") if run.cancelled() else run.exception()
        if e is not None:  # one failed run fails exactly the jobs in it
            if not isinstance(e, BatcherStopped):
                log.error("onnxruntime run failed for %d rows", len(jobs), exc_info=e)
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        results = run.result()
        compute = time.perf_counter() - started
        for j, r in zip(jobs, results, strict=True):
            if j.future.done():
                continue
            if isinstance(r, JobResult):
                j.future.set_result(r)
            elif isinstance(r, Exception):  # this row alone failed (its units)
                j.future.set_exception(r)
            elif self._closed:  # a rollout with steps left, but nothing runs any more
                j.future.set_exception(BatcherStopped("the server is shutting down"))
            else:  # a rollout with steps left: back in the queue, behind what arrived meanwhile
                self._queue.append(r)
        self.runs += 1
        self.rows += len(jobs)
        if self._observer is not None:
            steps = max(j.x.shape[0] for j in jobs)
            self._observer(
                BatchStats(len(jobs), steps, [started - j.queued_at for j in jobs], compute)
            )

    def _run_rows(self, jobs: list[_Job]) -> list[JobResult | _Job | Exception]:
        """Worker thread: group rows of similar length (padding costs compute), run, split;
        then advance the rollouts. A rollout with steps left comes back as its continuation."""
        out: list[JobResult | _Job | Exception | None] = [None] * len(jobs)
        fresh = [i for i, j in enumerate(jobs) if j.first is None]  # continuations skip this
        if self._units is not None:
            to_scale = [i for i in fresh if jobs[i].units is not None]
            if to_scale:
                scaled = self._units.scale(
                    [jobs[i].units for i in to_scale], [jobs[i].x for i in to_scale]
                )
                for i, z in zip(to_scale, scaled, strict=True):
                    if isinstance(z, Exception):
                        out[i] = z
                    else:
                        jobs[i].x = z
                fresh = [i for i in fresh if out[i] is None]
        slotted = [i for i in fresh if jobs[i].slot is not None]
        if slotted:
            fresh = [i for i in fresh if jobs[i].slot is None]
            done_slots = self._step_slots([jobs[i] for i in slotted])
            for i, slot_result in zip(slotted, done_slots, strict=True):
                out[i] = slot_result
        order = sorted(fresh, key=lambda i: jobs[i].x.shape[0])
        for group in _length_groups(order, [jobs[i].x.shape[0] for i in order]):
            rows = [jobs[i] for i in group]
            x, lens = _padded(rows)
            h0 = np.stack([j.h for j in rows], axis=1).astype(np.float32, copy=False)  # (L, B, H)
            want_seq = any(j.want_seq for j in rows)
            y, h_n, h_seq = self._run(x, h0, lens, want_seq)
            for b, (i, j) in enumerate(zip(group, rows, strict=True)):
                n = j.x.shape[0]
                out[i] = JobResult(
                    y=y[:n, b].copy(),
                    h=h_n[:, b].copy(),
                    h_seq=h_seq[:n, :, b].copy() if j.want_seq and h_seq is not None else None,
                )
        rolling = [
            i for i, j in enumerate(jobs) if j.steps > 0 and not isinstance(out[i], Exception)
        ]
        if rolling:
            advanced = self._rollout([jobs[i] for i in rolling], out, rolling)
            for i, r in zip(rolling, advanced, strict=True):
                out[i] = r
        if self._units is not None:
            done = [
                i
                for i, r in enumerate(out)
                if isinstance(r, JobResult) and jobs[i].units is not None
            ]
            if done:
                paths = []
                for i in done:
                    res = out[i]
                    assert isinstance(res, JobResult)
                    paths.append(res.rollout if res.rollout is not None else res.y[-1:])
                errors = self._units.unscale([jobs[i].units for i in done], paths)
                for i, e in zip(done, errors, strict=True):
                    if e is not None:
                        out[i] = e
        return out  # type: ignore[return-value]

    def _step_slots(self, rows: list[_Job]) -> list[JobResult]:
        """Worker thread: the slot rows of a batch on the device buffer, no state crossing to
        the host; rows of similar length share a run (a long warm-up history does not pad
        everyone's one-step rows), each row's length kept."""
        assert self._run_slots is not None
        out: list[JobResult | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: rows[i].x.shape[0])
        for group in _length_groups(order, [rows[i].x.shape[0] for i in order]):
            part = [rows[i] for i in group]
            x, lens = _padded(part)
            y = self._run_slots(x, [j.slot for j in part], lens)  # type: ignore[misc]
            for b, (i, n) in enumerate(zip(group, lens.tolist(), strict=True)):
                out[i] = JobResult(y=y[:n, b].copy(), h=_NO_STATE, h_seq=None)
        return out  # type: ignore[return-value]

    def _rollout(
        self, jobs: list[_Job], out: list[JobResult | _Job | Exception | None], idx: list[int]
    ) -> list[JobResult | _Job]:
        """Worker thread: advance every rolling row of the batch together, one run per step,
        for at most `rollout_chunk` steps; rows leave the batch once their own steps are done.
        Finished rows give their JobResult (rollout set), the others their continuation."""
        firsts: list[JobResult] = []
        prefixes: list[np.ndarray] = []
        y_rows, h_rows = [], []
        for j, i in zip(jobs, idx, strict=True):
            if j.first is None:  # the row's own run just happened: it predicted path[0]
                r = out[i]
                assert isinstance(r, JobResult)
                firsts.append(r)
                prefixes.append(r.y[-1:])
                y_rows.append(r.y[-1])
                h_rows.append(r.h)
            else:
                assert j.path is not None
                firsts.append(j.first)
                prefixes.append(j.path)
                y_rows.append(j.x[-1])
                h_rows.append(j.h)
        y_last = np.stack(y_rows)  # (B, O)
        h = np.stack(h_rows, axis=1)  # (L, B, H)
        steps = np.array([j.steps for j in jobs])
        S = min(int(steps.max()), self.rollout_chunk)
        paths = np.empty((S, *y_last.shape), np.float32)  # (S, B, O): this call's steps
        active = np.arange(len(jobs))
        for k in range(S):
            keep = steps[active] > k
            if not keep.all():
                y_last, h, active = y_last[keep], h[:, keep], active[keep]
            y, h, _ = self._run(
                y_last[None].astype(np.float32, copy=False),
                h,
                np.ones(len(active), np.int32),
                False,
            )
            y_last = y[0]  # (B, O)
            paths[k, active] = y_last
        where = {int(b): c for c, b in enumerate(active)}  # still rolling after S steps
        res: list[JobResult | _Job] = []
        for b, (j, first, prefix) in enumerate(zip(jobs, firsts, prefixes, strict=True)):
            n = min(int(steps[b]), S)
            path = np.concatenate([prefix, paths[:n, b]])  # (1 + done, O)
            if n == steps[b]:
                first.rollout = path
                res.append(first)
            else:
                c = where[b]
                res.append(
                    _Job(
                        x=y_last[c][None].copy(),
                        h=h[:, c].copy(),
                        want_seq=False,
                        future=j.future,
                        steps=int(steps[b]) - n,
                        first=first,
                        path=path,
                        units=j.units,
                    )
                )
        return res


def _share(last: int, queued: int, max_rows: int) -> int:
    """Most rows the next run takes, `last` being the rows of the run just before it when it
    runs back to back (0 otherwise). Not back to back: all it can (max_rows). Back to back:
    half of what the previous run and the queue hold together. Taking the whole queue there
    settles into alternating large and tiny runs: everything that queued behind a large run
    makes the next one large, and the few rows that arrive meanwhile a tiny one; a large run
    leaves the event loop idle, waiting for its answers, a tiny one the worker, waiting for
    the loop. Even runs keep both busy (docs/benchmarks.md has the before/after figures)."""
    if last == 0:
        return max_rows
    return min(max_rows, max(1, -(-(last + queued) // 2)))


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _padded(rows: list[_Job]) -> tuple[np.ndarray, np.ndarray]:
    """The rows' x stacked as (T, B, F), zero-padded to the longest, and their lengths [B]."""
    lens = np.array([j.x.shape[0] for j in rows], dtype=np.int32)
    if (lens == lens[0]).all():
        return np.stack([j.x for j in rows], axis=1).astype(np.float32, copy=False), lens
    x = np.zeros((int(lens.max()), len(rows), rows[0].x.shape[1]), np.float32)
    for b, j in enumerate(rows):
        x[: j.x.shape[0], b] = j.x
    return x, lens


def _length_groups(order: list[int], lengths: list[int]) -> list[list[int]]:
    """Split rows sorted by length where padding to the group's max would more than double work."""
    groups: list[list[int]] = []
    start_len = None
    for i, n in zip(order, lengths, strict=True):
        if start_len is None or n > 2 * start_len:
            groups.append([])
            start_len = n
        groups[-1].append(i)
    return groups
