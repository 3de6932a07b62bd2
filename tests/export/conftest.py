"""Make the export tests' plain helper modules importable under any pytest import mode.

`reference` (tests/) and `export_helpers` (tests/export/) are imported by name; the default
"prepend" mode puts their directories on sys.path only as a side effect of where conftest
files sit, and "importlib" mode not at all, so say it explicitly.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
