"""Training settings: torch-free, so the CLI can show defaults without importing torch.

The defaults are the bundled model's recipe (model/bundled.py). `horizon` and `min_context`
apply to --csv training only: the competitions bring their own horizons and context ranges
(model/corpus.py)."""

from __future__ import annotations

from dataclasses import dataclass

# The two GRU formulas (model/gru.py, docs/design.md): reset gate before or after U_h.
VARIANTS = ("cho2014", "cudnn")


@dataclass
class TrainSettings:
    name: str = "gru-forecaster"  # the model's identity in the artifact, /v1/models, tokens
    version: str = "2.3.0"
    variant: str = "cho2014"
    hidden_size: int = 56
    num_layers: int = 1
    dropout: float = 0.0
    epochs: int = 32
    steps_per_epoch: int = 375
    batch_size: int = 128
    lr: float = 3e-3
    cosine: bool = True  # cosine learning-rate decay over all epochs
    lr_floor: float = 0.05  # the decay's last rate, as a fraction of lr
    patience: int = 32  # = epochs: every model runs the whole cosine schedule (best epoch kept)
    horizon: int = 12
    min_context: int = 24
    # --csv: longest training context, recommended to clients; competitions: the context the
    # members are validated at while training (the served one is chosen afterwards)
    context_length: int = 104
    teacher_weight: float = 0.3  # weight of the one-step loss over the history
    seed: int = 0
    max_minutes: float = 25.0  # per model (ensemble member); hitting it is recorded
    members: int = 3  # ensemble members (the bundled recipe; a CSV trains one model)
    val_share: float = 0.2  # bundled recipe: share of series that give a validation window
