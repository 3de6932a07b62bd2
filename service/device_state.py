"""Stream states kept where the session computes: one buffer [layers, slots, hidden] on the
session's device, one slot per open stream.

A step binds the buffer as the graph's `state` input and as its `state_out` output (IO
binding with OrtValues): the graph gathers the stepping streams' slots, runs the recurrence
and scatters the new states back into the same memory (ScatterND skips its copy when its
output is its input). Only the observations, lengths and slot numbers go in and the
predictions come out; the states never pass through the host. Needs a `cuda`-target
artifact (the slot inputs of export.contract); on the CPU provider the buffer is host memory
and the same code runs, which is how the tests check it against the reference.

A state enters from the host once (`allocate` with a state, `load`: a new or resumed stream)
and leaves only when asked (`read`: a resume token, a forecast fork); `uploads` and `reads`
count both, so a test can show that steps copy no state. Steps run in one thread (the
batcher's worker); allocate, load, release and read may come from the event loop meanwhile,
for other slots than the ones stepping (a session waits for its own step).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import onnxruntime as ort

from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_READ_SLOTS,
    INPUT_STATE,
    INPUT_WRITE_ROWS,
    INPUT_WRITE_SLOTS,
    INPUT_X,
    OUTPUT_STATE,
    OUTPUT_Y,
    ArtifactMeta,
    takes_slots,
)

CUDA = "CUDAExecutionProvider"


class SlotsExhausted(RuntimeError):
    """Every slot holds a stream."""


class DeviceState:
    def __init__(self, session: ort.InferenceSession, meta: ArtifactMeta, slots: int) -> None:
        if not takes_slots(session):
            raise ValueError(
                "the artifact has no slot buffer inputs: device states need a cuda-target "
                "artifact (gru-serve export --target cuda)"
            )
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.session, self.meta = session, meta
        if session.get_providers()[0] == CUDA:
            options = session.get_provider_options().get(CUDA, {})
            self.device, self.device_id = "cuda", int(options.get("device_id", 0))
        else:
            self.device, self.device_id = "cpu", 0
        shape = (meta.num_layers, slots, meta.hidden_size)
        # Zero-filled once here: the only full upload the buffer ever gets.
        self.buffer = ort.OrtValue.ortvalue_from_numpy(
            np.zeros(shape, np.float32), self.device, self.device_id
        )
        self._free = list(range(slots - 1, -1, -1))  # pop() hands out slot 0 first
        self._used = np.zeros(slots, bool)  # slot -> holds a stream
        # Host states waiting to enter the buffer: they ride in h0 on the slot's next step.
        self._pending: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # the slot tables, between the loop and the worker
        self.uploads = 0  # states that entered the buffer from the host
        self.reads = 0  # read() calls: states copied out to the host

    @property
    def capacity(self) -> int:
        return self.buffer.shape()[1]

    @property
    def in_use(self) -> int:
        return int(self._used.sum())

    def allocate(self, h: np.ndarray | None = None) -> int:
        """A free slot for a new stream, starting from `h` [layers, hidden] (zeros if None)."""
        with self._lock:
            if not self._free:
                raise SlotsExhausted(f"all {self.capacity} slots hold a stream")
            slot = self._free.pop()
            self._used[slot] = True
        try:
            self.load(slot, np.zeros(self._state_shape, np.float32) if h is None else h)
        except BaseException:
            self.release(slot)
            raise
        return slot

    def release(self, slot: int) -> None:
        """The stream in `slot` ended: its slot is free for the next one. Call it only once no
        step naming the slot can still run (the core defers it past the batcher's run)."""
        self._check([slot])
        with self._lock:
            self._used[slot] = False
            self._pending.pop(slot, None)
            self._free.append(slot)

    def load(self, slot: int, h: np.ndarray) -> None:
        """Replace the state of `slot` with `h` [layers, hidden] (e.g. a resumed stream's);
        it enters the buffer with the slot's next step, not through a copy of its own."""
        self._check([slot])
        h = np.asarray(h, np.float32)
        if h.shape != self._state_shape:
            raise ValueError(f"state shape {h.shape}, expected {self._state_shape}")
        with self._lock:
            self._pending[slot] = h.copy()

    def read(self, slots: Any) -> np.ndarray:
        """States of `slots` on the host, [layers, len(slots), hidden]. Copies the whole
        buffer from the device once per call: for tokens and forks, never per step."""
        slots = self._check(slots)
        with self._lock:
            pending = {s: self._pending[s] for s in slots if s in self._pending}
        host = self.buffer.numpy() if len(pending) < len(slots) else None
        self.reads += 1
        cols = [pending[s] if s in pending else host[:, s] for s in slots]  # type: ignore[index]
        if not cols:
            return np.zeros((*self._layers, 0, self._hidden), np.float32)
        return np.stack(cols, axis=1)

    def step(self, x: np.ndarray, slots: Any, lens: np.ndarray | None = None) -> np.ndarray:
        """Run x [T, B, F] for the streams in `slots` (B distinct slots, row b is slot b) from
        their states; each row's new state stays in its slot. lens [B] (default T): a row
        past its length keeps its state. Returns y [T, B, output_size] on the host."""
        ordered = self._slots(slots)  # int64 [B]; the bookkeeping is vectorised: B runs to 4096
        if ordered.size > 1 and np.bincount(ordered, minlength=self.capacity).max() > 1:
            raise ValueError("a slot appears twice in one step")
        x = np.asarray(x, np.float32)
        steps, rows = x.shape[0], x.shape[1]
        if rows != ordered.size:
            raise ValueError(f"x has {rows} rows for {ordered.size} slots")
        lens = np.full(rows, steps, np.int32) if lens is None else np.asarray(lens, np.int32)
        # Rows with a state waiting on the host go first (they start from h0), then the rows
        # gathered from the buffer: the graph's row order. Usually none waits: no reordering.
        with self._lock:
            waiting = dict(self._pending)
        pending: dict[int, np.ndarray] = {}
        order = None
        if waiting:
            fresh = np.isin(ordered, np.fromiter(waiting, np.int64, len(waiting)))
            if fresh.any():
                order = np.concatenate([np.flatnonzero(fresh), np.flatnonzero(~fresh)])
                ordered, x, lens = ordered[order], x[:, order], lens[order]
                pending = {int(s): waiting[int(s)] for s in ordered[: int(fresh.sum())]}
        n_fresh = len(pending)
        h0 = (
            np.stack(list(pending.values()), axis=1)
            if n_fresh
            else np.zeros((*self._layers, 0, self._hidden), np.float32)
        )
        io = self.session.io_binding()
        io.bind_cpu_input(INPUT_X, np.ascontiguousarray(x))
        io.bind_cpu_input(INPUT_H0, h0)
        io.bind_cpu_input(INPUT_LENS, np.ascontiguousarray(lens))
        io.bind_cpu_input(INPUT_READ_SLOTS, ordered[n_fresh:].copy())
        io.bind_cpu_input(INPUT_WRITE_SLOTS, ordered)
        io.bind_cpu_input(INPUT_WRITE_ROWS, np.arange(rows, dtype=np.int64))
        io.bind_ortvalue_input(INPUT_STATE, self.buffer)
        io.bind_output(OUTPUT_Y, "cpu")
        io.bind_ortvalue_output(OUTPUT_STATE, self.buffer)  # in place: the same memory
        self.session.run_with_iobinding(io)
        y_ordered = io.get_outputs()[0].numpy()
        if pending:
            with self._lock:  # entered the buffer (unless a newer load replaced it meanwhile)
                for s, h in pending.items():
                    if self._pending.get(s) is h:
                        del self._pending[s]
            self.uploads += n_fresh
        if order is None:
            return y_ordered
        y = np.empty_like(y_ordered)
        y[:, order] = y_ordered
        return y

    # ---- helpers ---------------------------------------------------------------------------
    @property
    def _layers(self) -> tuple[int]:
        return (self.meta.num_layers,)

    @property
    def _hidden(self) -> int:
        return self.meta.hidden_size

    @property
    def _state_shape(self) -> tuple[int, int]:
        return (self.meta.num_layers, self.meta.hidden_size)

    def _slots(self, slots: Any) -> np.ndarray:
        """`slots` as int64 [n], each one holding a stream (ValueError otherwise)."""
        out = np.asarray(slots, np.int64).reshape(-1)
        ok = (out >= 0) & (out < self._used.size)
        ok[ok] = self._used[out[ok]]
        if not ok.all():
            raise ValueError(f"slot(s) {out[~ok].tolist()} hold no stream")
        return out

    def _check(self, slots: Any) -> list[int]:
        return self._slots(slots).tolist()
