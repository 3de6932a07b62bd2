"""A stream session: the state machine behind WS /v1/stream.

A session holds one series' position: hidden state h (L, H), the index of the next
observation, the scaling fitted on its `start` history, and the scaled prediction of the
next observation (what a forecast fork starts from). Every step goes through
`InferenceCore.run_rows`, so the waiting steps of all sessions share onnxruntime runs
(continuous batching). Nothing here knows about websockets.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.core import InferenceCore, SeriesState
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
        self.h = core.zero_state()
        self.loc = np.zeros(core.meta.input_size, np.float32)
        self.scale = np.ones(core.meta.input_size, np.float32)

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
        if history is not None:  # warm-up: one row, one batched run
            (r,) = await self.core.run_rows([scale_in(history, loc, scale, "history")], [h])
            h, last_y, step = r.h, r.y[-1].copy(), step + history.shape[0]
        self.h, self.step, self.loc, self.scale, self.last_y = h, step, loc, scale, last_y
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
        (r,) = await self.core.run_rows([z], [self.h], per_step_state)
        first = self.step
        # Data units for every step at once; a step whose outputs leave float32 is refused
        # whole (422-style error, the session stays where it was).
        fast = scale_out_one(r.y, self.loc, self.scale, self._offsets) if one else None
        if fast is not None:
            ys, qs = fast
        else:
            ys, qs = to_data_units(r.y, self._offsets, self.loc, self.scale, "x")  # (T, O)
        outs = []
        for t in range(T):
            if not wanted[t]:
                continue
            h_t: np.ndarray | None = None
            if t == T - 1:
                h_t = r.h
            elif per_step_state and r.h_seq is not None:
                h_t = r.h_seq[t]
            y_scaled = r.y[t]
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
        self.h, self.step, self.last_y = r.h, first + T, r.y[-1].copy()
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
