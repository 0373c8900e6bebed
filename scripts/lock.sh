#!/usr/bin/env bash
# `make lock`: docker/requirements.lock, the image's dependencies pinned with hashes, from pyproject.toml's
# runtime dependencies plus the `postgres` and `server` extras. Run it after changing pyproject.toml's
# dependencies; tests/test_deploy_lock.py fails while the lock and pyproject disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m piptools --version >/dev/null 2>&1 || $PY -m pip install -q 'pip-tools>=7.4'
CUSTOM_COMPILE_COMMAND="make lock" $PY -m piptools compile --quiet --generate-hashes --allow-unsafe \
  --no-emit-index-url --no-emit-trusted-host --no-emit-find-links --strip-extras \
  --extra postgres --extra server --output-file docker/requirements.lock --upgrade pyproject.toml
echo ">> docker/requirements.lock written ($(grep -c '^[a-zA-Z]' docker/requirements.lock) packages)"
