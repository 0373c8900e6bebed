"""A kept database connection (``DATABASE_CONN_MAX_AGE``, as docker-compose sets it) that the server dropped —
a PostgreSQL restart, an idle timeout, a proxy — costs no failed request: the settings check a kept connection
before a request reuses it (``CONN_HEALTH_CHECKS``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]

# Runs with the production settings module: a request, then the server ends the connection the request kept,
# then another request. Prints each request's database check of /readyz.
SCRIPT = """
import json, django, psycopg
from wsgiref.util import setup_testing_defaults
from django.core.wsgi import get_wsgi_application
from django.db import connection
app = get_wsgi_application()  # as gunicorn calls it (Django's test client skips the connection handling)
def database():
    environ = {"PATH_INFO": "/readyz", "HTTP_HOST": "testserver"}
    setup_testing_defaults(environ)
    body = b"".join(app(environ, lambda status, headers: None))
    return json.loads(body)["checks"]["database"]
first = database()
pid = connection.connection.info.backend_pid
with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
    other.execute("SELECT pg_terminate_backend(%s)", [pid])
second = database()
print(json.dumps({"first": first, "second": second, "kept": connection.settings_dict["CONN_MAX_AGE"],
                  "new_backend": connection.connection.info.backend_pid != pid}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_dropped_kept_connection_costs_no_failed_request():
    if connection.vendor != "postgresql":
        pytest.skip("the server ending a connection: PostgreSQL (SQLite has no server)")
    db = connection.settings_dict
    url = (f"postgres://{quote(db['USER'], safe='')}:{quote(db['PASSWORD'] or '', safe='')}"
           f"@{quote(db['HOST'] or 'localhost', safe='')}:{db['PORT'] or 5432}/{quote(db['NAME'], safe='')}")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "scanpool_site.settings", "DJANGO_DEBUG": "1",
           "DATABASE_URL": url, "DATABASE_CONN_MAX_AGE": "60", "DJANGO_ALLOWED_HOSTS": "testserver",
           "REDIS_URL": settings.REDIS_URL,
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["kept"] == 60
    assert seen["first"]["ok"], seen
    assert seen["second"]["ok"], seen  # without the health check: "terminating connection due to administrator…"
    assert seen["new_backend"]


def test_connections_are_checked_before_reuse_only_when_kept():
    code = ("import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'scanpool_site.settings';"
            "from django.conf import settings as s; d = s.DATABASES['default'];"
            "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])")
    for max_age, expected in (("", "0 False"), ("60", "60 True")):
        env = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_CONN_MAX_AGE": max_age}
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == expected
