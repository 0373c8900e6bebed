"""RQ entry points: thin, ids only (strings/ints, JSON-serialisable). The logic is in :mod:`tasks.engine`."""

from __future__ import annotations

import uuid

from django import db


def _fresh_connections() -> None:
    # Workers are long-lived (SimpleWorker: no fork per job): drop dead/expired DB connections and the
    # DEBUG query log before each step.
    db.reset_queries()
    db.close_old_connections()


def dispatch(pool_id: int) -> int:
    from tasks.engine.dispatch import dispatch_pool

    _fresh_connections()
    return dispatch_pool(int(pool_id))


def launch(task_id: str) -> None:
    from tasks.engine.launch import launch as run

    _fresh_connections()
    run(uuid.UUID(task_id))


def poll(task_id: str) -> None:
    from tasks.engine.monitor import poll as run

    _fresh_connections()
    run(uuid.UUID(task_id))


def finish(task_id: str) -> None:
    from tasks.engine.monitor import finish as run

    _fresh_connections()
    run(uuid.UUID(task_id))


def stop(task_id: str) -> None:
    from tasks.engine.monitor import stop as run

    _fresh_connections()
    run(uuid.UUID(task_id))


def reconcile_pool(pool_id: int) -> dict:
    from tasks.engine.recovery import reconcile

    _fresh_connections()
    return reconcile(pool_ids=[int(pool_id)]).as_dict()


def cleanup_tasks() -> dict:
    """Daily TTL housekeeping (scheduled by the workers, see ``tasks.worker``); same as ``manage.py cleanup_tasks``."""
    from tasks.cleanup import cleanup_tasks as run

    _fresh_connections()
    return run().as_dict()
