"""``dispatch(pool)``: claim the oldest queued tasks of a pool while it has free slots (DESIGN §4).

Waiting tasks live in the database, ordered by submission. A dispatch round walks them oldest first;
for each it acquires a slot on the best scanner and claims the task in one transaction (a
compare-and-set on ``status='queued' AND claimed_at IS NULL``), then enqueues the task's launch job
(job id = task id) after commit. It stops as soon as the pool has no free slot: a full pool costs
nothing, the next release dispatches again.

One dispatcher per pool at a time, and no request is ever lost:

* a request bumps the pool's dispatch counter (``scanpool:dispatch:seq:<pool>``) and enqueues the pool's
  dispatch job with the fixed id ``dispatch-<pool>`` and RQ's ``unique=True``: while one waits in the
  queue, more requests add nothing (it will see every task committed before it runs). While it runs, a
  request enqueues the follow-up ``dispatch-<pool>-again`` the same way (the running one may be past its
  last look at the counter); only when both are running is a dispatch scheduled a second later. A job
  left behind by a dead worker or a failed run is deleted and the request enqueued again;
* the dispatcher holds the pool's Redis lock (holder-aware, see :mod:`tasks.engine.locks`: a lock left by
  a process killed on this host is broken at once; one held on another host expires after ``LOCK_TTL``
  seconds, renewed every batch). It re-reads the counter after every round and again after releasing
  the lock, and runs again when it moved: a request made while it ran is served by it. A dispatcher cut short
  by a Redis outage leaves the lock to its worker, which releases it and requests a dispatch once Redis is back,
  and enqueues a launch it claimed but could not enqueue (:mod:`tasks.engine.after_outage`);
* a dispatcher that finds the lock taken schedules one more dispatch for when the lock would expire,
  so even a holder that died on another host delays the pool by at most ``LOCK_TTL`` seconds;
* ``reconcile`` calls :func:`dispatch_pool` itself, unconditionally.

The claims keep even two concurrent dispatchers correct.
"""

from __future__ import annotations

import enum
import functools
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import LockError
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from pools.models import Pool
from scanners import breaker, pacing
from scanners.selection import confirmation_blockers
from tasks.engine import after_outage, locks, overlap
from tasks.engine.confirmation import carries_credentials, explain_waiting
from tasks.engine.slots import select_and_acquire
from tasks.models import EventKind, ScanTask, TaskEvent, TaskStatus
from tasks.queues import SERIALIZER, get_connection, pool_launch_queue, step_retry

log = logging.getLogger(__name__)

SEQ_KEY = "scanpool:dispatch:seq:{}"
LOCK_KEY = "scanpool:dispatch:lock:{}"
JOB_ID = "dispatch-{}"
# RQ entry points by dotted name (they live in tasks.jobs, which imports the engine, never the reverse).
DISPATCH_FUNC = "tasks.jobs.dispatch"
LAUNCH_FUNC = "tasks.jobs.launch"
_BATCH = 50
LOCK_TTL = 30
_SEQ_TTL = 7 * 24 * 3600
_LIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED})


class Claim(enum.Enum):
    CLAIMED = "claimed"
    NO_SLOT = "no_slot"
    LOST = "lost"  # cancelled or claimed by someone else meanwhile


# Bump the pool's dispatch counter and read its dispatch job's status: one command (redis-py sends EVALSHA, and
# the script itself again if Redis lost its script cache: a restart, SCRIPT FLUSH).
_BUMP_SCRIPT = """
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('HGET', KEYS[2], 'status')
"""


def _bump_script(conn: redis.Redis):
    script = getattr(conn, "_scanpool_bump", None)
    if script is None:
        script = conn._scanpool_bump = conn.register_script(_BUMP_SCRIPT)
    return script


def _bump_keys(pool_id: int) -> list[str]:
    return [SEQ_KEY.format(pool_id), Job.key_for(JOB_ID.format(pool_id))]


def _bump(conn: redis.Redis, pool_id: int) -> str | None:
    """Bump the pool's dispatch counter; returns the status of the pool's dispatch job (None: there is none),
    read in the same round trip."""
    return _text(_bump_script(conn)(keys=_bump_keys(pool_id), args=[_SEQ_TTL]))


def _text(status: bytes | str | None) -> str | None:
    return status.decode() if isinstance(status, bytes) else status


def _job_options(pool_id: int, what: str) -> dict:
    return {"result_ttl": 0, "failure_ttl": settings.SCANPOOL_FAILURE_TTL,
            "job_timeout": settings.SCANPOOL_STEP_TIMEOUT, "description": f"dispatch pool {pool_id}{what}"}


def _live_status(conn: redis.Redis, job_id: str) -> JobStatus | None:
    """The status of job ``job_id`` if it will still run (or is running on a live worker), else None."""
    try:
        job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        return None
    status = job.get_status(refresh=False)
    if status == JobStatus.FINISHED:
        # Just ran (result_ttl=0: RQ deletes it in a moment). Replacing it now could see the new job deleted by
        # that cleanup: count it as running, so the request goes to the follow-up id instead.
        return JobStatus.STARTED
    if status not in _LIVE or (status == JobStatus.STARTED and locks.worker_dead(conn, job.worker_name)):
        return None
    return status


def request_dispatch(pool: Pool | int) -> None:
    """Ask for a dispatch of ``pool`` (a Pool or its id) on its launch queue (coalesced: at most one dispatch
    job waits). The common case — a dispatch job already waits in the queue — costs one Redis round trip; inside
    :func:`tasks.engine.overlap.overlapped` that round trip overlaps the caller's work until the block ends."""
    pool_id = pool.pk if isinstance(pool, Pool) else pool
    conn = get_connection()
    if not overlap.send(conn, _bump_script(conn).sha, _bump_keys(pool_id), [_SEQ_TTL],
                        then=lambda status: _after_bump(conn, pool, pool_id, _text(status)),
                        fallback=lambda: _request_now(conn, pool, pool_id)):
        _request_now(conn, pool, pool_id)


def _request_now(conn: redis.Redis, pool: Pool | int, pool_id: int) -> None:
    try:
        status = _bump(conn, pool_id)
    except redis.RedisError as exc:
        _not_requested(pool_id, exc)
        return
    _after_bump(conn, pool, pool_id, status)


def _after_bump(conn: redis.Redis, pool: Pool | int, pool_id: int, status: str | None) -> None:
    """The rest of a dispatch request, given the status of the pool's dispatch job read with the bump."""
    if status == JobStatus.QUEUED.value:
        return  # the waiting job reads the tasks when it runs: it will see this one
    try:
        queue = pool_launch_queue(pool)
        for job_id in (JOB_ID.format(pool_id), JOB_ID.format(pool_id) + "-again"):
            status = _enqueue_unique(conn, queue, pool_id, job_id)
            if status != JobStatus.STARTED:
                return  # enqueued now, or one is waiting in the queue: it will see every task committed so far
        dispatch_later(pool_id, 1.0, why="both dispatch jobs were running")
    except (redis.RedisError, Pool.DoesNotExist) as exc:
        _not_requested(pool_id, exc)


def _not_requested(pool_id: int, exc: Exception) -> None:
    # The task is safe in the database; the periodic reconcile dispatches it.
    log.warning("could not request a dispatch of pool %s (%s); reconcile will do it", pool_id, exc)


def _enqueue_unique(conn: redis.Redis, queue, pool_id: int, job_id: str) -> JobStatus | None:
    """Enqueue dispatch job ``job_id`` unless a live one exists; returns the live one's status (None: enqueued)."""
    for _ in range(2):
        try:
            queue.enqueue(DISPATCH_FUNC, pool_id, job_id=job_id, unique=True, **_job_options(pool_id, ""))
            return None
        except DuplicateJobError:
            status = _live_status(conn, job_id)
            if status is not None:
                return status
            found = conn.hmget(Job.key_for(job_id), "status", "worker_name")  # what made it dead: for the log
            if found == [None, None]:
                # Gone since the enqueue saw it: it finished and RQ deleted it (result_ttl=0). Nothing was left
                # behind, and nothing may be deleted: another request may have enqueued the id again by now.
                continue
            log.warning("dispatch job %s was left behind (status %s, worker %s: dead worker or failed run): "
                        "replacing it", job_id, *(v.decode() if isinstance(v, bytes) else v for v in found))
            queue.failed_job_registry.remove(job_id)
            conn.delete(Job.key_for(job_id))
    return None


def dispatch_later(pool_id: int, delay: float, *, why: str = "breaker cooldown over") -> None:
    """A dispatch of ``pool_id`` in ``delay`` seconds (e.g. when an open breaker's cooldown ends)."""
    dispatch_at(pool_id, timezone.now() + timedelta(seconds=max(0.0, delay)), why=why)


def _not_before(when: datetime) -> datetime:
    """``when`` rounded up to a whole second. RQ's scheduled-job registry keeps whole seconds (it truncates)
    and enqueues every job whose second has begun, so an unrounded job can run up to a second early: a
    dispatch meant for the end of a breaker's cooldown then ran just before it, found no trial due, and
    the pool's waiting tasks slept until the periodic reconcile."""
    whole = when.replace(microsecond=0)
    return whole if whole == when else whole + timedelta(seconds=1)


def dispatch_at(pool_id: int, when: datetime, *, why: str, job_id: str | None = None) -> None:
    """A dispatch of ``pool_id`` not before ``when``. With ``job_id``, at most one such job exists at a time."""
    try:
        queue = pool_launch_queue(pool_id)
        options = _job_options(pool_id, f" ({why})")
        job = queue.create_job(
            DISPATCH_FUNC, args=(pool_id,), job_id=job_id or f"dispatch-{pool_id}-{uuid.uuid4().hex[:12]}",
            status=JobStatus.SCHEDULED, timeout=options.pop("job_timeout"), **options,
        )
        queue.schedule_job(job, _not_before(when), unique=job_id is not None)
    except DuplicateJobError:
        pass  # the same wake-up is already scheduled (or running)
    except (redis.RedisError, Pool.DoesNotExist) as exc:
        log.warning("could not schedule a dispatch of pool %s (%s); reconcile will do it", pool_id, exc)


def _wake_when_due(pool_id: int) -> None:
    """Tasks wait and no scanner can take them: if a breaker of the pool comes due for its trial later, or a scanner's
    ``Retry-After`` wait ends (:mod:`scanners.pacing`), dispatch again at the first of them (one job per pool, reason
    and second)."""
    dues = [(when, what) for when, what in ((breaker.next_trial_at(pool_id), "trial"),
                                            (pacing.next_wait_end(pool_id), "wait")) if when is not None]
    if dues:
        due, what = min(dues)
        due = _not_before(due)
        why = "a breaker's trial comes due" if what == "trial" else "a scanner's Retry-After wait ends"
        dispatch_at(pool_id, due, why=why, job_id=f"dispatch-{pool_id}-{what}-{int(due.timestamp())}")


def dispatch_pool(pool_id: int) -> int:
    """Run dispatch rounds for the pool until no request came in meanwhile; returns how many tasks were claimed."""
    conn = get_connection()
    seq_key = SEQ_KEY.format(pool_id)
    claimed = 0
    while True:
        lock = conn.lock(LOCK_KEY.format(pool_id), timeout=LOCK_TTL)
        if not locks.acquire(lock):
            # A live holder re-reads the counter before and after releasing: it serves this request. In case
            # the holder died on another host, look again when its lock would have expired.
            ttl = conn.pttl(LOCK_KEY.format(pool_id))
            dispatch_later(pool_id, (ttl / 1000 if ttl and ttl > 0 else 1.0) + 0.5, why="lock holder busy")
            return claimed
        try:
            while True:
                seen = conn.get(seq_key)
                claimed += dispatch_round(pool_id, keepalive=lock.reacquire)
                if conn.get(seq_key) == seen:
                    break
        finally:
            try:
                # Redis gone meanwhile: released as soon as it is back, and the requests this dispatch would have
                # served are served then (tasks.engine.after_outage), not after the lock's TTL.
                locks.release(lock, then=functools.partial(request_dispatch, pool_id))
            except LockError:
                log.warning("dispatch lock of pool %s expired while dispatching", pool_id)
        if conn.get(seq_key) == seen:
            return claimed


def dispatch_round(pool_id: int, keepalive: Callable[[], object] | None = None) -> int:
    """One pass over the pool's queued tasks, oldest first, until no slot is free.

    A task with credentials goes only to a scanner whose connection is confirmed (:mod:`tasks.engine.confirmation`).
    When only unconfirmed scanners could take it, it is skipped (its place kept; its timeline says why, once) and
    the pass goes on: tasks without credentials behind it may still use those scanners."""
    full_pinned: set[int] = set()
    unconfirmed: dict[int | None, list[str]] = {}  # pinned scanner (None: any) → the unconfirmed ones holding it
    claimed = 0
    cursor: tuple | None = None
    while True:
        qs = ScanTask.objects.filter(pool_id=pool_id, status=TaskStatus.QUEUED, claimed_at__isnull=True)
        if full_pinned:
            qs = qs.exclude(requested_scanner_id__in=full_pinned)
        if cursor is not None:
            qs = qs.filter(Q(created_at__gt=cursor[0]) | Q(created_at=cursor[0], id__gt=cursor[1]))
        batch = list(qs.order_by("created_at", "id").values_list(
            "id", "created_at", "requested_scanner_id", "scan_type", "attempts")[:_BATCH])
        if not batch:
            if full_pinned:
                _wake_when_due(pool_id)
            return claimed
        if keepalive is not None:
            keepalive()
        held: dict[uuid.UUID, tuple[int, list[str]]] = {}  # tasks with credentials held back: attempt, scanners
        try:
            for task_id, created_at, pinned, scan_type, attempt in batch:
                cursor = (created_at, task_id)
                if pinned in full_pinned:
                    continue
                credentials = carries_credentials(scan_type)
                if credentials and pinned in unconfirmed:
                    held[task_id] = (attempt, unconfirmed[pinned])
                    continue
                outcome = claim(pool_id, task_id, pinned, credentials=credentials)
                if outcome is Claim.CLAIMED:
                    claimed += 1
                elif outcome is Claim.NO_SLOT:
                    if credentials and (blocking := confirmation_blockers(pool_id, pinned)):
                        unconfirmed[pinned] = [scanner.name for scanner in blocking]
                        held[task_id] = (attempt, unconfirmed[pinned])
                        continue
                    if pinned is None:
                        _wake_when_due(pool_id)
                        return claimed  # no scanner of the pool can take a task: the rest waits, in order
                    full_pinned.add(pinned)
        finally:
            explain_waiting([(pk, attempt) for pk, (attempt, _) in held.items()],
                            {pk: names for pk, (_, names) in held.items()})


def claim(pool_id: int, task_id: uuid.UUID, pinned_scanner_id: int | None, *, credentials: bool = False) -> Claim:
    """Acquire a slot and claim the task in one transaction; enqueue its launch after commit. ``credentials``:
    the task carries credentials, so only a scanner whose connection is confirmed may take it."""
    with transaction.atomic():
        acquired = select_and_acquire(pool_id, pinned_scanner_id, credentials=credentials)
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
        transaction.on_commit(lambda: _launch_claimed(pool_id, task_id), robust=True)
    return Claim.CLAIMED


def _launch_claimed(pool_id: int, task_id: uuid.UUID) -> None:
    """Enqueue the launch of a task just claimed. Redis unreachable: the task is claimed in the database and holds
    its slot; its launch is enqueued as soon as Redis is back (:mod:`tasks.engine.after_outage`), else by the
    reconcile (``CLAIM_GRACE`` after the claim)."""
    try:
        enqueue_launch(pool_id, task_id)
    except after_outage.REDIS_DOWN as exc:
        log.warning("task %s claimed, but its launch could not be enqueued (Redis: %s: %s); it is enqueued once "
                    "Redis is back", task_id, type(exc).__name__, exc)
        after_outage.remember(f"launch {task_id}", functools.partial(_launch_if_lost, pool_id, task_id))


def _launch_if_lost(pool_id: int, task_id: uuid.UUID) -> None:
    """Enqueue the launch whose enqueue met a Redis outage, while the task still waits for it (queued and claimed)
    and no live launch job exists (the enqueue may have gone through before the connection failed)."""
    if not ScanTask.objects.filter(pk=task_id, status=TaskStatus.QUEUED, claimed_at__isnull=False).exists():
        return
    conn = get_connection()
    status, worker = (v.decode() if v else "" for v in conn.hmget(Job.key_for(str(task_id)), "status", "worker_name"))
    live = status in {s.value for s in _LIVE}
    if live and not (status == JobStatus.STARTED.value and locks.worker_dead(conn, worker)):
        return
    enqueue_launch(pool_id, task_id)
    log.warning("task %s: launch enqueued now that Redis is back (its enqueue at the claim met the outage)", task_id)


def enqueue_launch(pool_id: int, task_id: uuid.UUID) -> None:
    """The launch job of a claimed task, on the pool's launch queue; its job id is the task id (DESIGN §4).

    An earlier attempt's failed launch still listed under that id in the FailedJobRegistry (its retry could not
    remove it: Redis was unreachable) is forgotten first: the job is replaced, and the entry would show the task
    as a dead letter whatever this attempt does."""
    queue = pool_launch_queue(pool_id)
    queue.failed_job_registry.remove(str(task_id))
    queue.enqueue(
        LAUNCH_FUNC, str(task_id), job_id=str(task_id), retry=step_retry(), result_ttl=600,
        failure_ttl=settings.SCANPOOL_FAILURE_TTL, job_timeout=settings.SCANPOOL_STEP_TIMEOUT,
        description=f"launch task {task_id}",
    )
