"""Scanner health: the one place that writes a scanner's health columns. Health checks ask the adapter
and record the answer; a scan call that fails scanner-wide (unlicensed, login refused) flags the scanner;
a scan call that works marks a scanner last seen unreachable / not ready as ready again.

``check_health(scanner_id)`` never raises for a scanner problem: an unreachable or unlicensed scanner is
a report (and a row) saying so. ``manage.py check_scanners`` runs it for every (or one pool's) scanner.

A scanner that asked scanpool to wait (a 429/503 ``Retry-After``: ``scanners.pacing``) is not called by a routine
check — the reconcile's, ``check_scanners`` without ``--include-waiting`` —: the report says it waits until when
(``waiting_until``) and its recorded health is left as it was; it is not unhealthy. A check an operator asks for
(the admin's *Check health now*, ``check_scanners --include-waiting``) calls it anyway. Either way a
``Retry-After`` the check is answered with is recorded as a wait, as for any other call, and reported the same way.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from django.utils import timezone

from scanners import pacing
from scanners.adapters.base import HealthReport
from scanners.adapters.registry import get_adapter
from scanners.models import PASSING_HEALTH, SELECTABLE_HEALTH, Health, Scanner
from scanners.signals import scanner_changed

log = logging.getLogger("scanpool.scanners.health")


def check_health(scanner_id: int, *, call_waiting: bool = False) -> HealthReport:
    """Check one scanner now and record health, detail, version, licence and timestamps on its row.

    A scanner waiting out a ``Retry-After`` is not called unless ``call_waiting`` (an operator asked for this very
    check): the report then has ``waiting_until`` and the health last recorded, and nothing is written. A
    ``Retry-After`` answered to the check is recorded on the row (``scanners.pacing.record_wait``) and the report
    has ``waiting_until`` too: the health stays as last recorded (the scanner answered; it is busy, not down)."""
    scanner = Scanner.objects.get(pk=scanner_id)
    until = scanner.waiting_until
    if until is not None and not call_waiting:
        log.info("scanner %s not checked: it asked scanpool to wait until %s UTC (Retry-After)", scanner.name,
                 f"{until:%H:%M:%S}")
        return HealthReport(scanner.health, waiting_until=until,
                            detail=f"not checked: it asked scanpool to wait until {until:%H:%M:%S} UTC (Retry-After)")
    adapter = get_adapter(scanner)
    try:
        report = adapter.health()
    finally:
        adapter.close()
    if report.retry_after is not None and (until := pacing.record_wait(scanner, report.retry_after)) is not None:
        # It answered, asking to be left alone: waiting, not unhealthy (its health stays as last recorded).
        report = replace(report, status=scanner.health, waiting_until=until)
        record_health(scanner_id, report, answered=True)  # seen now, even if last recorded unreachable
        return report
    record_health(scanner_id, report)
    return report


def record_health(scanner_id: int, report: HealthReport, *, answered: bool | None = None) -> None:
    """Write ``report`` onto the row with one UPDATE (breaker and slot columns are left alone). ``answered``: the
    scanner answered the check (``last_seen_at``); by default, unless the report says it is unreachable."""
    now = timezone.now()
    fields = {
        "health": report.status,
        "health_detail": report.detail,
        "health_checked_at": now,
    }
    if answered is None:
        answered = report.status != Health.UNREACHABLE
    if answered:
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


def check_all(pool: str | None = None, *, call_waiting: bool = False) -> list[tuple[Scanner, HealthReport]]:
    """Check every scanner (of ``pool`` if given), in name order; returns the refreshed rows and reports. One
    waiting out a ``Retry-After`` is not called unless ``call_waiting`` (see :func:`check_health`)."""
    scanners = Scanner.objects.select_related("pool").order_by("pool__name", "name")
    if pool:
        scanners = scanners.filter(pool__name=pool)
    results = []
    for scanner in scanners:
        report = check_health(scanner.pk, call_waiting=call_waiting)
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
