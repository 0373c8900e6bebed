"""One RQ queue per pool, built at run time from the database (DESIGN §4).

django-rq's ``RQ_QUEUES`` is a static setting: a pool created in the admin would need a settings change
and a restart. Instead every pool's queue is ``rq.Queue("scanpool-<pool name>")`` on ``REDIS_URL``,
made on demand here; workers list the pools from the database (see :mod:`tasks.worker`). Jobs carry
ids only, so they use RQ's JSON serializer (no pickled objects in Redis).
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings
from rq import Queue, Retry

from pools.models import Pool
from tasks.engine.abandoned import SERIALIZER, PoolJob, PoolQueue

# A queue no pool can be named after (pool names are slugs): workers block on it when they serve no pool yet.
CONTROL_QUEUE = "scanpool:control"

_local = threading.local()


def get_connection() -> redis.Redis:
    """A Redis client on ``settings.REDIS_URL`` (one per process and URL; safe after fork)."""
    key = (os.getpid(), settings.REDIS_URL)
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "key", None) != key:
        conn = redis.Redis.from_url(settings.REDIS_URL)
        _local.conn, _local.key = conn, key
    return conn


def queue_for(queue_name: str, connection: redis.Redis | None = None) -> Queue:
    """A scanpool queue: JSON jobs of :class:`~tasks.engine.abandoned.PoolJob` (an abandoned job is never a dead
    letter, whichever process's RQ sweep finds it)."""
    return PoolQueue(queue_name, connection=connection or get_connection(), serializer=SERIALIZER, job_class=PoolJob)


def launch_queue_name(pool: Pool) -> str:
    """The pool's launch queue (dispatch and launch steps). ``:`` cannot occur in a pool name (a slug), so it
    never collides with another pool's step queue."""
    return f"{pool.queue_name}:launch"


def _pool(pool: Pool | int) -> Pool:
    return pool if isinstance(pool, Pool) else Pool.objects.only("name").get(pk=pool)


def pool_queue(pool: Pool | int, connection: redis.Redis | None = None) -> Queue:
    """The step queue of ``pool`` (a Pool or its id): poll, finish, stop and the periodic reconcile."""
    return queue_for(_pool(pool).queue_name, connection)


def pool_launch_queue(pool: Pool | int, connection: redis.Redis | None = None) -> Queue:
    """The launch queue of ``pool``: dispatch and launch. Workers serve every launch queue before any step
    queue (RQ takes jobs from its queues in the listed order), so a launch never waits behind due polls."""
    return queue_for(launch_queue_name(_pool(pool)), connection)


def pool_queues(pool: Pool | int, connection: redis.Redis | None = None) -> list[Queue]:
    """Both queues of ``pool``, in the order workers serve them (launch queue first)."""
    pool = _pool(pool)
    return [pool_launch_queue(pool, connection), pool_queue(pool, connection)]


def worker_queue_names(pools: list[Pool]) -> list[str]:
    """The queue names a worker serving ``pools`` listens on: all launch queues, then all step queues."""
    return [launch_queue_name(p) for p in pools] + [p.queue_name for p in pools]


def step_retry() -> Retry:
    """Backoff for transient scanner errors: ``SCANPOOL_RETRY_INTERVALS`` (1 s, 2 s, 4 s by default)."""
    intervals = list(settings.SCANPOOL_RETRY_INTERVALS) or [1]
    return Retry(max=len(intervals), interval=intervals)
