"""The daily ``cleanup_tasks`` job, kept scheduled by every scan worker (``PoolWorker.schedule_cleanup``).

* One job id per day (``cleanup-tasks-YYYYMMDD``, at ``SCANPOOL_CLEANUP_AT`` UTC), scheduled with ``unique``: however
  many workers schedule it, it runs once.
* The last run's job, when a worker popped it from its queue and died (``kill -9``) or lost its connection before it
  could start it, stays ``queued`` in no queue: nothing would ever run it, and as its id was taken the day's clean-up
  was skipped. Each scheduling pass looks for it (:mod:`tasks.engine.lost`: found so twice, ``LOST_GRACE`` seconds
  apart), deletes it and runs it now, under the same id. (One that started and was killed is RQ's abandoned job:
  :mod:`tasks.engine.abandoned`.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.queue import Queue

from tasks import jobs
from tasks.cleanup import next_daily_run
from tasks.engine.lost import drop_if_lost


def job_id(at: datetime) -> str:
    """The id of the clean-up run due at ``at``."""
    return f"cleanup-tasks-{at:%Y%m%d}"


def _job(queue: Queue, id_: str) -> Job:
    return queue.create_job(jobs.cleanup_tasks, job_id=id_, result_ttl=2 * 86400,
                            failure_ttl=settings.SCANPOOL_FAILURE_TTL, timeout=settings.SCANPOOL_FINISH_TIMEOUT,
                            description="daily cleanup_tasks (TTL housekeeping)")


def schedule(queue: Queue, now: datetime | None = None) -> None:
    """Make sure the next daily clean-up is scheduled on ``queue``, and that the last one was not lost."""
    at = next_daily_run(settings.SCANPOOL_CLEANUP_AT, now or datetime.now(tz=UTC))
    try:
        queue.schedule_job(_job(queue, job_id(at)), at, unique=True)
    except DuplicateJobError:
        pass
    last = job_id(at - timedelta(days=1))
    if drop_if_lost(queue.connection, last, queue.serializer, "the clean-up runs now"):
        try:
            queue.enqueue_job(_job(queue, last), unique=True)
        except DuplicateJobError:  # another worker found it lost too and enqueued it first
            pass
