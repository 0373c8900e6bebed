"""Engine v2 (issue #13): each defect reproduced first, against the real database, the real Redis and the
Nessus emulator over HTTP; jobs run in-process (RQ's SimpleWorker, or the real PoolWorker in burst mode).

* a launch never waits behind due polls (launch queue served first);
* a dispatcher killed holding the pool's lock (and its dispatch job left "started") does not stall the pool,
  and ``reconcile`` dispatches unconditionally;
* a breaker opening mid-launch with nothing created un-claims the task at once (FIFO place kept);
* timeout and cancel hold the slot until the scan is seen inactive, bounded by SCANPOOL_STOP_GRACE;
* a scanner that reused a scan id after a reset is not followed for the wrong scan;
* a periodic health check that sees a scanner healthy again gives its open breaker the trial at once.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from scanners.adapters import ScanSpec, get_adapter
from scanners.models import BreakerState, Health, Scanner
from tasks.engine import chain
from tasks.engine.dispatch import JOB_ID, LOCK_KEY
from tasks.engine.locks import _start_time
from tasks.engine.recovery import reconcile
from tasks.models import TaskEvent
from tasks.queues import SERIALIZER, get_connection, pool_launch_queue, pool_queue
from tasks.services import cancel, submit
from tasks.worker import PoolWorker
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, reread, run_jobs, run_until  # noqa: F401 - immediate_retries: fixture

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("immediate_retries")]




def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------ launch never behind polls


def test_launch_runs_before_300_due_polls(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [4])
    for _ in range(300):  # 300 due polls (of tasks that no longer run: each is a short no-op step)
        chain.schedule(pool, uuid.uuid4(), "poll")
    assert pool_queue(pool).count == 300
    task = submit(pool=pool.name, name="first-in-line", targets=["192.0.2.10"])
    worker = PoolWorker([pool.name], connection=get_connection())
    worker.work(burst=True, max_jobs=2, with_scheduler=False, logging_level="WARNING")  # dispatch, launch
    row = reread(task)
    assert row.status == "running", (row.status, row.scanner_status)
    assert pool_queue(pool).count == 300  # not one poll ran before the launch
    assert emulator.control(0).launches_for("first-in-line") == 1


def test_worker_rereads_its_pools_after_the_refresh_interval_not_on_its_first_pass(transactional_db, redis_conn):
    """The pools are read when the worker is built; its work loop's first pass only schedules the periodic
    reconciles. Until 2026-12-02 that pass read the pools again at once, so a pool created in between was served
    without SIGHUP (test_all_pools_worker_picks_up_a_new_pool_on_sighup failed under load)."""
    from tests.factories import PoolFactory

    a = PoolFactory(name="alpha")
    worker = PoolWorker([], refresh_interval=600, connection=get_connection())
    before = worker.queue_names()
    late = PoolFactory(name="late")
    assert worker.refresh_queues() is False and worker.queue_names() == before  # first pass: no re-read
    scheduled = ScheduledJobRegistry(queue=pool_queue(a), serializer=SERIALIZER).get_job_ids()
    assert any(job_id.startswith(f"reconcile-{a.pk}-") for job_id in scheduled)  # but the reconciles are due
    assert worker.refresh_queues(force=True) is True  # SIGHUP (or the interval): now it serves the new pool
    assert pool_launch_queue(late).name in worker.queue_names()


def test_worker_lists_every_launch_queue_before_any_step_queue(transactional_db, redis_conn):
    from tests.factories import PoolFactory

    a, b = PoolFactory(name="alpha"), PoolFactory(name="beta")
    worker = PoolWorker([], connection=get_connection())
    assert worker.queue_names() == [pool_launch_queue(a).name, pool_launch_queue(b).name,
                                    pool_queue(a).name, pool_queue(b).name]


# ---------------------------------------------------------------------------- a dispatcher that died


def _leave_dead_dispatcher(pool) -> None:
    """What a dispatcher killed (kill -9) in the middle of a round leaves in Redis: the pool's lock, held by a
    dead pid of this host, and its dispatch job marked started by a worker that is gone."""
    conn = get_connection()
    pid = _dead_pid()
    conn.set(LOCK_KEY.format(pool.pk), f"{socket.gethostname()}|{pid}|{_start_time(pid)}|dead", ex=30)
    job = pool_launch_queue(pool).enqueue("tasks.jobs.dispatch", pool.pk, job_id=JOB_ID.format(pool.pk))
    pool_launch_queue(pool).remove(job.id)  # dequeued by the worker that died
    job.worker_name = "ghost-worker"
    job.set_status(JobStatus.STARTED)
    job.save()


def test_dispatcher_killed_holding_the_lock_does_not_stall_the_pool(transactional_db, redis_conn, emulator,  # noqa: F811
                                                                   caplog):
    pool, _ = emulated_pool(emulator, [4])
    _leave_dead_dispatcher(pool)
    began = time.monotonic()
    with caplog.at_level("WARNING", logger="tasks.engine.dispatch"):
        tasks = [submit(pool=pool.name, name=f"after-death-{i}", targets=["192.0.2.10"]) for i in range(3)]
    # the log says what made the job dead, for whoever reads it later
    assert f"dispatch job {JOB_ID.format(pool.pk)} was left behind (status started, worker ghost-worker" in caplog.text
    run_until([pool], lambda: all(reread(t).status == "running" for t in tasks), timeout=10)
    assert time.monotonic() - began < 10
    job = Job.fetch(JOB_ID.format(pool.pk), connection=get_connection(), serializer=SERIALIZER) \
        if get_connection().exists(Job.key_for(JOB_ID.format(pool.pk))) else None
    assert job is None or job.worker_name != "ghost-worker"


def test_reconcile_dispatches_unconditionally(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [4])
    _leave_dead_dispatcher(pool)
    tasks = [submit(pool=pool.name, name=f"reconciled-{i}", targets=["192.0.2.10"]) for i in range(3)]
    get_connection().delete(pool_launch_queue(pool).key)  # the requests were lost with Redis
    reconcile(pool_ids=[pool.pk], check_scanners=False)
    assert all(reread(t).claimed_at is not None for t in tasks)  # claimed by the reconcile itself


# ------------------------------------------------------------------------- breaker opening mid-launch


def test_breaker_opening_mid_launch_unclaims_at_once_fifo_kept(transactional_db, redis_conn, emulator, settings):  # noqa: F811
    settings.SCANPOOL_BREAKER_THRESHOLD = 1
    settings.SCANPOOL_RETRY_INTERVALS = [60, 60, 60]  # the old code would hold the slot through these
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).down()
    first = submit(pool=pool.name, name="first", targets=["192.0.2.10"])
    run_jobs([pool])  # dispatch, launch: connection refused, the breaker opens
    row, s = reread(first), Scanner.objects.get(pk=scanner.pk)
    assert s.breaker_state == BreakerState.OPEN
    assert row.status == "queued" and row.claimed_at is None and not row.slot_held and s.active_scans == 0
    assert str(first.pk) not in ScheduledJobRegistry(queue=pool_launch_queue(pool)).get_job_ids()  # no retry
    assert TaskEvent.objects.filter(task=first, kind="retry", message__contains="circuit breaker").exists()
    second = submit(pool=pool.name, name="second", targets=["192.0.2.10"])
    emulator.control(0).up()
    from scanners.breaker import reset_breaker

    reset_breaker(scanner.pk, actor="test")
    run_until([pool], lambda: reread(first).is_terminal and reread(second).is_terminal, timeout=40)
    assert reread(first).started_at < reread(second).started_at  # its FIFO place was kept


# --------------------------------------------------------------- timeout / cancel hold the slot


def test_timeout_holds_the_slot_while_the_scan_runs_bounded_by_the_grace(transactional_db, redis_conn, emulator,  # noqa: F811
                                                                           settings):
    settings.SCANPOOL_STOP_GRACE = 6
    emulator.control(0).set_faults(hang_at_99=True, stop_ignored=True)
    pool, (scanner,) = emulated_pool(emulator, [1], scan_timeout_seconds=3)
    hung = submit(pool=pool.name, name="hung", targets=["192.0.2.10"])
    nxt = submit(pool=pool.name, name="next", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(hung).status == "timeout", timeout=30)
    timed_out = time.monotonic()
    while time.monotonic() - timed_out < 3:  # the scan still runs there: the slot stays taken
        run_jobs([pool])
        assert reread(hung).slot_held and reread(nxt).claimed_at is None
        assert Scanner.objects.get(pk=scanner.pk).active_scans == 1
        time.sleep(0.3)
    scan = next(s for s in emulator.control(0).scans() if "hung" in s["name"])
    assert scan["status"] == "running"
    run_until([pool], lambda: not reread(hung).slot_held, timeout=20)
    held = (reread(hung).updated_at, time.monotonic() - timed_out)
    assert held[1] >= 5  # released by the grace bound, not before
    assert TaskEvent.objects.filter(task=hung, kind="warning", message__contains="slot released anyway").exists()
    run_until([pool], lambda: reread(nxt).claimed_at is not None, timeout=20)


def test_cancel_holds_the_slot_until_the_scan_has_stopped(transactional_db, redis_conn, emulator, settings):  # noqa: F811
    settings.SCANPOOL_STOP_GRACE = 120
    emulator.control(0).set_faults(hang_at_99=True, stop_ignored=True)
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="to-cancel", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "running", timeout=20)
    cancel(task.pk, actor="alice")
    for _ in range(5):
        run_jobs([pool])
        time.sleep(0.3)
    assert reread(task).slot_held and Scanner.objects.get(pk=scanner.pk).active_scans == 1  # stop did not take
    emulator.control(0).set_faults(stop_ignored=False)  # the next stop works
    run_until([pool], lambda: not reread(task).slot_held, timeout=20)
    scan = next(s for s in emulator.control(0).scans() if "to-cancel" in s["name"])
    assert scan["status"] == "canceled"
    assert TaskEvent.objects.filter(task=task, message__contains="canceled on").exists()
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0


def test_a_cancel_between_create_and_launch_deletes_the_scan_unlaunched(transactional_db, redis_conn, emulator,  # noqa: F811
                                                                        monkeypatch):
    """The chaos review cancelled a task while its scan was created but not yet launched (scanner slow): the scan
    was launched anyway, then stopped — the targets of a cancelled task were scanned for a while."""
    from tasks.engine import launch

    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="cancel-mid-launch", targets=["192.0.2.10"])
    add_event = launch.add_event

    def cancelled_once_created(task_id, message, **kwargs):  # the user's cancel lands once the scan is created
        add_event(task_id, message, **kwargs)
        if "created on" in message:
            cancel(task.pk, actor="alice")

    monkeypatch.setattr(launch, "add_event", cancelled_once_created)
    run_until([pool], lambda: not reread(task).slot_held and reread(task).status == "cancelled", timeout=20)
    scans = [s for s in emulator.control(0).scans() if "cancel-mid-launch" in s["name"]]
    assert all(s["launches"] == 0 for s in scans), scans  # created, never launched (and deleted)
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0


# ----------------------------------------------------------------------------- a reused scan id


def test_a_reset_scanner_reusing_the_scan_id_is_not_followed(transactional_db, redis_conn, emulator):  # noqa: F811
    emulator.control(0).set_faults(hang_at_99=True)
    pool, (scanner,) = emulated_pool(emulator, [2])
    task = submit(pool=pool.name, name="original", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "running", timeout=20)
    row = reread(task)
    assert row.scanner_scan_uuid
    emulator.control(0).reset()  # the scanner restarted: its scan ids start again
    adapter = get_adapter(scanner)
    try:
        impostor = adapter.create_scan(ScanSpec(task_id=uuid.uuid4(), name="impostor", targets=["192.0.2.99"],
                                                scan_type="untrusted"))
        adapter.launch_scan(impostor)
    finally:
        adapter.close()
    assert impostor == row.scanner_scan_id  # the same id now names another scan
    run_until([pool], lambda: reread(task).is_terminal, timeout=20)
    row = reread(task)
    assert row.status == "failed" and "belongs to another scan" in row.error_message, row.error_message
    assert not row.slot_held and not row.results_summary


# ------------------------------------------------------------------ health check gives the trial


def test_a_healthy_health_check_gives_an_open_breaker_its_trial_at_once(transactional_db, redis_conn,
                                                                         emulator, settings):  # noqa: F811
    settings.SCANPOOL_BREAKER_COOLDOWN = 300
    from django.utils import timezone

    pool, (scanner,) = emulated_pool(emulator, [1])
    Scanner.objects.filter(pk=scanner.pk).update(breaker_state=BreakerState.OPEN, breaker_opened_at=timezone.now(),
                                                 consecutive_failures=5, health=Health.UNREACHABLE)
    task = submit(pool=pool.name, name="after-outage", targets=["192.0.2.10"])
    run_jobs([pool])
    assert reread(task).claimed_at is None  # the breaker is open, its cooldown not over
    reconcile(pool_ids=[pool.pk])  # the periodic reconcile's health check: the scanner answers again
    run_until([pool], lambda: reread(task).status == "running", timeout=15)
    assert Scanner.objects.get(pk=scanner.pk).breaker_state == BreakerState.CLOSED
    assert TaskEvent.objects.filter(task=task, kind="breaker", message__contains="trial").exists()


def test_a_dispatch_job_that_finished_while_a_request_looked_is_not_left_behind(db, redis_conn, caplog,
                                                                                 monkeypatch):
    """The enqueue saw dispatch-<pool> (DuplicateJobError), then it finished and RQ deleted it (result_ttl=0)
    before its status was read. That is no job left behind: no warning, nothing deleted, the request enqueued."""
    from rq import Queue
    from rq.exceptions import DuplicateJobError

    from tasks.engine.dispatch import request_dispatch
    from tests.factories import PoolFactory, ScannerFactory

    pool = PoolFactory()
    ScannerFactory(pool=pool)
    real = Queue.enqueue
    calls = []

    def enqueue(self, *args, **kwargs):
        calls.append(kwargs.get("job_id"))
        if len(calls) == 1:
            raise DuplicateJobError("seen at enqueue, deleted by the time its status is read")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Queue, "enqueue", enqueue)
    with caplog.at_level("WARNING", logger="tasks.engine.dispatch"):
        request_dispatch(pool.pk)
    assert "left behind" not in caplog.text
    assert calls == [JOB_ID.format(pool.pk)] * 2
    job = Job.fetch(JOB_ID.format(pool.pk), connection=get_connection(), serializer=SERIALIZER)
    assert job.get_status() == JobStatus.QUEUED
