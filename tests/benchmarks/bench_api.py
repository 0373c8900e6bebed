"""API benchmark (``make bench``): submit and status throughput of /api/v1/scans/ next to a bare DRF
endpoint on the same stack (same settings, token authentication, model permission and throttle classes,
in-process WSGI client, SQLite test database), so the table shows what scanpool's own work costs.

- submit: ``POST /api/v1/scans/`` (validation, scope check, one transaction writing the task, its first
  event and its target index; the dispatch request after commit goes to the test Redis) vs ``POST`` of the
  same JSON body to the bare endpoint;
- status: ``GET /api/v1/scans/{id}/`` of a queued task (queue position and wait estimate, events) and with
  ``?events=0``, vs ``GET`` of the bare endpoint.

``SCANPOOL_BENCH_API_REQUESTS`` (default 300) requests each, after 20 warm-up requests.
"""

from __future__ import annotations

import os
import time

import pytest
from rest_framework.test import APIClient

from tasks.models import ScanTask
from tests.api_support import OPERATE, user_with
from tests.factories import PoolFactory, ScannerFactory

REQUESTS = int(os.environ.get("SCANPOOL_BENCH_API_REQUESTS", "300"))


def _rate(call, n: int) -> float:
    for _ in range(20):
        call(-1)
    start = time.perf_counter()
    for i in range(n):
        call(i)
    return n / (time.perf_counter() - start)


@pytest.mark.django_db(transaction=True)
def test_api_throughput_against_a_bare_drf_endpoint(settings, redis_conn):
    settings.ROOT_URLCONF = "tests.benchmarks.api_bare_urls"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"submit": "1000000/min", "read": "1000000/min"}}
    pool = PoolFactory(name="bench", scope=["192.0.2.0/24"], max_queued=0)
    ScannerFactory(pool=pool, name="bench-1", max_concurrent_scans=4)
    from tasks.models import ApiToken

    _, key = ApiToken.issue(user_with(OPERATE, "bench"), "bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    body = {"name": "bench", "targets": ["192.0.2.10", "192.0.2.0/28"], "scanner_pool": "bench"}

    def check(response, status):
        assert response.status_code == status, response.content[:300]

    bare_post = _rate(lambda i: check(client.post("/bench/bare/", body, format="json"), 202), REQUESTS)
    submit = _rate(lambda i: check(client.post("/api/v1/scans/", {**body, "name": f"bench {i}"}, format="json"),
                                   202), REQUESTS)
    task = ScanTask.objects.order_by("created_at").first()
    bare_get = _rate(lambda i: check(client.get("/bench/bare/"), 200), REQUESTS)
    status = _rate(lambda i: check(client.get(f"/api/v1/scans/{task.pk}/"), 200), REQUESTS)
    status_no_events = _rate(lambda i: check(client.get(f"/api/v1/scans/{task.pk}/?events=0"), 200), REQUESTS)
    queued = ScanTask.objects.count()

    rows = [
        ("POST bare DRF endpoint", bare_post, bare_post),
        ("POST /api/v1/scans/ (submit)", submit, bare_post),
        ("GET bare DRF endpoint", bare_get, bare_get),
        ("GET /api/v1/scans/{id}/", status, bare_get),
        ("GET /api/v1/scans/{id}/?events=0", status_no_events, bare_get),
    ]
    print(f"\nAPI throughput ({REQUESTS} requests each, in-process client, SQLite; {queued} tasks queued at the end)")
    print("| endpoint | req/s | vs bare |")
    print("| --- | ---: | ---: |")
    for name, rate, base in rows:
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} |")
    assert queued == REQUESTS + 20
