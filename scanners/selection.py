"""Which scanner gets the next scan (DESIGN §4): the enabled, healthy scanners of a pool with a free slot,
least loaded first. Taking the slot is the engine's job (``tasks.engine.slots``)."""

from __future__ import annotations

from django.db.models import F

from scanners import breaker
from scanners.models import PASSING_HEALTH, SELECTABLE_HEALTH, BreakerState, Scanner


def candidates(pool_id: int, pinned_scanner_id: int | None = None) -> list[Scanner]:
    """Scanners that may take a scan now, best first (DESIGN §4).

    Enabled, a free slot, and either healthy with a closed breaker, or due for an open breaker's trial
    (healthy, or last seen unreachable / not ready: the trial is the probe).
    Order: lowest utilisation ``active/max``, then the larger free capacity, then the name.
    """
    qs = Scanner.objects.filter(
        pool_id=pool_id, enabled=True, health__in=(*SELECTABLE_HEALTH, *PASSING_HEALTH)
    ).filter(active_scans__lt=F("max_concurrent_scans"))
    if pinned_scanner_id is not None:
        qs = qs.filter(pk=pinned_scanner_id)
    found = [
        s
        for s in qs
        if (s.health in SELECTABLE_HEALTH and s.breaker_state == BreakerState.CLOSED) or breaker.trial_due(s)
    ]
    found.sort(
        key=lambda s: (s.active_scans / s.max_concurrent_scans, -(s.max_concurrent_scans - s.active_scans), s.name)
    )
    return found
