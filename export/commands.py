"""`gru-serve export`: checkpoint -> ONNX artifact, proven equal to the torch module first.

Nothing heavy at import time (the CLI dispatcher imports this for `serve` too): torch, onnx
and onnxruntime are imported inside `run_export`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

DEFAULT_CHECKPOINT = "artifacts/checkpoint.pt"
DEFAULT_OUT = "artifacts/gru.onnx"


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to the ONNX artifact the service loads",
        description="Build the ONNX artifact from a checkpoint, check it against the torch "
        "module (max abs error <= 1e-5) and write it atomically.",
    )
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"default {DEFAULT_CHECKPOINT}")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    p.set_defaults(run=run_export)


def _check_out_dir(out: Path) -> None:
    """Fail before the slow work if the artifact could not be written anyway."""
    from service.cli import CliError

    if out.is_dir():
        raise CliError(f"--out {out} is a directory, expected a file path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create output directory {out.parent}: {e.strerror or e}") from None
    if not os.access(out.parent, os.W_OK):
        raise CliError(f"output directory {out.parent} is not writable")


def write_atomic(out: Path, data: bytes) -> None:
    """Temp file in the same directory, then rename: readers never see half an artifact."""
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(
            fd, 0o666 & ~umask
        )  # mkstemp's 0600 would hide the artifact from a container user
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_export(args: argparse.Namespace) -> int:
    import onnx
    import onnxruntime
    import torch

    from export.checkpoint_weights import meta_from_checkpoint, weights_from_model
    from export.graph import build_model
    from export.verify import TOLERANCE, check_parity
    from model.checkpoint import load_checkpoint
    from service.cli import CliError

    out = Path(args.out)
    _check_out_dir(out)
    try:
        model, info = load_checkpoint(args.checkpoint)
    except FileNotFoundError:
        raise CliError(f"checkpoint {args.checkpoint} does not exist") from None
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        # ValueError: not a checkpoint or unknown variant; the others: a config/state_dict that
        # does not fit the model.
        raise CliError(f"cannot load checkpoint {args.checkpoint}: {e}") from None
    versions = {
        "export_torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        meta = meta_from_checkpoint(model.config, info if isinstance(info, dict) else {}, versions)
        proto = build_model(weights_from_model(model), meta)
    except (ValueError, TypeError) as e:
        raise CliError(f"cannot export {args.checkpoint}: {e}") from None
    data = proto.SerializeToString()
    err = check_parity(model, data)
    if not err <= TOLERANCE:  # `not <=` also catches NaN
        raise CliError(
            f"parity check failed: ONNX differs from the torch module by {err:.3g} "
            f"(max allowed {TOLERANCE:g}); nothing written"
        )
    try:
        write_atomic(out, data)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from None
    print(
        f"wrote {out} ({meta.name} {meta.version}, {meta.variant}, parity max abs error {err:.2e})"
    )
    return 0
