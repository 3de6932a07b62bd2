"""Self-describing checkpoints: one loader for training, evaluation and export.

A checkpoint is a `torch.save` dict:
    format      "gru-serve-checkpoint/1"
    config      GRUConfig as a dict (variant included)
    state_dict  GRUForecaster weights
    info        name, version, scaler (export.contract.Scaler fields), quantile_levels,
                quantile_offsets (scaled space, [level][step]), metrics, data (provenance),
                versions (torch, numpy ...), context_length, train settings
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from model.gru import GRUConfig, GRUForecaster

FORMAT = "gru-serve-checkpoint/1"


def save_checkpoint(path: str | Path, model: GRUForecaster, info: dict) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the checkpoint from other users (containers)
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[GRUForecaster, dict]:
    """Return (model in eval mode, info). Raises ValueError for a file that is not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    model = GRUForecaster(GRUConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval(), blob["info"]
