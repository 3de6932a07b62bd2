"""k GRU forecasters as one: a GRU of k*H units with block-diagonal weights.

Member m owns units [m*H, (m+1)*H) of every gate; no weight crosses members, so each block
evolves exactly as the member alone would on the same inputs, and a head that averages the
members' heads outputs the ensemble mean. It trains and serves as one GRU; the exporter
writes each member as a GRU node of its own (export/graph.py).

When forecasting, the combined model feeds the ensemble mean back as the next input to
every member (each member alone would feed back its own prediction): the served function
is the combined one, and it is what validation scores.
"""

from __future__ import annotations

import torch

from model.gru import GRUConfig, GRUForecaster, GRULayer


def _layer(model: GRUForecaster, i: int) -> GRULayer:
    layer = model.layers[i]
    assert isinstance(layer, GRULayer)  # nn.ModuleList items are typed as Module
    return layer


def _gates(w: torch.Tensor, H: int) -> list[torch.Tensor]:
    return list(w.split(H))  # PyTorch layout: rows r, z, n


@torch.no_grad()
def combine(members: list[GRUForecaster]) -> GRUForecaster:
    first = members[0].config
    for m in members[1:]:
        c = m.config
        if (c.input_size, c.hidden_size, c.num_layers, c.output_size, c.variant) != (
            first.input_size,
            first.hidden_size,
            first.num_layers,
            first.output_size,
            first.variant,
        ):
            raise ValueError("ensemble members must share sizes and variant")
    k, H = len(members), first.hidden_size
    config = GRUConfig(
        first.input_size, k * H, first.num_layers, first.output_size, 0.0, first.variant
    )
    out = GRUForecaster(config)
    for i in range(config.num_layers):
        layer = _layer(out, i)
        parts = [_layer(member, i) for member in members]
        w_ih = torch.zeros_like(layer.weight_ih)  # (3kH, in or kH)
        w_hh = torch.zeros_like(layer.weight_hh)  # (3kH, kH)
        b_ih = torch.zeros_like(layer.bias_ih)
        b_hh = torch.zeros_like(layer.bias_hh)
        for j, p in enumerate(parts):
            own = slice(j * H, (j + 1) * H)
            for g, (wi, wh, bi, bh) in enumerate(
                zip(
                    _gates(p.weight_ih, H),
                    _gates(p.weight_hh, H),
                    _gates(p.bias_ih, H),
                    _gates(p.bias_hh, H),
                    strict=True,
                )
            ):
                rows = slice(g * k * H + j * H, g * k * H + (j + 1) * H)
                if i == 0:
                    w_ih[rows] = wi  # every member reads the same input
                else:
                    w_ih[rows, own] = wi  # and only its own block of the layer below
                w_hh[rows, own] = wh
                b_ih[rows], b_hh[rows] = bi, bh
        layer.weight_ih.copy_(w_ih)
        layer.weight_hh.copy_(w_hh)
        layer.bias_ih.copy_(b_ih)
        layer.bias_hh.copy_(b_hh)
    out.head.weight.copy_(torch.cat([m.head.weight for m in members], dim=1) / k)
    out.head.bias.copy_(torch.stack([m.head.bias for m in members]).mean(dim=0))
    return out.eval()
