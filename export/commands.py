"""`gru-serve export`: checkpoint -> ONNX artifact, proven equal to the torch module first.

Nothing heavy at import time (the CLI dispatcher imports this for `serve` too): torch, onnx
and onnxruntime are imported inside `run_export`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from cli_common import CliError
from cli_common.extras import require_train_extra
from cli_common.identity import check_identity
from cli_common.paths import check_output_file

DEFAULT_CHECKPOINT = "artifacts/checkpoint.pt"
DEFAULT_OUT = "artifacts/gru.onnx"
DEFAULT_CUDA_OUT = "artifacts/gru-cuda.onnx"
TARGETS = ("cpu", "cuda")  # export.contract.TARGETS, repeated: that module imports numpy


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to the ONNX artifact the service loads",
        description="Build the ONNX artifact from a checkpoint, check it against the torch "
        "module (max abs error <= 1e-5) and write it atomically. Needs the 'train' extra "
        "(pip install -e '.[train]').",
    )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        metavar="FILE",
        help="checkpoint to export (default %(default)s)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help=f"ONNX artifact to write, replaced atomically (default {DEFAULT_OUT}; "
        f"{DEFAULT_CUDA_OUT} with --target cuda)",
    )
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="cpu",
        help="graph family: cpu (ONNX GRU nodes, one per layer or per ensemble member and layer; "
        "the default) or cuda (the step "
        "in operators the CUDA provider runs, every node on the GPU)",
    )
    p.add_argument(
        "--name",
        help="the model's name in the artifact, /v1/models and resume tokens (default: the "
        "checkpoint's)",
    )
    p.add_argument(
        "--version",
        dest="model_version",
        metavar="VERSION",
        help="the model's version (default: the checkpoint's)",
    )
    p.set_defaults(run=run_export)


def _check_out_dir(out: Path) -> None:
    """Fail before the slow work if the artifact could not be written anyway."""
    check_output_file(out, "--out")
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
    require_train_extra()  # torch and onnx: not in `make serve`'s install
    import onnx
    import onnxruntime
    import torch

    from export.checkpoint_weights import meta_from_checkpoint, weights_from_model
    from export.cuda_graph import build_cuda_model
    from export.cuda_kernels import unsupported_nodes
    from export.digest import weights_digest
    from export.graph import build_model
    from export.verify import TOLERANCE, check_parity
    from model.checkpoint import load_checkpoint

    out = Path(args.out or (DEFAULT_CUDA_OUT if args.target == "cuda" else DEFAULT_OUT))
    if args.name is not None or args.model_version is not None:
        check_identity(
            "-" if args.name is None else args.name,
            "-" if args.model_version is None else args.model_version,
        )
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
        weights = weights_from_model(model)
        meta = replace(
            meta,
            target=args.target,
            name=meta.name if args.name is None else args.name,
            version=meta.version if args.model_version is None else args.model_version,
            weights_sha256=weights_digest(weights, meta.variant),
        )
        build = build_cuda_model if args.target == "cuda" else build_model
        proto = build(weights, meta)
    except (ValueError, TypeError) as e:
        raise CliError(f"cannot export {args.checkpoint}: {e}") from None
    off_gpu = unsupported_nodes(proto) if args.target == "cuda" else []
    if off_gpu:
        raise CliError(
            f"the cuda graph has {len(off_gpu)} node(s) the CUDA provider would not run "
            f"({off_gpu[0]}); nothing written"
        )
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
        f"wrote {out} ({meta.name} {meta.version}, {meta.variant}, target {meta.target}, "
        f"parity max abs error {err:.2e})"
    )
    return 0
