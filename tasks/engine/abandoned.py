"""Jobs abandoned by a worker that died in the middle of them (``kill -9``, OOM, a lost host).

RQ records each run of a job as an *execution*: a hash ``rq:execution:<job id>:<id>`` that expires with the
worker's heartbeat (job timeout, at most 30 s, + 60 s), listed in the job's ``rq:executions:<job id>`` (60 s
longer) and in the queue's StartedJobRegistry. A killed worker removes none of them. RQ's cleanup of the
StartedJobRegistry then retries the job (retries left) or moves it to the FailedJobRegistry as
``AbandonedJobError`` (none left) — and leaves the dead execution listed. When the job runs again and ends,
RQ's ``Job.delete`` (``result_ttl=0``, which every step, dispatch and most scanpool jobs use) reads every listed
execution and raises ``ValueError: Execution … not found in Redis`` for the expired one (rq/executions.py,
``Execution.refresh``): a re-run that did its work failed anyway, was retried into the same error and became
a dead letter — of a task that completed meanwhile, or of a periodic reconcile.

For scanpool an abandoned job is not a failure: its work is recovered (RQ's retry, or the reconcile rebuilding
it from the database) or dropped. Here:

* :func:`drop_lost_executions` removes a job's executions whose worker is gone (every job does it for itself
  before it runs, :mod:`tasks.jobs`; so does anything that deletes a job);
* :func:`take_over_abandoned` handles a queue's abandoned jobs before RQ's cleanup would: their dead execution
  is removed, a job with RQ retries left is retried the way RQ does it, any other (a periodic reconcile, a
  dispatch, a step whose retries are spent) is deleted — the reconcile redoes its work from the database;
* :class:`PoolJob`, the job class of every scanpool queue and worker, makes RQ's own cleanup do the same, in
  whichever process runs it first: a worker's maintenance (``Worker.clean_registries``, every 60 s, on any host)
  or any reader of a StartedJobRegistry (RQ's ``count`` and ``get_job_ids`` sweep it first: the ops page does).
  RQ retries an abandoned job with retries left itself; one without is deleted instead of failed. The same holds
  for a job a Redis outage cut short, handed back by its worker (:mod:`tasks.worker_outage`);
* :class:`PoolQueue`, the class of every scanpool queue: a job a worker popped as Redis went away, before it could
  read it, goes back to the front of its queue once Redis answers (:mod:`tasks.worker_outage`);
* :func:`drop_abandoned_failures` deletes what a process with RQ's plain ``Job`` class (``rq`` CLI, an older
  scanpool) moved to the FailedJobRegistry as ``AbandonedJobError``: the same jobs, for the same reasons;
* :func:`drop_earlier_attempts` deletes the failed jobs of a task's attempt that was retried since (the retry removes
  them itself, unless Redis was unreachable then): no dead letter of the task as it is now either.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from django.db.models import Max
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import current_timestamp, parse_composite_key

from tasks.engine import after_outage, locks
from tasks.models import EventKind, ScanTask, TaskEvent
from tasks.models.states import RETRYABLE_STATUSES

log = logging.getLogger(__name__)

ABANDONED_FAILURE = f"due to {AbandonedJobError.__name__}"  # RQ's exc_string for a job it found abandoned
# How StartedJobRegistry.cleanup (rq/registry.py) words the failure of a job it found abandoned, retries spent.
_SWEEP_FAILURE = f"Moved to {FailedJobRegistry.__name__}, {ABANDONED_FAILURE}"
# How a worker hands back the job a Redis outage cut short (tasks.worker_outage).
INTERRUPTED = "interrupted: Redis connection lost"
SERIALIZER = JSONSerializer  # the queues' serializer (tasks.queues takes it from here: it imports this module)


class PoolJob(Job):
    """RQ's ``Job``, for every scanpool queue (``tasks.queues.queue_for``) and worker. A run that did not fail but
    was cut short — its worker died (found by RQ's sweep of a StartedJobRegistry, ``StartedJobRegistry.cleanup``,
    in whichever process runs it) or lost Redis in the middle (handed back by :mod:`tasks.worker_outage`) — is
    retried by RQ when it has retries left; with none left it is deleted here instead of failed into the
    FailedJobRegistry, where it would show as a dead letter (and fire the dead-letter alert). Its work is rebuilt
    from the database by the reconcile, exactly as when :func:`take_over_abandoned` gets there first. Every other
    failure is RQ's as is."""

    # Callbacks are imported by the name stored in Redis and run in whichever process handles the job: RQ's sweep
    # runs an abandoned job's on_failure in any process (the web process reading /ops/queues/ too). scanpool sets
    # none, so one on a job of ours was written by someone else: never run (the worker refuses such a job too).
    def execute_success_callback(self, death_penalty_class, result) -> None:
        self._refuse_callback("success")

    def execute_failure_callback(self, death_penalty_class, *exc_info) -> None:
        self._refuse_callback("failure")

    def execute_stopped_callback(self, death_penalty_class) -> None:
        self._refuse_callback("stopped")

    def _refuse_callback(self, kind: str) -> None:
        name = getattr(self, f"_{kind}_callback_name", None)
        if name:
            log.warning("job %s: on_%s callback %r not run (scanpool jobs have no callbacks)", self.id, kind,
                        str(name)[:200])

    def _handle_failure(self, exc_string: str, pipeline, worker_name: str = "", *args, **kwargs):
        if not exc_string.startswith((_SWEEP_FAILURE, INTERRUPTED)):  # a job's own failure is a traceback
            return super()._handle_failure(exc_string, pipeline, worker_name, *args, **kwargs)
        drop_lost_executions(self)  # now: deleting the job reads its executions, and a dead one has expired
        self.delete(pipeline=pipeline)  # in RQ's transaction, after its status write
        why = "interrupted by a Redis outage" if exc_string.startswith(INTERRUPTED) else "abandoned by a dead worker"
        log.warning("job %s %s, no retry left: dropped, not failed; the reconcile rebuilds its work", self.id, why)
        return None


def _lost(conn: redis.Redis, execution: Execution, running_worker: str | None = None) -> bool:
    """The execution's hash expired (or is a remnant without a worker), or its worker is gone."""
    raw = conn.hget(execution.key, "worker_name")
    name = raw.decode() if raw else ""
    if not name:
        return True
    if name == running_worker:
        return False
    return locks.worker_dead(conn, name)


def _abandoned(conn: redis.Redis, execution: Execution, *, expired: bool) -> bool:
    """Is the worker that ran ``execution`` dead? Named by the execution (or, once its hash expired, by the job);
    when neither names it, RQ's view: its heartbeat lapsed. A live worker's step that outlives its heartbeat is
    left alone (never run twice at once)."""
    raw = conn.hget(execution.key, "worker_name") or conn.hget(Job.key_for(execution.job_id), "worker_name")
    name = raw.decode() if raw else ""
    return locks.worker_dead(conn, name) if name else expired


def drop_lost_executions(job: Job, running_worker: str | None = None) -> int:
    """Remove ``job``'s executions left by workers that died (``running_worker``: the live worker running it
    now, not looked up). Afterwards RQ can delete the job without reading an expired execution."""
    conn = job.connection
    executions = [Execution(id=raw.decode(), job_id=job.id, connection=conn)
                  for raw in conn.zrange(job.execution_registry.key, 0, -1)]
    lost = [execution for execution in executions if _lost(conn, execution, running_worker)]
    if lost:
        with conn.pipeline() as pipe:
            for execution in lost:
                execution.delete(job=job, pipeline=pipe)  # hash, StartedJobRegistry entry, the job's list
            pipe.execute()
        log.info("job %s: removed %d execution(s) of dead workers", job.id, len(lost))
    return len(lost)


def drop_lost_executions_of(job_id: str, connection: redis.Redis) -> None:
    """:func:`drop_lost_executions` by job id, before the caller deletes the job through RQ (a retry taking a dead
    letter back, the TTL clean-up); nothing when the job is gone."""
    try:
        drop_lost_executions(PoolJob.fetch(job_id, connection=connection, serializer=SERIALIZER))
    except NoSuchJobError:
        pass


def take_over_abandoned(queue: Queue) -> list[str]:
    """Retry or delete the jobs of ``queue`` that a dead worker left started (see the module docstring); returns
    ``"<job id>: retried|dropped"`` lines. An entry is abandoned as soon as its worker is known dead
    (:func:`tasks.engine.locks.worker_dead`: on this host, its pid is gone), without waiting for its heartbeat."""
    conn = queue.connection
    key = queue.started_job_registry.key
    now = current_timestamp()
    done: list[str] = []
    for member, score in conn.zrange(key, 0, -1, withscores=True):
        job_id, execution_id = parse_composite_key(member.decode())
        execution = Execution(id=execution_id, job_id=job_id, connection=conn)
        if not _abandoned(conn, execution, expired=score <= now):
            continue  # running on a live worker
        if not conn.zrem(key, member):
            continue  # taken meanwhile (RQ's maintenance, another reconcile)
        try:
            job = PoolJob.fetch(job_id, connection=conn, serializer=SERIALIZER)
        except NoSuchJobError:
            conn.delete(execution.key)
            continue
        with conn.pipeline() as pipe:
            execution.delete(job=job, pipeline=pipe)
            pipe.execute()
        drop_lost_executions(job)
        if job.get_status(refresh=False) != JobStatus.STARTED or conn.zcard(job.execution_registry.key):
            continue  # already re-enqueued, or running again on a live worker: leave it be
        with conn.pipeline() as pipe:
            if job.retries_left:
                job.retry(queue, pipe)  # as RQ's cleanup does (one retry spent), minus the dead execution
                outcome = "retried"
            else:
                job.delete(pipeline=pipe)
                outcome = "dropped"
            pipe.execute()
        log.warning("job %s abandoned by a dead worker: %s", job_id, outcome)
        done.append(f"{job_id}: {outcome}")
    return done


def drop_earlier_attempts(queue: Queue) -> list[str]:
    """Delete the failed jobs of ``queue`` left by an earlier attempt of a task retried since (its retry removes them,
    ``tasks.services.retry``, unless Redis was unreachable then): they are not dead letters of the task as it is
    now. Only while the task is not failed or timed out again, and only jobs that ended before its last retry."""
    registry = queue.failed_job_registry
    by_task: dict[str, list[str]] = {}
    for job_id in registry.get_job_ids():
        try:
            by_task.setdefault(str(uuid.UUID(job_id[:36])), []).append(job_id)
        except ValueError:
            continue  # a job of no task (dispatch, reconcile)
    if not by_task:
        return []
    live = ScanTask.objects.filter(pk__in=list(by_task)).exclude(status__in=RETRYABLE_STATUSES).values_list("pk")
    retried = dict(TaskEvent.objects.filter(task_id__in=live, kind=EventKind.STATUS, from_status__in=RETRYABLE_STATUSES)
                   .values("task_id").annotate(at=Max("created_at")).values_list("task_id", "at"))
    dropped: list[str] = []
    for task_id, at in retried.items():
        for job_id in by_task[str(task_id)]:
            try:
                job = PoolJob.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
            except NoSuchJobError:
                registry.remove(job_id)
                continue
            if job.ended_at is None or job.ended_at >= at:
                continue  # this attempt's (or a job that replaced the failed one under its id)
            drop_lost_executions(job)
            registry.remove(job, delete_job=True)
            log.warning("job %s: failed in an attempt of task %s retried since: dropped", job_id, task_id)
            dropped.append(f"{job_id}: dropped (earlier attempt)")
    return dropped


def drop_abandoned_failures(queue: Queue) -> list[str]:
    """Delete the jobs RQ's own cleanup moved to ``queue``'s FailedJobRegistry as ``AbandonedJobError``: a dead
    worker is not a failure of the job (the reconcile rebuilds a task's work from the database)."""
    conn = queue.connection
    registry = queue.failed_job_registry
    dropped: list[str] = []
    for job_id in registry.get_job_ids():
        try:
            job = PoolJob.fetch(job_id, connection=conn, serializer=SERIALIZER)
        except NoSuchJobError:
            continue
        result = job.latest_result()
        if result is None or ABANDONED_FAILURE not in (result.exc_string or ""):
            continue
        drop_lost_executions(job)
        registry.remove(job, delete_job=True)
        log.warning("job %s: failed only because its worker died (%s): dropped", job_id, AbandonedJobError.__name__)
        dropped.append(f"{job_id}: dropped")
    return dropped


_PUSH_BACK = """
if redis.call('HGET', KEYS[2], 'status') ~= 'queued' then return 0 end
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
"""


def push_back(connection: redis.Redis, queue_key: str, job_id: str) -> bool:
    """Put ``job_id`` back at the front of the queue ``queue_key`` if it is still ``queued`` and not listed there
    (atomically: a job run or re-enqueued meanwhile is left alone); True when it was."""
    pushed = bool(connection.eval(_PUSH_BACK, 2, queue_key, Job.key_for(job_id), job_id))
    if pushed:
        log.warning("job %s, popped from %s as Redis went away, is back in its queue", job_id, queue_key)
    return pushed


class PoolQueue(Queue):
    """The queue class of scan workers: a job popped by :meth:`dequeue_any` whose data could not be read because
    Redis went away is remembered, and pushed back to its queue as soon as Redis answers (module docstring)."""

    @classmethod
    def dequeue_any(cls, queues, timeout, connection, *args: Any, **kwargs: Any):  # type: ignore[override]
        if after_outage.pending():
            after_outage.redo()
        try:
            return super().dequeue_any(queues, timeout, connection, *args, **kwargs)
        except after_outage.REDIS_DOWN as exc:
            job_id, queue = getattr(exc, "job_id", None), getattr(exc, "queue", None)
            if job_id and queue is not None:  # RQ names what it popped on an error reading it
                log.warning("job %s was popped from %s as Redis went away; it goes back once Redis answers",
                            job_id, queue.name)
                after_outage.remember(f"push back {job_id}", lambda: push_back(connection, queue.key, job_id))
            raise
