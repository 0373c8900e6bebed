#!/usr/bin/env bash
# Make sure $1 (default python3.11) is Python 3.11 and can create a virtualenv with pip: Debian ships
# `venv`'s ensurepip in a separate package (python3.11-venv), installed here with apt when run as root.
set -euo pipefail
PYTHON="${1:-python3.11}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "!! $PYTHON not found: install Python 3.11 (Debian 12: apt-get install python3.11 python3.11-venv)," >&2
  echo "   or name another interpreter: make run PYTHON=/path/to/python3.11" >&2
  exit 1
fi
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
  echo "!! $PYTHON does not run: install Python 3.11, or make run PYTHON=/path/to/python3.11" >&2
  exit 1
}
if [ "$version" != "3.11" ]; then
  echo "!! $PYTHON is Python $version; scanpool needs 3.11 (make run PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> $PYTHON cannot create virtualenvs (no ensurepip): installing Debian's python3.11-venv with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q python3.11-venv >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q python3.11-venv >/dev/null; }
  "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 && exit 0
fi
echo "!! $PYTHON cannot create a virtualenv with pip (ensurepip missing). Debian/Ubuntu: sudo apt-get install python3.11-venv" >&2
exit 1
