"""A stream session: the state machine behind WS /v1/stream.

A session holds one series' position: hidden state h (L, H), the index of the next
observation, the scaling fitted on its `start` history, and the scaled prediction of the
next observation (what a forecast fork starts from). Every step goes through
`InferenceCore.run_rows`, so the waiting steps of all sessions share onnxruntime runs
(continuous batching). Nothing here knows about websockets.

Where the core keeps stream states on its device (`InferenceCore.device_states`), a started
session owns a slot of that buffer instead of h: its steps read and write the slot in place,
and h is copied to the host only when asked for (tokens, forecast forks, `state`). Sessions
that want h on the host at every step (`return_hidden`, a token per output) keep it there,
and so do series scaled so widely that an output could overflow float32 (a refused step must
leave the session where it was, and a slot's state has already moved by then).
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.core import InferenceCore, SeriesState
from service.device_state import DeviceState, SlotsExhausted
from service.errors import AlreadyStarted, InvalidInput, NoObservation, NotStarted
from service.tokens import (
    BINARY_OUTPUT,
    OUTPUT_ON_REQUEST,
    RETURN_HIDDEN,
    TOKEN_EACH_OUTPUT,
    TokenCodec,
    TokenState,
)
from service.units import fit_scaler, scale_in, scale_in_one, scale_out_one, to_data_units

log = logging.getLogger("gru_serve.sessions")

# A slot session's outputs stay far inside float32 below this scale: |y| would have to pass
# 1e8 model units to overflow (no head comes near: its inputs are states in (-1, 1)).
SLOT_SCALE_LIMIT = 1e30


class Phase(enum.Enum):
    NEW = "new"  # connected, waiting for `start`
    READY = "ready"  # started: steps, forecasts, resets, state requests
    CLOSED = "closed"


@dataclass(frozen=True)
class StreamOptions:
    quantiles: tuple[float, ...] = ()
    return_hidden: bool = False
    token_each_output: bool = False
    output_on_request: bool = False  # outputs only for steps sent with "output": true
    binary: bool = False  # outputs as binary frames
    frequency: str | None = None  # quantiles calibrated for this frequency (None: pooled)

    @property
    def flags(self) -> int:
        return (
            (RETURN_HIDDEN if self.return_hidden else 0)
            | (TOKEN_EACH_OUTPUT if self.token_each_output else 0)
            | (OUTPUT_ON_REQUEST if self.output_on_request else 0)
            | (BINARY_OUTPUT if self.binary else 0)
        )

    @classmethod
    def from_token(cls, st: TokenState) -> StreamOptions:
        return cls(
            quantiles=st.quantiles,
            return_hidden=bool(st.flags & RETURN_HIDDEN),
            token_each_output=bool(st.flags & TOKEN_EACH_OUTPUT),
            output_on_request=bool(st.flags & OUTPUT_ON_REQUEST),
            binary=bool(st.flags & BINARY_OUTPUT),
            frequency=st.frequency,
        )


@dataclass
class StepOutput:
    step: int  # index of the observation just read
    y: np.ndarray  # (O,) prediction of the next observation, data units
    quantiles: dict[float, np.ndarray]  # level -> (O,)
    h: np.ndarray | None  # (L, H) state after this step, when asked for
    token: str | None


@dataclass
class ForkForecast:
    step: int  # the session's next index: mean[0] predicts this observation
    mean: np.ndarray  # (horizon, O) data units
    quantiles: dict[float, np.ndarray]


class StreamSession:
    """One stream's state. Callers serialise calls (one in flight at a time)."""

    def __init__(self, core: InferenceCore, codec: TokenCodec) -> None:
        self.id = uuid.uuid4().hex
        self.phase = Phase.NEW
        self.options = StreamOptions()
        self.step = 0
        self.last_y: np.ndarray | None = None  # (O,) scaled
        self._offsets: dict[float, float] = {}
        self.use(core, codec)

    def use(self, core: InferenceCore, codec: TokenCodec) -> None:
        """Run on this model version (chosen by `start`; the session keeps it from then on)."""
        if self.phase is not Phase.NEW:
            raise AlreadyStarted("the session is already started; send `reset` to start over")
        self.core, self.codec = core, codec
        self._slot: int | None = None  # this session's slot in core.device_states
        self._h = core.zero_state()
        self.loc = np.zeros(core.meta.input_size, np.float32)
        self.scale = np.ones(core.meta.input_size, np.float32)

    @property
    def h(self) -> np.ndarray:
        """The state (L, H) on the host; a slot's is copied out of the device buffer."""
        if self._slot is not None:
            return self._states().read([self._slot])[:, 0]
        return self._h

    @h.setter
    def h(self, h: np.ndarray) -> None:
        if self._slot is not None:
            self._states().load(self._slot, h)  # enters the buffer with the next step
        else:
            self._h = h

    def _states(self) -> DeviceState:
        assert self.core.device_states is not None
        return self.core.device_states

    def _take_slot(
        self, h: np.ndarray, opts: StreamOptions, loc: np.ndarray, scale: np.ndarray
    ) -> None:
        states = self.core.device_states
        if states is None or opts.return_hidden or opts.token_each_output:
            return
        if np.abs(loc).max() >= SLOT_SCALE_LIMIT or scale.max() >= SLOT_SCALE_LIMIT:
            return
        try:
            self._slot = states.allocate(h)
        except SlotsExhausted:  # more sessions than slots (other models' limits): on the host
            log.warning("stream state buffer full; session %s keeps its state on the host", self.id)

    def _free_slot(self) -> None:
        if self._slot is not None:
            self.core.release_slot(self._slot)
            self._slot = None

    def _to_host(self) -> None:
        """Leave the device buffer: h comes back to the host and stays there."""
        h = self.h
        self._free_slot()
        self._h = h

    # ---- life cycle ----------------------------------------------------------------------
    async def start(
        self,
        history: np.ndarray | None,
        resume: str | None,
        options: StreamOptions | None,
        scaling: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """history (T, F) data units, validated; resume a token string; scaling (loc, scale)."""
        if self.phase is not Phase.NEW:
            raise AlreadyStarted("the session is already started; send `reset` to start over")
        if resume is not None:
            st = self.codec.decode(resume)
            h, step, loc, scale, last_y = st.h, st.step, st.loc, st.scale, st.last_y
            opts = options or StreamOptions.from_token(st)
            if scaling is not None:
                raise InvalidInput("`scaling` cannot be combined with `resume`", "scaling")
        else:
            h, step, last_y = self.core.zero_state(), 0, None
            opts = options or StreamOptions()
            if scaling is not None:
                loc, scale = scaling
            elif history is not None:
                loc, scale = fit_scaler(self.core.meta, history, "history")
            else:  # no history: the model reads raw values (documented in docs/protocol.md)
                loc = np.zeros(self.core.meta.input_size, np.float32)
                scale = np.ones(self.core.meta.input_size, np.float32)
        levels = self.core.check_quantiles(list(opts.quantiles), "options.quantiles")
        offsets = self.core.quantile_offsets(levels, 1, opts.frequency)
        self._offsets = {q: float(v[0]) for q, v in offsets.items()}
        self._take_slot(h, opts, loc, scale)
        try:
            if history is not None:  # warm-up: one row, one batched run
                z = scale_in(history, loc, scale, "history")
                if self._slot is not None:
                    y = await self.core.run_slot(z, self._slot)
                else:
                    (r,) = await self.core.run_rows([z], [h])
                    h, y = r.h, r.y
                last_y, step = y[-1].copy(), step + history.shape[0]
        except BaseException:
            self._free_slot()  # not started: the session holds nothing
            raise
        if self._slot is None:
            self._h = h
        self.step, self.loc, self.scale, self.last_y = step, loc, scale, last_y
        self.options = opts
        self.phase = Phase.READY

    def require_ready(self) -> None:
        if self.phase is Phase.NEW:
            raise NotStarted("send `start` first")
        if self.phase is Phase.CLOSED:
            raise NotStarted("the session is closed")

    def reset(self) -> None:
        """Back to a fresh state: zero h, index 0; scaling and options are kept."""
        self.require_ready()
        self.h, self.step, self.last_y = self.core.zero_state(), 0, None

    def close(self) -> None:
        self.phase = Phase.CLOSED
        self._free_slot()

    # ---- steps ---------------------------------------------------------------------------
    async def advance(
        self, x: np.ndarray, wanted: Sequence[bool] | None = None
    ) -> list[StepOutput]:
        """Read x (T, F) data units; one StepOutput per step (only where `wanted` says so)."""
        self.require_ready()
        T = x.shape[0]
        wanted = wanted if wanted is not None else [True] * T
        opts = self.options
        per_step_state = T > 1 and (opts.return_hidden or opts.token_each_output)
        one = T == 1 and x.shape[1] == 1 and self.loc.shape == (1,)  # the usual stream step
        z = scale_in_one(x, self.loc, self.scale) if one else None
        if z is None:
            z = scale_in(x, self.loc, self.scale, "x")
        if self._slot is not None and z.shape[1] > 1 and not (np.abs(z) < SLOT_SCALE_LIMIT).all():
            # Huge inputs over several features can make the state NaN (inf - inf); a refused
            # step must leave the session where it was, so this one runs from the host.
            self._to_host()
        if self._slot is not None:
            y = await self.core.run_slot(z, self._slot)  # the state moves in its slot
            h_last, h_seq = None, None
        else:
            (r,) = await self.core.run_rows([z], [self._h], per_step_state)
            y, h_last, h_seq = r.y, r.h, r.h_seq
        first = self.step
        # Data units for every step at once; a step whose outputs leave float32 is refused
        # whole (422-style error, the session stays where it was).
        fast = scale_out_one(y, self.loc, self.scale, self._offsets) if one else None
        if fast is not None:
            ys, qs = fast
        else:
            ys, qs = to_data_units(y, self._offsets, self.loc, self.scale, "x")  # (T, O)
        outs = []
        for t in range(T):
            if not wanted[t]:
                continue
            h_t: np.ndarray | None = None
            if t == T - 1:
                h_t = h_last
            elif per_step_state and h_seq is not None:
                h_t = h_seq[t]
            y_scaled = y[t]
            token = None
            if opts.token_each_output and h_t is not None:
                token = self.codec.encode(self._token_state(h_t, first + t + 1, y_scaled))
            outs.append(
                StepOutput(
                    step=first + t,
                    y=ys[t],
                    quantiles={q: v[t] for q, v in qs.items()},
                    h=h_t if opts.return_hidden else None,
                    token=token,
                )
            )
        if h_last is not None:
            self._h = h_last
        self.step, self.last_y = first + T, y[-1].copy()
        return outs

    async def forecast(self, horizon: int, levels: Sequence[float] | None = None) -> ForkForecast:
        """Roll out `horizon` steps from the current state feeding predictions back, through the
        core's batched rollout (InferenceCore.fork); a fork: the session's own state does not
        move."""
        self.require_ready()
        if self.last_y is None:
            raise NoObservation("a forecast needs at least one observation (history or step)")
        horizon = self.core.check_horizon(horizon)
        levels = self.options.quantiles if levels is None else levels
        levels = self.core.check_quantiles(list(levels))
        state = SeriesState(self.h, self.loc, self.scale)
        mean, quantiles = await self.core.fork(
            state, self.last_y, horizon, levels, self.options.frequency
        )
        return ForkForecast(step=self.step, mean=mean, quantiles=quantiles)

    # ---- tokens --------------------------------------------------------------------------
    def _token_state(self, h: np.ndarray, step: int, last_y: np.ndarray | None) -> TokenState:
        return TokenState(
            h=h,
            step=step,
            loc=self.loc,
            scale=self.scale,
            last_y=last_y,
            quantiles=self.options.quantiles,
            flags=self.options.flags,
            frequency=self.options.frequency,
        )

    def token(self) -> str:
        return self.codec.encode(self._token_state(self.h, self.step, self.last_y))
