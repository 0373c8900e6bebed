"""``manage.py cleanup_tasks``: TTLs per status from the last access, dry run, batches, result files and RQ
leftovers; queued and running tasks are never touched; the workers schedule it daily (once per day)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rq.registry import ScheduledJobRegistry

from tasks.cleanup import cleanup_tasks, next_daily_run
from tasks.models import MetricTotal, ScanTask, TaskStatus
from tasks.queues import SERIALIZER, get_connection, pool_queue
from tasks.results.storage import results_path
from tests.engine_support import move_scheduled, run_jobs
from tests.factories import PoolFactory, ScanTaskFactory

pytestmark = pytest.mark.django_db


def aged(pool, status: str, days: float, *, accessed_days: float | None = None) -> ScanTask:
    now = timezone.now()
    task = ScanTaskFactory(pool=pool, status=status)
    ScanTask.objects.filter(pk=task.pk).update(
        finished_at=now - timedelta(days=days) if status not in (TaskStatus.QUEUED, TaskStatus.RUNNING) else None,
        updated_at=now - timedelta(days=days), created_at=now - timedelta(days=days + 1),
        last_accessed_at=now - timedelta(days=accessed_days) if accessed_days is not None else None)
    return task


def run(*args: str) -> dict:
    out = StringIO()
    call_command("cleanup_tasks", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def ttl_total(status: str) -> float:
    row = MetricTotal.objects.filter(metric="nessus_ttl_deletions_total", labels=json.dumps({"status": status},
                                                                                                separators=(",", ":")))
    return row.first().value if row.exists() else 0


def test_default_ttls_from_last_access_never_queued_or_running(settings, redis_conn):
    pool = PoolFactory(scope=["192.0.2.0/24"])
    keep = [
        aged(pool, TaskStatus.COMPLETED, 6),
        aged(pool, TaskStatus.COMPLETED, 30, accessed_days=2),  # old, but someone read its results lately
        aged(pool, TaskStatus.FAILED, 29),
        aged(pool, TaskStatus.QUEUED, 400),
        aged(pool, TaskStatus.RUNNING, 400),
    ]
    gone = [
        aged(pool, TaskStatus.COMPLETED, 8),
        aged(pool, TaskStatus.FAILED, 31),
        aged(pool, TaskStatus.TIMEOUT, 31),
        aged(pool, TaskStatus.CANCELLED, 40, accessed_days=35),
    ]
    results_path(gone[0].pk).parent.mkdir(parents=True, exist_ok=True)
    results_path(gone[0].pk).write_text("<NessusClientData_v2/>")
    results_path(keep[0].pk).write_text("<NessusClientData_v2/>")
    registry = pool_queue(pool).failed_job_registry
    job = pool_queue(pool).enqueue_call("tasks.jobs.launch", args=(str(gone[1].pk),), job_id=str(gone[1].pk))
    registry.add(job, ttl=3600)
    get_connection().set(f"scanpool:chain:{gone[1].pk}", "x")

    dry = run("--dry-run")
    assert dry["dry_run"] and dry["total"] == 4 and dry["result_files"] == 1
    assert ScanTask.objects.count() == 9 and results_path(gone[0].pk).exists()

    report = run()
    assert report["tasks"] == {"completed": 1, "failed": 1, "timeout": 1, "cancelled": 1}
    assert report["result_files"] == 1 and report["rq_entries"] >= 2
    assert set(ScanTask.objects.values_list("pk", flat=True)) == {t.pk for t in keep}
    assert not results_path(gone[0].pk).exists() and results_path(keep[0].pk).exists()
    assert registry.get_job_ids() == [] and not get_connection().exists(f"scanpool:chain:{gone[1].pk}")
    assert ttl_total("completed") == 1 and ttl_total("failed") == 1 and ttl_total("cancelled") == 1
    assert run()["total"] == 0  # idempotent


def test_a_finished_task_that_still_holds_its_slot_is_never_deleted(redis_conn):
    """A cancelled or timed-out scan is stopped and settled after its status changes: until then it holds its
    scanner slot (and its stop job and chain key are in Redis). Deleting it then lost the stop, and reconcile
    recounted the scanner's slots without it: the scanner ran more scans than its limit."""
    pool = PoolFactory(scope=["192.0.2.0/24"])
    settling = [aged(pool, status, 400) for status in (TaskStatus.CANCELLED, TaskStatus.TIMEOUT, TaskStatus.FAILED)]
    ScanTask.objects.filter(pk__in=[t.pk for t in settling]).update(slot_held=True)
    settled = aged(pool, TaskStatus.CANCELLED, 400)
    get_connection().set(f"scanpool:chain:{settling[0].pk}", "x")
    assert run("--older-than", "1s", "--dry-run")["total"] == 1
    assert run("--older-than", "1s")["total"] == 1
    assert set(ScanTask.objects.values_list("pk", flat=True)) == {t.pk for t in settling}
    assert not ScanTask.objects.filter(pk=settled.pk).exists()
    assert get_connection().exists(f"scanpool:chain:{settling[0].pk}")
    ScanTask.objects.filter(pk__in=[t.pk for t in settling]).update(slot_held=False)  # settled: now it may go
    assert run("--older-than", "1s")["total"] == 3


def test_settings_status_filter_older_than_and_batches(settings):
    settings.SCANPOOL_TTL_COMPLETED_DAYS = 1
    pool = PoolFactory(scope=["192.0.2.0/24"])
    completed = [aged(pool, TaskStatus.COMPLETED, 2) for _ in range(5)]
    failed = aged(pool, TaskStatus.FAILED, 2)  # failed TTL is still 30 days
    assert run("--status", "failed")["total"] == 0
    report = cleanup_tasks(statuses=["completed"], batch_size=2)
    assert report.deleted == {"completed": 5}
    assert not ScanTask.objects.filter(pk__in=[t.pk for t in completed]).exists()
    assert run("--older-than", "36h", "--status", "failed,cancelled")["tasks"] == {"failed": 1, "cancelled": 0}
    assert not ScanTask.objects.filter(pk=failed.pk).exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--older-than", "7 days"], "--older-than: '7 days' is not a duration: use a whole number and a unit"),
    (["--older-than=-1d"], "is not a duration"),
    (["--status", "running"], "--status: 'running' cannot be cleaned up"),
    (["--status", "queued"], "queued and running tasks are never deleted"),
])
def test_bad_arguments_name_the_fix(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("cleanup_tasks", *args)


def test_the_retired_ttl_setting_is_refused_with_the_new_names(tmp_path):
    import subprocess
    import sys

    env = {"SCANPOOL_TASK_TTL_DAYS": "90", "PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "1",
           "SCANPOOL_VAR_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "SCANPOOL_TTL_COMPLETED_DAYS" in proc.stderr and "SCANPOOL_TTL_FAILED_DAYS" in proc.stderr


@pytest.mark.django_db(transaction=True)
def test_workers_schedule_it_daily_once_and_the_job_cleans(redis_conn, settings):
    from tasks.worker import PoolWorker

    settings.SCANPOOL_CLEANUP_AT = "03:30"
    pool = PoolFactory(name="sched", scope=["192.0.2.0/24"])
    old = aged(pool, TaskStatus.COMPLETED, 10)
    PoolWorker(["sched"]).schedule_cleanup()
    PoolWorker([]).schedule_cleanup()  # a second worker (all pools): same day, same job id: not scheduled twice
    registry = ScheduledJobRegistry(queue=pool_queue(pool))
    ids = [j for j in registry.get_job_ids() if j.startswith("cleanup-tasks-")]
    at = next_daily_run("03:30", datetime.now(tz=UTC))
    assert ids == [f"cleanup-tasks-{at:%Y%m%d}"]
    assert registry.get_scheduled_time(ids[0]) == at
    move_scheduled(pool_queue(pool), all_jobs=True)  # its time has come
    run_jobs([pool])
    assert not ScanTask.objects.filter(pk=old.pk).exists()
    from rq.job import Job

    assert Job.fetch(ids[0], connection=get_connection(), serializer=SERIALIZER).return_value()["total"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_days_run_popped_by_a_worker_that_died_before_starting_it_runs_when_found_lost(
        redis_conn, settings, monkeypatch, caplog):
    """A worker killed with -9 between RQ's pop of the day's clean-up job and its start left it queued in no queue: no
    worker would ever run it, and its id being taken, nothing scheduled that day's run again. The workers' scheduling
    pass finds it lost (twice, LOST_GRACE apart), deletes it and runs it now under the same id."""
    from rq.job import Job

    from tasks import jobs
    from tasks.engine import lost
    from tasks.worker import PoolWorker

    settings.SCANPOOL_CLEANUP_AT = "03:30"
    pool = PoolFactory(name="sched", scope=["192.0.2.0/24"])
    old = aged(pool, TaskStatus.COMPLETED, 10)
    queue = pool_queue(pool)
    last = f"cleanup-tasks-{next_daily_run('03:30', datetime.now(tz=UTC)) - timedelta(days=1):%Y%m%d}"
    queue.enqueue(jobs.cleanup_tasks, job_id=last)  # the scheduler moved it to the queue at its time
    worker = PoolWorker(["sched"])
    worker.schedule_cleanup()
    worker.schedule_cleanup()
    assert queue.get_job_ids() == [last]  # waiting in its queue: not lost, left alone

    assert redis_conn.lrem(queue.key, 0, last) == 1  # popped by a worker that died before it started the job
    enqueued_at = Job.fetch(last, connection=redis_conn, serializer=SERIALIZER).enqueued_at
    worker.schedule_cleanup()
    worker.schedule_cleanup()  # within LOST_GRACE: may be a live worker between its pop and its start
    assert queue.get_job_ids() == [] and ScanTask.objects.filter(pk=old.pk).exists()

    monkeypatch.setattr(lost, "LOST_GRACE", 0.0)  # the grace has passed
    worker.schedule_cleanup()
    assert queue.get_job_ids() == [last]
    assert Job.fetch(last, connection=redis_conn, serializer=SERIALIZER).enqueued_at != enqueued_at  # run again
    assert f"job {last}" in caplog.text and "the clean-up runs now" in caplog.text
    run_jobs([pool])
    assert not ScanTask.objects.filter(pk=old.pk).exists()
    assert Job.fetch(last, connection=redis_conn, serializer=SERIALIZER).return_value()["total"] == 1
    worker.schedule_cleanup()  # finished: nothing more to do
    assert queue.get_job_ids() == []


def test_next_daily_run():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert next_daily_run("03:30", now) == datetime(2026, 12, 2, 3, 30, tzinfo=UTC)
    assert next_daily_run("13:05", now) == datetime(2026, 12, 1, 13, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected HH:MM"):
        next_daily_run("3h", now)


def test_redis_unreachable_deletes_nothing_and_exits_with_one_line(settings, redis_conn, monkeypatch):
    """From cron with Redis down, cleanup_tasks deleted the task rows, then died on the RQ clean-up with a traceback:
    the tasks' failed jobs and chain keys stayed in Redis with no row left to find them by. Now a batch's rows go only
    once its RQ leftovers are gone: with Redis unreachable nothing is deleted and the command exits 1 with one
    CommandError line naming Redis (without its password); a Redis lost between batches stops the run there."""
    pool = PoolFactory(scope=["192.0.2.0/24"])
    old = [aged(pool, TaskStatus.CANCELLED, 40) for _ in range(3)]
    good_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens there
    err = StringIO()
    with pytest.raises(CommandError, match=r"Redis at redis://:\*\*\*@127.0.0.1:1/0 .*nothing more deleted") as info:
        call_command("cleanup_tasks", "--older-than", "1s", stdout=StringIO(), stderr=err)
    assert "hunter2" not in str(info.value) + err.getvalue()
    assert ScanTask.objects.filter(pk__in=[t.pk for t in old]).count() == 3  # nothing deleted
    assert run("--older-than", "1s", "--dry-run")["total"] == 3  # a dry run only counts: Redis not needed

    settings.REDIS_URL = good_url
    import tasks.cleanup as cleanup_module

    real_forget, calls = cleanup_module._forget_in_rq, []

    def forget_then_lose_redis(task_ids, pool_ids):
        calls.append(task_ids)
        if len(calls) > 2:
            raise cleanup_module.RedisError("Connection closed by server.")
        return real_forget(task_ids, pool_ids)

    monkeypatch.setattr(cleanup_module, "_forget_in_rq", forget_then_lose_redis)
    report = cleanup_tasks(statuses=["cancelled"], older_than=timedelta(seconds=1), batch_size=1)
    assert report.deleted == {"cancelled": 2}
    assert len(report.errors) == 1 and "Connection closed by server" in report.errors[0]
    assert ScanTask.objects.filter(pk__in=[t.pk for t in old]).count() == 1  # the failing batch's row stays


def test_temporary_exports_left_by_a_dead_worker_are_swept(settings, tmp_path):
    """A worker killed while fetching or ingesting a scan's export (kill -9, OOM) left the export in
    SCANPOOL_RESULTS_DIR/tmp forever: the retried finish writes a new one and nothing removed the old one (several MB
    per kill for a /24). cleanup_tasks now removes the temporary exports, older than an hour, of tasks that are no
    longer queued or running (their finish is over) or no longer exist."""
    import os
    import time
    import uuid

    settings.SCANPOOL_RESULTS_DIR = str(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    pool = PoolFactory(scope=["192.0.2.0/24"])
    done, running = aged(pool, TaskStatus.COMPLETED, 1), aged(pool, TaskStatus.RUNNING, 1)
    old = time.time() - 2 * 3600

    def export(task_id, *, age: float = old):
        path = tmp / f"{task_id}-{uuid.uuid4().hex[:12]}.nessus"
        path.write_text("<NessusClientData_v2/>")
        os.utime(path, (age, age))
        return path

    stale = [export(done.pk), export(uuid.uuid4())]  # a finished task's; a task deleted since
    kept = [export(running.pk), export(done.pk, age=time.time()), tmp / "notes.txt"]  # in use / just written / other
    kept[-1].write_text("x")
    dry = run("--dry-run")
    assert dry["tmp_exports"] == 2 and all(p.exists() for p in stale)
    report = run()
    assert report["tmp_exports"] == 2 and report["total"] == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    out = StringIO()
    export(uuid.uuid4())
    call_command("cleanup_tasks", "-v", "0", stdout=out)
    assert out.getvalue().strip() == ("deleted 1 stale temporary export(s) "
                                      "(left by workers that died while fetching results)")


def test_a_read_before_the_task_finished_does_not_age_it(settings):
    """Read while queued or running (or before a retry), finished lately: kept its TTL from the finish, not deleted
    with results the client has not fetched yet."""
    pool = PoolFactory(scope=["192.0.2.0/24"])
    keep = [aged(pool, TaskStatus.COMPLETED, 1, accessed_days=8),  # polled while it ran 8 days, done yesterday
            aged(pool, TaskStatus.FAILED, 2, accessed_days=31)]  # read, retried a month later, failed again
    gone = aged(pool, TaskStatus.COMPLETED, 9, accessed_days=8)
    report = cleanup_tasks()
    assert report.deleted[TaskStatus.COMPLETED] == 1 and report.deleted[TaskStatus.FAILED] == 0
    assert not ScanTask.objects.filter(pk=gone.pk).exists()
    assert ScanTask.objects.filter(pk__in=[t.pk for t in keep]).count() == 2
