#!/bin/sh
# scanpool's entrypoint: the container's (docker/Dockerfile) and the smoke test's (scripts/smoke.sh), same commands.
#   web                 gunicorn on $SCANPOOL_BIND (default 0.0.0.0:8000 in a container; compose publishes it
#                       on 127.0.0.1 only). Migrations are the "migrate" command's job, not web's.
#   migrate             apply migrations; then load $SCANPOOL_SCANNERS_FILE when it exists (idempotent)
#   worker [ARGS]       a scan worker (RQ worker + scheduler) serving $WORKER_POOLS (or --pools)
#   mcp [ARGS]          the MCP server over HTTP (python -m tasks.mcp.server --transport http: a client of the
#                       REST API that needs no database, Redis or Django keys — SCANPOOL_API_URL, SCANPOOL_API_TOKEN[_FILE],
#                       SCANPOOL_MCP_TOKEN[_FILE])
#   anything else       passed to manage.py (reconcile, createsuperuser, create_api_token, check --deploy, …)
# Secrets: VAR_FILE (DJANGO_SECRET_KEY, SCANPOOL_SECRET_KEYS, SCANPOOL_METRICS_TOKEN, SCANPOOL_MCP_TOKEN) and DATABASE_PASSWORD_FILE /
# REDIS_PASSWORD_FILE (put into DATABASE_URL / REDIS_URL) are read from files, e.g. Compose secrets, so no secret
# sits in the environment of `docker inspect` or in the compose file (docker/secret_env.py).
set -eu
cd "${SCANPOOL_APP_DIR:-$(dirname "$0")/..}"
PYTHON="${PYTHON:-python}"

# An assignment, not eval "$(…)": a bad secret file must stop here (eval of nothing would succeed).
exports=$("$PYTHON" docker/secret_env.py)
eval "$exports"
unset exports

cmd="${1:-web}"
[ $# -gt 0 ] && shift
case "$cmd" in
  web)
    exec "$PYTHON" -m gunicorn scanpool_site.wsgi:application \
      --config python:scanpool_site.gunicorn_conf \
      --bind "${SCANPOOL_BIND:-0.0.0.0:8000}" \
      --workers "${WEB_CONCURRENCY:-3}" \
      --timeout "${WEB_TIMEOUT:-60}" \
      --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
      --access-logfile - "$@"
    ;;
  migrate)
    "$PYTHON" manage.py migrate --noinput
    if [ -n "${SCANPOOL_SCANNERS_FILE:-}" ] && [ -f "${SCANPOOL_SCANNERS_FILE}" ]; then
      "$PYTHON" manage.py load_scanners "${SCANPOOL_SCANNERS_FILE}"
    fi
    ;;
  worker)
    exec "$PYTHON" manage.py scanworker "$@"
    ;;
  mcp)
    exec "$PYTHON" -m tasks.mcp.server --transport http "$@"
    ;;
  *)
    exec "$PYTHON" manage.py "$cmd" "$@"
    ;;
esac
