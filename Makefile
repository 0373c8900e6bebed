# scanpool — the two commands: `make run` and `make test`. Everything else is a helper of those.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint setup redis clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "!! $(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP) redis
	@mkdir -p var

redis:
	@bash scripts/ensure-redis.sh

## make run: everything in the foreground (Redis, emulator, web, workers); Ctrl-C stops all of it.
run: setup
	@bash scripts/run.sh

## make test: the whole suite against a throwaway redis-server on a free port (started by tests/conftest.py).
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

## make bench: benchmarks (not part of `make test`); prints tables, see docs/benchmarks.md.
bench: setup
	$(PY) -m pytest tests/benchmarks -s -p no:cacheprovider -o addopts=""

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) var/*.sqlite3* var/results
