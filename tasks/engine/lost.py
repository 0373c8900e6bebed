"""Jobs ``queued`` in no queue: popped by a worker that never ran them.

RQ's scan workers pop a job id from its queue (``BLPOP``), then read the job and mark it started. A worker killed
with ``-9`` in between, or a pop whose reply was lost with the connection (Redis shutting down, a network cut),
leaves the job ``queued`` and listed nowhere: no worker will ever run it, and RQ's registries do not list it (RQ's
intermediate-queue clean-up covers single-queue workers only; a scan worker serves two queues per pool). Whoever
waits for that job waits for ever: a claimed task for its launch, a task for its next poll, a pool's dispatch
requests for the dispatch job they coalesce onto. (A worker that *sees* Redis go away after the pop pushes the job
back itself: :class:`tasks.engine.abandoned.PoolQueue`.)

:func:`lost` tells such a job apart from one a live worker popped a moment ago and is about to start: it must be
found in no queue twice, ``LOST_GRACE`` seconds apart at least (the reconcile's passes). A lost job is deleted
(:func:`drop`); the reconcile then does its work again from the database, as for any job Redis lost.
"""

from __future__ import annotations

import logging
import time

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import Queue

log = logging.getLogger(__name__)

LOST_GRACE = 10.0  # seconds a queued job must stay in no queue before it counts as lost (a pop-to-start takes ms)
SUSPECT_KEY = "scanpool:lost-suspect:{}"
SUSPECT_TTL = 24 * 3600


def _incarnation(job: Job) -> str:
    """Tells one enqueue of ``job.id`` from the next (a launch re-enqueued under the same id, say)."""
    return f"{job.enqueued_at.timestamp() if job.enqueued_at else 0:.6f}"


def lost(conn: redis.Redis, job: Job) -> bool:
    """True when ``job`` is ``queued``, in no list of its queue, and was found so at least ``LOST_GRACE`` s ago by
    an earlier call; the first sighting is recorded (False). A job found in its queue, or no longer queued,
    forgets the sighting."""
    key = SUSPECT_KEY.format(job.id)
    listed = conn.lpos(Queue(job.origin, connection=conn).key, job.id) is not None
    status = conn.hget(job.key, "status")  # read after the list: a job started meanwhile is not queued any more
    if listed or status != JobStatus.QUEUED.value.encode():
        conn.delete(key)
        return False
    incarnation, now = _incarnation(job), time.time()
    seen = conn.get(key)
    if seen is not None:
        seen_incarnation, _, seen_at = seen.decode().partition("@")
        if seen_incarnation == incarnation:
            return now - float(seen_at) >= LOST_GRACE
    conn.set(key, f"{incarnation}@{now}", ex=SUSPECT_TTL)
    return False


def drop(conn: redis.Redis, job: Job, why: str) -> None:
    """Delete the lost ``job`` (its hash: it is in no list or registry), saying why."""
    log.warning("job %s (%s) was queued but in no queue for %d s or more: popped by a worker that died or lost its "
                "connection before it could start it; %s", job.id, job.description, LOST_GRACE, why)
    with conn.pipeline() as pipe:
        pipe.delete(job.key)
        pipe.delete(SUSPECT_KEY.format(job.id))
        pipe.execute()


def drop_if_lost(conn: redis.Redis, job_id: str, serializer: object, why: str) -> bool:
    """:func:`drop` job ``job_id`` if it is :func:`lost`; True when it was."""
    try:
        job = Job.fetch(job_id, connection=conn, serializer=serializer)
    except NoSuchJobError:
        return False
    if job.get_status(refresh=False) != JobStatus.QUEUED or not lost(conn, job):
        return False
    drop(conn, job, why)
    return True
