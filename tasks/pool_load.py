"""A pool's load — slots, scans running, free slots, utilisation, queue depth — computed once for every place
that shows it (the REST API, the admin's pool list and control room, the live dashboard, /readyz)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from django.db.models import Q, Sum

from pools.models import Pool
from scanners.models import Scanner, not_waiting_q
from tasks.models import ScanTask


@dataclass(frozen=True)
class PoolLoad:
    """A pool's load, computed once for every place that shows it (the REST API, the admin's pool list and
    control room, the live dashboard): free slots and utilisation are of the usable capacity, so a scanner that
    is down or whose breaker is open — its scans still counted in ``active`` — never pushes utilisation past
    what the usable scanners really carry (it read 5.0 / 250 % during an outage).

    "Usable" means usable *now*: a scanner waiting out a ``Retry-After`` it answered (``Scanner.wait_until``) gets
    no task before the wait ends, so its slots are in ``total_slots`` and ``waiting_slots``, not in ``capacity``
    nor ``free`` (a pool whose only scanner waits has no free slot, and /readyz says so)."""

    capacity: int  # slots of the scanners that can take work now (``Scanner.objects.usable_now()``)
    total_slots: int  # slots of every enabled scanner
    active: int  # slots held on every scanner of the pool, disabled or down ones included
    active_usable: int  # slots held on the scanners usable now
    queued: int  # waiting, not yet given a scanner
    waiting_slots: int = 0  # slots of scanners otherwise usable that wait out a Retry-After (none of ``capacity``)

    @property
    def unavailable_active(self) -> int:
        """Scans running on scanners that cannot take work now (down, breaker open, disabled, waiting)."""
        return max(0, self.active - self.active_usable)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.active_usable)

    @property
    def utilisation(self) -> float:
        """Scans on usable scanners / usable capacity, at most 1.0; 1.0 when nothing is usable but scans still run.
        A limit lowered below the scans running leaves more scans than slots until they end: the pool is full, not
        300 % (the API said 3.0 while the admin's and the dashboard's bars said 100 %)."""
        if self.capacity:
            return min(1.0, self.active_usable / self.capacity)
        return 1.0 if self.active else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "free": self.free, "utilisation": round(self.utilisation, 3),
                "unavailable_active": self.unavailable_active}

    @classmethod
    def of_scanners(cls, scanners: Iterable[Scanner], queued: int = 0) -> PoolLoad:
        """The load of a pool whose scanners are already loaded (the API prefetches them)."""
        capacity = total = active = active_usable = waiting = 0
        for s in scanners:
            active += s.active_scans
            if s.enabled:
                total += s.max_concurrent_scans
            if s.usable_now:
                capacity += s.max_concurrent_scans
                active_usable += s.active_scans
            elif s.usable:
                waiting += s.max_concurrent_scans
        return cls(capacity=capacity, total_slots=total, active=active, active_usable=active_usable, queued=queued,
                   waiting_slots=waiting)

    @classmethod
    def of_annotated(cls, pool: Pool) -> PoolLoad:
        """The load of a pool from the annotations of :func:`tasks.control_room.annotate_load`."""
        return cls(capacity=pool.total_capacity, total_slots=pool.total_slots, active=pool.active,
                   active_usable=pool.active_usable, queued=pool.queued, waiting_slots=pool.waiting_slots)


def pool_load(pool: Pool) -> PoolLoad:
    ready = not_waiting_q()
    usable = Scanner.objects.usable().filter(pool=pool).aggregate(
        slots=Sum("max_concurrent_scans", filter=ready), active=Sum("active_scans", filter=ready),
        waiting=Sum("max_concurrent_scans", filter=~ready))
    scanners = Scanner.objects.filter(pool=pool).aggregate(
        slots=Sum("max_concurrent_scans", filter=Q(enabled=True)), active=Sum("active_scans"))
    queued = ScanTask.objects.waiting().filter(pool=pool).count()
    return PoolLoad(capacity=usable["slots"] or 0, total_slots=scanners["slots"] or 0,
                    active=scanners["active"] or 0, active_usable=usable["active"] or 0, queued=queued,
                    waiting_slots=usable["waiting"] or 0)
