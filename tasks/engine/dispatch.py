"""``dispatch(pool)``: claim the oldest queued tasks of a pool while it has free slots (DESIGN §4).

Waiting tasks live in the database, ordered by submission. A dispatch round walks them oldest first;
for each it acquires a slot on the best scanner and claims the task in one transaction (a
compare-and-set on ``status='queued' AND claimed_at IS NULL``), then enqueues the task's launch job
(job id = task id) after commit. It stops as soon as the pool has no free slot: a full pool costs
nothing, the next release dispatches again.

One dispatcher per pool at a time: a Redis lock. A request that finds the lock taken leaves a
"pending" flag the holder re-checks before and after releasing the lock, so no request is lost;
the claims keep even two concurrent dispatchers correct.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import LockError

from pools.models import Pool
from scanners.selection import select_and_acquire
from tasks.models import EventKind, ScanTask, TaskEvent, TaskStatus
from tasks.queues import get_connection, pool_queue, step_retry

log = logging.getLogger(__name__)

PENDING_KEY = "scanpool:dispatch:pending:{}"
LOCK_KEY = "scanpool:dispatch:lock:{}"
_BATCH = 50
LOCK_TTL = 30


class Claim(enum.Enum):
    CLAIMED = "claimed"
    NO_SLOT = "no_slot"
    LOST = "lost"  # cancelled or claimed by someone else meanwhile


def request_dispatch(pool_id: int) -> None:
    """Ask for a dispatch of ``pool_id`` on its queue (coalesced: at most one request waits)."""
    try:
        conn = get_connection()
        if not conn.set(PENDING_KEY.format(pool_id), "1", nx=True, ex=60):
            return  # a dispatch is already requested and will see every task committed before it runs
        try:
            from tasks import jobs

            pool_queue(pool_id).enqueue(
                jobs.dispatch, pool_id, job_id=f"dispatch-{pool_id}-{uuid.uuid4().hex[:12]}",
                result_ttl=0, failure_ttl=settings.SCANPOOL_FAILURE_TTL, job_timeout=settings.SCANPOOL_STEP_TIMEOUT,
                description=f"dispatch pool {pool_id}",
            )
        except BaseException:
            conn.delete(PENDING_KEY.format(pool_id))
            raise
    except (redis.RedisError, Pool.DoesNotExist) as exc:
        # The task is safe in the database; the periodic reconcile dispatches it.
        log.warning("could not request a dispatch of pool %s (%s); reconcile will do it", pool_id, exc)


def dispatch_later(pool_id: int, delay: float) -> None:
    """A dispatch of ``pool_id`` in ``delay`` seconds (e.g. when an open breaker's cooldown ends)."""
    from datetime import timedelta

    from tasks import jobs

    try:
        pool_queue(pool_id).enqueue_in(
            timedelta(seconds=max(0.0, delay)), jobs.dispatch, pool_id,
            job_id=f"dispatch-{pool_id}-{uuid.uuid4().hex[:12]}", result_ttl=0,
            failure_ttl=settings.SCANPOOL_FAILURE_TTL, job_timeout=settings.SCANPOOL_STEP_TIMEOUT,
            description=f"dispatch pool {pool_id} (breaker cooldown over)",
        )
    except (redis.RedisError, Pool.DoesNotExist) as exc:
        log.warning("could not schedule a dispatch of pool %s (%s); reconcile will do it", pool_id, exc)


def dispatch_pool(pool_id: int) -> int:
    """Run dispatch rounds for the pool while requests keep coming; returns how many tasks were claimed."""
    conn = get_connection()
    pending = PENDING_KEY.format(pool_id)
    claimed = 0
    while True:
        # Short TTL, renewed every batch: a dispatcher killed mid-round blocks its pool for seconds, not minutes.
        lock = conn.lock(LOCK_KEY.format(pool_id), timeout=LOCK_TTL)
        if not lock.acquire(blocking=False):
            conn.set(pending, "1", ex=60)  # the holder will run another round
            return claimed
        try:
            while True:
                conn.delete(pending)
                claimed += dispatch_round(pool_id, keepalive=lock.reacquire)
                if not conn.exists(pending):
                    break
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("dispatch lock of pool %s expired while dispatching", pool_id)
        if not conn.exists(pending):
            return claimed


def dispatch_round(pool_id: int, keepalive: Callable[[], object] | None = None) -> int:
    """One pass over the pool's queued tasks, oldest first, until no slot is free."""
    full_pinned: set[int] = set()
    claimed = 0
    cursor: tuple | None = None
    while True:
        qs = ScanTask.objects.filter(pool_id=pool_id, status=TaskStatus.QUEUED, claimed_at__isnull=True)
        if full_pinned:
            qs = qs.exclude(requested_scanner_id__in=full_pinned)
        if cursor is not None:
            qs = qs.filter(Q(created_at__gt=cursor[0]) | Q(created_at=cursor[0], id__gt=cursor[1]))
        batch = list(qs.order_by("created_at", "id").values_list("id", "created_at", "requested_scanner_id")[:_BATCH])
        if not batch:
            return claimed
        if keepalive is not None:
            keepalive()
        for task_id, created_at, pinned in batch:
            cursor = (created_at, task_id)
            if pinned in full_pinned:
                continue
            outcome = claim(pool_id, task_id, pinned)
            if outcome is Claim.CLAIMED:
                claimed += 1
            elif outcome is Claim.NO_SLOT:
                if pinned is None:
                    return claimed  # no scanner of the pool can take a task: the rest waits, in order
                full_pinned.add(pinned)


def claim(pool_id: int, task_id: uuid.UUID, pinned_scanner_id: int | None) -> Claim:
    """Acquire a slot and claim the task in one transaction; enqueue its launch after commit."""
    with transaction.atomic():
        acquired = select_and_acquire(pool_id, pinned_scanner_id)
        if acquired is None:
            return Claim.NO_SLOT
        now = timezone.now()
        scanner = acquired.scanner
        won = ScanTask.objects.filter(pk=task_id, status=TaskStatus.QUEUED, claimed_at__isnull=True).update(
            claimed_at=now, assigned_scanner_id=scanner.pk, slot_held=True, scanner_status="", updated_at=now
        )
        if won != 1:
            transaction.set_rollback(True)
            return Claim.LOST
        trial = " as the one trial of its half-open circuit breaker" if acquired.trial else ""
        if acquired.trial:
            TaskEvent.objects.create(
                task_id=task_id, kind=EventKind.BREAKER, actor="dispatcher",
                message=f"circuit breaker of {scanner.name} half-open after its cooldown: this task is the trial",
                data={"scanner": scanner.name, "to": "half_open"},
            )
        TaskEvent.objects.create(
            task_id=task_id, kind=EventKind.SCANNER, actor="dispatcher",
            message=f"assigned to scanner {scanner.name}{trial} "
            f"({scanner.active_scans}/{scanner.max_concurrent_scans} slots in use)",
            data={"scanner": scanner.name, "active": scanner.active_scans, "max": scanner.max_concurrent_scans,
                  "trial": acquired.trial},
        )
        transaction.on_commit(lambda: enqueue_launch(pool_id, task_id), robust=True)
    return Claim.CLAIMED


def enqueue_launch(pool_id: int, task_id: uuid.UUID) -> None:
    """The launch job of a claimed task; its job id is the task id (DESIGN §4)."""
    from tasks import jobs

    queue = pool_queue(pool_id)
    queue.enqueue(
        jobs.launch, str(task_id), job_id=str(task_id), retry=step_retry(), result_ttl=600,
        failure_ttl=settings.SCANPOOL_FAILURE_TTL, job_timeout=settings.SCANPOOL_STEP_TIMEOUT,
        description=f"launch task {task_id}",
    )
