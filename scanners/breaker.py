"""Circuit breaker per scanner, shared by every worker through the scanner's row (DESIGN §4).

closed --N consecutive transient failures--> open --cooldown--> half-open (one trial task)
half-open --success--> closed;  half-open --failure--> open again.
open --a health check passes, or a running scan's call works--> open, trial due now (not closed: one task decides).

Every change is a conditional UPDATE on the row (so two workers never both flip it), a log line, and a
:class:`BreakerChange` sent as ``scanners.signals.breaker_changed``: this app knows nothing of tasks; the
engine records the task's event and schedules the pool's dispatch (``tasks.engine.events``).
``breaker_opened_at`` holds when the breaker opened, or, in half-open, when the current trial started:
a trial that never reports back (its task was cancelled, its worker died) is replaced by another one
after a further cooldown.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Min, Q
from django.utils import timezone

from scanners import health
from scanners.adapters.base import ScanExportError
from scanners.models import BreakerState, Scanner
from scanners.signals import breaker_changed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerChange:
    """One state change of a scanner's breaker, for the engine to record and act on."""

    scanner: str
    pool_id: int
    from_state: str
    to_state: str
    message: str
    data: dict = field(default_factory=dict)
    retry_in: float | None = None  # seconds until waiting tasks should be dispatched again (None: now)


def _changed(change: BreakerChange, task_id: uuid.UUID | None) -> BreakerChange:
    breaker_changed.send(sender=Scanner, change=change, task_id=task_id)
    return change


def _cooldown() -> timedelta:
    return timedelta(seconds=settings.SCANPOOL_BREAKER_COOLDOWN)


def trial_due(scanner: Scanner) -> bool:
    """An open (or half-open with a stale trial) breaker whose cooldown has passed."""
    if scanner.breaker_state == BreakerState.CLOSED:
        return False
    opened = scanner.breaker_opened_at
    return opened is None or timezone.now() - opened >= _cooldown()


def next_trial_at(pool_id: int) -> datetime | None:
    """When the first breaker of the pool that is not due for its trial yet becomes due (None: none waits).

    The engine's dispatcher asks this when tasks wait and no scanner can take them, and wakes itself up
    then: the trial never depends on a wake-up scheduled by whoever opened the breaker."""
    now = timezone.now()
    first = (
        Scanner.objects.filter(pool_id=pool_id, enabled=True, breaker_opened_at__gt=now - _cooldown())
        .exclude(breaker_state=BreakerState.CLOSED)
        .aggregate(first=Min("breaker_opened_at"))["first"]
    )
    return None if first is None else first + _cooldown()


def begin_trial(scanner: Scanner) -> bool:
    """Move an open breaker (cooldown over) to half-open for one trial; True when this caller won it."""
    now = timezone.now()
    due = Q(breaker_opened_at__isnull=True) | Q(breaker_opened_at__lte=now - _cooldown())
    won = (
        Scanner.objects.filter(pk=scanner.pk, breaker_state=scanner.breaker_state)
        .filter(due)
        .update(breaker_state=BreakerState.HALF_OPEN, breaker_opened_at=now)
        == 1
    )
    if won:
        log.warning("breaker %s: %s -> half_open (cooldown over, one trial)", scanner.name, scanner.breaker_state)
    return won


def trial_now(scanner_id: int, why: str = "health check passed") -> bool:
    """The scanner was seen answering (a health check passed, or a call of a running scan's step worked): an open
    breaker's trial is due at once, not at the end of its cooldown (True when this call made it due). The trial
    task itself still decides: success closes the breaker, a failure opens it again for a full cooldown."""
    updated = Scanner.objects.filter(pk=scanner_id, breaker_state=BreakerState.OPEN).exclude(
        breaker_opened_at__isnull=True).update(breaker_opened_at=None)
    if updated:
        log.warning("breaker of scanner %s: %s, trial due now", scanner_id, why)
        scanner = Scanner.objects.only("name", "pool_id").get(pk=scanner_id)
        _changed(BreakerChange(scanner.name, scanner.pool_id, BreakerState.OPEN, BreakerState.OPEN,
                               f"scanner {scanner.name} answered again ({why}): its breaker's trial is due now",
                               {"scanner": scanner.name, "trial_due": True}), None)
    return updated == 1


def record_success(scanner: Scanner, task_id: uuid.UUID | None = None) -> None:
    """A call to the scanner worked: reset the failure count, close a half-open breaker (the trial, or any call
    during it: the scanner answers), and mark a scanner last seen unreachable / not ready as ready again.

    An **open** breaker is not closed by it: that success is some other step's (a running scan's poll; a launch
    only reaches an open scanner as the half-open trial), and closing at once would send every waiting task to a
    scanner that may be flapping. Its trial becomes due at once instead (as when a health check passes): the next
    dispatch gives it one task, whose success closes the breaker (DESIGN §4: open → half-open → closed)."""
    health.mark_answered(scanner)
    if scanner.breaker_state == BreakerState.CLOSED and scanner.consecutive_failures == 0:
        return
    # Conditional UPDATEs on the row, not on this (possibly stale) copy: another worker may have changed it.
    if Scanner.objects.filter(pk=scanner.pk, breaker_state=BreakerState.OPEN).update(consecutive_failures=0):
        trial_now(scanner.pk, why="a call of a running scan's step worked")
        scanner.refresh_from_db(fields=["breaker_state", "consecutive_failures", "breaker_opened_at"])
        return
    closed = Scanner.objects.filter(pk=scanner.pk, breaker_state=BreakerState.HALF_OPEN).update(
        breaker_state=BreakerState.CLOSED, consecutive_failures=0, breaker_opened_at=None)
    if not closed:
        Scanner.objects.filter(pk=scanner.pk, breaker_state=BreakerState.CLOSED).update(consecutive_failures=0)
    scanner.breaker_state, scanner.consecutive_failures, scanner.breaker_opened_at = BreakerState.CLOSED, 0, None
    if closed:
        previous = BreakerState.HALF_OPEN
        log.warning("breaker %s: %s -> closed (call succeeded)", scanner.name, previous)
        _changed(BreakerChange(scanner.name, scanner.pool_id, previous, BreakerState.CLOSED,
                               f"circuit breaker of {scanner.name} closed: the scanner answered again",
                               {"scanner": scanner.name, "from": previous, "to": BreakerState.CLOSED}), task_id)


def record_failure(scanner: Scanner, error: object, task_id: uuid.UUID | None = None) -> str:
    """A transient failure: count it; open the breaker at the threshold (or at once when half-open).

    Returns the breaker state after the failure. A scan's export that the scanner failed to prepare
    (:class:`ScanExportError`: it answered, status ``error`` or not ready in time) is not counted: it is about
    that scan's results, not about the scanner taking new scans, and one scan's export retries must not keep
    launches away from a scanner that otherwise answers (nor, counted against a half-open trial, flap it).
    """
    if isinstance(error, ScanExportError):
        return scanner.breaker_state
    now = timezone.now()
    message = str(error)[:2000]
    Scanner.objects.filter(pk=scanner.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=message
    )
    row = Scanner.objects.filter(pk=scanner.pk).values("breaker_state", "consecutive_failures").first() or {}
    state, failures = row.get("breaker_state", scanner.breaker_state), row.get("consecutive_failures", 0)
    threshold = settings.SCANPOOL_BREAKER_THRESHOLD
    opened_from = None
    if state == BreakerState.HALF_OPEN:
        if Scanner.objects.filter(pk=scanner.pk, breaker_state=BreakerState.HALF_OPEN).update(
            breaker_state=BreakerState.OPEN, breaker_opened_at=now
        ):
            opened_from = BreakerState.HALF_OPEN
    elif state == BreakerState.CLOSED and failures >= threshold:
        if Scanner.objects.filter(pk=scanner.pk, breaker_state=BreakerState.CLOSED).update(
            breaker_state=BreakerState.OPEN, breaker_opened_at=now
        ):
            opened_from = BreakerState.CLOSED
    if opened_from is not None:
        state = BreakerState.OPEN
        log.warning(
            "breaker %s: %s -> open after %d consecutive transient failures (last: %s); cooldown %ss",
            scanner.name, opened_from, failures, message, settings.SCANPOOL_BREAKER_COOLDOWN,
        )
        # Tasks that wait for this pool get their chance again when the cooldown is over (the trial).
        _changed(BreakerChange(
            scanner.name, scanner.pool_id, opened_from, BreakerState.OPEN,
            f"circuit breaker of {scanner.name} opened after {failures} consecutive failures: {message}",
            {"scanner": scanner.name, "from": opened_from, "to": BreakerState.OPEN, "failures": failures},
            retry_in=settings.SCANPOOL_BREAKER_COOLDOWN + 0.5), task_id)
    scanner.breaker_state, scanner.consecutive_failures = state, failures
    return state


def reset_breaker(scanner_id: int, *, actor: str = "") -> Scanner:
    """Close the breaker by hand (admin action): the operator says the scanner is fine again — so a wait it asked for
    (``Retry-After``, ``scanners.pacing``) that is not over is cleared too, and the log says so: the scanner is
    dispatched to at once, and a step held off by that wait runs when it was due (no call before then)."""
    scanner = Scanner.objects.get(pk=scanner_id)
    previous, waited = scanner.breaker_state, scanner.waiting_until
    Scanner.objects.filter(pk=scanner_id).update(
        breaker_state=BreakerState.CLOSED, consecutive_failures=0, breaker_opened_at=None, wait_until=None
    )
    who = actor or "unknown"
    log.warning("breaker %s: %s -> closed (reset by %s)", scanner.name, previous, who)
    if waited is not None:
        log.warning("scanner %s: its Retry-After wait until %s UTC cleared (breaker reset by %s)", scanner.name,
                    f"{waited:%H:%M:%S}", who)
    scanner.refresh_from_db()
    # Tasks may have waited for this scanner: the engine dispatches its pool.
    _changed(BreakerChange(scanner.name, scanner.pool_id, previous, BreakerState.CLOSED,
                           f"circuit breaker of {scanner.name} reset by {who}"
                           + (f"; its Retry-After wait until {waited:%H:%M:%S} UTC cleared" if waited else ""),
                           {"scanner": scanner.name, "from": previous, "to": BreakerState.CLOSED}), None)
    return scanner
