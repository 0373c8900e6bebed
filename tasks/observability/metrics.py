"""The scanpool collector: every ``nessus_*`` metric, computed when Prometheus scrapes ``/metrics``.

Gauges come from the database (scanners, queued tasks) and Redis (RQ's failed-job registries); counters
and the duration histogram come from the totals kept in the database (:mod:`tasks.observability.totals`).
Nothing is counted in process memory, so every web process answers the same numbers and RQ's forked or
restarted workers lose nothing. Registered once with prometheus_client's default registry
(:func:`register`), which django-prometheus' ``/metrics`` view exports.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator

import redis
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from pools.models import Pool
from scanners.models import BreakerState, Health, Scanner
from tasks.deadletters import dead_letter_counts
from tasks.models import ScanTask, TaskStatus
from tasks.observability import totals as t
from tasks.policies.metrics import policy_families

log = logging.getLogger(__name__)

SCANNER_LABELS = ["pool", "scanner_instance"]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class ScanpoolCollector(Collector):
    def collect(self) -> Iterator:
        try:
            yield from self._scanners()
            yield from self._pools()
            yield from self._totals()
            yield from policy_families()  # nessus_policy_refusals_total, nessus_pending_approval
        except Exception:  # a scrape must never take /metrics down with it
            log.exception("scanpool metrics collection failed")

    def describe(self) -> list:
        return []  # computed at scrape time: nothing is collected at registration

    # ------------------------------------------------------------------ gauges

    def _scanners(self) -> Iterator:
        active = _gauge("nessus_scanner_active_scans", "Scans scanpool runs on the scanner now (slots held).",
                        SCANNER_LABELS)
        capacity = _gauge("nessus_scanner_capacity",
                          "Concurrent scans the scanner may run (max_concurrent_scans; 0 when disabled).",
                          SCANNER_LABELS)
        util = _gauge("nessus_scanner_utilization_pct",
                      "active_scans / max_concurrent_scans x 100, at most 100 (limit lowered below the scans running).",
                      SCANNER_LABELS)
        up = _gauge("nessus_scanner_up", "1 when the scanner is enabled and its last health check said ready.",
                    SCANNER_LABELS)
        breaker = _gauge("nessus_scanner_circuit_breaker_open", "1 when the scanner's circuit breaker is open.",
                         SCANNER_LABELS)
        wait = _gauge("nessus_scanner_retry_after_wait_seconds",
                      "Seconds left of the wait the scanner asked for (HTTP 429/503 Retry-After): no step calls it and "
                      "its slots count in no pool's capacity before then; 0 when it does not wait.", SCANNER_LABELS)
        now = timezone.now()
        for s in Scanner.objects.select_related("pool").order_by("pool__name", "name"):
            labels = [s.pool.name, s.name]
            active.add_metric(labels, s.active_scans)
            capacity.add_metric(labels, s.max_concurrent_scans if s.enabled else 0)
            util.add_metric(labels, min(100.0, round(100.0 * s.active_scans / s.max_concurrent_scans, 2))
                            if s.max_concurrent_scans else 0.0)
            up.add_metric(labels, 1 if s.enabled and s.health == Health.READY else 0)
            breaker.add_metric(labels, 1 if s.breaker_state == BreakerState.OPEN else 0)
            until = s.waiting_until
            wait.add_metric(labels, round((until - now).total_seconds(), 1) if until is not None else 0.0)
        yield from (active, capacity, util, up, breaker, wait)

    def _pools(self) -> Iterator:
        depth = _gauge("nessus_pool_queue_depth", "Tasks waiting in the pool's queue (queued, not yet claimed).",
                       ["pool"])
        dlq = _gauge("nessus_pool_dlq_depth", "Dead letters: tasks with a job in the pool queue's FailedJobRegistry.",
                     ["pool"])
        oldest = _gauge("nessus_pool_oldest_queued_seconds",
                        "Age of the oldest task waiting in the pool's queue (0 when none waits).", ["pool"])
        waiting = {
            row["pool_id"]: row
            for row in ScanTask.objects.filter(status=TaskStatus.QUEUED, claimed_at__isnull=True)
            .order_by().values("pool_id").annotate(n=Count("pk"), oldest=Min("created_at"))
        }
        pools = list(Pool.objects.order_by("name"))
        try:
            dead = dead_letter_counts(pools)
        except redis.RedisError as exc:  # Redis away: the database's numbers are still worth scraping
            log.warning("nessus_pool_dlq_depth omitted: Redis unavailable (%s)", exc)
            dead = {}
        now = timezone.now()
        for pool in pools:
            row = waiting.get(pool.pk)
            depth.add_metric([pool.name], row["n"] if row else 0)
            oldest.add_metric([pool.name], round((now - row["oldest"]).total_seconds(), 1) if row else 0.0)
            if pool.name in dead:
                dlq.add_metric([pool.name], dead[pool.name])
        yield from (depth, dlq, oldest)

    # --------------------------------------------------------------- counters

    def _totals(self) -> Iterator:
        stored = t.totals()
        specs = [
            (t.SCANS_TOTAL, "Scans that reached a terminal status.", ["pool", "scan_type", "status"]),
            (t.AUTH_FAILURES_TOTAL, "Authenticated scans whose credentials failed (task failed, "
             "error_kind=authentication).", ["pool", "scan_type"]),
            (t.VALIDATION_FAILURES_TOTAL, "Scans failed by results validation, by reason "
             "(authentication, results).", ["pool", "reason"]),
            (t.TTL_DELETIONS_TOTAL, "Finished tasks deleted by cleanup_tasks (TTL), by status.", ["status"]),
        ]
        for name, doc, labels in specs:
            family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
            for label_values, value in stored.get(name, []):
                family.add_metric([label_values.get(k, "") for k in labels], value)
            yield family
        yield self._histogram(stored)

    def _histogram(self, stored: dict) -> HistogramMetricFamily:
        family = HistogramMetricFamily(t.SCAN_DURATION, "Time from launch to the end of each scan that ran.",
                                       labels=["pool", "scan_type"])
        buckets: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        for labels, value in stored.get(f"{t.SCAN_DURATION}_bucket", []):
            buckets[(labels["pool"], labels["scan_type"])][labels["le"]] = value
        sums = {(lb["pool"], lb["scan_type"]): v for lb, v in stored.get(f"{t.SCAN_DURATION}_sum", [])}
        for key, by_le in sorted(buckets.items()):
            series = [(t.bucket_label(le), by_le.get(t.bucket_label(le), 0.0)) for le in t.DURATION_BUCKETS]
            # Stored buckets are already cumulative (an observation increments every bucket it fits in).
            family.add_metric(list(key), series, sums.get(key, 0.0))
        return family


_registered = False
_lock = threading.Lock()


def register() -> None:
    """Register the collector with prometheus_client's default registry, once per process."""
    global _registered
    with _lock:
        if not _registered:
            REGISTRY.register(ScanpoolCollector())
            _registered = True


__all__ = ["ScanpoolCollector", "register"]
