#!/usr/bin/env bash
# Make sure a redis-server binary is available: the system's, or Debian's package installed with apt.
# $1 names a variable (REDIS_URL for `make run`, SCANPOOL_TEST_REDIS_URL for `make test`): when it is set
# and a Redis answers there, that Redis is used and no binary is needed.
set -euo pipefail
URL_VAR="${1:-}"
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ -n "$URL_VAR" ] && [ -n "${!URL_VAR:-}" ]; then
  if .venv/bin/python -c "import os, redis; redis.Redis.from_url(os.environ['$URL_VAR'], socket_connect_timeout=2).ping()" 2>/dev/null; then
    echo ">> no redis-server binary; using the Redis at \$$URL_VAR"
    exit 0
  fi
  echo "!! $URL_VAR is set but no Redis answers there" >&2
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> redis-server not found: installing Debian's redis-server package with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
  # The package starts a system service on 6379 on some systems; scanpool runs its own, so leave it.
  command -v redis-server >/dev/null 2>&1 && exit 0
fi
cat >&2 <<'MSG'
!! redis-server is required and could not be installed automatically.
   Install it, then run the command again:
     Debian/Ubuntu:  sudo apt-get install redis-server
     Fedora/RHEL:    sudo dnf install redis
     macOS:          brew install redis
   Or point REDIS_URL (make run) or SCANPOOL_TEST_REDIS_URL (make test) at a running Redis
   (it must use maxmemory-policy noeviction).
MSG
exit 1
