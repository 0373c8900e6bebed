"""A scanner's own request to be left alone for a while: a 429 or 503 answer with ``Retry-After`` (parsed and capped
at ``SCANPOOL_BREAKER_COOLDOWN`` by ``scanners.adapters.retry_after``) sets ``Scanner.wait_until``, the time before
which scanpool gives the scanner no new scan (``scanners.selection``) and the reconcile does not health-check it.

The wait is on the scanner, not on the step that was answered: a launch whose retries were all spent on such answers
goes back to the queue, and without it the dispatcher could hand that task (or another one) to the same scanner at
once, before the wait it asked for is over.

Why a column and not a Redis key with a TTL: the breaker's state, which does the same job for failures, lives on the
row too; selection, the dispatcher's wake-up (:func:`next_wait_end`), the wait estimate, the API and the admin all
read scanners from the database in the queries they already make; and the scanners app has no Redis connection of its
own (it lives in ``tasks.queues``). A wait that is over is just a time in the past: nothing needs to expire.

Every write only moves the time later (a conditional UPDATE), so two workers answered at once keep the longer wait.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Min, Q
from django.utils import timezone

from scanners.models import Scanner

log = logging.getLogger(__name__)


def record_wait(scanner: Scanner, seconds: float) -> datetime | None:
    """The scanner asked scanpool not to call it for ``seconds``: no new scan to it before then. Returns the end of
    the wait now in effect (a longer one recorded meanwhile wins), or None for a wait of 0 (nothing to record)."""
    if seconds <= 0:
        return None
    until = timezone.now() + timedelta(seconds=seconds)
    if Scanner.objects.filter(pk=scanner.pk).filter(Q(wait_until__isnull=True) | Q(wait_until__lt=until)).update(
            wait_until=until):
        log.warning("scanner %s asked scanpool to wait %.0fs (Retry-After): no new scan to it before %s",
                    scanner.name, seconds, f"{until:%H:%M:%S}")
    scanner.wait_until = Scanner.objects.filter(pk=scanner.pk).values_list("wait_until", flat=True).first() or until
    return scanner.wait_until


def next_wait_end(pool_id: int) -> datetime | None:
    """When the first wait of an enabled scanner of the pool ends (None: no scanner of the pool waits now).

    The dispatcher asks this when tasks wait and no scanner can take them, and wakes itself up then."""
    return (Scanner.objects.filter(pool_id=pool_id, enabled=True, wait_until__gt=timezone.now())
            .aggregate(first=Min("wait_until"))["first"])
