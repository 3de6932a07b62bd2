"""The inference core: every front door (REST, websocket, OIP) calls this, so the same input
gives the same numbers whichever door it came through.

It works on numpy arrays in model units. Scaling, rollouts and quantiles live here; batching
is delegated to the Batcher and the onnxruntime session to the Runtime.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from export.contract import ArtifactMeta
from service.batching import Batcher, BatchStats, JobResult
from service.device_state import DeviceState
from service.errors import InvalidInput, Overloaded
from service.runtime import CUDA, ArtifactError, Runtime
from service.settings import Settings
from service.units import BatchUnits, Row, to_data_units


@dataclass
class SeriesState:
    """Where a series stands: hidden state plus the scaling fitted on its first history."""

    h: np.ndarray  # (L, H)
    loc: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)


@dataclass
class Forecast:
    mean: np.ndarray  # (horizon, F) in data units
    quantiles: dict[float, np.ndarray]  # level -> (horizon, F)
    state: SeriesState  # after the history (the forecast itself never moves the state)


def quantile_offsets(
    meta: ArtifactMeta, levels: Sequence[float], horizon: int, frequency: str | None = None
) -> dict[float, np.ndarray]:
    """Scaled-space offsets per level and step (float32 arrays of `horizon` values).

    The table is `meta.quantile_offsets_by_frequency[frequency]` when the model has one for
    that frequency, else the pooled `meta.quantile_offsets`. Levels between the calibrated
    ones are interpolated linearly (0.5 sits at the point forecast, offset 0). Past the end of
    a row of S steps the interval keeps widening like a random walk's error: step s >= S
    (0-based) gets row[S - 1] * sqrt((s + 1) / S), so the spread grows with the square root
    of the horizon instead of staying flat."""
    rows = meta.quantile_offsets
    if frequency is not None:
        rows = meta.quantile_offsets_by_frequency.get(frequency, rows)
    known = sorted(zip(meta.quantile_levels, rows, strict=True))
    if 0.5 not in meta.quantile_levels and known:
        known.append((0.5, (0.0,)))
        known.sort()
    table = np.array([_widened(row, horizon) for _, row in known], np.float32)
    qs = np.array([q for q, _ in known])
    steps = range(horizon)
    return {q: np.array([np.interp(q, qs, table[:, s]) for s in steps], np.float32) for q in levels}


def _widened(row: Sequence[float], horizon: int) -> list[float]:
    """A calibrated row over `horizon` steps: its own values, then the last one widened by
    sqrt((s + 1) / S) at each step s >= S = len(row)."""
    S = len(row)
    last = row[-1]
    return [row[s] if s < S else last * math.sqrt((s + 1) / S) for s in range(horizon)]


async def _one(fut: asyncio.Future) -> JobResult:
    """A queued row's result; a caller that gives up takes its row out of the queue."""
    try:
        return await fut
    except BaseException:
        fut.cancel()
        raise


def device_states(runtime: Runtime, settings: Settings) -> DeviceState | None:
    """The stream state buffer `settings.stream_states` asks for, None for host states."""
    mode = settings.stream_states
    on_cuda = runtime.placement.provider == CUDA
    if mode == "host" or (mode == "auto" and not (runtime.takes_slots and on_cuda)):
        return None
    if not runtime.takes_slots:
        raise ArtifactError(
            f"stream_states=device needs a cuda-target artifact (gru-serve export --target "
            f"cuda); {runtime.path} has no slot buffer inputs"
        )
    return DeviceState(runtime.session, runtime.meta, settings.max_sessions)


class InferenceCore:
    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        observer: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.meta: ArtifactMeta = runtime.meta
        self.settings = settings
        # Stream states in one buffer on the model's device (None: each session holds its own).
        self.device_states = device_states(runtime, settings)
        self.batcher = Batcher(
            runtime.run,
            settings.max_batch_rows,
            settings.max_wait_us / 1e6,
            observer,
            units=BatchUnits(runtime.meta),
            run_slots=self.device_states.step if self.device_states else None,
        )
        self.inflight_rows = 0
        self._offsets: dict[tuple, dict[float, np.ndarray]] = {}

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    # ---- admission ---------------------------------------------------------------------------
    @contextmanager
    def admit(self, rows: int):
        """Bound the rows of admitted requests and their wait: a request over the queue's row
        limit, or one the queue would hold past `queue_deadline_ms`, is refused at once (503)."""
        if self.inflight_rows + rows > self.settings.max_queue_rows:
            raise Overloaded()
        self.check_deadline(0.0, rows)
        self.inflight_rows += rows
        try:
            yield
        finally:
            self.inflight_rows -= rows

    def check_deadline(self, waited_s: float = 0.0, rows: int = 1) -> None:
        """Overloaded (503) when a request that has already waited `waited_s` (in the event
        loop, before it got here) would still wait in the queue past `queue_deadline_ms`."""
        deadline = self.settings.queue_deadline_ms / 1000
        if deadline <= 0:
            return
        wait = waited_s + self.batcher.expected_wait_s(rows)
        if wait > deadline:
            raise Overloaded(
                f"the server is at capacity: this request would wait about {wait * 1000:.0f} "
                f"ms, over its {deadline * 1000:.0f} ms deadline; retry shortly",
                retry_after_s=max(1, math.ceil(wait)),
            )

    # ---- the building block ------------------------------------------------------------------
    async def run_rows(
        self,
        xs: Sequence[np.ndarray],
        hs: Sequence[np.ndarray],
        want_seq: bool = False,
        steps: int = 0,
        units: Sequence[Row] | None = None,
    ) -> list[JobResult]:
        """Run each x (T, F) from its h (L, H) through the batcher, concurrently; order kept.
        `steps` > 0 also rolls each row forward (JobResult.rollout, see Batcher.submit).
        With `units`, x is in data units and each Row receives its answer in them; a row that
        fails raises its own error, the first in request order."""
        if len(xs) == 1:  # a stream step: skip gather's extra future
            u = units[0] if units else None
            return [await _one(self.batcher.submit(xs[0], hs[0], want_seq, steps, u))]
        us: Sequence[Row | None] = units or [None] * len(xs)
        futures = [
            self.batcher.submit(x, h, want_seq, steps, u)
            for x, h, u in zip(xs, hs, us, strict=True)
        ]
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        except BaseException:
            for f in futures:  # a cancelled request must not leave rows in the queue
                f.cancel()
            raise
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)  # type: ignore[arg-type]

    async def run_slot(self, x: np.ndarray, slot: int) -> np.ndarray:
        """Run x (T, F) from the state in `slot` of the device buffer, batched with every other
        waiting row; the new state stays in the slot. Returns y (T, O)."""
        return (await _one(self.batcher.submit_slot(x, slot))).y

    def release_slot(self, slot: int) -> None:
        """Give a stream's slot back, once no step of it can still be running (a cancelled
        step may already be in the worker's run)."""
        states = self.device_states
        assert states is not None
        self.batcher.after_inflight(lambda: states.release(slot))

    def zero_state(self) -> np.ndarray:
        return np.zeros((self.meta.num_layers, self.meta.hidden_size), np.float32)

    # ---- validation helpers (shared by every front door) -------------------------------------
    def check_items(self, n: int, field: str, what: str = "series") -> None:
        """At most max_items series (or items) per request: checked first by every front
        door, and again by the core's entry points."""
        if n > self.settings.max_items:
            raise InvalidInput(
                f"{n} {what} exceed the limit of {self.settings.max_items} per request", field
            )

    def check_sequence_budget(self, xs: Sequence[np.ndarray], field: str) -> None:
        """A per-step answer holds T x (L x H + O) numbers per item: bounded before any work."""
        m = self.meta
        values = sum(x.shape[0] for x in xs) * (m.num_layers * m.hidden_size + m.output_size)
        limit = self.settings.max_hidden_sequence_values
        if values > limit:
            raise InvalidInput(
                f"return_sequence would return {values} numbers, over the limit of {limit}; "
                "send fewer or shorter items",
                field,
            )

    def check_sequence(self, x: np.ndarray, field: str, min_len: int = 1) -> np.ndarray:
        """Coerce to (T, F) float32, checking length limits, feature count and finiteness."""
        F = self.meta.input_size
        if x.ndim == 1 and F == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != F:
            want = "a list of numbers" if F == 1 else f"a list of rows of {F} numbers"
            raise InvalidInput(f"expected {want} (the model has {F} input feature(s))", field)
        if x.shape[0] < min_len:
            raise InvalidInput(f"needs at least {min_len} observation(s), got {x.shape[0]}", field)
        if x.shape[0] > self.settings.max_series_length:
            raise InvalidInput(
                f"{x.shape[0]} observations exceed the limit of {self.settings.max_series_length}",
                field,
            )
        if not np.isfinite(x).all():
            raise InvalidInput("values must be finite numbers (no NaN or infinity)", field)
        return x.astype(np.float32, copy=False)

    def check_state(self, h: np.ndarray, field: str) -> np.ndarray:
        L, H = self.meta.num_layers, self.meta.hidden_size
        if h.shape != (L, H):
            raise InvalidInput(
                f"hidden state must be {L} x {H} (layers x hidden), got shape {list(h.shape)}",
                field,
            )
        if not np.isfinite(h).all():
            raise InvalidInput("hidden state values must be finite", field)
        return h.astype(np.float32, copy=False)

    def check_scaling(self, v: np.ndarray, field: str, positive: bool = False) -> np.ndarray:
        F = self.meta.input_size
        if v.shape != (F,) or not np.isfinite(v).all() or (positive and (v <= 0).any()):
            kind = "positive " if positive else ""
            raise InvalidInput(f"expected {F} finite {kind}number(s)", field)
        return v.astype(np.float32, copy=False)

    def check_horizon(self, horizon: int, field: str = "horizon") -> int:
        if not 1 <= horizon <= self.settings.max_horizon:
            raise InvalidInput(
                f"horizon must be between 1 and {self.settings.max_horizon}, got {horizon}", field
            )
        return horizon

    def check_quantiles(self, levels: Sequence[float], field: str = "quantiles") -> list[float]:
        known = self.meta.quantile_levels
        if len(levels) > self.settings.max_quantiles:
            # each level is a full horizon x features array in the answer: bound the work
            raise InvalidInput(
                f"{len(levels)} quantile levels exceed the limit of {self.settings.max_quantiles}",
                field,
            )
        if levels and not known:
            raise InvalidInput("this model has no calibrated quantiles", field)
        lo, hi = (min(known), max(known)) if known else (0.5, 0.5)
        for q in levels:
            if not 0 < q < 1:
                raise InvalidInput(f"quantile {q} is outside (0, 1)", field)
            if not lo <= q <= hi and q != 0.5:
                raise InvalidInput(
                    f"quantile {q} is outside the calibrated range [{lo}, {hi}]", field
                )
        return list(dict.fromkeys(levels))

    def check_frequency(self, frequency: str | None, field: str = "frequency") -> str | None:
        """A frequency name the model knows (GET /v1/models lists them), or None (pooled
        intervals); InvalidInput otherwise."""
        if frequency is None:
            return None
        known = self.meta.frequencies
        if frequency not in known:
            if not known:
                raise InvalidInput(
                    f"unknown frequency {frequency!r}: this model knows no frequencies "
                    "(its intervals are pooled); leave `frequency` out",
                    field,
                )
            raise InvalidInput(
                f"unknown frequency {frequency!r}; this model knows: {', '.join(known)}", field
            )
        return frequency

    # ---- quantiles -----------------------------------------------------------------------------
    def quantile_offsets(
        self, levels: Sequence[float], horizon: int, frequency: str | None = None
    ) -> dict[float, np.ndarray]:
        """quantile_offsets() for this model, cached per (levels, horizon, frequency): clients
        repeat the same few (the arrays are read-only). A frequency without its own table
        shares the pooled entries."""
        if frequency not in self.meta.quantile_offsets_by_frequency:
            frequency = None
        key = (tuple(levels), horizon, frequency)
        cached = self._offsets.get(key)
        if cached is None:
            if len(self._offsets) >= 1024:  # bounded: arbitrary levels cannot grow it forever
                self._offsets.clear()
            cached = self._offsets[key] = quantile_offsets(self.meta, levels, horizon, frequency)
        return cached

    # ---- forecasting -----------------------------------------------------------------------------
    async def forecast(
        self,
        series: Sequence[np.ndarray],
        horizon: int,
        levels: Sequence[float] = (),
        states: Sequence[SeriesState | None] | None = None,
        fields: Sequence[str] | None = None,
        frequencies: Sequence[str | None] | None = None,
    ) -> list[Forecast]:
        """Read each (validated) series from its state (or zeros, scaled on its own history),
        then roll out `horizon` steps feeding the point forecast back. All series of the request,
        and of every concurrent request, advance through the batcher together. `fields` name
        the series in errors (default `series.<i>`); `frequencies`, one per series (validated;
        None: pooled), pick each series' interval calibration (the point forecast does not
        depend on it)."""
        self.check_items(len(series), "series")
        states = states or [None] * len(series)
        fields = fields or [f"series.{i}" for i in range(len(series))]
        tables = [self.quantile_offsets(levels, horizon) if levels else {}] * len(series)
        if levels and frequencies is not None:
            tables = [self.quantile_offsets(levels, horizon, fr) for fr in frequencies]
        rows = [
            Row(f, off) if st is None else Row(f, off, st.loc, st.scale)
            for f, off, st in zip(fields, tables, states, strict=True)
        ]
        h0s = [self.zero_state() if st is None else st.h for st in states]
        with self.admit(len(series)):
            # Scaling, the history, horizon - 1 steps feeding the prediction back, and the
            # answer in data units: all in the batcher's worker, a batch at a time (one
            # event-loop round trip per series; concurrent rollouts advance together).
            results = await self.run_rows(series, h0s, steps=horizon - 1, units=rows)
        return [
            Forecast(
                mean=row.mean,  # type: ignore[arg-type]
                quantiles=row.quantiles,
                state=SeriesState(r.h, row.loc, row.scale),  # type: ignore[arg-type]
            )
            for r, row in zip(results, rows, strict=True)
        ]

    async def fork(
        self,
        state: SeriesState,
        next_y: np.ndarray,
        horizon: int,
        levels: Sequence[float] = (),
        frequency: str | None = None,
    ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        """A forecast from a position whose next-step prediction next_y (O,) (scaled) is already
        known (a stream session's fork): next_y, then horizon - 1 steps rolled out from state.h
        through the batcher like forecast()'s, admitted like any request. Returns (mean,
        quantiles) in data units, the quantiles calibrated for `frequency` (None: pooled);
        nothing about `state` changes."""
        path = next_y[None, :]  # (1, O)
        if horizon > 1:  # horizon 1 is already known: nothing to run, nothing to admit
            with self.admit(1):
                # next_y fed back, then horizon - 2 more steps: rollout holds path[1:]
                (r,) = await self.run_rows([path], [state.h], steps=horizon - 2)
            rolled = r.rollout if r.rollout is not None else r.y[-1:]
            path = np.concatenate([path, rolled], axis=0)  # (horizon, O)
        offsets = self.quantile_offsets(levels, horizon, frequency) if levels else {}
        return to_data_units(path, offsets, state.loc, state.scale, None)

    async def hidden(
        self, xs: Sequence[np.ndarray], hs: Sequence[np.ndarray], want_seq: bool
    ) -> list[JobResult]:
        """Next-step hidden states in model units: the stateless block clients chain themselves."""
        self.check_items(len(xs), "inputs", "items")
        if want_seq:
            self.check_sequence_budget(xs, "return_sequence")
        with self.admit(len(xs)):
            return await self.run_rows(xs, hs, want_seq)
