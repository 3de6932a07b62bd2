"""The GRU of docs/design.md ("The GRU, two variants") and the forecaster built on it.

Parameters are stored in PyTorch's layout (gate rows r, z, n; two bias vectors) for both
variants, so an `nn.GRU` state dict loads straight into the `cudnn` variant. For `cho2014`
the two candidate biases simply add up to the single `b_h` of the formulas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from model.settings import VARIANTS

__all__ = ["VARIANTS", "GRUConfig", "GRULayer", "GRUForecaster"]


@dataclass
class GRUConfig:
    input_size: int = 1
    hidden_size: int = 64
    num_layers: int = 2
    output_size: int = 1  # the head predicts the next observation: output_size == input_size
    dropout: float = 0.0  # between layers, training only
    variant: str = "cho2014"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}: expected one of {VARIANTS}")
        for name in ("input_size", "hidden_size", "num_layers", "output_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


class GRULayer(nn.Module):
    """One GRU layer over a whole sequence; rows past their length keep their state."""

    def __init__(self, input_size: int, hidden_size: int, variant: str) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.variant = variant
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))  # rows r, z, n
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.GRU's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, T, in), h (B, H), lengths (B,) -> out (B, T, H), h_last (B, H)
        H = self.hidden_size
        gx = torch.nn.functional.linear(
            x, self.weight_ih, self.bias_ih
        )  # (B, T, 3H), all steps at once
        w_rz, w_hn = self.weight_hh.split((2 * H, H))
        b_rz, b_hn = self.bias_hh.split((2 * H, H))
        outs = []
        # unbind, not gx[:, t]: the backward of an index builds a zero gradient the size of
        # all of gx for every step (O(T^2) memory traffic, three quarters of a training step);
        # unbind's backward stacks the steps' gradients once. The same goes for slicing the
        # weights once here rather than in the loop.
        for t, g in enumerate(gx.unbind(1)):
            if self.variant == "cho2014":
                x_rz, x_n = g.split((2 * H, H), dim=1)
                r, z = torch.sigmoid(x_rz + torch.nn.functional.linear(h, w_rz, b_rz)).split(H, 1)
                c = torch.tanh(
                    x_n + torch.nn.functional.linear(r * h, w_hn, b_hn)
                )  # reset BEFORE U_h
                h_new = (1 - z) * h + z * c
            else:
                x_r, x_z, x_n = g.split(H, dim=1)
                gh = torch.nn.functional.linear(h, self.weight_hh, self.bias_hh)
                h_r, h_z, h_n = gh.split(H, dim=1)
                r = torch.sigmoid(x_r + h_r)
                z = torch.sigmoid(x_z + h_z)
                n = torch.tanh(x_n + r * h_n)  # reset AFTER the matrix product
                h_new = (1 - z) * n + z * h
            if lengths is not None:
                keep = (t < lengths).unsqueeze(1)  # (B, 1)
                h_new = torch.where(keep, h_new, h)
            h = h_new
            outs.append(h)
        return torch.stack(outs, dim=1), h


class GRUForecaster(nn.Module):
    """Stacked GRU layers plus a linear head from the top hidden state to the next value."""

    def __init__(self, config: GRUConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.layers = nn.ModuleList(
            GRULayer(c.input_size if i == 0 else c.hidden_size, c.hidden_size, c.variant)
            for i in range(c.num_layers)
        )
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, c.output_size)

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, T, F), h0 (L, B, H), lengths (B,) -> y (B, T, O), h_n (L, B, H)
        B = x.shape[0]
        if h0 is None:
            h0 = x.new_zeros(self.config.num_layers, B, self.config.hidden_size)
        out, finals = x, []
        for i, layer in enumerate(self.layers):
            if i > 0:
                out = self.drop(out)
            out, h_last = layer(out, h0[i], lengths)
            finals.append(h_last)
        return self.head(out), torch.stack(finals)

    @torch.no_grad()
    def rollout(
        self, history: torch.Tensor, horizon: int, h0: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forecast `horizon` steps after `history` (B, T, F), feeding predictions back: (B, horizon, O)."""
        if self.config.output_size != self.config.input_size:
            raise ValueError(
                "rollout needs output_size == input_size (the head predicts the next input)"
            )
        y, h = self(history, h0)
        step, preds = y[:, -1:], [y[:, -1:]]
        for _ in range(horizon - 1):
            step, h = self(step, h)
            preds.append(step)
        return torch.cat(preds, dim=1)

    def load_torch_gru(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the weights of an `nn.GRU(batch_first=...)` (keys `weight_ih_l0` ...)."""
        if self.config.variant != "cudnn":
            raise ValueError(
                "an nn.GRU state dict only means the same function in the 'cudnn' variant"
            )
        for i, layer in enumerate(self.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                key = f"{name}_l{i}"
                if key not in state_dict:
                    raise KeyError(f"nn.GRU state dict has no {key!r}")
                getattr(layer, name).data.copy_(state_dict[key])
