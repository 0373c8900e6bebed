"""Recovery (reconcile): a Redis flush or a dead worker loses no task and launches nothing twice;
slots of finished tasks are freed; orphan scans on the scanners are reported."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from scanners.adapters import ScanSpec, get_adapter
from scanners.models import Scanner
from tasks.engine.common import scan_spec
from tasks.engine.dispatch import dispatch_round
from tasks.engine.recovery import reconcile
from tasks.models import ScanTask
from tasks.services import submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, run_jobs, run_until
from tests.factories import ScanTaskFactory


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0]


def _all_done(pool):
    return lambda: not ScanTask.objects.filter(pool=pool, status__in=["queued", "running"]).exists()


def test_redis_flush_with_queued_tasks_reconcile_enqueues_them_all(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1, 1])
    tasks = [submit(pool=pool.name, name=f"flush-{i}", targets=["192.0.2.10"]) for i in range(5)]
    redis_conn.flushall()  # the dispatch requests are gone
    assert not run_jobs([pool])
    report = reconcile([pool.pk], check_scanners=False)
    assert report.queued == 5
    run_until([pool], _all_done(pool), timeout=60)
    assert set(ScanTask.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True)) == {"completed"}
    assert sum(emulator.control(i).launches_for("flush-") for i in range(2)) == 5


def test_claimed_task_whose_launch_job_vanished_after_create_is_found_not_relaunched(
    transactional_db, redis_conn, emulator  # noqa: F811
):
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="lost-create", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 1
    redis_conn.flushall()  # the launch job is gone
    # the worker died right after creating the scan, before recording its id
    adapter = get_adapter(scanner)
    created = adapter.create_scan(scan_spec(ScanTask.objects.get(pk=task.pk)))
    ScanTask.objects.filter(pk=task.pk).update(scanner_status="creating",
                                               claimed_at=timezone.now() - timedelta(seconds=30))
    report = reconcile([pool.pk], check_scanners=False)
    assert report.relaunched == [str(task.pk)]
    run_until([pool], _all_done(pool), timeout=30)
    task.refresh_from_db()
    assert task.status == "completed" and task.scanner_scan_id == created
    scans = [s for s in emulator.control(0).scans() if "lost-create" in s["name"]]
    assert len(scans) == 1 and scans[0]["launches"] == 1


def test_running_task_whose_chain_vanished_resumes_the_same_scan(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="resume-me", targets=["192.0.2.10"])
    run_until([pool], lambda: ScanTask.objects.get(pk=task.pk).status == "running", timeout=20)
    scan_id = ScanTask.objects.get(pk=task.pk).scanner_scan_id
    redis_conn.flushall()  # worker and its scheduled poll gone
    report = reconcile([pool.pk], check_scanners=False)
    assert report.resumed == [str(task.pk)]
    assert reconcile([pool.pk], check_scanners=False).resumed == []  # the new chain is alive: nothing to do
    run_until([pool], _all_done(pool), timeout=30)
    task.refresh_from_db()
    assert task.status == "completed" and task.scanner_scan_id == scan_id
    assert emulator.control(0).launches_for("resume-me") == 1


def test_slots_of_finished_tasks_are_freed_and_counters_recomputed(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [3])
    old = timezone.now() - timedelta(minutes=5)
    stuck = ScanTaskFactory(pool=pool, status="failed", assigned_scanner=scanner, slot_held=True, finished_at=old)
    Scanner.objects.filter(pk=scanner.pk).update(active_scans=3)  # one real holder, two leaked increments
    report = reconcile([pool.pk], check_scanners=False)
    assert report.released == [str(stuck.pk)]
    assert report.corrected == [(scanner.name, 2, 0)]
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    assert not ScanTask.objects.get(pk=stuck.pk).slot_held


def test_orphan_scans_are_reported_by_the_command(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    ghost = uuid.uuid4()
    get_adapter(scanner).create_scan(ScanSpec(task_id=ghost, name="ghost", targets=["192.0.2.10"],
                                              scan_type="untrusted"))
    out = StringIO()
    call_command("reconcile", "--pools", pool.name, stdout=out)
    assert "ORPHAN scan" in out.getvalue() and str(ghost) in out.getvalue()
    assert f"pools: {pool.name}" in out.getvalue()


def test_reconcile_that_could_not_do_its_work_exits_non_zero(db, redis_conn, settings):
    """Redis down: reconcile reports the error and exits 1 (a cron job or monitor must see it), not 0."""
    from django.core.management import CommandError

    from tests.factories import PoolFactory

    pool = PoolFactory(name="cron-pool")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=r"error\(s\) during reconcile"):
        call_command("reconcile", "--pools", pool.name, "--no-scanners", stdout=out, stderr=err)
    assert f"error: pool {pool.name}" in err.getvalue()  # errors on stderr (cron), not among the report's lines


def test_a_finishing_task_whose_next_export_round_waits_for_a_worker_is_not_resumed(
        transactional_db, redis_conn, emulator):  # noqa: F811
    """A failing export's rounds come minutes apart and no poll runs in between (tasks.engine.export_retry): its
    next finish link, due and waiting in the queue for a worker, is alive — counted from when it was enqueued, not
    from the task's last poll."""
    from tasks.engine import chain

    pool, (scanner,) = emulated_pool(emulator, [1])
    task = ScanTaskFactory(pool=pool, status="running", assigned_scanner=scanner, slot_held=True, scanner_scan_id=7,
                           scanner_status="completed", started_at=timezone.now() - timedelta(minutes=20),
                           last_polled_at=timezone.now() - timedelta(minutes=10))
    link = chain.schedule(pool, task.pk, "finish")  # queued now, nobody has taken it yet
    assert reconcile([pool.pk], check_scanners=False).resumed == []
    assert chain.current_job_id(task.pk) == link
