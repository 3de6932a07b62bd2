"""Training settings: torch-free, so the CLI can show defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainSettings:
    variant: str = "cho2014"
    hidden_size: int = 48
    num_layers: int = 1
    dropout: float = 0.0
    epochs: int = 40
    steps_per_epoch: int = 50
    batch_size: int = 64
    lr: float = 3e-3
    cosine: bool = False  # cosine learning-rate decay over all epochs
    lr_floor: float = 0.05  # the decay's last rate, as a fraction of lr
    patience: int = 8
    horizon: int = 12
    min_context: int = 24
    context_length: int = 104  # longest training context = what clients should send
    teacher_weight: float = 0.3  # weight of the one-step loss over the history
    seed: int = 0
    max_minutes: float = 4.0  # safety net for the 5-minute budget; hitting it is recorded
