#!/usr/bin/env bash
# Make sure a redis-server binary is available: the system's, or Debian's package installed with apt.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
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
   Or point REDIS_URL at a running Redis (it must use maxmemory-policy noeviction).
MSG
exit 1
