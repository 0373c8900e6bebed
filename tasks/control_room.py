"""Numbers for the control room (the admin index and the pool list), in a fixed number of queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from pools.models import Pool
from scanners.models import SELECTABLE_HEALTH, BreakerState, Health, Scanner, not_waiting_q
from tasks.models import ScanTask, TaskStatus


def annotate_load(pools: QuerySet[Pool]) -> QuerySet[Pool]:
    """Per pool: scanners, capacity usable now, slots of scanners waiting out a Retry-After, enabled slots, active
    (all scanners / usable ones), queued: the fields of ``tasks.pool_load.PoolLoad``, which ``PoolLoad.of_annotated``
    reads and ``pool_load`` computes for one pool."""
    queued = (
        ScanTask.objects.filter(pool=OuterRef("pk"), status=TaskStatus.QUEUED, claimed_at__isnull=True)
        .order_by()
        .values("pool")
        .annotate(n=Count("pk"))
        .values("n")
    )
    enabled = Q(scanners__enabled=True)
    usable = enabled & Q(scanners__health__in=SELECTABLE_HEALTH) & ~Q(scanners__breaker_state=BreakerState.OPEN)
    ready = not_waiting_q("scanners__")  # a scanner waiting out a Retry-After has no slot to give now
    return pools.annotate(
        n_scanners=Count("scanners", distinct=True),
        n_enabled_scanners=Count("scanners", filter=enabled, distinct=True),
        total_capacity=Coalesce(Sum("scanners__max_concurrent_scans", filter=usable & ready), 0),
        waiting_slots=Coalesce(Sum("scanners__max_concurrent_scans", filter=usable & ~ready), 0),
        total_slots=Coalesce(Sum("scanners__max_concurrent_scans", filter=enabled), 0),
        active=Coalesce(Sum("scanners__active_scans"), 0),
        active_usable=Coalesce(Sum("scanners__active_scans", filter=usable & ready), 0),
        queued=Coalesce(Subquery(queued, output_field=IntegerField()), Value(0)),
    )


def summary(recent_hours: int = 24) -> dict[str, Any]:
    """What the admin index shows above the app list: pools under load, scanners needing attention,
    task counts by status (recent finished ones, all active ones) and dead letters."""
    since = timezone.now() - timedelta(hours=recent_hours)
    pools = list(annotate_load(Pool.objects.filter(enabled=True)).order_by("name"))
    attention = list(
        Scanner.objects.filter(enabled=True)
        .filter(~Q(health__in=[Health.READY, Health.UNKNOWN]) | ~Q(breaker_state=BreakerState.CLOSED)
                | Q(wait_until__gt=timezone.now()))  # asked to wait (Retry-After): its slots are not usable now
        .select_related("pool")
        .order_by("pool__name", "name")[:20]
    )
    by_status = dict(
        ScanTask.objects.filter(Q(status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]) | Q(finished_at__gte=since))
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    return {
        "pools": pools,
        "attention": attention,
        "counts": {status: by_status.get(status, 0) for status in TaskStatus.values},
        "dead_letters": by_status.get(TaskStatus.FAILED, 0) + by_status.get(TaskStatus.TIMEOUT, 0),
        "recent_hours": recent_hours,
    }
