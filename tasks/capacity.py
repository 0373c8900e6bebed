"""What a pool can do right now, computed from the database (never stored): capacity, utilisation,
queue depth, a task's queue position and its estimated wait (DESIGN §4). In ``tasks`` because it reads
pools, scanners and tasks (imports run one way: pools ← scanners ← tasks)."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from django.db.models import Q, Sum
from django.utils import timezone

from pools.models import Pool
from scanners.models import Scanner
from tasks.models import ScanTask, TaskStatus

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
    return Scanner.objects.usable().filter(pool=pool)


def pool_load(pool: Pool) -> PoolLoad:
    usable = _usable(pool).aggregate(slots=Sum("max_concurrent_scans"))
    enabled = Scanner.objects.filter(pool=pool, enabled=True).aggregate(
        slots=Sum("max_concurrent_scans"), active=Sum("active_scans"))
    queued = ScanTask.objects.waiting().filter(pool=pool).count()
    return PoolLoad(capacity=usable["slots"] or 0, total_slots=enabled["slots"] or 0,
                    active=enabled["active"] or 0, queued=queued)


def _competitors(task: ScanTask):
    """Older waiting tasks of the pool that compete for a scanner ``task`` may use: unpinned ones, and ones
    pinned to a scanner ``task`` may use (for a pinned task: its scanner; else any scanner of the pool)."""
    qs = ScanTask.objects.waiting().filter(pool_id=task.pool_id).filter(
        Q(created_at__lt=task.created_at) | Q(created_at=task.created_at, id__lt=task.id))
    if task.requested_scanner_id is not None:
        qs = qs.filter(Q(requested_scanner__isnull=True) | Q(requested_scanner_id=task.requested_scanner_id))
    return qs


def queue_position(task: ScanTask) -> int:
    """How many waiting tasks are ahead of ``task`` for the scanners it can use (0 = next): tasks pinned to
    another scanner are not ahead of a pinned task. Claimed tasks are not waiting."""
    if task.status != TaskStatus.QUEUED or task.claimed_at is not None:
        return 0
    return _competitors(task).count()


def mean_scan_seconds(pool: Pool) -> tuple[float | None, int]:
    """Mean duration of the pool's recent completed scans, and how many it is based on."""
    rows = list(
        ScanTask.objects.filter(pool=pool, status=TaskStatus.COMPLETED, started_at__isnull=False,
                                finished_at__isnull=False)
        .order_by("-finished_at").values_list("started_at", "finished_at")[:RECENT_SCANS]
    )
    if not rows:
        return None, 0
    return sum((end - start).total_seconds() for start, end in rows) / len(rows), len(rows)


def _slot_free_times(max_scans: int, ends: list[float]) -> list[float]:
    """When each of the scanner's slots frees, in seconds from now: free ones at 0, busy ones when the scan
    holding them is expected to end; with more scans than slots (limit lowered) the surplus ends first."""
    ends = sorted(ends)
    busy = len(ends)
    if busy < max_scans:
        return [0.0] * (max_scans - busy) + ends
    return ends[busy - max_scans:]


@dataclass(frozen=True)
class PoolSnapshot:
    """What an estimate needs of a pool, read in three queries whatever the queue's length."""

    taken: float  # time.monotonic() when read
    mean: float | None  # recent mean scan duration (seconds) and how many scans it is based on
    sample: int
    usable: list[tuple[int, int, int]]  # (scanner id, max_concurrent_scans, active_scans) of usable scanners
    holders: list[tuple[int, datetime | None]]  # (scanner id, started_at) of each scan holding a usable slot
    waiting: list[tuple[datetime, uuid.UUID, int | None]]  # (created_at, id, requested scanner), FIFO order
    waiting_keys: frozenset[tuple[datetime, uuid.UUID]] = frozenset()  # (created_at, id) of ``waiting``

    def is_waiting(self, task: ScanTask) -> bool:
        return (task.created_at, task.id) in self.waiting_keys

    def is_newer(self, task: ScanTask) -> bool:
        """Whether the task comes after every waiting task of the snapshot (submitted since it was read)."""
        return not self.waiting or (task.created_at, task.id) > self.waiting[-1][:2]

    def with_task(self, task: ScanTask) -> PoolSnapshot:
        """This snapshot with ``task`` appended to the queue (same read time)."""
        key = (task.created_at, task.id)
        return replace(self, waiting=[*self.waiting, (*key, task.requested_scanner_id)],
                       waiting_keys=self.waiting_keys | {key})


def pool_snapshot(pool_id: int) -> PoolSnapshot:
    """Read the pool's usable scanners, recent durations, slot holders and waiting tasks (three queries)."""
    mean, sample = mean_scan_seconds(Pool(pk=pool_id))
    usable = list(Scanner.objects.usable().filter(pool_id=pool_id).values_list(
        "pk", "max_concurrent_scans", "active_scans"))
    usable_ids = {s[0] for s in usable}
    holders, waiting = [], []
    rows = ScanTask.objects.filter(
        Q(slot_held=True, assigned_scanner_id__in=usable_ids)
        | Q(status=TaskStatus.QUEUED, claimed_at__isnull=True, pool_id=pool_id)
    ).order_by("created_at", "id").values_list("slot_held", "assigned_scanner_id", "started_at", "status",
                                                "claimed_at", "pool_id", "requested_scanner_id", "created_at", "id")
    for held, assigned, started, status, claimed, task_pool, pinned, created, pk in rows.iterator():
        if held and assigned in usable_ids:
            holders.append((assigned, started))
        if status == TaskStatus.QUEUED and claimed is None and task_pool == pool_id:
            waiting.append((created, pk, pinned))
    return PoolSnapshot(taken=time.monotonic(), mean=mean, sample=sample, usable=usable, holders=holders,
                        waiting=waiting, waiting_keys=frozenset((created, pk) for created, pk, _ in waiting))


_snapshots: dict[int, PoolSnapshot] = {}  # per process; see cached_estimated_wait


def forget_pool(pool_id: int | None = None) -> None:
    """Drop this process's cached snapshot of the pool (after a change made here: cancel, retry); None: all."""
    if pool_id is None:
        _snapshots.clear()
    else:
        _snapshots.pop(pool_id, None)


def cached_estimated_wait(task: ScanTask, max_age: float) -> WaitEstimate:
    """:func:`estimated_wait` from a snapshot of the pool at most ``max_age`` seconds old (0: always fresh).

    For status reads polled by many clients: one snapshot per pool serves every task of the pool. The task's
    own status is always current (it is the caller's row). A waiting task missing from the snapshot that is
    newer than all its waiting tasks (just submitted) joins the end of its queue; one that is older (requeued
    since) makes a fresh snapshot. What other tasks and scanners did since the read, including tasks other
    processes submitted, is seen at most ``max_age`` seconds late. The snapshot lives in a dict of this
    process, not in Django's cache, which would pickle the whole waiting list at every read."""
    snapshot = _snapshots.get(task.pool_id)
    waiting = task.status == TaskStatus.QUEUED and task.claimed_at is None
    if max_age <= 0 or snapshot is None or time.monotonic() - snapshot.taken > max_age:
        snapshot = pool_snapshot(task.pool_id)
    elif waiting and not snapshot.is_waiting(task):
        snapshot = snapshot.with_task(task) if snapshot.is_newer(task) else pool_snapshot(task.pool_id)
    else:
        return estimate_from(task, snapshot)
    if max_age > 0:
        _snapshots[task.pool_id] = snapshot
    return estimate_from(task, snapshot)


def estimated_wait(task: ScanTask) -> WaitEstimate:
    """When the task should start, simulated on the scanners it can use (DESIGN §4); always read fresh."""
    return estimate_from(task, pool_snapshot(task.pool_id))


def estimate_from(task: ScanTask, snapshot: PoolSnapshot) -> WaitEstimate:
    """The estimate of :func:`estimated_wait` from a pool snapshot (no query).

    Each usable scanner's slots free when the scan holding them is expected to end (its start plus the pool's
    recent mean scan duration; a scan holding a slot with no start yet: one mean from now). The older waiting
    tasks of the pool take the earliest free slot they may use, in FIFO order, each
    holding it for one mean duration; the task gets the earliest slot left on its scanners. Scanners that are
    disabled, unhealthy or whose breaker is open give no slot (their scans are not counted). The position
    counts the older waiting tasks competing for the task's scanners (as :func:`queue_position`)."""
    waiting = task.status == TaskStatus.QUEUED and task.claimed_at is None
    mean, usable = snapshot.mean, snapshot.usable
    allowed = [s for s in usable if task.requested_scanner_id in (None, s[0])]
    ahead: list[int | None] = []  # requested scanner of each older waiting task, oldest first
    if waiting:
        me = (task.created_at, task.id)
        ahead = [pinned for created, pk, pinned in snapshot.waiting if (created, pk) < me]
    position = sum(1 for p in ahead if task.requested_scanner_id is None or p in (None, task.requested_scanner_id))
    free = sum(max(0, slots - active) for _, slots, active in allowed)
    basis = {"position": position, "capacity": sum(s[1] for s in allowed), "free": free,
             "active": sum(s[2] for s in allowed),
             "mean_scan_seconds": round(mean, 1) if mean is not None else None, "sample": snapshot.sample}
    if not waiting:
        return WaitEstimate(seconds=0, position=0, basis={**basis, "method": "not waiting"})
    if not allowed:
        return WaitEstimate(seconds=None, position=position, basis={
            **basis, "method": "no usable scanner for this task (disabled, unhealthy or breaker open)"})
    duration = mean if mean is not None else math.inf
    now = timezone.now()
    ends: dict[int, list[float]] = {s[0]: [] for s in usable}
    for scanner_id, started in snapshot.holders:
        elapsed = (now - started).total_seconds() if started else 0.0
        ends[scanner_id].append(max(0.0, duration - elapsed))
    slots = {pk: _slot_free_times(max_scans, ends[pk]) for pk, max_scans, _ in usable}
    # Every older waiting task plays, competitor or not: one pinned elsewhere still takes slots that the
    # unpinned tasks ahead would otherwise have used.
    for pinned in ahead:
        choices = [pk for pk in slots if pinned in (None, pk) and slots[pk]]
        if not choices:
            continue  # pinned to a scanner that cannot take it now: it takes no slot
        best = min(choices, key=lambda pk: slots[pk][0])
        start = slots[best].pop(0)
        slots[best].append(start + duration)
        slots[best].sort()
    start = min(slots[s[0]][0] for s in allowed)
    if math.isinf(start):
        return WaitEstimate(seconds=None, position=position, basis={**basis, "method": "no completed scan yet"})
    if start == 0:
        return WaitEstimate(seconds=0, position=position, basis={**basis, "method": "a slot is free"})
    rounds = math.floor(max(0, position - free) / max(1, basis["capacity"])) + 1
    return WaitEstimate(seconds=round(start), position=position, basis={
        **basis, "rounds": rounds,
        "method": "simulated: FIFO on the task's scanners, each scan lasting the mean, running ones ending first"})


def retry_after_seconds(pool: Pool) -> int:
    """A polite Retry-After for a full pool: about one scan duration per capacity round, 30 s .. 1 h."""
    load = pool_load(pool)
    mean, _ = mean_scan_seconds(pool)
    if not mean or not load.capacity:
        return 60
    return int(min(3600, max(30, mean / max(1, load.capacity))))
