"""Which scanner gets the next scan (DESIGN §4): the enabled, healthy scanners of a pool with a free slot that did
not ask scanpool to wait (``Retry-After``), least loaded first. Taking the slot is the engine's job
(``tasks.engine.slots``)."""

from __future__ import annotations

from django.db.models import F

from scanners import breaker
from scanners.models import PASSING_HEALTH, SELECTABLE_HEALTH, BreakerState, Scanner


def candidates(pool_id: int, pinned_scanner_id: int | None = None, *, credentials: bool = False) -> list[Scanner]:
    """Scanners that may take a scan now, best first (DESIGN §4).

    ``credentials``: the scan carries credentials (an authenticated scan): only scanners whose connection is
    confirmed (``connection_confirmed``, four eyes: docs/security.md) may take it.

    Enabled, a free slot, not waiting out a ``Retry-After`` it answered (``scanners.pacing``), and either healthy
    with a closed breaker, or due for an open breaker's trial (healthy, or last seen unreachable / not ready: the
    trial is the probe).
    Order: lowest utilisation ``active/max``, then the larger free capacity, then the name.
    """
    qs = Scanner.objects.filter(
        pool_id=pool_id, enabled=True, health__in=(*SELECTABLE_HEALTH, *PASSING_HEALTH)
    ).filter(active_scans__lt=F("max_concurrent_scans")).not_waiting()
    if pinned_scanner_id is not None:
        qs = qs.filter(pk=pinned_scanner_id)
    if credentials:
        qs = qs.for_credentials()
    found = [
        s
        for s in qs
        if (s.health in SELECTABLE_HEALTH and s.breaker_state == BreakerState.CLOSED) or breaker.trial_due(s)
    ]
    found.sort(
        key=lambda s: (s.active_scans / s.max_concurrent_scans, -(s.max_concurrent_scans - s.active_scans), s.name)
    )
    return found


def confirmation_blockers(pool_id: int, pinned_scanner_id: int | None = None) -> list[Scanner]:
    """Why a scan with credentials found no scanner, when the reason is an unconfirmed connection: the scanners
    that could take a scan now but not one with credentials, or — when no enabled scanner it may use is
    confirmed at all — the unconfirmed ones. Empty: the confirmation rule is not what holds it back."""
    free = [s for s in candidates(pool_id, pinned_scanner_id) if not s.connection_confirmed]
    if free:
        return free
    enabled = Scanner.objects.filter(pool_id=pool_id, enabled=True)
    if pinned_scanner_id is not None:
        enabled = enabled.filter(pk=pinned_scanner_id)
    if enabled.for_credentials().exists():
        return []
    return list(enabled.filter(connection_confirmed=False).order_by("name"))
