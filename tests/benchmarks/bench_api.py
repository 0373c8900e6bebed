"""API benchmark (``make bench``): submit and status throughput of /api/v1/scans/ next to a bare DRF
endpoint on the same stack (same settings, token authentication, model permission and throttle classes,
middleware; in-process WSGI client, SQLite), so the table shows what scanpool's own work costs.

- submit: ``POST /api/v1/scans/`` (validation, scope check, one transaction writing the task, its first
  event and its target index; the dispatch request after commit goes to the test Redis) vs ``POST`` of the
  same JSON body to the bare endpoint;
- status: ``GET /api/v1/scans/{id}/`` of a queued task (queue position and wait estimate, events) and with
  ``?events=0``, vs ``GET`` of the bare endpoint.

This test makes the pool, a scanner and an API token in the test database; the requests are timed in a child
process with production settings (tests/benchmarks/api_child.py: ``DJANGO_DEBUG=0``, HTTPS, the throttle
counting in the test Redis, only the application's modules in memory, as in a web worker). Throttle rates are
raised for the run. ``SCANPOOL_BENCH_API_REQUESTS`` (default 1000) requests each, after 20 warm-up requests (300
until 2026-12-05: ten rounds, whose per-round ratios (0.4 to 0.7) made a run's ratio vary by about ±0.03 from one
run to the next; 33 rounds narrow that, and the status reads now look up a queue of 1,000+ waiting tasks).
Each endpoint is timed in rounds of 30 requests interleaved with the bare endpoint's rounds (bare, endpoint,
bare, …), so a change of the machine's load during the run hits both sides of a ratio alike; the per-round
ratios give the spread printed under the table, and under it the full (generation 2) garbage collections
that fell in each side's rounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tasks.models import ApiToken, ScanTask
from tests.api_support import OPERATE, user_with
from tests.benchmarks.children import production_env
from tests.factories import PoolFactory, ScannerFactory

REQUESTS = int(os.environ.get("SCANPOOL_BENCH_API_REQUESTS", "1000"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_api_throughput_against_a_bare_drf_endpoint(redis_conn):
    assert connection.vendor == "sqlite"
    pool = PoolFactory(name="bench", scope=["192.0.2.0/24"], max_queued=0)
    ScannerFactory(pool=pool, name="bench-1", max_concurrent_scans=4)
    _, key = ApiToken.issue(user_with(OPERATE, "bench"), "bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "scanpool_site.settings",
           "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}", "REDIS_URL": settings.REDIS_URL,
           "DJANGO_ALLOWED_HOSTS": "testserver", "SCANPOOL_API_SUBMIT_RATE": "1000000/min",
           "SCANPOOL_API_READ_RATE": "1000000/min", "SCANPOOL_BENCH_API_REQUESTS": str(REQUESTS),
           "SCANPOOL_BENCH_API_TOKEN": key, **production_env()}
    proc = subprocess.run([sys.executable, "-m", "tests.benchmarks.api_child"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    print("\n" + proc.stdout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ScanTask.objects.count() == REQUESTS + 20
