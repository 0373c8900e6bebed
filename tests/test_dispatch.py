"""Selection, atomic slots, FIFO and the step-driven scan life cycle, against the real database, the
real Redis and the Nessus emulator over HTTP; jobs run in-process with RQ's SimpleWorker (burst)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from rq.job import Job

from scanners.models import BreakerState, Health, Scanner
from scanners.selection import candidates
from tasks.engine.dispatch import dispatch_round
from tasks.engine.slots import acquire_slot, release_task_slot
from tasks.models import ScanTask, TaskEvent
from tasks.queues import SERIALIZER, pool_launch_queue, pool_queue
from tasks.services import cancel, retry, submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, run_jobs, run_until  # noqa: F401 - immediate_retries: fixture
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory

pytestmark = pytest.mark.usefixtures("immediate_retries")



def _done(*tasks):
    return lambda: all(ScanTask.objects.get(pk=t.pk).is_terminal for t in tasks)


# -------------------------------------------------------------------------------------- selection


def test_selection_order_and_filters(db):
    pool = PoolFactory()
    a = ScannerFactory(pool=pool, name="a", max_concurrent_scans=4, active_scans=2)  # 0.5, 2 free
    b = ScannerFactory(pool=pool, name="b", max_concurrent_scans=2, active_scans=1)  # 0.5, 1 free
    c = ScannerFactory(pool=pool, name="c", max_concurrent_scans=2, active_scans=0)  # 0.0
    d = ScannerFactory(pool=pool, name="d", max_concurrent_scans=4, active_scans=2)  # 0.5, 2 free: after a by name
    ScannerFactory(pool=pool, name="off", enabled=False)
    ScannerFactory(pool=pool, name="sick", health=Health.UNREACHABLE)
    ScannerFactory(pool=pool, name="unlicensed", health=Health.UNLICENSED)
    ScannerFactory(pool=pool, name="tripped", breaker_state=BreakerState.OPEN, breaker_opened_at=None,
                   max_concurrent_scans=1, active_scans=1)  # due for a trial but full
    ScannerFactory(pool=pool, name="full", max_concurrent_scans=1, active_scans=1)
    assert [s.name for s in candidates(pool.pk)] == ["c", "a", "d", "b"]
    assert [s.name for s in candidates(pool.pk, pinned_scanner_id=b.pk)] == ["b"]
    assert a and d and c


def test_open_breaker_skipped_until_cooldown(db, settings):
    from django.utils import timezone

    pool = PoolFactory()
    s = ScannerFactory(pool=pool, breaker_state=BreakerState.OPEN, breaker_opened_at=timezone.now())
    assert candidates(pool.pk) == []
    settings.SCANPOOL_BREAKER_COOLDOWN = 0
    assert [x.pk for x in candidates(pool.pk)] == [s.pk]


@pytest.mark.django_db(transaction=True)
def test_slot_acquire_is_atomic_under_racing_threads():
    scanner = ScannerFactory(max_concurrent_scans=3)
    wins = []
    barrier = threading.Barrier(12)

    def grab():
        try:
            barrier.wait()
            for _ in range(3):
                if acquire_slot(scanner.pk):
                    wins.append(1)
        finally:
            connection.close()

    threads = [threading.Thread(target=grab) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scanner.refresh_from_db()
    assert len(wins) == 3 and scanner.active_scans == 3


@pytest.mark.django_db(transaction=True)
def test_release_happens_exactly_once_under_racing_threads():
    scanner = ScannerFactory(max_concurrent_scans=2, active_scans=2)
    task = ScanTaskFactory(pool=scanner.pool, assigned_scanner=scanner, slot_held=True, status="completed")
    results = []
    barrier = threading.Barrier(8)

    def rel():
        try:
            barrier.wait()
            results.append(release_task_slot(task.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=rel) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scanner.refresh_from_db()
    assert results.count(True) == 1 and scanner.active_scans == 1


def test_dispatch_is_fifo_and_a_full_pool_fails_nothing(db, redis_conn, django_capture_on_commit_callbacks):
    pool = PoolFactory()
    ScannerFactory(pool=pool, max_concurrent_scans=1)
    tasks = [submit(pool=pool.name, name=f"t{i}", targets=["192.0.2.10"]) for i in range(4)]
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch_round(pool.pk) == 1
    states = {t.name: (t.claimed_at is not None) for t in ScanTask.objects.all()}
    assert states == {"t0": True, "t1": False, "t2": False, "t3": False}
    assert dispatch_round(pool.pk) == 0  # full: nothing else claimed, nothing failed
    assert ScanTask.objects.filter(status="queued").count() == 4
    # the launch job of the claimed task carries its id, and is the task id itself
    job = Job.fetch(str(tasks[0].pk), connection=redis_conn, serializer=SERIALIZER)
    assert job.args == [str(tasks[0].pk)] and job.func_name == "tasks.jobs.launch"
    release_task_slot(tasks[0].pk)
    ScanTask.objects.filter(pk=tasks[0].pk).update(status="cancelled")
    assert dispatch_round(pool.pk) == 1
    assert ScanTask.objects.get(pk=tasks[1].pk).claimed_at is not None


def test_pinned_task_waits_for_its_scanner_without_blocking_others(db, redis_conn):
    pool = PoolFactory()
    busy = ScannerFactory(pool=pool, name="busy", max_concurrent_scans=1, active_scans=1)
    ScannerFactory(pool=pool, name="free", max_concurrent_scans=1)
    pinned = submit(pool=pool.name, name="pinned", targets=["192.0.2.10"], scanner_instance="busy")
    other = submit(pool=pool.name, name="other", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 1
    assert ScanTask.objects.get(pk=pinned.pk).claimed_at is None
    assert ScanTask.objects.get(pk=other.pk).assigned_scanner.name == "free"
    assert busy.pk


def _scheduled_dispatches(pool) -> dict[str, float]:
    registry = pool_launch_queue(pool.pk).scheduled_job_registry
    return {job_id: registry.connection.zscore(registry.key, job_id) for job_id in registry.get_job_ids()}


def test_a_dispatch_that_comes_before_the_trial_is_due_wakes_the_pool_when_it_is(db, redis_conn, settings):
    """CI failure 2026-12-02: a dispatch scheduled for the end of a cooldown ran 0.06 s before it (RQ keeps
    whole seconds), found no trial due and scheduled nothing: three tasks waited for the 60 s reconcile."""
    from datetime import timedelta

    from django.utils import timezone

    settings.SCANPOOL_BREAKER_COOLDOWN = 3
    pool = PoolFactory()
    opened = timezone.now() - timedelta(seconds=2.5)
    ScannerFactory(pool=pool, name="a", breaker_state=BreakerState.OPEN, breaker_opened_at=opened)
    ScannerFactory(pool=pool, name="b", breaker_state=BreakerState.OPEN,
                   breaker_opened_at=opened + timedelta(seconds=1))
    task = submit(pool=pool.name, name="waits", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 0  # too early: no trial yet
    due = (opened + timedelta(seconds=3)).timestamp()
    (job_id, at), = _scheduled_dispatches(pool).items()  # the first breaker's trial, once
    assert due <= at < due + 1 and job_id.startswith(f"dispatch-{pool.pk}-trial-")
    assert Job.fetch(job_id, connection=redis_conn, serializer=SERIALIZER).func_name == "tasks.jobs.dispatch"
    assert dispatch_round(pool.pk) == 0
    assert len(_scheduled_dispatches(pool)) == 1  # asked again: still one wake-up
    # a pinned task waiting for its own open scanner wakes the pool too
    ScanTask.objects.filter(pk=task.pk).update(status="cancelled")
    pool_launch_queue(pool.pk).scheduled_job_registry.remove(job_id, delete_job=True)
    submit(pool=pool.name, name="pinned", targets=["192.0.2.10"], scanner_instance="b")
    assert dispatch_round(pool.pk) == 0
    (_, at), = _scheduled_dispatches(pool).items()
    assert due <= at < due + 1  # the pool's first trial (a wasted round at worst, never a late one)


def test_dispatch_later_never_runs_before_its_time(db, redis_conn):
    from tasks.engine.dispatch import dispatch_later

    pool = PoolFactory()
    before = time.time()
    dispatch_later(pool.pk, 0.2)
    (_, at), = _scheduled_dispatches(pool).items()
    assert at >= before + 0.2 and at == int(at)


def test_nothing_to_wake_for_when_no_breaker_waits(db, redis_conn):
    pool = PoolFactory()
    ScannerFactory(pool=pool, max_concurrent_scans=1, active_scans=1)
    submit(pool=pool.name, name="full", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 0
    assert _scheduled_dispatches(pool) == {}  # a full pool is woken by the next release, not by a timer


# ---------------------------------------------------------------------------- life cycle (emulator)


def test_scans_run_to_completion_each_launched_once_fifo(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _scanners = emulated_pool(emulator, [1, 1])
    tasks = [submit(pool=pool.name, name=f"life-{i}", targets=["192.0.2.10"]) for i in range(4)]
    run_until([pool], _done(*tasks), timeout=60)
    rows = list(ScanTask.objects.order_by("created_at"))
    assert [r.status for r in rows] == ["completed"] * 4, [(r.status, r.error_message) for r in rows]
    starts = [r.started_at for r in rows]
    assert starts == sorted(starts)
    launches = sum(emulator.control(i).launches_for("life-") for i in range(2))
    assert launches == 4
    for i in range(2):
        assert emulator.control(i).stats()["max_concurrent"] <= 1
    assert all(s.active_scans == 0 for s in Scanner.objects.all())
    assert not ScanTask.objects.filter(slot_held=True).exists()
    t = rows[0]
    assert t.scanner_scan_id and t.progress == 100 and t.results_summary is not None
    kinds = list(TaskEvent.objects.filter(task=t).values_list("kind", flat=True))
    assert "scanner" in kinds and kinds.count("status") >= 3


def test_cancel_queued_and_running(transactional_db, redis_conn, emulator):  # noqa: F811
    emulator.control(0).set_faults(hang_at_99=True)
    pool, (scanner, _) = emulated_pool(emulator, [1, 1])
    running = submit(pool=pool.name, name="cancel-run", targets=["192.0.2.10"], scanner_instance=scanner.name)
    waiting = submit(pool=pool.name, name="cancel-wait", targets=["192.0.2.10"], scanner_instance=scanner.name)
    run_until([pool], lambda: ScanTask.objects.get(pk=running.pk).status == "running", timeout=20)
    assert cancel(waiting.pk, actor="alice").status == "cancelled"
    assert ScanTask.objects.get(pk=waiting.pk).scanner_scan_id is None
    cancelled = cancel(running.pk, actor="alice")
    assert cancelled.status == "cancelled"
    run_until([pool], lambda: not ScanTask.objects.get(pk=running.pk).slot_held, timeout=20)
    scan = next(s for s in emulator.control(0).scans() if "cancel-run" in s["name"])
    assert scan["status"] in ("canceled", "stopping")
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    assert TaskEvent.objects.filter(task=running, actor="alice", to_status="cancelled").exists()
    from tasks.errors import TaskStateError

    with pytest.raises(TaskStateError):
        cancel(running.pk)


def test_deadline_times_out_and_frees_the_slot(transactional_db, redis_conn, emulator):  # noqa: F811
    emulator.control(0).set_faults(hang_at_99=True)
    emulator.control(1).set_faults(hang_at_99=True)
    pool, _ = emulated_pool(emulator, [1, 1], scan_timeout_seconds=4)
    task = submit(pool=pool.name, name="hang", targets=["192.0.2.10"])
    run_until([pool], _done(task), timeout=30)
    # The slot is held until a poll sees the stopped scan inactive on the scanner (tasks.engine.settle).
    run_until([pool], lambda: not ScanTask.objects.get(pk=task.pk).slot_held, timeout=15)
    task.refresh_from_db()
    assert task.status == "timeout" and task.error_kind == "timeout" and "deadline of 4s" in task.error_message
    assert not task.slot_held and Scanner.objects.filter(active_scans__gt=0).count() == 0
    assert (task.finished_at - task.started_at).total_seconds() >= 4


def test_permanent_error_fails_at_once_dead_letters_and_retry_requeues(transactional_db, redis_conn, emulator):  # noqa: F811
    emulator.control(0).set_faults(unlicensed=True)
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="refused", targets=["192.0.2.10"])
    run_until([pool], _done(task), timeout=20)
    task.refresh_from_db()
    assert task.status == "failed" and task.error_kind == "permanent"
    assert "refused the scan" in task.error_message
    registry = pool_launch_queue(pool).failed_job_registry
    assert str(task.pk) in registry.get_job_ids()
    assert Scanner.objects.get(pk=scanner.pk).health == Health.UNLICENSED
    emulator.control(0).set_faults(unlicensed=False)
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    again = retry(task.pk, actor="bob")
    assert again.status == "queued" and again.attempts == 2 and again.error_message == ""
    assert str(task.pk) not in registry.get_job_ids()
    assert TaskEvent.objects.filter(task=task, kind="retry", actor="bob").exists()
    run_until([pool], _done(task), timeout=30)
    assert ScanTask.objects.get(pk=task.pk).status == "completed"


def test_only_dead_letters_can_be_retried(db):
    from tasks.errors import TaskStateError

    task = ScanTaskFactory(status="completed")
    with pytest.raises(TaskStateError, match="only failed or timed-out"):
        retry(task.pk)


def test_transient_launch_errors_are_retried_then_succeed(transactional_db, redis_conn, emulator):  # noqa: F811
    emulator.control(0).set_faults(error_burst=2)
    pool, (_scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="flaky", targets=["192.0.2.10"])
    run_until([pool], _done(task), timeout=30)
    task.refresh_from_db()
    assert task.status == "completed", task.error_message
    assert emulator.control(0).launches_for("flaky") == 1
    assert run_jobs([pool]) in (True, False)


def test_capacity_queue_position_and_estimated_wait(db):
    from datetime import timedelta

    from django.utils import timezone

    from tasks.capacity import estimated_wait, queue_position
    from tasks.pool_load import pool_load

    pool = PoolFactory()
    busy = ScannerFactory(pool=pool, max_concurrent_scans=2, active_scans=2)
    ScannerFactory(pool=pool, max_concurrent_scans=5, breaker_state=BreakerState.OPEN)  # not usable
    now = timezone.now()
    for minutes in (10, 20, 30):  # recent mean duration: 20 minutes
        ScanTaskFactory(pool=pool, status="completed", started_at=now - timedelta(minutes=minutes + 1),
                        finished_at=now - timedelta(minutes=1))
    for _ in range(2):
        ScanTaskFactory(pool=pool, status="running", started_at=now - timedelta(minutes=5), assigned_scanner=busy,
                        slot_held=True)
    waiting = [ScanTaskFactory(pool=pool) for _ in range(5)]
    load = pool_load(pool)
    assert (load.capacity, load.total_slots, load.active, load.queued, load.free) == (2, 7, 2, 5, 0)
    assert [queue_position(t) for t in waiting] == [0, 1, 2, 3, 4]
    first, last = estimated_wait(waiting[0]), estimated_wait(waiting[4])
    # first: the running scans (5 of ~20 minutes done) end in ~15 min; last: two more rounds of 20 min
    assert 14 * 60 <= first.seconds <= 16 * 60 and first.basis["rounds"] == 1
    assert 54 * 60 <= last.seconds <= 56 * 60 and last.basis["rounds"] == 3
    assert last.basis["method"].startswith("simulated")


def test_finish_uses_the_results_verdict(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1, 1])
    good = submit(pool=pool.name, name="auth-good", targets=["192.0.2.10"], scan_type="authenticated",
                  credentials={"username": "root", "password": "good"})
    bad = submit(pool=pool.name, name="auth-bad", targets=["192.0.2.11"], scan_type="authenticated",
                 credentials={"username": "root", "password": "bad"})
    run_until([pool], _done(good, bad), timeout=60)
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, good.auth_status) == ("completed", "success"), good.error_message
    assert good.results_file and good.results_summary
    assert (bad.status, bad.error_kind, bad.auth_status) == ("failed", "authentication", "failed")
    assert bad.error_message and not bad.slot_held
    assert str(bad.pk) not in pool_queue(pool).failed_job_registry.get_job_ids()  # a verdict, not a dead letter


def test_queue_position_and_wait_follow_a_scripted_timeline(db):
    """Scanners A (2 slots, both scans 5 min in), B (1 slot, breaker open: unusable), C (1 slot, its scan 18 min
    in); mean scan 20 min. Queue, oldest first: t0→C, t1 any, t2→A, t3 any, t4→B, t5→C. Played out by hand:
    C frees at +2 (t0), A at +15 (t1, t2), C again at +22 (t3), then C at +42 (t5); t4 has no usable scanner."""
    from datetime import timedelta

    from django.utils import timezone

    from tasks.capacity import estimated_wait, queue_position

    pool = PoolFactory()
    a = ScannerFactory(pool=pool, name="a", max_concurrent_scans=2, active_scans=2)
    b = ScannerFactory(pool=pool, name="b", max_concurrent_scans=1, active_scans=1, breaker_state=BreakerState.OPEN)
    c = ScannerFactory(pool=pool, name="c", max_concurrent_scans=1, active_scans=1)
    now = timezone.now()
    ScanTaskFactory(pool=pool, status="completed", started_at=now - timedelta(minutes=21),
                    finished_at=now - timedelta(minutes=1))  # mean 20 min
    for scanner, minutes in ((a, 5), (a, 5), (b, 1), (c, 18)):
        ScanTaskFactory(pool=pool, status="running", assigned_scanner=scanner, slot_held=True,
                        started_at=now - timedelta(minutes=minutes))
    pins = [c, None, a, None, b, c]
    waiting = []
    for i, pin in enumerate(pins):
        waiting.append(ScanTaskFactory(pool=pool, requested_scanner=pin, created_at=now + timedelta(seconds=i)))
    assert [queue_position(t) for t in waiting] == [0, 1, 1, 3, 2, 3]
    minutes = [estimated_wait(t).seconds for t in waiting]
    expected = [2, 15, 15, 22, None, 42]
    for got, want in zip(minutes, expected, strict=True):
        if want is None:
            assert got is None
        else:
            assert abs(got - want * 60) <= 5, (minutes, expected)


def test_a_request_while_a_dispatch_waits_costs_no_query_and_adds_no_job(db, redis_conn, django_assert_num_queries):
    from tasks.engine.dispatch import SEQ_KEY, request_dispatch

    pool = PoolFactory()
    request_dispatch(pool)
    queue = pool_launch_queue(pool.pk)
    assert queue.job_ids == [f"dispatch-{pool.pk}"]
    with django_assert_num_queries(0):  # neither the pool's queue name nor anything else is read
        for _ in range(5):
            request_dispatch(pool.pk)
    assert queue.job_ids == [f"dispatch-{pool.pk}"]
    assert int(redis_conn.get(SEQ_KEY.format(pool.pk))) == 6  # every request still counts
