"""Redis work a Redis outage kept this process from doing, done as soon as Redis answers again.

A dispatch or a step that loses Redis raises out of its job; the worker waits for Redis and hands the job back
(:mod:`tasks.worker_outage`). What the job could not do in Redis on its way out is known to this process, and
nobody else can tell it apart from work in progress:

* a lock it held and could not release (a pool's dispatch lock, a task's launch lock). Restored with Redis's data,
  the lock names a holder that is alive — the worker itself — so :mod:`tasks.engine.locks` does not break it: the
  pool went without dispatch until the lock's TTL (30 s), the task's next launch attempt stood aside until its
  TTL (``SCANPOOL_STEP_TIMEOUT`` + 60 s);
* the launch of a task just claimed, whose enqueue failed: the task held its slot, claimed and not launched, until
  the reconcile found it (``CLAIM_GRACE`` + up to ``SCANPOOL_RECONCILE_INTERVAL``).

:func:`remember` notes such work; :func:`redo` does it. The worker calls :func:`redo` once Redis is back, before it
hands the interrupted job back, and after every job (a job may catch a Redis error and end normally). Only work
that is safe to do late goes here: a compare-and-delete of the process's own lock token, a coalesced dispatch
request, a launch enqueued only while its task still waits for it. Anything not done (the process ends first)
is left to the lock's TTL and to the reconcile, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
LIMIT = 1000  # remembered items at most (a process that never calls redo, e.g. a web process, keeps the newest)

_pending: dict[str, Callable[[], object]] = {}


def remember(key: str, func: Callable[[], object]) -> None:
    """Do ``func()`` once Redis is back (one item per ``key``: the latest wins)."""
    _pending.pop(key, None)
    _pending[key] = func
    while len(_pending) > LIMIT:
        _pending.pop(next(iter(_pending)))


def pending() -> list[str]:
    return list(_pending)


def redo() -> int:
    """Do what was remembered, oldest first; returns how many were done. Redis still unreachable: the rest is kept
    for the next call. Any other error is logged and the item dropped (the TTL or the reconcile covers it)."""
    done = 0
    for key in list(_pending):
        func = _pending[key]
        try:
            func()
        except REDIS_DOWN:
            return done
        except Exception:
            log.exception("could not redo %s after the Redis outage; left to the lock TTL or the reconcile", key)
        _pending.pop(key, None)
        done += 1
    return done
