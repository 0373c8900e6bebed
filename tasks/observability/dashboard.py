"""Numbers for the live dashboard (``/ops/dashboard/``) and the admin index's per-scanner table.

Pool load reuses the control room's queries (``tasks.control_room.annotate_load``, the same definitions as
``tasks.capacity``); dead letters come from RQ's registries (:mod:`tasks.deadletters`); the 24-hour series
from the task rows (``finished_at``), bucketed by hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from pools.models import Pool
from scanners.models import BreakerState, Health, Scanner
from tasks.control_room import annotate_load
from tasks.deadletters import dead_letter_counts
from tasks.models import ErrorKind, ScanTask, ScanType, TaskStatus
from tasks.pool_load import PoolLoad

HOURS = 24


@dataclass(frozen=True)
class HourBucket:
    start: datetime
    scans: int  # scans that ended (any terminal status) in this hour
    authenticated: int  # authenticated scans that ended in this hour
    auth_failures: int  # of which failed their credentials

    @property
    def auth_failure_rate(self) -> float | None:
        return self.auth_failures / self.authenticated if self.authenticated else None


def hourly(now: datetime | None = None, hours: int = HOURS) -> list[HourBucket]:
    """One bucket per hour for the last ``hours`` hours (oldest first; the last one is the current hour)."""
    now = now or timezone.now()
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    counts = [[0, 0, 0] for _ in range(hours)]
    rows = ScanTask.objects.filter(finished_at__gte=first, status__in=[
        TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED,
    ]).values_list("finished_at", "scan_type", "error_kind")
    for finished, scan_type, error_kind in rows:
        i = int((finished - first).total_seconds() // 3600)
        if not 0 <= i < hours:
            continue
        counts[i][0] += 1
        if scan_type != ScanType.UNTRUSTED:
            counts[i][1] += 1
            counts[i][2] += error_kind == ErrorKind.AUTHENTICATION
    return [HourBucket(first + timedelta(hours=i), *c) for i, c in enumerate(counts)]


def snapshot() -> dict[str, Any]:
    """Everything the dashboard shows, read at once."""
    now = timezone.now()
    pools = list(annotate_load(Pool.objects.all()).order_by("name"))
    waiting = {
        row["pool_id"]: row["oldest"]
        for row in ScanTask.objects.filter(status=TaskStatus.QUEUED, claimed_at__isnull=True)
        .order_by().values("pool_id").annotate(n=Count("pk"), oldest=Min("created_at"))
    }
    try:
        dead = dead_letter_counts(pools)
        redis_error = ""
    except Exception as exc:  # the page still shows the database's numbers when Redis is away
        dead, redis_error = {}, f"{type(exc).__name__}: {exc}"
    scanners: dict[int, list[Scanner]] = {}
    for s in Scanner.objects.order_by("pool__name", "name"):
        scanners.setdefault(s.pool_id, []).append(s)
    pool_rows = []
    for pool in pools:
        oldest = waiting.get(pool.pk)
        load = PoolLoad.of_annotated(pool)  # as the API and the admin: scans on usable scanners / usable slots
        pool_rows.append({
            "pool": pool,
            "capacity": load.capacity,
            "slots": load.total_slots,
            "active": load.active_usable,
            "unavailable": load.unavailable_active,
            "queued": load.queued,
            "oldest_wait": int((now - oldest).total_seconds()) if oldest else 0,
            "dead_letters": dead.get(pool.name),
            "percent": min(100, round(100 * load.utilisation)) if load.capacity else 0,
            "scanners": [scanner_row(s) for s in scanners.get(pool.pk, [])],
        })
    buckets = hourly(now)
    return {
        "now": now,
        "pools": pool_rows,
        "hours": buckets,
        "scans_24h": sum(b.scans for b in buckets),
        "auth_failures_24h": sum(b.auth_failures for b in buckets),
        "authenticated_24h": sum(b.authenticated for b in buckets),
        "redis_error": redis_error,
    }


def scanner_row(s: Scanner) -> dict[str, Any]:
    usable = s.usable_now  # as the pool's capacity: not while it waits out a Retry-After
    return {
        "scanner": s,
        "active": s.active_scans,
        "max": s.max_concurrent_scans,
        "percent": min(100, round(100 * s.active_scans / s.max_concurrent_scans)) if s.max_concurrent_scans else 0,
        "health": s.get_health_display(),
        "health_ok": s.health == Health.READY,
        "health_bad": s.health not in (Health.READY, Health.UNKNOWN),  # never checked is not a failure
        "breaker": s.get_breaker_state_display(),
        "breaker_open": s.breaker_state == BreakerState.OPEN,
        "enabled": s.enabled,
        "usable": usable,
        # A Retry-After it answered: no task gets its slots before then ("" when it does not wait).
        "waiting_until": f"{s.waiting_until:%H:%M:%S} UTC" if s.waiting_until else "",
    }
