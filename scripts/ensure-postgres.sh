#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for `make test` and `make smoke`, the way ensure-redis.sh provides Redis.
#
#   scripts/ensure-postgres.sh bindir            print the directory holding initdb/pg_ctl (installs Debian's
#                                               `postgresql` package with apt-get when missing and root)
#   scripts/ensure-postgres.sh run CMD [ARGS…]   start a cluster in a temp dir on a free port (unix socket in
#                                               that dir; TCP on $PG_LISTEN, default 127.0.0.1 only), export
#                                               SCANPOOL_TEST_DATABASE_URL (superuser scanpool, database
#                                               scanpool), run CMD, stop and delete the cluster whatever happens.
#
# $SCANPOOL_TEST_DATABASE_URL already set: `run` uses that server and starts nothing.
# initdb refuses root: as root the cluster belongs to the `postgres` system user (created by the package).
# PG_PASSWORD_FILE set: TCP logins need that password (scram-sha-256); the unix socket in the 0700 temp dir
# trusts its owner. PG_LISTEN: comma-separated TCP addresses (default 127.0.0.1).
set -euo pipefail

find_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  fi
  # Debian keeps the server binaries off PATH, one directory per major version: take the newest.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"; return 0
  fi
  return 1
}

ensure_bindir() {
  local d
  if d=$(find_bindir); then echo "$d"; return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo ">> PostgreSQL not found: installing Debian's postgresql package with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    # The package may start a system cluster on 5432; scanpool's tests run their own, so leave it.
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
    if d=$(find_bindir); then echo "$d"; return 0; fi
  fi
  cat >&2 <<'MSG'
!! PostgreSQL (initdb, pg_ctl) is required and could not be installed automatically.
   Install it, then run the command again:
     Debian/Ubuntu:  sudo apt-get install postgresql
     Fedora/RHEL:    sudo dnf install postgresql-server
     macOS:          brew install postgresql
   Or point SCANPOOL_TEST_DATABASE_URL at a PostgreSQL whose user may create databases.
MSG
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

run_cluster() {
  if [ -n "${SCANPOOL_TEST_DATABASE_URL:-}" ]; then
    echo ">> using the PostgreSQL at \$SCANPOOL_TEST_DATABASE_URL"
    exec "$@"
  fi
  local bindir dir port as=() listen="${PG_LISTEN:-127.0.0.1}"
  bindir=$(ensure_bindir)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/scanpool-pg-XXXXXX")
  port=$(free_port)
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || { echo "!! running as root, but there is no 'postgres' user to own the cluster" >&2; exit 1; }
    chown postgres: "$dir"
    as=(runuser -u postgres --)
  fi
  chmod 0700 "$dir"
  stop_cluster() {
    "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
  }
  trap 'stop_cluster' EXIT
  trap 'exit 130' INT TERM

  local auth=(--auth-local=trust --auth-host=reject)
  if [ -n "${PG_PASSWORD_FILE:-}" ]; then
    cp "$PG_PASSWORD_FILE" "$dir/pwfile"
    [ ${#as[@]} -eq 0 ] || chown postgres: "$dir/pwfile"
    auth=(--auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pwfile")
  fi
  "${as[@]}" "$bindir/initdb" -D "$dir/data" -U scanpool -E UTF8 --locale=C.UTF-8 "${auth[@]}" >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$dir/pwfile"
  if [ -n "${PG_PASSWORD_FILE:-}" ]; then
    # initdb's host lines cover 127.0.0.1/::1 only; PG_LISTEN may add other addresses (the smoke test's links).
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$dir/data/pg_hba.conf"
  fi
  # fsync off: a throwaway cluster needs no crash safety, and the tests commit a lot.
  "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses='$listen' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  "${as[@]}" "$bindir/createdb" -h "$dir" -p "$port" -U scanpool scanpool
  # psycopg reads a unix socket directory from the host part (percent-encoded in the URL).
  local host
  host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$dir")
  export SCANPOOL_TEST_DATABASE_URL="postgres://scanpool@$host:$port/scanpool"
  export SCANPOOL_PG_DIR="$dir" SCANPOOL_PG_PORT="$port"
  echo ">> throwaway $("$bindir/postgres" --version) cluster in $dir (port $port)"
  local rc=0
  "$@" || rc=$?
  exit $rc
}

case "${1:-}" in
  bindir) ensure_bindir ;;
  run) shift; [ $# -gt 0 ] || { echo "usage: $0 run CMD [ARGS…]" >&2; exit 2; }; run_cluster "$@" ;;
  *) echo "usage: $0 bindir | run CMD [ARGS…]" >&2; exit 2 ;;
esac
