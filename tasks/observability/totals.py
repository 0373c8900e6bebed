"""Counters and histogram buckets kept in the database (:class:`tasks.models.MetricTotal`).

Called inside the transaction of the change they count: :func:`record_terminal` from
``tasks.engine.transitions.transition`` (the single place a task reaches a terminal state) and
:func:`record_ttl_deletions` from ``cleanup_tasks``. Each increment is one conditional UPDATE
(``value = value + n``), so concurrent workers never lose a count.
"""

from __future__ import annotations

import json
import math
import uuid

from django.db import IntegrityError, transaction
from django.db.models import F

from tasks.models import REFETCH_MARK, ErrorKind, MetricTotal, ScanTask, TaskEvent, TaskStatus

SCANS_TOTAL = "nessus_scans_total"
AUTH_FAILURES_TOTAL = "nessus_auth_failures_total"
VALIDATION_FAILURES_TOTAL = "nessus_validation_failures_total"
TTL_DELETIONS_TOTAL = "nessus_ttl_deletions_total"
SCAN_DURATION = "nessus_scan_duration_seconds"
# Scans take minutes to a day: 1, 5, 10, 30 min, 1, 2, 4, 8, 12, 24 h (and +Inf).
DURATION_BUCKETS: tuple[float, ...] = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, math.inf)
# Error kinds that mean "the results failed validation" (nessus_validation_failures_total's reason label).
VALIDATION_REASONS = (ErrorKind.AUTHENTICATION, ErrorKind.RESULTS)


def label_key(labels: dict[str, str]) -> str:
    return json.dumps({k: str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":"))


def bucket_label(le: float) -> str:
    return "+Inf" if math.isinf(le) else f"{le:g}"


def increment(metric: str, labels: dict[str, str], amount: float = 1) -> None:
    """``metric{labels} += amount`` (creating the row on first use). Call inside the counted change's transaction."""
    key = label_key(labels)
    if MetricTotal.objects.filter(metric=metric, labels=key).update(value=F("value") + amount):
        return
    try:
        with transaction.atomic():  # a savepoint: losing the creation race must not abort the caller's transaction
            MetricTotal.objects.create(metric=metric, labels=key, value=amount)
    except IntegrityError:
        MetricTotal.objects.filter(metric=metric, labels=key).update(value=F("value") + amount)


def observe_duration(pool: str, scan_type: str, seconds: float) -> None:
    labels = {"pool": pool, "scan_type": scan_type}
    for le in DURATION_BUCKETS:
        if seconds <= le:
            increment(f"{SCAN_DURATION}_bucket", {**labels, "le": bucket_label(le)})
    increment(f"{SCAN_DURATION}_sum", labels, max(0.0, seconds))
    increment(f"{SCAN_DURATION}_count", labels)


def record_terminal(task_id: uuid.UUID, *, expect: str, to: str) -> None:
    """Count a task that just reached terminal status ``to`` (coming from ``expect``)."""
    row = (
        ScanTask.objects.filter(pk=task_id)
        .values("pool__name", "scan_type", "error_kind", "started_at", "finished_at", "attempts")
        .first()
    )
    if row is None:
        return
    pool, scan_type = row["pool__name"], row["scan_type"]
    increment(SCANS_TOTAL, {"pool": pool, "scan_type": scan_type, "status": to})
    if to == TaskStatus.FAILED and row["error_kind"] == ErrorKind.AUTHENTICATION:
        increment(AUTH_FAILURES_TOTAL, {"pool": pool, "scan_type": scan_type})
    if to == TaskStatus.FAILED and row["error_kind"] in VALIDATION_REASONS:
        increment(VALIDATION_FAILURES_TOTAL, {"pool": pool, "reason": row["error_kind"]})
    if expect == TaskStatus.RUNNING and row["started_at"] and row["finished_at"] and not _refetched(task_id, row):
        observe_duration(pool, scan_type, (row["finished_at"] - row["started_at"]).total_seconds())


def _refetched(task_id: uuid.UUID, row: dict) -> bool:
    """This attempt's results were fetched again (tasks.refetch): its scan was observed when the attempt first ended
    (timeout or failed, from running), and its launch-to-end time now spans the wait for the new fetch."""
    return TaskEvent.objects.filter(task_id=task_id, **{f"data__{REFETCH_MARK}": row["attempts"]}).exists()


def record_ttl_deletions(counts: dict[str, int]) -> None:
    for status, n in counts.items():
        if n:
            increment(TTL_DELETIONS_TOTAL, {"status": status}, n)


def totals() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every stored total: ``{metric: [(labels, value), …]}``."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for metric, labels, value in MetricTotal.objects.order_by("metric", "labels").values_list(
        "metric", "labels", "value"
    ):
        out.setdefault(metric, []).append((json.loads(labels), value))
    return out
