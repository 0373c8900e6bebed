"""Scanner health: the one place that writes a scanner's health columns. Health checks ask the adapter
and record the answer; a scan call that fails scanner-wide (unlicensed, login refused) flags the scanner;
a scan call that works marks a scanner last seen unreachable / not ready as ready again.

``check_health(scanner_id)`` never raises for a scanner problem: an unreachable or unlicensed scanner is
a report (and a row) saying so. ``manage.py check_scanners`` runs it for every (or one pool's) scanner.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from scanners.adapters.base import HealthReport
from scanners.adapters.registry import get_adapter
from scanners.models import PASSING_HEALTH, SELECTABLE_HEALTH, Health, Scanner
from scanners.signals import scanner_changed

log = logging.getLogger("scanpool.scanners.health")


def check_health(scanner_id: int) -> HealthReport:
    """Check one scanner now and record health, detail, version, licence and timestamps on its row."""
    scanner = Scanner.objects.get(pk=scanner_id)
    adapter = get_adapter(scanner)
    try:
        report = adapter.health()
    finally:
        adapter.close()
    record_health(scanner_id, report)
    return report


def record_health(scanner_id: int, report: HealthReport) -> None:
    """Write ``report`` onto the row with one UPDATE (breaker and slot columns are left alone)."""
    now = timezone.now()
    fields = {
        "health": report.status,
        "health_detail": report.detail,
        "health_checked_at": now,
    }
    if report.status != Health.UNREACHABLE:  # it answered
        fields["last_seen_at"] = now
    if report.version:
        fields["version"] = report.version
    if report.license:
        fields["license_info"] = report.license
    row = Scanner.objects.filter(pk=scanner_id).values_list("name", "health", "pool_id").first()
    name, before, pool_id = row or (str(scanner_id), "", None)  # deleted meanwhile: the UPDATE below is a no-op
    # Selectable again: its pool is dispatched.
    back = pool_id if row and report.status in SELECTABLE_HEALTH and before not in SELECTABLE_HEALTH else None
    Scanner.objects.filter(pk=scanner_id).update(**fields)
    if back is not None:
        scanner_changed.send(sender=Scanner, scanner_id=scanner_id, pool_id=back)
    # By name, as every other line names a scanner; a scanner still ready (every reconcile, per scanner) at DEBUG.
    if report.status != Health.READY:
        level = logging.WARNING
    else:
        level = logging.DEBUG if before == Health.READY else logging.INFO
    log.log(level, "scanner %s health %s -> %s: %s", name, before, report.status, report.detail)


def check_all(pool: str | None = None) -> list[tuple[Scanner, HealthReport]]:
    """Check every scanner (of ``pool`` if given), in name order; returns the refreshed rows and reports."""
    scanners = Scanner.objects.select_related("pool").order_by("pool__name", "name")
    if pool:
        scanners = scanners.filter(pool__name=pool)
    results = []
    for scanner in scanners:
        report = check_health(scanner.pk)
        scanner.refresh_from_db()
        results.append((scanner, report))
    return results


def flag(scanner: Scanner, health: str, detail: str) -> None:
    """A scan call showed a scanner-wide permanent problem (``unlicensed``, ``auth_failed``): out of selection
    until a health check clears it."""
    Scanner.objects.filter(pk=scanner.pk).update(health=health, health_detail=detail[:2000])
    scanner.health = health
    log.error("scanner %s flagged %s: %s", scanner.name, health, detail)


def mark_answered(scanner: Scanner) -> None:
    """A scan call just worked: a scanner last seen unreachable or not ready is ready again."""
    if scanner.health not in PASSING_HEALTH:
        return
    if Scanner.objects.filter(pk=scanner.pk, health__in=PASSING_HEALTH).update(
        health=Health.READY, last_seen_at=timezone.now(), health_detail="answered a scan call"
    ):
        log.warning("scanner %s: health %s -> ready (a call succeeded)", scanner.name, scanner.health)
    scanner.health = Health.READY
