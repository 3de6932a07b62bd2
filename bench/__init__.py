"""`make bench` (`python -m bench`): load generators against real uvicorn processes on 127.0.0.1.

Sections (one module each, e.g. `bench/rest.py`) return their figures and a markdown table;
`bench/results.py` merges them into `bench/results.json` and `bench/results.md`, so a section
can be re-run on its own (`python -m bench --sections rest`) without losing the others'.
"""
