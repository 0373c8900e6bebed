"""The timed part of the API benchmark (tests/benchmarks/bench_api.py), run as its own process the way a web
worker runs: production settings (``DJANGO_DEBUG=0``, HTTPS as behind the TLS proxy, the throttle counting in
Redis), the application loaded by ``scanpool_site.wsgi`` as gunicorn's workers load it (which then freezes it out
of the garbage collector's walks), and only the application's modules in memory. In the pytest process, pytest and
every test module share the heap, so each full garbage collection walks more objects than a web worker's does; the
table prints the heap this process times with.

The parent made the pool, scanner and token in the database named by ``DATABASE_URL`` and gives the token in
``SCANPOOL_BENCH_API_TOKEN``; this process makes ``SCANPOOL_BENCH_API_REQUESTS`` requests per endpoint after 20
warm-up requests, in rounds of 30 interleaved with the bare endpoint's, and prints the table. Exit status 1 if a
request did not get the expected status.
"""

from __future__ import annotations

import gc
import importlib
import os
import time

ROUND = 30


class FullCollections:
    """Python's full (generation 2) garbage collections during the timed rounds, per side: count and time."""

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


class Failed(Exception):
    pass


def main() -> int:
    importlib.import_module("scanpool_site.wsgi")  # the application as a gunicorn worker loads it: set up, then frozen
    from django.conf import settings
    from rest_framework.test import APIClient

    from tasks.models import ScanTask

    assert not settings.DEBUG, "the benchmark runs with production settings"
    settings.ROOT_URLCONF = "tests.benchmarks.api_bare_urls"  # the site plus the bare endpoint
    requests = int(os.environ.get("SCANPOOL_BENCH_API_REQUESTS", "1000"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {os.environ['SCANPOOL_BENCH_API_TOKEN']}")
    body = {"name": "bench", "targets": ["192.0.2.10", "192.0.2.0/28"], "scanner_pool": "bench"}

    def check(response, status):
        if response.status_code != status:
            raise Failed(f"{response.status_code} instead of {status}: {response.content[:300]!r}")

    def bare_post(i):
        check(client.post("/bench/bare/", body, format="json", secure=True), 202)

    def bare_get(i):
        check(client.get("/bench/bare/", secure=True), 200)

    def submit(i):
        check(client.post("/api/v1/scans/", {**body, "name": f"bench {i}"}, format="json", secure=True), 202)

    heap = len(gc.get_objects())
    gc.callbacks.append(GC)
    post_rate, submit_rate, submit_rounds = _rates(bare_post, submit, requests, "submit")
    task = ScanTask.objects.order_by("created_at").first()
    get_rate, status, status_rounds = _rates(bare_get, lambda i: check(
        client.get(f"/api/v1/scans/{task.pk}/", secure=True), 200), requests, "status")
    get_rate2, no_events, no_events_rounds = _rates(bare_get, lambda i: check(
        client.get(f"/api/v1/scans/{task.pk}/?events=0", secure=True), 200), requests, "status ?events=0")
    gc.callbacks.remove(GC)
    queued = ScanTask.objects.count()

    rows = [
        ("POST bare DRF endpoint", post_rate, post_rate, None),
        ("POST /api/v1/scans/ (submit)", submit_rate, post_rate, submit_rounds),
        ("GET bare DRF endpoint", get_rate, get_rate, None),
        ("GET /api/v1/scans/{id}/", status, get_rate, status_rounds),
        ("GET bare DRF endpoint (again)", get_rate2, get_rate2, None),
        ("GET /api/v1/scans/{id}/?events=0", no_events, get_rate2, no_events_rounds),
    ]
    print(f"API throughput ({requests} requests each, interleaved with the bare endpoint in rounds of {ROUND}, "
          f"in-process client in a process with production settings, {settings.DATABASES['default']['ENGINE']}; "
          f"{queued} tasks queued at the end)")
    print("| endpoint | req/s | vs bare | rounds: min to max |")
    print("| --- | ---: | ---: | ---: |")
    for name, rate, base, rounds in rows:
        spread = f"{min(rounds):.2f} to {max(rounds):.2f}" if rounds else ""
        print(f"| {name} | {rate:.0f} | {rate / base:.3f} | {spread} |")
    print(f"Objects tracked by the garbage collector when timing began: {heap} (and {gc.get_freeze_count()} frozen "
          "when the application was loaded, scanpool_site/wsgi.py). Full garbage collections during the "
          "rounds (count, time), endpoint / its bare rounds: "
          + "; ".join(f"{side} {GC.summary(side)} / {GC.summary(side + ' bare')}"
                      for side in ("submit", "status", "status ?events=0")))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except Failed as exc:
        print(f"API benchmark: a request failed: {exc}")
        raise SystemExit(1) from None
