"""The chain of steps that follows one running task: poll → poll → … → finish.

Each link is a short RQ job scheduled by the previous one (``enqueue_in``). The id of the chain's
current job is kept in Redis (``scanpool:chain:<task id>``); a step whose job id is not that one
belongs to an older chain (e.g. one the reconciler replaced) and stops at once. RQ's retries keep
the job id, so a retried step still belongs to its chain. If Redis loses the key, the jobs are lost
with it and the reconciler starts a new chain.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from redis.exceptions import WatchError
from rq import get_current_job

from pools.models import Pool
from tasks.queues import get_connection, pool_queue, step_retry

CHAIN_KEY = "scanpool:chain:{}"
CHAIN_TTL = 14 * 24 * 3600
# RQ entry points by dotted name (they live in tasks.jobs, which imports the engine, never the reverse).
STEP_FUNCS = {"poll": "tasks.jobs.poll", "finish": "tasks.jobs.finish", "settle": "tasks.jobs.settle"}


def current_job_id(task_id: uuid.UUID) -> str | None:
    raw = get_connection().get(CHAIN_KEY.format(task_id))
    return raw.decode() if raw else None


def is_current(task_id: uuid.UUID) -> bool:
    """True when the running job (if any) is the task's current chain link."""
    job = get_current_job()
    if job is None:
        return True  # called directly (tests, management commands)
    token = current_job_id(task_id)
    if token is None:
        get_connection().set(CHAIN_KEY.format(task_id), job.id, ex=CHAIN_TTL)
        return True
    return token == job.id


def schedule(pool: Pool | int, task_id: uuid.UUID, step: str, *, delay: float = 0) -> str:
    """Make ``step`` ("poll" or "finish") the task's next chain link, run after ``delay`` seconds."""
    func = STEP_FUNCS[step]
    job_id = f"{task_id}-{step}-{uuid.uuid4().hex[:12]}"
    get_connection().set(CHAIN_KEY.format(task_id), job_id, ex=CHAIN_TTL)
    queue = pool_queue(pool)
    timeout = settings.SCANPOOL_FINISH_TIMEOUT if step == "finish" else settings.SCANPOOL_STEP_TIMEOUT
    options = {
        "job_id": job_id, "retry": step_retry(), "result_ttl": 0, "failure_ttl": settings.SCANPOOL_FAILURE_TTL,
        "job_timeout": timeout, "description": f"{step} task {task_id}",
    }
    if delay > 0:
        queue.enqueue_in(timedelta(seconds=delay), func, str(task_id), **options)
    else:
        queue.enqueue(func, str(task_id), **options)
    return job_id


def end_chain(task_id: uuid.UUID) -> None:
    get_connection().delete(CHAIN_KEY.format(task_id))


def end_if_current(task_id: uuid.UUID) -> None:
    """A chain link that found nothing left to do ends the chain, if it still is the current link (a stray link
    that adopted a chain already ended, e.g. a poll due after a cancel, leaves no key behind). Compare-and-delete:
    a link scheduled meanwhile (the stop step's settle) keeps its chain."""
    job = get_current_job()
    if job is None:
        return
    key = CHAIN_KEY.format(task_id)
    with get_connection().pipeline() as pipe:
        try:
            pipe.watch(key)
            raw = pipe.get(key)
            if raw is None or raw.decode() != job.id:
                return
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
        except WatchError:  # replaced meanwhile: that chain is not ours to end
            return
