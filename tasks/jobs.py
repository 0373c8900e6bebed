"""RQ entry points: thin, ids only (strings/ints, JSON-serialisable). The logic is in :mod:`tasks.engine`.

The engine enqueues these by dotted name (``"tasks.jobs.poll"``), so this module imports the engine and
never the reverse. Every callable a worker may run is defined here (the worker's allow-list).
"""

from __future__ import annotations

import uuid

from django import db
from rq import get_current_job

from tasks import cleanup as _cleanup
from tasks.engine import abandoned as _abandoned
from tasks.engine import dispatch as _dispatch
from tasks.engine import launch as _launch
from tasks.engine import monitor as _monitor
from tasks.engine import recovery as _recovery
from tasks.engine import settle as _settle


def _fresh_connections() -> None:
    # Workers are long-lived (SimpleWorker: no fork per job): drop dead/expired DB connections and the
    # DEBUG query log before each step.
    db.reset_queries()
    db.close_old_connections()
    # A job run again after a worker died in it (RQ's retry of an abandoned job, a re-enqueue by the reconcile)
    # still lists the dead run's execution; RQ would fail this run on it when it deletes the job at the end
    # ("Execution … not found in Redis"). Forget it first.
    job = get_current_job()
    if job is not None:
        _abandoned.drop_lost_executions(job, running_worker=job.worker_name)


def dispatch(pool_id: int) -> int:
    _fresh_connections()
    return _dispatch.dispatch_pool(int(pool_id))


def launch(task_id: str) -> None:
    _fresh_connections()
    _launch.launch(uuid.UUID(task_id))


def poll(task_id: str) -> None:
    _fresh_connections()
    _monitor.poll(uuid.UUID(task_id))


def finish(task_id: str) -> None:
    _fresh_connections()
    _monitor.finish(uuid.UUID(task_id))


def stop(task_id: str) -> None:
    _fresh_connections()
    _monitor.stop(uuid.UUID(task_id))


def settle(task_id: str) -> None:
    _fresh_connections()
    _settle.settle(uuid.UUID(task_id))


def reconcile_pool(pool_id: int) -> dict:
    _fresh_connections()
    report = _recovery.reconcile(pool_ids=[int(pool_id)])
    for line in report.lines():  # the worker's log is where a periodic reconcile says what it did
        _recovery.log.info("reconcile: %s", line)
    return report.as_dict()


def cleanup_tasks() -> dict:
    """Daily TTL housekeeping (scheduled by the workers, see ``tasks.worker``); same as ``manage.py cleanup_tasks``."""
    _fresh_connections()
    report = _cleanup.cleanup_tasks()
    if not report.dry_run:
        _cleanup.log.info("cleanup_tasks: %s", report.as_dict())
    for error in report.errors:
        _cleanup.log.error("cleanup_tasks: %s", error)
    return report.as_dict()
