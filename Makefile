# scanpool — the two commands: `make run` and `make test`. Everything else is a helper of those.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-sqlite test-postgres smoke lock bench lint setup redis clean

# A venv whose creation failed half-way (no pip) is created again, not left broken.
$(PIP):
	@bash scripts/ensure-python.sh $(PYTHON)
	$(PYTHON) -m venv $(VENV)

# The runtime dependencies at the versions the image pins (docker/requirements.lock, without its hashes: pip checks
# hashes only when installing from files, not this editable checkout), so a new release on PyPI cannot change what
# the tests run against (redis-py 8.2.0 once made every worker's stop wait a minute). The test tools stay unpinned.
$(STAMP): pyproject.toml docker/requirements.lock | $(PIP)
	$(PY) -m pip install -q --upgrade pip
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' docker/requirements.lock > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e '.[test,server]'  # server: gunicorn, for make smoke
	@touch $(STAMP)

setup: $(STAMP) redis
	@mkdir -p var

# `make run` may use a running Redis at REDIS_URL, `make test` one at SCANPOOL_TEST_REDIS_URL, instead of redis-server.
redis:
	@bash scripts/ensure-redis.sh $(REDIS_URL_VAR)

run: REDIS_URL_VAR := REDIS_URL
test test-fast test-sqlite test-postgres bench: REDIS_URL_VAR := SCANPOOL_TEST_REDIS_URL

# The test targets write bytecode (pytest's assertion-rewritten test modules included) even when the environment sets
# PYTHONDONTWRITEBYTECODE: without it every pytest process (a lane has five) and every worker or command it starts
# compiled the project's and the tests' modules again, ~30 s of CPU per lane. __pycache__ is git-ignored. (Not
# PYTHONPYCACHEPREFIX: it would ignore the .pyc pip wrote for the installed packages, and a fresh checkout's first run
# would compile them all in every process.)
test test-fast test-sqlite test-postgres: export PYTHONDONTWRITEBYTECODE :=

## make run: everything in the foreground (Redis, emulator, web, workers); Ctrl-C stops all of it.
run: setup
	@bash scripts/run.sh

## make test: ruff, then the suite against throwaway redis-servers (started by tests/conftest.py) in two lanes
## side by side, on SQLite and on a throwaway PostgreSQL cluster (scripts/ensure-postgres.sh): every test that can
## reach a database runs in both, every other test in one. Why: docs/deployment.md. Each lane's output is printed
## when it ends.
## Installs Debian's chromium (as root) for the dashboard's browser test.
test: setup
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-postgres.sh bindir >/dev/null
	$(PY) -m ruff check .
	@echo ">> SQLite and PostgreSQL lanes side by side; each prints its output when it ends"
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres \
		SQLITE_LANE_ARGS=--database-free-part=1/2 POSTGRES_LANE_ARGS=--database-free-part=2/2

# Each lane runs in TEST_PROCESSES pytest processes (pytest-xdist; each has its own redis-server, test database
# and ports). Most of the suite's time is spent waiting on worker and emulator subprocesses, so several processes
# finish sooner than one even on two cores: six per lane beat four and eight on an idle 2-core machine.
# TEST_PROCESSES=0 runs everything in one process. Timings: docs/deployment.md "Test databases: SQLite and PostgreSQL".
TEST_PROCESSES ?= 6

test-sqlite: setup
	env -u SCANPOOL_TEST_DATABASE_URL $(PY) -m pytest -n $(TEST_PROCESSES) $(SQLITE_LANE_ARGS) $(PYTEST_ARGS)

# Uses the PostgreSQL at SCANPOOL_TEST_DATABASE_URL when set, else starts (and removes) its own cluster.
# `make test` runs each test that pytest-django keeps away from the database once, in one of the two lanes
# (--database-free-part, tests/conftest.py): it runs the same code whatever the lane's database. Every test that
# can reach a database runs in both. `make test-sqlite` and `make test-postgres` alone run every test.
test-postgres: setup
	bash scripts/ensure-postgres.sh run $(PY) -m pytest -n $(TEST_PROCESSES) $(POSTGRES_LANE_ARGS) $(PYTEST_ARGS)

## make smoke: the production entrypoints (migrate, gunicorn, workers in network namespaces) on PostgreSQL
## and a Redis with a password, driven through the API. See docs/deployment.md "Smoke test".
smoke: setup
	bash scripts/smoke.sh

## make lock: regenerate docker/requirements.lock (hashed) from pyproject.toml's dependencies.
lock: setup
	bash scripts/lock.sh

## make test-fast: the unit lane, without the tests that drive worker processes (marked `integration`).
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(TEST_PROCESSES) -m "not integration"

## make bench: benchmarks (not part of `make test`); prints tables, see docs/benchmarks.md.
bench: setup
	$(PY) -m pytest tests/benchmarks -s -p no:cacheprovider -o addopts=""

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) var/*.sqlite3* var/results
