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
from rq.serializers import JSONSerializer

from pools.models import Pool

SERIALIZER = JSONSerializer
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
    return Queue(queue_name, connection=connection or get_connection(), serializer=SERIALIZER)


def pool_queue(pool: Pool | int, connection: redis.Redis | None = None) -> Queue:
    """The RQ queue of ``pool`` (a Pool or its id)."""
    if not isinstance(pool, Pool):
        pool = Pool.objects.only("name").get(pk=pool)
    return queue_for(pool.queue_name, connection)


def step_retry() -> Retry:
    """Backoff for transient scanner errors: ``SCANPOOL_RETRY_INTERVALS`` (1 s, 2 s, 4 s by default)."""
    intervals = list(settings.SCANPOOL_RETRY_INTERVALS) or [1]
    return Retry(max=len(intervals), interval=intervals)
