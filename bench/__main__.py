"""`python -m bench [--sections rest,...] [--seconds S] [--levels 1,16,64]`."""

from __future__ import annotations

import argparse
import importlib
import json

from bench.results import MD_PATH, write_section

# name -> module with add_arguments(parser) and run(args) -> (data, markdown).
# A new section (e.g. "stream": bench/stream.py) only needs a line here.
SECTIONS = {
    "rest": "bench.rest",
    "stream": "bench.stream",
    "overload": "bench.overload",
    "models": "bench.models",
    "graph": "bench.graph",
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per level")
    p.add_argument("--levels", default="1,16,64", help="concurrent clients")
    p.add_argument("--model", help="ONNX artifact to serve (default: artifacts/gru.onnx)")
    modules = {name: importlib.import_module(mod) for name, mod in SECTIONS.items()}
    for m in modules.values():
        m.add_arguments(p)
    args = p.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    for name in args.sections.split(","):
        data, markdown = modules[name].run(args)
        write_section(name, data, markdown)
        print(markdown)
        print(json.dumps(data.get("goals", {}), indent=2))
    print(f"written: {MD_PATH} and results.json")


if __name__ == "__main__":
    main()
