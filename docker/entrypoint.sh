#!/bin/sh
# scanpool container entrypoint.
#   web                 gunicorn on :8000 (migrations are the "migrate" service's job)
#   migrate             apply migrations; load $SCANPOOL_SCANNERS_FILE when it exists (idempotent)
#   worker [--pools P]  a scan worker (RQ worker + scheduler); pools from --pools or WORKER_POOLS
#   anything else       passed to manage.py (e.g. reconcile, export_scanners, createsuperuser)
set -eu
cd /app

case "${1:-web}" in
  web)
    shift || true
    exec gunicorn scanpool_site.wsgi:application \
      --bind "0.0.0.0:${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-3}" \
      --timeout "${WEB_TIMEOUT:-60}" \
      --access-logfile - "$@"
    ;;
  migrate)
    python manage.py migrate --noinput
    if [ -n "${SCANPOOL_SCANNERS_FILE:-}" ] && [ -f "${SCANPOOL_SCANNERS_FILE}" ]; then
      python manage.py load_scanners "${SCANPOOL_SCANNERS_FILE}"
    fi
    ;;
  worker)
    shift
    exec python manage.py scanworker "$@"
    ;;
  *)
    exec python manage.py "$@"
    ;;
esac
