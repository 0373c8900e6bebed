"""A job popped from its queue by a worker that never started it — killed with -9 between RQ's BLPOP and the
start, or the pop's reply lost with the connection — is ``queued`` and listed nowhere. Before tasks.engine.lost,
the reconcile took it for a job waiting its turn: a claimed task waited for its launch for ever, and every dispatch
request of the pool coalesced onto the lost dispatch job. Real Redis, the emulator, the engine's own jobs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.engine import dispatch, lost
from tasks.engine.dispatch import dispatch_round, request_dispatch
from tasks.engine.recovery import reconcile
from tasks.models import ScanTask, TaskStatus
from tasks.queues import SERIALIZER, pool_launch_queue
from tasks.services import submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, run_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0]


def _popped(conn, queue, job_id: str) -> None:
    """What a worker's BLPOP does: the id leaves the queue's list; the job stays ``queued``."""
    assert conn.lrem(queue.key, 1, job_id) == 1
    assert conn.hget(f"rq:job:{job_id}", "status") == b"queued"


def _seen_long_ago(conn, job_id: str) -> None:
    """The first sighting of ``job_id`` in no queue was ``LOST_GRACE`` s ago (instead of waiting for it)."""
    key = lost.SUSPECT_KEY.format(job_id)
    incarnation, _, _ = conn.get(key).decode().partition("@")
    conn.set(key, f"{incarnation}@{time.time() - lost.LOST_GRACE - 1}")


def test_a_claimed_task_whose_launch_was_popped_and_never_started_is_launched_once(redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="popped-launch", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 1  # claimed; its launch job (id = task id) waits in the launch queue
    _popped(redis_conn, pool_launch_queue(pool), str(task.pk))
    ScanTask.objects.filter(pk=task.pk).update(claimed_at=timezone.now() - timedelta(seconds=30))

    first = reconcile([pool.pk], check_scanners=False)
    assert first.relaunched == [] and first.lost == []  # a live worker may be about to start it: not yet
    _seen_long_ago(redis_conn, str(task.pk))
    second = reconcile([pool.pk], check_scanners=False)
    assert second.lost == [str(task.pk)] and second.relaunched == [str(task.pk)]
    assert "job queued in no queue" in "\n".join(second.lines())

    run_until([pool], lambda: ScanTask.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=30)
    assert [s["launches"] for s in emulator.control(0).scans()] == [1]
    assert not redis_conn.exists(lost.SUSPECT_KEY.format(task.pk))


def test_a_lost_dispatch_job_no_longer_takes_every_dispatch_request(redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1])
    queue, job_id = pool_launch_queue(pool), dispatch.JOB_ID.format(pool.pk)
    request_dispatch(pool.pk)
    _popped(redis_conn, queue, job_id)
    request_dispatch(pool.pk)
    assert job_id not in queue.get_job_ids()  # coalesced onto the lost job: no dispatch will run

    assert reconcile([pool.pk], check_scanners=False).lost == []
    _seen_long_ago(redis_conn, job_id)
    assert reconcile([pool.pk], check_scanners=False).lost == [job_id]
    assert queue.get_job_ids() == [job_id]  # the reconcile's own request enqueued a new one


def test_a_job_in_its_queue_or_started_is_never_lost(redis_conn, emulator):  # noqa: F811
    from rq.job import Job

    pool, _ = emulated_pool(emulator, [1])
    queue, job_id = pool_launch_queue(pool), dispatch.JOB_ID.format(pool.pk)
    request_dispatch(pool.pk)
    job = Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER)
    for _ in range(2):
        assert not lost.lost(redis_conn, job)  # listed: waiting its turn
    assert not redis_conn.exists(lost.SUSPECT_KEY.format(job_id))

    _popped(redis_conn, queue, job_id)
    assert not lost.lost(redis_conn, job)  # first sighting
    _seen_long_ago(redis_conn, job_id)
    redis_conn.hset(job.key, "status", "started")  # a worker started it after all
    assert not lost.lost(redis_conn, job)
    assert not redis_conn.exists(lost.SUSPECT_KEY.format(job_id))


def test_a_job_enqueued_again_under_the_same_id_starts_its_own_count(redis_conn, emulator):  # noqa: F811
    from rq.job import Job

    pool, _ = emulated_pool(emulator, [1])
    queue, job_id = pool_launch_queue(pool), dispatch.JOB_ID.format(pool.pk)
    request_dispatch(pool.pk)
    _popped(redis_conn, queue, job_id)
    assert not lost.lost(redis_conn, Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER))
    _seen_long_ago(redis_conn, job_id)
    redis_conn.delete(f"rq:job:{job_id}")
    time.sleep(0.01)  # a later enqueued_at
    request_dispatch(pool.pk)
    _popped(redis_conn, queue, job_id)  # the new one, popped too: a first sighting, not the old one's second
    assert not lost.lost(redis_conn, Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER))
