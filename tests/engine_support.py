"""Helpers for engine tests: pools of emulated scanners, and running RQ jobs in-process
(``SimpleWorker(...).work(burst=True)``: no fork, the test's DB connection stays sane)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from rq import SimpleWorker
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from tasks.models import ScanTask
from tasks.queues import SERIALIZER, get_connection, pool_queues
from tests.factories import PoolFactory, ScannerFactory


def emulated_pool(emu, limits: list[int], **pool_kwargs):
    """A pool with one scanner per emulator instance; ``limits[i]`` = max_concurrent_scans of instance i."""
    pool = PoolFactory(**pool_kwargs)
    scanners = [
        ScannerFactory(pool=pool, name=f"{pool.name}-s{i}", url=emu.urls[i], username=emu.username,
                       password=emu.password, verify_tls=False, max_concurrent_scans=limit)
        for i, limit in enumerate(limits)
    ]
    return pool, scanners


def move_scheduled(queue, *, all_jobs: bool = False) -> int:
    """Enqueue the queue's scheduled jobs that are due (or all of them), as RQ's scheduler would."""
    registry = ScheduledJobRegistry(queue=queue)
    ids = registry.get_job_ids() if all_jobs else registry.get_jobs_to_schedule(int(time.time()))
    moved = 0
    for job_id in ids:
        registry.remove(job_id)
        try:
            job = Job.fetch(job_id, connection=queue.connection, serializer=SERIALIZER)
        except Exception:
            continue
        queue.enqueue_job(job)
        moved += 1
    return moved


def run_jobs(pools, *, all_scheduled: bool = False) -> bool:
    """One burst over the pools' queues, launch queues first as a scanworker serves them (due scheduled jobs
    first). True when any job ran."""
    queues = [q for p in pools for q in pool_queues(p)]
    queues = queues[0::2] + queues[1::2]
    for q in queues:
        move_scheduled(q, all_jobs=all_scheduled)
    worker = SimpleWorker(queues, connection=get_connection(), serializer=SERIALIZER)
    return worker.work(burst=True, logging_level="WARNING")


def run_until(pools, predicate: Callable[[], bool], timeout: float = 30.0, pause: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        run_jobs(pools)
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; queues now: {queue_state(pools)}")
        time.sleep(pause)


@pytest.fixture
def immediate_retries(settings):
    """Engine steps retried at once (the production intervals would only make a test wait)."""
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0, 0]


def reread(task) -> ScanTask:
    """The task as the database has it now."""
    return ScanTask.objects.get(pk=task.pk)


def queue_state(pools) -> str:
    """What the pools' queues hold (for a failure message): waiting jobs, and scheduled ones with the seconds until
    they are due."""
    now = time.time()
    parts = []
    for queue in (q for p in pools for q in pool_queues(p)):
        registry = ScheduledJobRegistry(queue=queue)
        scheduled = [f"{job_id.decode()[-24:]} in {score - now:.1f}s"
                     for job_id, score in queue.connection.zrange(registry.key, 0, -1, withscores=True)]
        parts.append(f"{queue.name}: {queue.count} waiting {queue.get_job_ids()[:5]}, scheduled {scheduled}")
    return "; ".join(parts)
