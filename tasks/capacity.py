"""What a pool can do right now, computed from the database (never stored): capacity, utilisation,
queue depth, a task's queue position and its estimated wait (DESIGN §4). In ``tasks`` because it reads
pools, scanners and tasks (imports run one way: pools ← scanners ← tasks)."""

from __future__ import annotations

import heapq
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from functools import cached_property
from itertools import islice

from django.db.models import Exists, OuterRef, Q

from pools.models import Pool
from scanners.models import SELECTABLE_HEALTH, Health, Scanner
from tasks.models import CREDENTIALED_SCAN_TYPES, REFETCH_MARK, EventKind, ScanTask, TaskEvent, TaskStatus
from tasks.pool_load import pool_load

RECENT_SCANS = 50


@dataclass(frozen=True)
class WaitEstimate:
    seconds: int | None
    position: int  # tasks ahead of this one in its pool's queue
    basis: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


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
    """Mean duration of the pool's recent completed scans, and how many it is based on. A task whose results were
    fetched again (:mod:`tasks.refetch`) is left out: its launch-to-end time spans the failed fetch and the wait for
    the new one (hours or days), not its scan."""
    refetched = TaskEvent.objects.filter(task_id=OuterRef("pk"), kind=EventKind.STATUS,
                                         **{f"data__{REFETCH_MARK}__isnull": False})
    rows = list(
        ScanTask.objects.filter(pool=pool, status=TaskStatus.COMPLETED, started_at__isnull=False,
                                finished_at__isnull=False)
        .filter(~Exists(refetched))
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


_Key = tuple[datetime, uuid.UUID]  # (created_at, id): a waiting task's place in FIFO order


@dataclass
class _Plan:
    """The FIFO simulation of a snapshot's whole queue, run once per snapshot: each waiting task's start and
    queue position, so an estimate is a lookup, not a walk over every older task (a status read of the 10,000th
    task cost 10,000 steps). Times are absolute (epoch seconds), so a plan read later than it was built still
    answers in seconds from the read."""

    duration: float  # each simulated scan lasts the pool's mean (inf: no completed scan yet)
    slots: dict[int, list[float]]  # usable scanner id → heap of the times its slots free
    unconfirmed: frozenset[int] = frozenset()  # usable scanners no authenticated scan may take (four eyes)
    ahead: int = 0  # waiting tasks placed so far
    ahead_unpinned: int = 0
    ahead_pinned: Counter = field(default_factory=Counter)  # scanner id → placed tasks pinned to it
    entries: dict[_Key, tuple[float | None, int]] = field(default_factory=dict)  # key → (start, position)

    @classmethod
    def build(cls, snapshot: PoolSnapshot, until: _Key | None = None) -> _Plan:
        """Simulate the snapshot's waiting tasks in FIFO order (only those before ``until`` when given)."""
        built = time.time()
        duration = snapshot.mean if snapshot.mean is not None else math.inf
        ends: dict[int, list[float]] = {pk: [] for pk, _, _ in snapshot.usable}
        for scanner_id, started in snapshot.holders:
            # A scan with no start yet, or already past the mean, frees its slot one mean from now / now.
            end = started.timestamp() + duration if started else built + duration
            ends[scanner_id].append(max(built, end))
        slots = {}
        for pk, max_scans, _ in snapshot.usable:
            times = _slot_free_times(max_scans, [end - built for end in ends[pk]])
            wait_end = snapshot.waits.get(pk, 0.0)  # a scanner that asked to wait (Retry-After) takes nothing before
            slots[pk] = [max(built + t, wait_end) for t in times]  # sorted, hence already a heap
        plan = cls(duration=duration, slots=slots, unconfirmed=snapshot.unconfirmed)
        for created, pk, pinned, credentials in snapshot.waiting:
            if until is not None and (created, pk) >= until:
                break
            plan.place((created, pk), pinned, credentials=credentials)
        return plan

    def extended(self) -> _Plan:
        """A copy whose future placements leave this plan's slots as they are (entries are shared: they only
        grow, and a key is placed once)."""
        return replace(self, slots={pk: list(times) for pk, times in self.slots.items()},
                       ahead_pinned=Counter(self.ahead_pinned))

    def place(self, key: _Key, pinned: int | None, credentials: bool = False, *,
              record: bool = True) -> tuple[float | None, int]:
        """The task's start (None: no usable scanner of its has a slot) and position, then it takes its slot.
        ``credentials``: an authenticated scan, which (as in dispatch) never takes an unconfirmed scanner's slot.
        ``record=False``: a task that is not in the queue (a hypothetical one) leaves no entry behind."""
        position = self.ahead if pinned is None else self.ahead_unpinned + self.ahead_pinned[pinned]
        choices = [pk for pk, times in self.slots.items()
                   if pinned in (None, pk) and times and not (credentials and pk in self.unconfirmed)]
        start = None
        if choices:
            # Every older waiting task plays, competitor or not: one pinned elsewhere still takes slots that the
            # unpinned tasks ahead would otherwise have used. Ties go to the first usable scanner.
            best = min(choices, key=lambda pk: self.slots[pk][0])
            start = heapq.heappop(self.slots[best])
            heapq.heappush(self.slots[best], start + self.duration)
        self.ahead += 1
        if pinned is None:
            self.ahead_unpinned += 1
        else:
            self.ahead_pinned[pinned] += 1
        if record:
            self.entries[key] = (start, position)
        return start, position


_Waiting = tuple[datetime, uuid.UUID, int | None, bool]  # (created_at, id, requested scanner, credentials)


class _Queue:
    """A pool's waiting tasks in FIFO order, shared by a snapshot and the snapshots :meth:`PoolSnapshot.with_task`
    makes from it: it only grows, and each snapshot sees its first ``length`` entries. Appending a submitted task
    to the newest snapshot is then O(1) instead of a copy of the whole queue (a submit's answer into a pool with
    10,000 waiting tasks copied them, and hashed each into a new key set). Web threads share the snapshots: an
    append to a snapshot that is no longer the newest (another thread appended first) copies its prefix."""

    def __init__(self, entries: Iterable[_Waiting]) -> None:
        self.entries = list(entries)  # its own list: appends must not reach the caller's
        self.index = {entry[:2]: i for i, entry in enumerate(self.entries)}
        self._lock = threading.Lock()

    def appended(self, length: int, entry: _Waiting) -> _Queue:
        """A queue whose first ``length + 1`` entries are this one's first ``length`` and ``entry``."""
        with self._lock:
            if len(self.entries) == length:
                self.entries.append(entry)
                self.index[entry[:2]] = length
                return self
        return _Queue([*self.entries[:length], entry])


@dataclass(frozen=True)
class PoolSnapshot:
    """What an estimate needs of a pool, read in three queries whatever the queue's length."""

    taken: float  # time.monotonic() when read
    mean: float | None  # recent mean scan duration (seconds) and how many scans it is based on
    sample: int
    usable: list[tuple[int, int, int]]  # (scanner id, max_concurrent_scans, active_scans) of usable scanners
    holders: list[tuple[int, datetime | None]]  # (scanner id, started_at) of each scan holding a usable slot
    queue: _Queue  # the waiting tasks: the first ``length`` entries of ``queue``
    length: int
    unconfirmed: frozenset[int] = frozenset()  # usable scanners whose changed connection is not confirmed yet
    pins: dict[int, str] = field(default_factory=dict)  # unusable scanner a waiting task is pinned to → why
    waits: dict[int, float] = field(default_factory=dict)  # usable scanner → end of its Retry-After wait (epoch)

    @classmethod
    def of(cls, *, taken: float, mean: float | None, sample: int, usable: list[tuple[int, int, int]],
           holders: list[tuple[int, datetime | None]], waiting: list[_Waiting],
           unconfirmed: frozenset[int] = frozenset(), pins: dict[int, str] | None = None,
           waits: dict[int, float] | None = None) -> PoolSnapshot:
        """A snapshot whose waiting tasks are ``waiting`` (FIFO order)."""
        return cls(taken=taken, mean=mean, sample=sample, usable=usable, holders=holders, queue=_Queue(waiting),
                   length=len(waiting), unconfirmed=unconfirmed, pins=pins or {}, waits=waits or {})

    @property
    def waiting(self) -> Iterator[_Waiting]:
        """The waiting tasks, (created_at, id, requested scanner, credentials) in FIFO order."""
        return islice(self.queue.entries, self.length)

    def is_waiting(self, task: ScanTask) -> bool:
        return self.queue.index.get((task.created_at, task.id), self.length) < self.length

    def is_newer(self, task: ScanTask) -> bool:
        """Whether the task comes after every waiting task of the snapshot (submitted since it was read)."""
        return not self.length or (task.created_at, task.id) > self.queue.entries[self.length - 1][:2]

    @cached_property
    def plan(self) -> _Plan:
        """The FIFO simulation of the whole queue (built on first use, once per snapshot)."""
        return _Plan.build(self)

    def with_task(self, task: ScanTask) -> PoolSnapshot:
        """This snapshot with ``task`` appended to the queue (same read time); a plan already built is extended
        by that one task instead of being simulated again."""
        key = (task.created_at, task.id)
        credentials = task.scan_type in CREDENTIALED_SCAN_TYPES
        longer = replace(self, queue=self.queue.appended(self.length, (*key, task.requested_scanner_id, credentials)),
                         length=self.length + 1)
        if "plan" in self.__dict__:
            plan = self.plan.extended()
            plan.place(key, task.requested_scanner_id, credentials=credentials)
            longer.__dict__["plan"] = plan
        return longer


def pool_snapshot(pool_id: int) -> PoolSnapshot:
    """Read the pool's usable scanners, recent durations, slot holders and waiting tasks (three queries)."""
    mean, sample = mean_scan_seconds(Pool(pk=pool_id))
    scanners = Scanner.objects.usable().filter(pool_id=pool_id).values_list(
        "pk", "max_concurrent_scans", "active_scans", "connection_confirmed", "wait_until")
    usable = [(pk, slots, active) for pk, slots, active, _, _ in scanners]
    unconfirmed = frozenset(pk for pk, _, _, confirmed, _ in scanners if not confirmed)
    now = time.time()
    waits = {pk: until.timestamp() for pk, *_, until in scanners if until is not None and until.timestamp() > now}
    usable_ids = {s[0] for s in usable}
    holders, waiting = [], []
    rows = ScanTask.objects.filter(
        Q(slot_held=True, assigned_scanner_id__in=usable_ids)
        | Q(status=TaskStatus.QUEUED, claimed_at__isnull=True, pool_id=pool_id)
    ).order_by("created_at", "id").values_list("slot_held", "assigned_scanner_id", "started_at", "status",
                                                "claimed_at", "pool_id", "requested_scanner_id", "created_at", "id",
                                                "scan_type")
    for held, assigned, started, status, claimed, task_pool, pinned, created, pk, scan_type in rows.iterator():
        if held and assigned in usable_ids:
            holders.append((assigned, started))
        if status == TaskStatus.QUEUED and claimed is None and task_pool == pool_id:
            waiting.append((created, pk, pinned, scan_type in CREDENTIALED_SCAN_TYPES))
    pins = _unusable_pins(pool_id, {w[2] for w in waiting if w[2] is not None} - usable_ids)
    return PoolSnapshot.of(taken=time.monotonic(), mean=mean, sample=sample, usable=usable, holders=holders,
                           waiting=waiting, unconfirmed=unconfirmed, pins=pins, waits=waits)


def _unusable_pins(pool_id: int, ids: set[int]) -> dict[int, str]:
    """Why each scanner in ``ids`` (pinned by waiting tasks, not usable now) takes no task of the pool; a query only
    when there are some. A scanner moved to another pool since the pin never takes them unless it comes back."""
    if not ids:
        return {}
    why = {}
    for pk, name, pool, pool_name, enabled, health, breaker_state in Scanner.objects.filter(pk__in=ids).values_list(
            "pk", "name", "pool_id", "pool__name", "enabled", "health", "breaker_state"):
        if pool != pool_id:
            reason = (f"was moved to pool {pool_name}: the task cannot run in this pool unless the scanner comes "
                      "back; cancel it and submit it again without scanner_instance or with a scanner of this pool")
        elif not enabled:
            reason = "is disabled"
        elif health not in SELECTABLE_HEALTH:
            reason = f"has health {health} ({Health(health).label})"
        else:
            reason = f"has its circuit breaker {breaker_state.replace('_', '-')}"
        why[pk] = f"pinned to scanner {name}, which {reason}"
    return why


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
    recent mean scan duration; a scan holding a slot with no start yet: one mean from now), and none before the end
    of a ``Retry-After`` wait the scanner asked for (``scanners.pacing``). The older waiting tasks of the pool
    take the earliest free slot they may use, in FIFO order, each holding it for one mean duration; the task gets
    the earliest slot left on its scanners. Scanners that are disabled, unhealthy or whose breaker is open give no
    slot (their scans are not counted). The position counts the older waiting tasks competing for the task's
    scanners (as :func:`queue_position`). The simulation runs once per snapshot for the whole queue
    (:class:`_Plan`); a task of the queue is looked up."""
    waiting = task.status == TaskStatus.QUEUED and task.claimed_at is None
    mean, usable = snapshot.mean, snapshot.usable
    allowed = [s for s in usable if task.requested_scanner_id in (None, s[0])]
    held_back = False
    credentials = task.scan_type in CREDENTIALED_SCAN_TYPES
    if credentials and snapshot.unconfirmed:  # credentials go to confirmed scanners only
        confirmed = [s for s in allowed if s[0] not in snapshot.unconfirmed]
        held_back, allowed = bool(allowed) and not confirmed, confirmed
    start: float | None = None
    position = 0
    if waiting:
        key = (task.created_at, task.id)
        entry = snapshot.plan.entries.get(key)
        if entry is None:  # not in the snapshot's queue: simulate the tasks before it, then place it
            plan = snapshot.plan.extended() if snapshot.is_newer(task) else _Plan.build(snapshot, until=key)
            entry = plan.place(key, task.requested_scanner_id, credentials=credentials, record=False)
        start, position = entry
    free = sum(max(0, slots - active) for _, slots, active in allowed)
    basis = {"position": position, "capacity": sum(s[1] for s in allowed), "free": free,
             "active": sum(s[2] for s in allowed),
             "mean_scan_seconds": round(mean, 1) if mean is not None else None, "sample": snapshot.sample}
    if not waiting:
        return WaitEstimate(seconds=0, position=0, basis={**basis, "method": "not waiting"})
    if held_back:
        return WaitEstimate(seconds=None, position=position, basis={
            **basis, "method": "waiting for a second person to confirm the changed connection of its scanners "
                               "(authenticated scans go only to confirmed scanners)"})
    if not allowed or start is None:
        method = snapshot.pins.get(task.requested_scanner_id) if not allowed else None
        return WaitEstimate(seconds=None, position=position, basis={
            **basis, "method": method or "no usable scanner for this task (disabled, unhealthy or breaker open)"})
    if math.isinf(start):
        return WaitEstimate(seconds=None, position=position, basis={**basis, "method": "no completed scan yet"})
    seconds = max(0.0, start - time.time())
    if seconds <= 0:  # a free slot, or one whose scan has outrun the mean ("free": 0 then, not "a slot is free")
        method = "a slot is free" if free > position else (
            "due now: the scan holding its slot has run longer than the pool's mean scan and should end any moment")
        return WaitEstimate(seconds=0, position=position, basis={**basis, "method": method})
    rounds = math.floor(max(0, position - free) / max(1, basis["capacity"])) + 1
    return WaitEstimate(seconds=round(seconds), position=position, basis={
        **basis, "rounds": rounds,
        "method": "simulated: FIFO on the task's scanners, each scan lasting the mean, running ones ending first"})


def retry_after_seconds(pool: Pool) -> int:
    """A polite Retry-After for a full pool: about one scan duration per capacity round, 30 s .. 1 h."""
    load = pool_load(pool)
    mean, _ = mean_scan_seconds(pool)
    if not mean or not load.capacity:
        return 60
    return int(min(3600, max(30, mean / max(1, load.capacity))))
