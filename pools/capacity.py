"""What a pool can do right now, computed from the database (never stored): capacity, utilisation,
queue depth, a task's queue position and its estimated wait (DESIGN §4)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from django.db.models import Q, Sum
from django.utils import timezone

from pools.models import Pool
from scanners.models import SELECTABLE_HEALTH, BreakerState, Scanner

if TYPE_CHECKING:
    from tasks.models import ScanTask

RECENT_SCANS = 50


@dataclass(frozen=True)
class PoolLoad:
    capacity: int  # slots of the scanners that can take work now
    total_slots: int  # slots of every enabled scanner
    active: int
    queued: int  # waiting, not yet given a scanner

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.active)

    @property
    def utilisation(self) -> float:
        return self.active / self.capacity if self.capacity else (1.0 if self.active else 0.0)

    def as_dict(self) -> dict:
        return {**asdict(self), "free": self.free, "utilisation": round(self.utilisation, 3)}


@dataclass(frozen=True)
class WaitEstimate:
    seconds: int | None
    position: int  # tasks ahead of this one in its pool's queue
    basis: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _usable(pool: Pool):
    return Scanner.objects.filter(pool=pool, enabled=True, health__in=SELECTABLE_HEALTH).exclude(
        breaker_state=BreakerState.OPEN
    )


def pool_load(pool: Pool) -> PoolLoad:
    from tasks.models import ScanTask, TaskStatus

    usable = _usable(pool).aggregate(slots=Sum("max_concurrent_scans"))
    enabled = Scanner.objects.filter(pool=pool, enabled=True).aggregate(
        slots=Sum("max_concurrent_scans"), active=Sum("active_scans"))
    queued = ScanTask.objects.filter(pool=pool, status=TaskStatus.QUEUED, claimed_at__isnull=True).count()
    return PoolLoad(capacity=usable["slots"] or 0, total_slots=enabled["slots"] or 0,
                    active=enabled["active"] or 0, queued=queued)


def queue_position(task: ScanTask) -> int:
    """How many queued tasks of the same pool are ahead of ``task`` (0 = next). Claimed tasks are not waiting."""
    from tasks.models import ScanTask, TaskStatus

    if task.status != TaskStatus.QUEUED or task.claimed_at is not None:
        return 0
    return ScanTask.objects.filter(pool_id=task.pool_id, status=TaskStatus.QUEUED, claimed_at__isnull=True).filter(
        Q(created_at__lt=task.created_at) | Q(created_at=task.created_at, id__lt=task.id)
    ).count()


def mean_scan_seconds(pool: Pool) -> tuple[float | None, int]:
    """Mean duration of the pool's recent completed scans, and how many it is based on."""
    from tasks.models import ScanTask, TaskStatus

    rows = list(
        ScanTask.objects.filter(pool=pool, status=TaskStatus.COMPLETED, started_at__isnull=False,
                                finished_at__isnull=False)
        .order_by("-finished_at").values_list("started_at", "finished_at")[:RECENT_SCANS]
    )
    if not rows:
        return None, 0
    return sum((end - start).total_seconds() for start, end in rows) / len(rows), len(rows)


def estimated_wait(task: ScanTask) -> WaitEstimate:
    """Rounds of capacity ahead of the task times the pool's recent mean scan duration, minus the time the
    running scans have already spent (DESIGN §4)."""
    from tasks.models import ScanTask, TaskStatus

    pool = task.pool
    position = queue_position(task)
    load = pool_load(pool)
    mean, sample = mean_scan_seconds(pool)
    basis = {"position": position, "capacity": load.capacity, "free": load.free, "active": load.active,
             "mean_scan_seconds": round(mean, 1) if mean is not None else None, "sample": sample}
    if task.status != TaskStatus.QUEUED or task.claimed_at is not None:
        return WaitEstimate(seconds=0, position=0, basis={**basis, "method": "not waiting"})
    if position < load.free:
        return WaitEstimate(seconds=0, position=position, basis={**basis, "method": "a slot is free"})
    if load.capacity == 0:
        return WaitEstimate(seconds=None, position=position,
                            basis={**basis, "method": "no usable scanner (all disabled, unhealthy or breaker open)"})
    if mean is None:
        return WaitEstimate(seconds=None, position=position, basis={**basis, "method": "no completed scan yet"})
    rounds = math.floor((position - load.free) / load.capacity) + 1
    now = timezone.now()
    running = list(ScanTask.objects.filter(pool=pool, status=TaskStatus.RUNNING, started_at__isnull=False)
                   .values_list("started_at", flat=True))
    elapsed = sum((now - s).total_seconds() for s in running) / len(running) if running else 0.0
    first_round = max(0.0, mean - elapsed)
    seconds = round(first_round + (rounds - 1) * mean)
    return WaitEstimate(seconds=seconds, position=position, basis={
        **basis, "rounds": rounds, "mean_elapsed_running": round(elapsed, 1),
        "method": "rounds x mean scan duration - elapsed time of running scans"})


def retry_after_seconds(pool: Pool) -> int:
    """A polite Retry-After for a full pool: about one scan duration per capacity round, 30 s .. 1 h."""
    load = pool_load(pool)
    mean, _ = mean_scan_seconds(pool)
    if not mean or not load.capacity:
        return 60
    return int(min(3600, max(30, mean / max(1, load.capacity))))
