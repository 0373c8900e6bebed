"""API benchmark (``make bench``): submit and status throughput of /api/v1/scans/ next to a bare DRF
endpoint on the same stack (same settings, token authentication, model permission and throttle classes,
in-process WSGI client, SQLite test database), so the table shows what scanpool's own work costs.

- submit: ``POST /api/v1/scans/`` (validation, scope check, one transaction writing the task, its first
  event and its target index; the dispatch request after commit goes to the test Redis) vs ``POST`` of the
  same JSON body to the bare endpoint;
- status: ``GET /api/v1/scans/{id}/`` of a queued task (queue position and wait estimate, events) and with
  ``?events=0``, vs ``GET`` of the bare endpoint.

``SCANPOOL_BENCH_API_REQUESTS`` (default 300) requests each, after 20 warm-up requests. Each endpoint is
timed in rounds of 30 requests interleaved with the bare endpoint's rounds (bare, endpoint, bare, …), so a
change of the machine's load during the run hits both sides of a ratio alike; the per-round ratios give the
spread printed under the table.
Under the spread: the full (generation 2) garbage collections that fell in each side's rounds, with their time:
one of them walks the whole test process and can decide a few points of a ratio.
"""

from __future__ import annotations

import gc
import os
import time

import pytest
from rest_framework.test import APIClient

from tasks.models import ScanTask
from tests.api_support import OPERATE, user_with
from tests.factories import PoolFactory, ScannerFactory

REQUESTS = int(os.environ.get("SCANPOOL_BENCH_API_REQUESTS", "300"))


ROUND = 30


class FullCollections:
    """Python's full (generation 2) garbage collections during the timed rounds, per side: count and time. A full
    collection walks the whole test process (pytest, every test module: ~190k objects), so one of them costs
    more than a round of bare requests; where it falls moves a ratio by several points (printed under the
    table)."""

    def __init__(self) -> None:
        self.side = ""
        self.seen: dict[str, list[float]] = {}
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info["generation"] != 2 or not self.side:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seen.setdefault(self.side, []).append(time.perf_counter() - self._started)

    def summary(self, side: str) -> str:
        times = self.seen.get(side, [])
        return f"{len(times)} ({sum(times) * 1000:.0f} ms)"


GC = FullCollections()


def _timed(call, first: int, n: int, side: str) -> float:
    GC.side = side
    start = time.perf_counter()
    for i in range(first, first + n):
        call(i)
    elapsed = time.perf_counter() - start
    GC.side = ""
    return elapsed


def _rates(bare, call, n: int, label: str) -> tuple[float, float, list[float]]:
    """Requests per second of ``bare`` and ``call`` over ``n`` requests each, in interleaved rounds, and the
    ratio (call / bare) of each round."""
    for _ in range(20):
        bare(-1)
        call(-1)
    spent_bare = spent = 0.0
    ratios = []
    for first in range(0, n, ROUND):
        size = min(ROUND, n - first)
        b, c = _timed(bare, first, size, f"{label} bare"), _timed(call, first, size, label)
        spent_bare, spent = spent_bare + b, spent + c
        ratios.append(b / c)
    return n / spent_bare, n / spent, ratios


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

    def bare_post(i):
        check(client.post("/bench/bare/", body, format="json"), 202)

    def bare_get(i):
        check(client.get("/bench/bare/"), 200)

    gc.callbacks.append(GC)
    post_rate, submit, submit_rounds = _rates(bare_post, lambda i: check(
        client.post("/api/v1/scans/", {**body, "name": f"bench {i}"}, format="json"), 202), REQUESTS, "submit")
    task = ScanTask.objects.order_by("created_at").first()
    get_rate, status, status_rounds = _rates(bare_get, lambda i: check(
        client.get(f"/api/v1/scans/{task.pk}/"), 200), REQUESTS, "status")
    get_rate2, no_events, no_events_rounds = _rates(bare_get, lambda i: check(
        client.get(f"/api/v1/scans/{task.pk}/?events=0"), 200), REQUESTS, "status ?events=0")
    gc.callbacks.remove(GC)
    queued = ScanTask.objects.count()

    rows = [
        ("POST bare DRF endpoint", post_rate, post_rate, None),
        ("POST /api/v1/scans/ (submit)", submit, post_rate, submit_rounds),
        ("GET bare DRF endpoint", get_rate, get_rate, None),
        ("GET /api/v1/scans/{id}/", status, get_rate, status_rounds),
        ("GET bare DRF endpoint (again)", get_rate2, get_rate2, None),
        ("GET /api/v1/scans/{id}/?events=0", no_events, get_rate2, no_events_rounds),
    ]
    print(f"\nAPI throughput ({REQUESTS} requests each, interleaved with the bare endpoint in rounds of {ROUND}, "
          f"in-process client, SQLite; {queued} tasks queued at the end)")
    print("| endpoint | req/s | vs bare | rounds: min to max |")
    print("| --- | ---: | ---: | ---: |")
    for name, rate, base, rounds in rows:
        spread = f"{min(rounds):.2f} to {max(rounds):.2f}" if rounds else ""
        print(f"| {name} | {rate:.0f} | {rate / base:.2f} | {spread} |")
    print("Full garbage collections during the rounds (count, time), endpoint / its bare rounds: "
          + "; ".join(f"{side} {GC.summary(side)} / {GC.summary(side + ' bare')}"
                      for side in ("submit", "status", "status ?events=0")))
    assert queued == REQUESTS + 20
