"""The wait estimate's FIFO simulation runs once per pool snapshot (tasks.capacity._Plan) and answers each task by
lookup. Checked here against a plain reference simulation of one task at a time (the algorithm as DESIGN §4 states
it, written out naively) on random pools, and for its cost: reading every task of a long queue simulates it once."""

from __future__ import annotations

import math
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from tasks import capacity
from tasks.capacity import PoolSnapshot, _Plan, estimate_from
from tasks.models import ScanTask, TaskStatus


def reference(task_key, pinned, snapshot: PoolSnapshot, now: datetime) -> tuple[float | None, int]:
    """Seconds from ``now`` until the task starts (None: no slot on its scanners; inf: no mean yet) and its
    position, simulating every older waiting task one by one."""
    duration = snapshot.mean if snapshot.mean is not None else math.inf
    ahead = [p for created, pk, p, _ in snapshot.waiting if (created, pk) < task_key]
    position = sum(1 for p in ahead if pinned is None or p in (None, pinned))
    ends: dict[int, list[float]] = {pk: [] for pk, _, _ in snapshot.usable}
    for scanner_id, started in snapshot.holders:
        elapsed = (now - started).total_seconds() if started else 0.0
        ends[scanner_id].append(max(0.0, duration - elapsed))
    slots = {}
    for pk, max_scans, _ in snapshot.usable:
        busy = sorted(ends[pk])
        slots[pk] = [0.0] * (max_scans - len(busy)) + busy if len(busy) < max_scans else busy[len(busy) - max_scans:]
    for p in ahead:
        choices = [pk for pk in slots if p in (None, pk) and slots[pk]]
        if choices:
            best = min(choices, key=lambda pk: slots[pk][0])
            start = slots[best].pop(0)
            slots[best].append(start + duration)
            slots[best].sort()
    mine = [slots[pk][0] for pk in slots if pinned in (None, pk) and slots[pk]]
    return (min(mine) if mine else None), position


def random_snapshot(rng: random.Random, now: datetime, waiting: int) -> PoolSnapshot:
    usable = [(pk, rng.randint(1, 3), 0) for pk in range(1, rng.randint(1, 4) + 1)]
    holders = []
    for pk, max_scans, _ in usable:
        for _ in range(rng.randint(0, max_scans + 1)):  # sometimes more scans than slots (limit lowered)
            started = None if rng.random() < 0.1 else now - timedelta(minutes=rng.uniform(0, 40))
            holders.append((pk, started))
    pins = [None, None, None, *[pk for pk, _, _ in usable], 99]  # 99: a scanner that is not usable
    queue = [(now + timedelta(seconds=i), uuid.uuid4(), rng.choice(pins), False) for i in range(waiting)]
    mean = None if rng.random() < 0.15 else rng.uniform(60, 3600)
    return PoolSnapshot.of(taken=time.monotonic(), mean=mean, sample=3 if mean else 0, usable=usable,
                           holders=holders, waiting=queue)


def waiting_task(created: datetime, pk: uuid.UUID, pinned: int | None) -> ScanTask:
    return ScanTask(id=pk, created_at=created, requested_scanner_id=pinned, pool_id=1, status=TaskStatus.QUEUED)


def close(got: float, want: float, now: datetime) -> bool:
    """``got`` (an estimate's seconds, counted from the moment it was made, rounded) matches ``want`` (counted from
    ``now``): call it right after the estimate. The time since ``now`` is measured, not assumed: simulating a long
    queue on a loaded machine takes a while (2 s in one CI run)."""
    elapsed = time.time() - now.timestamp()
    return want - elapsed - 1 <= got <= want + 1


def test_the_plan_answers_as_the_one_task_simulation_on_random_pools():
    rng = random.Random(20261202)
    for _ in range(300):
        now = datetime.now(UTC)
        snapshot = random_snapshot(rng, now, rng.randint(0, 30))
        usable_ids = {pk for pk, _, _ in snapshot.usable}
        for created, pk, pinned, _ in snapshot.waiting:
            got = estimate_from(waiting_task(created, pk, pinned), snapshot)
            want, position = reference((created, pk), pinned, snapshot, now)
            assert got.position == position
            if (pinned is not None and pinned not in usable_ids) or want is None:
                assert got.seconds is None and got.basis["method"].startswith("no usable scanner")
            elif math.isinf(want):
                assert got.seconds is None and got.basis["method"] == "no completed scan yet"
            else:
                assert got.seconds is not None and close(got.seconds, want, now), (got, want)


def test_a_task_newer_than_the_snapshot_is_placed_after_the_queue_and_changes_nothing_else():
    rng = random.Random(7)
    now = datetime.now(UTC)
    snapshot = random_snapshot(rng, now, 12)
    keys = [(created, pk) for created, pk, *_ in snapshot.waiting]
    before = {key: snapshot.plan.entries[key] for key in keys}
    new = waiting_task(now + timedelta(minutes=5), uuid.uuid4(), None)
    want, position = reference((new.created_at, new.id), None, snapshot, now)
    longer = snapshot.with_task(new)
    got = estimate_from(new, longer)
    assert got.position == position == 12
    assert (got.seconds is None and (want is None or math.isinf(want))) or close(got.seconds, want, now)
    assert {key: longer.plan.entries[key] for key in keys} == before
    # A hypothetical task (the pool page's "wait for a new task") is placed on a copy: the plan stays as it was.
    ghost = waiting_task(now + timedelta(minutes=9), uuid.uuid4(), None)
    entries = dict(longer.plan.entries)
    assert estimate_from(ghost, longer).position == 13
    assert longer.plan.entries == entries and estimate_from(new, longer) == got


def test_reading_every_task_of_a_long_queue_simulates_it_once(monkeypatch):
    placed = 0
    place = _Plan.place

    def counting(self, key, pinned, **kwargs):
        nonlocal placed
        placed += 1
        return place(self, key, pinned, **kwargs)

    monkeypatch.setattr(capacity._Plan, "place", counting)
    now = datetime.now(UTC)
    queue = [(now + timedelta(microseconds=i), uuid.uuid4(), None, False) for i in range(20_000)]
    snapshot = PoolSnapshot.of(taken=time.monotonic(), mean=600.0, sample=5, usable=[(1, 4, 4), (2, 2, 0)],
                               holders=[(1, now - timedelta(minutes=3))] * 4, waiting=queue)
    last = estimate_from(waiting_task(*queue[-1][:3]), snapshot)
    for created, pk, pinned, _ in queue[::100]:
        estimate_from(waiting_task(created, pk, pinned), snapshot)
    assert placed == len(queue)
    want, position = reference(queue[-1][:2], None, snapshot, now)
    assert last.position == position == 19_999 and close(last.seconds, want, now)


def test_a_submitted_task_joins_the_snapshot_without_copying_its_queue():
    """A submit's answer puts the new task at the end of the cached snapshot: the queue is shared and grows, so
    the cost does not depend on the queue's length. Older snapshots keep seeing the queue as they read it."""
    now = datetime.now(UTC)
    queue = [(now + timedelta(microseconds=i), uuid.uuid4(), None, False) for i in range(10_000)]
    snapshot = PoolSnapshot.of(taken=time.monotonic(), mean=600.0, sample=5, usable=[(1, 2, 0)], holders=[],
                               waiting=queue)
    snapshot.plan  # noqa: B018 (built, as after the first status read)
    tasks = [waiting_task(now + timedelta(seconds=1 + i), uuid.uuid4(), None) for i in range(3)]
    first = snapshot.with_task(tasks[0])
    second = first.with_task(tasks[1])
    assert first.queue is snapshot.queue is second.queue  # appended in place, not copied
    assert [snapshot.is_waiting(t) for t in tasks[:2]] == [False, False]
    assert [first.is_waiting(t) for t in tasks[:2]] == [True, False]
    assert [second.is_waiting(t) for t in tasks[:2]] == [True, True]
    assert not snapshot.is_newer(waiting_task(*queue[-1][:3])) and snapshot.is_newer(tasks[0])
    assert first.is_newer(tasks[1]) and not second.is_newer(tasks[1])
    assert sum(1 for _ in snapshot.waiting) == 10_000 and sum(1 for _ in second.waiting) == 10_002
    assert estimate_from(tasks[1], second).position == 10_001

    # Another web thread appends to a snapshot that is no longer the newest: that one copies, and no snapshot
    # sees the other's task.
    branch = first.with_task(tasks[2])
    assert branch.queue is not first.queue
    assert branch.is_waiting(tasks[2]) and not branch.is_waiting(tasks[1])
    assert second.is_waiting(tasks[1]) and not second.is_waiting(tasks[2])
    assert [pk for _, pk, *_ in branch.waiting][-2:] == [tasks[0].id, tasks[2].id]
    assert estimate_from(tasks[2], branch).position == 10_001


def test_an_authenticated_task_held_back_by_unconfirmed_scanners_says_so():
    """Authenticated scans go only to scanners whose changed connection someone else confirmed: the wait estimate
    must not promise a slot of an unconfirmed scanner."""
    now = datetime.now(UTC)
    snapshot = PoolSnapshot.of(taken=time.monotonic(), mean=600.0, sample=5, usable=[(1, 2, 0), (2, 2, 0)],
                               holders=[], waiting=[], unconfirmed=frozenset({1, 2}))
    task = waiting_task(now, uuid.uuid4(), None)
    assert estimate_from(task, snapshot).seconds == 0  # untrusted: any usable scanner
    task.scan_type = "authenticated"
    held = estimate_from(task, snapshot)
    assert held.seconds is None and "confirm the changed connection" in held.basis["method"]
    half = PoolSnapshot.of(taken=time.monotonic(), mean=600.0, sample=5, usable=[(1, 2, 0), (2, 3, 0)],
                           holders=[], waiting=[], unconfirmed=frozenset({1}))
    estimate = estimate_from(task, half)
    assert estimate.seconds == 0 and estimate.basis["capacity"] == 3  # only the confirmed scanner's slots


def test_authenticated_scans_take_no_unconfirmed_slot_in_the_simulation():
    """Dispatch skips an authenticated scan on an unconfirmed scanner (tasks.engine.dispatch.dispatch_round) and
    gives that slot to the scans behind it. The estimate said "a slot is free" (0 s) to an authenticated task whose
    only free slot was unconfirmed, and made the untrusted task behind it wait a whole scan for a slot it gets now."""
    now = datetime.now(UTC)
    cred = (now, uuid.uuid4(), None, True)
    plain = (now + timedelta(seconds=1), uuid.uuid4(), None, False)
    snapshot = PoolSnapshot.of(taken=time.monotonic(), mean=600.0, sample=5, usable=[(1, 1, 1), (2, 1, 0)],
                               holders=[(1, now - timedelta(seconds=100))], waiting=[cred, plain],
                               unconfirmed=frozenset({2}))
    authenticated = waiting_task(*cred[:3])
    authenticated.scan_type = "authenticated"
    estimate = estimate_from(authenticated, snapshot)
    assert estimate.position == 0 and 490 <= estimate.seconds <= 510  # when the confirmed scanner's scan ends
    behind = estimate_from(waiting_task(*plain[:3]), snapshot)
    assert behind.position == 1 and behind.seconds == 0  # it takes the unconfirmed scanner's free slot now
    late = waiting_task(now + timedelta(seconds=2), uuid.uuid4(), None)  # a newer one, not in the snapshot
    late.scan_type = "authenticated_privileged"
    assert estimate_from(late, snapshot).seconds > 1000  # after the first one, on the confirmed scanner


def test_an_overdue_scan_is_not_called_a_free_slot():
    """A task whose only slot is held by a scan older than the mean is due now (0 s), but the answer said "a slot
    is free" next to "free": 0 (seen on make run: a task pinned to a scanner still exporting a finished scan)."""
    now = datetime.now(UTC)
    mine = (now, uuid.uuid4(), None, False)
    snapshot = PoolSnapshot.of(taken=time.monotonic(), mean=60.0, sample=2, usable=[(1, 1, 1)],
                               holders=[(1, now - timedelta(seconds=90))], waiting=[mine])
    estimate = estimate_from(waiting_task(*mine[:3]), snapshot)
    assert estimate.seconds == 0 and estimate.basis["free"] == 0
    assert estimate.basis["method"].startswith("due now: the scan holding its slot has run longer")
    free = PoolSnapshot.of(taken=time.monotonic(), mean=60.0, sample=2, usable=[(1, 2, 1)],
                           holders=[(1, now - timedelta(seconds=90))], waiting=[mine])
    assert estimate_from(waiting_task(*mine[:3]), free).basis["method"] == "a slot is free"
