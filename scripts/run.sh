#!/usr/bin/env bash
# `make run`: Redis (own instance unless REDIS_URL already answers), the Nessus emulator, the web
# server and the scan workers, all in the foreground. Ctrl-C stops every one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# var/ (SCANPOOL_VAR_DIR) holds the database, generated keys, the Redis password and Redis' data: private to this user.
umask 077
VAR="${SCANPOOL_VAR_DIR:-var}"
mkdir -p "$VAR/redis"
VAR="$(cd "$VAR" && pwd)"
chmod 700 "$VAR" "$VAR/redis"

# A development install: DEBUG on, keys generated into var/ on first use (scanpool_site/settings.py).
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"

# Redis requires a password (write access to Redis = code execution in the workers): generated once into
# $VAR/redis-password (0600), handed to redis-server on stdin (never on a command line) and carried by REDIS_URL.
if [ -z "${REDIS_URL:-}" ]; then
  if [ ! -s "$VAR/redis-password" ]; then
    $PY -c 'import secrets; print(secrets.token_hex(32))' > "$VAR/redis-password"
  fi
  chmod 600 "$VAR/redis-password"
  REDIS_PASSWORD="$(cat "$VAR/redis-password")"
  export REDIS_URL="redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"
fi
REDIS_URL_SHOWN=$($PY -c 'import os; from scanpool_site.redis_url import redacted; print(redacted(os.environ["REDIS_URL"]))')
WEB_ADDR="${SCANPOOL_WEB_ADDR:-127.0.0.1:8000}"
EMULATOR_PORT="${SCANPOOL_EMULATOR_PORT:-8834}"
EMULATOR_INSTANCES="${SCANPOOL_EMULATOR_INSTANCES:-2}"
# setup_demo points the demo pool's scanners at these ports and prints the web address.
export SCANPOOL_EMULATOR_PORT="$EMULATOR_PORT" SCANPOOL_EMULATOR_INSTANCES="$EMULATOR_INSTANCES" SCANPOOL_WEB_ADDR="$WEB_ADDR"

pids=()
redis_pid=""
# Children run in their own sessions (setsid, so Ctrl-C reaches only this script): the trap stops them.
cleanup() {
  # A second Ctrl-C, or make forwarding the SIGTERM it got, must not cut the clean-up short (Redis would be left running).
  trap "" INT TERM
  trap - EXIT
  echo
  echo ">> stopping scanpool (${#pids[@]} processes)"
  # Workers, web and emulator first (workers release their RQ locks in Redis), Redis last.
  for pid in "${pids[@]}"; do [ "$pid" = "$redis_pid" ] || kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do [ "$pid" = "$redis_pid" ] || wait "$pid" 2>/dev/null || true; done
  if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

redis_host_port=$($PY - <<'PYEOF'
import os
from urllib.parse import urlparse
u = urlparse(os.environ["REDIS_URL"])
print(f"{u.hostname or '127.0.0.1'} {u.port or 6379}")
PYEOF
)
read -r REDIS_HOST REDIS_PORT <<<"$redis_host_port"
if $PY -c "import redis,os,sys; redis.Redis.from_url(os.environ['REDIS_URL'], socket_connect_timeout=1).ping()" 2>/dev/null; then
  echo ">> using the Redis already running at $REDIS_URL_SHOWN"
else
  echo ">> starting redis-server on $REDIS_HOST:$REDIS_PORT (with a password, maxmemory-policy noeviction, data in $VAR/redis)"
  # In its own session, so Ctrl-C reaches the workers first and Redis is stopped last (by cleanup).
  # `redis-server -` reads configuration from stdin first: the password never shows in `ps`. What it prints before
  # its log file is open ("Reading config from stdin") goes to that log too, not to the terminal.
  redis_password=$($PY -c 'import os; from urllib.parse import urlparse; print(urlparse(os.environ["REDIS_URL"]).password or "")')
  if [ -z "$redis_password" ]; then
    echo "!! REDIS_URL has no password: put one in it (redis://:PASSWORD@host:port/0), or unset REDIS_URL" >&2
    exit 1
  fi
  printf 'requirepass %s\n' "$redis_password" | setsid redis-server - --port "$REDIS_PORT" --bind "$REDIS_HOST" \
    --dir "$VAR/redis" --maxmemory-policy noeviction --appendonly yes --save "" --daemonize no \
    --logfile "$VAR/redis/redis.log" >>"$VAR/redis/redis.log" &
  redis_pid=$!
  pids+=($!)
  redis_up=""
  for _ in $(seq 1 50); do
    if $PY -c "import redis,os; redis.Redis.from_url(os.environ['REDIS_URL']).ping()" 2>/dev/null; then
      redis_up=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$redis_up" ]; then
    echo "!! redis-server did not start on $REDIS_HOST:$REDIS_PORT (port taken, e.g. by a Redis without this password? see $VAR/redis/redis.log)" >&2
    exit 1
  fi
fi

$PY manage.py migrate --noinput -v 0
$PY manage.py setup_demo

echo ">> starting the Nessus emulator: $EMULATOR_INSTANCES instances from port $EMULATOR_PORT (HTTPS, self-signed)"
setsid $PY manage.py nessus_emulator --port "$EMULATOR_PORT" --instances "$EMULATOR_INSTANCES" --scan-seconds 60 &
pids+=($!)

echo ">> starting the scan worker (all pools, with the RQ scheduler)"
setsid $PY manage.py scanworker &
pids+=($!)

echo ">> starting the web server on http://$WEB_ADDR/  (Ctrl-C stops everything)"
setsid $PY manage.py runserver "$WEB_ADDR" --noreload &
pids+=($!)

# Stop everything as soon as any one process exits. Each child runs in its own session (setsid): Ctrl-C
# reaches this script only, whose trap stops them in order, so no child exits on its own and reports a crash.
# A process that ends on its own is a crash (they all serve until stopped): run.sh then fails, and `make run` with it.
status=0
wait -n "${pids[@]}" || status=$?
echo ">> a scanpool process exited (status $status): stopping the others"
exit 1
