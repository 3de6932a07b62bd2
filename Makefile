# Every target creates and reuses .venv itself: `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.stamp-serve
DEV_STAMP := $(VENV)/.stamp-dev

.PHONY: serve test train evaluate export lint bench bench-gpu clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Serving needs no torch: `make serve` installs the base dependencies only.
$(SERVE_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@ $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(VENV)/bin/gru-serve serve

test: $(DEV_STAMP)
	$(PY) -m pytest -q

train: $(DEV_STAMP)
	$(VENV)/bin/gru-serve train

# The statsmodels backtests, then the three competitions through the serving core.
evaluate: $(DEV_STAMP)
	$(VENV)/bin/gru-serve evaluate
	$(VENV)/bin/gru-serve evaluate --benchmark m3
	$(VENV)/bin/gru-serve evaluate --benchmark m1
	$(VENV)/bin/gru-serve evaluate --benchmark tourism

export: $(DEV_STAMP)
	$(VENV)/bin/gru-serve export

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy cli_common model export service

bench: $(DEV_STAMP)
	$(PY) -m bench

# CPU and CUDA providers on this machine: bench/gpu/results.{md,json}, throughput.png
# (CUDA rows marked unavailable without an NVIDIA GPU).
bench-gpu: $(DEV_STAMP)
	$(PY) -m bench.gpu

# A soak: mixed REST and stream load at ~70% of the measured capacity, 10 minutes by default
# (`make soak SOAK_SECONDS=120` for a shorter one): bench/soak.{md,json,png}.
SOAK_SECONDS ?= 600
.PHONY: soak
soak: $(DEV_STAMP)
	$(PY) -m bench.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
