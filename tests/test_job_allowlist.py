"""Write access to Redis must not be code execution in the workers: a real ``scanworker`` runs only the
public functions of ``tasks/jobs.py``. A foreign job (``os.system``, any importable function, a scanpool job
carrying a foreign callback) fails into the queue's failed registry with the reason and never runs."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
from django.conf import settings
from rq import Callback, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from tasks.queues import SERIALIZER, get_connection, pool_queue, queue_for
from tasks.worker import allowed_job_functions
from tests.factories import PoolFactory
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.integration

TERMINAL = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def wait_terminal(jobs: list[Job], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for job in jobs:
            job.refresh()  # one read of the whole job: its status and fields (retries_left) from the same moment
        if all(job.get_status(refresh=False) in TERMINAL for job in jobs):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not done: {[(j.id, j.get_status()) for j in jobs]}")
        time.sleep(0.2)


def test_the_allow_list_is_the_public_functions_of_tasks_jobs():
    allowed = allowed_job_functions()
    assert {"tasks.jobs.dispatch", "tasks.jobs.launch", "tasks.jobs.poll", "tasks.jobs.finish",
            "tasks.jobs.stop", "tasks.jobs.reconcile_pool"} <= allowed
    assert "tasks.jobs._fresh_connections" not in allowed  # private helpers are not entry points
    assert all(name.startswith("tasks.jobs.") for name in allowed)  # nothing jobs.py merely imports


def test_a_plain_rq_worker_would_run_a_foreign_job(redis_conn, tmp_path):
    """The attack is real: stock RQ imports and runs whatever a job names (why scanworker refuses)."""
    marker = tmp_path / "plain-rq"
    queue = queue_for("scanpool-not-a-pool", get_connection())
    queue.enqueue("tests.foreign_jobs.write_marker", str(marker))
    SimpleWorker([queue], connection=get_connection(), serializer=SERIALIZER).work(burst=True)
    assert marker.read_text() == "ran"


def test_scanworker_refuses_foreign_jobs_and_runs_its_own(transactional_db, redis_conn, tmp_path):
    pool = PoolFactory(scope=["192.0.2.0/24"])
    worker = WorkerProcess([pool.name]).start()
    try:
        queue = pool_queue(pool)
        markers = {name: tmp_path / name for name in ("os-system", "function", "callback", "retry")}
        foreign = [
            queue.enqueue("os.system", f"touch {markers['os-system']}"),
            queue.enqueue("tests.foreign_jobs.write_marker", str(markers["function"])),
            queue.enqueue("tests.foreign_jobs.write_marker", str(markers["retry"]), retry=Retry(max=3)),
            # one of scanpool's own functions, carrying a callback that is not
            queue.enqueue("tasks.jobs.dispatch", pool.pk, meta={"marker": str(markers["callback"])},
                          on_success=Callback("tests.foreign_jobs.write_marker_callback"),
                          on_failure=Callback("tests.foreign_jobs.write_marker_callback")),
        ]
        own = queue.enqueue("tasks.jobs.dispatch", pool.pk)
        wait_terminal([*foreign, own])

        assert own.get_status() == JobStatus.FINISHED  # the worker is alive and runs scanpool's steps
        assert not [name for name, path in markers.items() if path.exists()]  # nothing foreign ran
        failed = FailedJobRegistry(queue=queue)
        for job in foreign:
            assert job.get_status() == JobStatus.FAILED, job.func_name
            assert job.id in failed.get_job_ids()
            assert "refused, not run" in job.latest_result().exc_string
        assert "'os.system' is not one of scanpool's job functions" in foreign[0].latest_result().exc_string
        assert "on_success callback 'tests.foreign_jobs.write_marker_callback' is not allowed" in (
            foreign[3].latest_result().exc_string)
        assert foreign[2].retries_left == 0  # a refused job is not retried
        # ... nor left in RQ's intermediate queue, whose clean-up would fail it a second time
        assert not {job.id for job in foreign} & set(queue.intermediate_queue.get_job_ids())
        time.sleep(1.5)  # no retry shows up later either
        assert not markers["retry"].exists() and foreign[2].get_status(refresh=True) == JobStatus.FAILED
        assert worker.log().count("refused job") == len(foreign)
        password = urlparse(settings.REDIS_URL).password
        assert password and password not in worker.log()  # the start-up line shows REDIS_URL redacted
        assert ":***@127.0.0.1" in worker.log()
    finally:
        worker.cleanup()


@pytest.mark.parametrize("sweep", ["started registry count (the ops page)", "RQ cleanup"])
def test_a_sweep_of_an_abandoned_job_never_runs_its_callback_in_any_process(redis_conn, tmp_path, sweep):
    """RQ's sweep of a StartedJobRegistry (``cleanup``: run by a worker's maintenance, and by ``count`` and
    ``get_job_ids`` in any process, e.g. the web process showing /ops/queues/) runs an abandoned job's on_failure
    callback, imported by the name stored in Redis. scanpool jobs have none: a job of a scanpool queue carrying one
    never runs it, wherever the sweep happens."""
    marker = tmp_path / "swept"
    queue = queue_for("scanpool-sweep-test", get_connection())
    job = queue.enqueue("tasks.jobs.dispatch", 1, meta={"marker": str(marker)},
                        on_failure=Callback("tests.foreign_jobs.write_marker_callback"))
    queue.remove(job)  # as if a worker had taken it, then died: in the started registry, long expired
    get_connection().zadd(queue.started_job_registry.key, {f"{job.id}:dead-execution": 1})
    if sweep.startswith("started"):
        queue.started_job_registry.count  # noqa: B018 (the read runs the sweep)
    else:
        queue.started_job_registry.cleanup()
    assert not marker.exists()
    assert job.id not in queue.failed_job_registry.get_job_ids()  # abandoned: dropped, not a dead letter
