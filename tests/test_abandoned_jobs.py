"""Jobs abandoned by a worker killed (``kill -9``) in the middle of them: real worker processes, the real test
Redis and the Nessus emulator over HTTP.

Found by a chaos review: after random kills, completed tasks (and a ``reconcile-<pool>-…`` job) showed up as
dead letters. RQ re-ran the poll a killed worker had abandoned; the re-run did its work and then failed with
``ValueError: Execution … not found in Redis`` (RQ's ``Job.delete`` read the dead worker's expired execution),
so RQ retried it until it landed in the FailedJobRegistry; a periodic reconcile held by a killed worker was
moved there as ``AbandonedJobError``. An abandoned job is recovered or dropped, never a dead letter.

RQ notices an abandoned job when its execution's heartbeat lapses (the job timeout, at most 30 s, + 60 s).
Instead of waiting 90 s the tests lapse it (:func:`lapse_heartbeat`): the state RQ finds then, exactly.
"""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.core.management import call_command
from rq import Worker
from rq.job import Job
from rq.registry import clean_registries
from rq.utils import parse_composite_key

from tasks.deadletters import dead_letter_counts, failed_job_ids
from tasks.models import ScanTask, TaskStatus
from tasks.queues import get_connection, pool_queue
from tasks.services import submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.helpers import wait_for
from tests.worker_process import WorkerProcess, workers  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def current_job(w: WorkerProcess) -> str | None:
    for worker in Worker.all(connection=get_connection()):
        if worker.pid == w.proc.pid:
            return worker.get_current_job_id()
    return None


def lapse_heartbeat(queue, job_id: str) -> None:
    """Fast-forward to when the killed worker's heartbeat has lapsed: the execution's hash has expired and its
    StartedJobRegistry entry is due for RQ's cleanup; the job's execution list keeps it (RQ gives it 60 s more)."""
    conn = queue.connection
    key = queue.started_job_registry.key
    entries = [m for m in conn.zrange(key, 0, -1) if parse_composite_key(m.decode())[0] == job_id]
    assert entries, f"{job_id} is not in the StartedJobRegistry"
    for member in entries:
        _, execution_id = parse_composite_key(member.decode())
        assert conn.delete(f"rq:execution:{job_id}:{execution_id}") == 1
        assert conn.zscore(f"rq:executions:{job_id}", execution_id) is not None
        conn.zadd(key, {member: time.time() - 1})


def settled(queue, job_id: str) -> bool:
    """The job ran to its end: gone (success, ``result_ttl=0``) or dead-lettered."""
    return not Job.exists(job_id, connection=queue.connection) or job_id in queue.failed_job_registry


def killed_in_a_poll(workers, emulator_factory, name: str):  # noqa: F811
    """A real worker (no periodic reconcile: only RQ's own sweep or an explicit reconcile take over) killed with
    SIGKILL in the middle of a poll of task ``name``: the emulator, pool, pool queue, task and the poll's job id."""
    emu = emulator_factory(instances=1, scan_seconds=4)
    pool, _ = emulated_pool(emu, [1])
    w = workers(SCANPOOL_RECONCILE_INTERVAL="3600")
    task = submit(pool=pool.name, name=name, targets=["192.0.2.10"])
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).last_polled_at, 20, "a first poll", [w])
    emu.control(0).set_faults(latency=60)  # the next poll hangs in its HTTP call
    job_id = wait_for(lambda: (j := current_job(w)) and "-poll-" in j and j, 20, "the worker inside a poll", [w])
    w.kill()
    emu.control(0).set_faults(latency=0)
    return emu, pool, pool_queue(pool), task, job_id


@pytest.mark.parametrize("found_by", ["rq-maintenance", "reconcile"])
def test_poll_abandoned_by_a_killed_worker_runs_again_cleanly(workers, emulator_factory, found_by):  # noqa: F811
    emu, pool, queue, task, job_id = killed_in_a_poll(workers, emulator_factory, "abandoned-poll")
    w2 = workers(SCANPOOL_RECONCILE_INTERVAL="3600")
    if found_by == "rq-maintenance":  # RQ's maintenance (a worker's, every 60 s) retries it once its heartbeat lapsed
        lapse_heartbeat(queue, job_id)
        clean_registries(queue)
    else:  # the reconcile sees at once that the worker's pid is gone and retries it the same way
        out = StringIO()
        call_command("reconcile", "--pools", pool.name, "--no-scanners", stdout=out)
        assert f"job abandoned by a dead worker: {job_id}: retried" in out.getvalue()

    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, 40, "completion", [w2])
    wait_for(lambda: settled(queue, job_id), 20, "the abandoned poll's re-run to end", [w2])
    assert "not found in Redis" not in w2.log()
    assert failed_job_ids(pool) == []
    assert dead_letter_counts([pool]) == {pool.name: 0}
    assert sum(s["launches"] for s in emu.control(0).scans()) == 1


@pytest.mark.parametrize("first", ["reconcile", "rq-maintenance"])
def test_reconcile_abandoned_by_a_killed_worker_is_no_dead_letter(workers, emulator_factory, first):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    queue = pool_queue(pool)
    emu.control(0).set_faults(latency=60)  # the periodic reconcile's health check of the scanner hangs
    w = workers(SCANPOOL_RECONCILE_INTERVAL="5", SCANPOOL_WORKER_REFRESH="2")
    job_id = wait_for(lambda: (j := current_job(w)) and j.startswith("reconcile-") and j, 30,
                      "the worker inside a periodic reconcile", [w])
    w.kill()
    emu.control(0).set_faults(latency=0)
    lapse_heartbeat(queue, job_id)
    if first == "rq-maintenance":  # another worker's maintenance got there before the next reconcile
        clean_registries(queue)
    call_command("reconcile", "--pools", pool.name, "--no-scanners")
    clean_registries(queue)  # and RQ's maintenance after it finds nothing left to fail

    assert failed_job_ids(pool) == []
    assert dead_letter_counts([pool]) == {pool.name: 0}
    assert not Job.exists(job_id, connection=queue.connection)
    assert get_connection().zcard(queue.started_job_registry.key) == 0


def spend_retries(queue, job_id: str) -> None:
    """The abandoned poll had used up its RQ retries (transient errors before the kill): RQ's sweep would fail it."""
    conn = queue.connection
    conn.hset(Job.key_for(job_id), "retries_left", 0)


@pytest.mark.parametrize("swept_by", ["worker-maintenance", "registry-read"])
def test_abandoned_step_swept_by_rq_before_any_reconcile_is_no_dead_letter(workers, emulator_factory,  # noqa: F811
                                                                         swept_by):
    """A worker is killed in a poll whose retries are spent; RQ's own sweep of the StartedJobRegistry reaches it
    before any reconcile: another worker's maintenance (``Worker.clean_registries``), or any process reading the
    registry (RQ's ``count``/``get_job_ids`` sweep first: the ops page does). It must never show as a dead letter,
    not even until the next reconcile; the reconcile then resumes the task on its scan."""
    emu, pool, queue, task, job_id = killed_in_a_poll(workers, emulator_factory, "swept-poll")
    spend_retries(queue, job_id)
    lapse_heartbeat(queue, job_id)

    if swept_by == "worker-maintenance":  # a second, real worker's periodic maintenance, on the same Redis
        from tasks.worker import PoolWorker

        PoolWorker([pool.name], connection=get_connection()).clean_registries()
    else:
        assert queue.started_job_registry.count == 0

    assert failed_job_ids(pool) == []
    assert dead_letter_counts([pool]) == {pool.name: 0}
    assert not Job.exists(job_id, connection=queue.connection)
    assert get_connection().zcard(queue.started_job_registry.key) == 0
    assert not get_connection().exists(f"rq:executions:{job_id}")

    out = StringIO()  # the reconcile rebuilds the dropped poll from the database: the task goes on, on its scan
    call_command("reconcile", "--pools", pool.name, "--no-scanners", stdout=out)
    w2 = workers(SCANPOOL_RECONCILE_INTERVAL="3600")
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, 40, "completion", [w2])
    assert failed_job_ids(pool) == []
    assert sum(s["launches"] for s in emu.control(0).scans()) == 1
    assert "not found in Redis" not in w2.log()
