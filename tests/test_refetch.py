"""Fetching a completed scan's results again (``tasks.refetch``) instead of scanning again.

A scan completes on its scanner, its export keeps failing until the task's deadline (the emulator's ``export_error``
fault) → ``timeout``; once the fault is gone the results are fetched again: same scanner, same scan id, one scan
launched in all, no slot taken. Refusals name the fix; a scan gone from the scanner fails clearly; two fetches (or a
fetch and a retry) do one thing; a Redis flush loses nothing (the reconcile resumes the fetch)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import close_old_connections
from django.utils import timezone

from scanners.models import Scanner
from tasks import refetch as refetch_module
from tasks.engine import chain, export_retry
from tasks.engine.common import adapter_for
from tasks.engine.recovery import reconcile
from tasks.errors import TaskStateError
from tasks.models import ScanTask, TaskEvent
from tasks.refetch import refetch
from tasks.services import retry, submit
from tests.emulator import emulator, emulator_factory  # noqa: F401 - fixtures
from tests.engine_support import emulated_pool, immediate_retries, reread, run_until  # noqa: F401 - fixture
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory
from tests.helpers import wait_for
from tests.worker_process import workers  # noqa: F401 - fixture

FAILING = {f"data__{export_retry.MARK}__isnull": False}
FETCHES = {f"data__{export_retry.REFETCH}__isnull": False}


def _scans(emu, name: str) -> list[dict]:
    return [s for s in emu.control(0).scans() if name in s["name"]]


def _time_out_exporting(emu, pool, name: str) -> ScanTask:
    """In-process: a scan completes, its export fails until the (shortened) deadline → timeout."""
    emu.control(0).set_faults(export_error=True)
    task = submit(pool=pool.name, name=name, targets=["192.0.2.10"])
    run_until([pool], lambda: TaskEvent.objects.filter(task_id=task.pk, **FAILING).exists(), timeout=30)
    ScanTask.objects.filter(pk=task.pk).update(deadline_at=timezone.now() + timedelta(seconds=2))
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    row = reread(task)
    assert row.status == "timeout" and row.scanner_status == "completed", (row.status, row.error_message)
    return row


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_timed_out_export_fetched_again_by_real_workers_same_scan_no_rescan_no_slot(
        workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    emu.control(0).set_faults(export_error=True)
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers()
    task = submit(pool=pool.name, name="refetch-me", targets=["192.0.2.10"])
    active: list[int] = []

    def sample(check):
        active.append(Scanner.objects.get(pk=scanner.pk).active_scans)
        return check()

    wait_for(lambda: sample(lambda: TaskEvent.objects.filter(task_id=task.pk, **FAILING).exists()), 60,
             "the export-failing note", [w])
    ScanTask.objects.filter(pk=task.pk).update(deadline_at=timezone.now() + timedelta(seconds=2))
    wait_for(lambda: sample(lambda: reread(task).is_terminal), 60, "the timeout", [w])
    ended = reread(task)
    assert ended.status == "timeout", (ended.status, ended.error_message)
    assert f"POST /api/v1/scans/{task.pk}/fetch-results/" in ended.error_message
    assert "Fetch the results again" in ended.error_message and "a retry would scan the targets again" in \
        ended.error_message
    scan_id = ended.scanner_scan_id

    emu.control(0).set_faults(export_error=False)  # the scanner's problem is fixed
    row = refetch(task.pk, actor="secteam", reason="disk cleaned")
    assert row.status == "running" and row.scanner_status == "completed" and not row.slot_held
    assert row.deadline_at > timezone.now() and row.error_message == "" and row.finished_at is None
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0  # a fetch takes no slot
    wait_for(lambda: sample(lambda: reread(task).is_terminal), 60, "the fetched results", [w])

    row = reread(task)
    assert row.status == "completed", (row.status, row.error_message)
    assert row.scanner_scan_id == scan_id and row.assigned_scanner_id == scanner.pk and row.attempts == 1
    assert row.results_summary["hosts"] == 1 and row.auth_status == "not_applicable"
    assert Path(row.results_file).is_file() and row.results_sha256
    scans = _scans(emu, "refetch-me")
    assert len(scans) == 1 and scans[0]["launches"] == 1  # one scan, launched once: nothing scanned again
    assert max(active) <= 1 and Scanner.objects.get(pk=scanner.pk).active_scans == 0 and not row.slot_held
    asked = TaskEvent.objects.get(task_id=task.pk, **FETCHES)
    assert asked.from_status == "timeout" and asked.to_status == "running" and asked.actor == "secteam"
    assert asked.message.startswith("results fetch requested by secteam: disk cleaned")
    # The fetch worked at once: its own story has no failure to tell (the first one's note stays, once).
    assert TaskEvent.objects.filter(task_id=task.pk, **FAILING).count() == 1
    assert not TaskEvent.objects.filter(task_id=task.pk, message__contains="worked, after failing since").exists()


def test_a_poll_past_the_fetch_window_names_the_fetch_deadline_not_the_tasks(
        transactional_db, redis_conn, emulator):  # noqa: F811
    """The poll that finds a finishing task past its deadline (a finish step that never came: a worker down, say)
    names the window the task ran against: after a fetch asked again, that fetch's, not the task's timeout."""
    from tasks.engine.monitor import Poll

    pool, _ = emulated_pool(emulator, [1])
    task = _time_out_exporting(emulator, pool, "poll-past-window")
    refetch(task.pk, actor="ops")
    ScanTask.objects.filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    Poll(task.pk).execute()
    row = reread(task)
    assert row.status == "timeout" and row.error_message.startswith("deadline of the results fetch asked for at ")
    assert "fetch-results" in row.error_message and not row.slot_held


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_a_fetch_takes_no_slot_another_scan_runs_beside_it(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = _time_out_exporting(emulator, pool, "first")
    row = refetch(task.pk, actor="ops")  # the export still fails: the fetch goes on with its backoff
    run_until([pool], lambda: TaskEvent.objects.filter(task_id=task.pk, **FAILING,
                                                       created_at__gt=row.updated_at).exists(), timeout=30)
    other = submit(pool=pool.name, name="second", targets=["192.0.2.11"])
    run_until([pool], lambda: reread(other).status == "running", timeout=30)
    scanner.refresh_from_db()
    assert scanner.active_scans == 1 == scanner.max_concurrent_scans  # the one slot is the new scan's
    assert reread(task).status == "running" and not reread(task).slot_held
    notes = TaskEvent.objects.filter(task_id=task.pk, **FAILING).order_by("created_at")
    assert notes.count() == 2  # the fetch's own failure is noted again, once
    emulator.control(0).set_faults(export_error=False)
    run_until([pool], lambda: reread(task).is_terminal and reread(other).is_terminal, timeout=30)
    assert reread(task).status == "completed" and reread(other).status == "completed"
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    assert [s["launches"] for s in _scans(emulator, "first")] == [1]


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_a_fetch_that_still_fails_times_out_again_within_its_window(
        transactional_db, redis_conn, emulator, settings):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = _time_out_exporting(emulator, pool, "still-broken")
    settings.SCANPOOL_FINISH_TIMEOUT = 3
    row = refetch(task.pk, actor="ops")
    assert (row.deadline_at - timezone.now()).total_seconds() <= 3
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    row = reread(task)
    assert row.status == "timeout" and "deadline of the results fetch asked for at" in row.error_message
    assert "fetch-results" in row.error_message and not row.slot_held
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    assert refetch_module.refusal(row) == ""  # it may be asked again


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_scan_gone_from_the_scanner_fails_saying_the_results_are_gone(transactional_db, redis_conn,
                                                                      emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = _time_out_exporting(emulator, pool, "deleted-there")
    with adapter_for(scanner) as adapter:
        adapter.delete_scan(task.scanner_scan_id)
    emulator.control(0).set_faults(export_error=False)
    refetch(task.pk, actor="ops")
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    row = reread(task)
    assert row.status == "failed" and row.error_kind == "permanent", (row.status, row.error_message)
    assert f"scan {task.scanner_scan_id} is no longer on scanner {scanner.name}" in row.error_message
    assert "its results are gone; retry the task to scan again" in row.error_message
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0 and not row.slot_held
    with pytest.raises(TaskStateError, match="use retry: it scans again"):
        refetch(task.pk, actor="ops")  # a permanent failure is not a fetch failure: nothing to fetch again


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_a_scan_id_that_now_names_another_run_is_never_exported(transactional_db, redis_conn,
                                                                emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1])
    task = _time_out_exporting(emulator, pool, "reset-there")
    # As after a scanner reset that reuses scan ids: the run there is not the one this task launched.
    ScanTask.objects.filter(pk=task.pk).update(scanner_scan_uuid="00000000-0000-4000-8000-0000000000aa")
    emulator.control(0).set_faults(export_error=False)
    refetch(task.pk, actor="ops")
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    row = reread(task)
    assert row.status == "failed" and row.error_kind == "scan", (row.status, row.error_message)
    assert "that id now belongs to another scan" in row.error_message and "retry the task" in row.error_message
    assert not row.results_summary and not row.results_file  # nothing of the other scan was stored


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_redis_flushed_after_the_fetch_the_reconcile_resumes_it(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1])
    task = _time_out_exporting(emulator, pool, "flushed")
    emulator.control(0).set_faults(export_error=False)
    refetch(task.pk, actor="ops")
    redis_conn.flushdb()  # the finish job and the chain key are gone; the database says running
    assert chain.current_job_id(task.pk) is None
    report = reconcile([pool.pk], check_scanners=False)
    assert str(task.pk) in report.resumed
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    assert reread(task).status == "completed" and [s["launches"] for s in _scans(emulator, "flushed")] == [1]


@pytest.mark.django_db(transaction=True)
def test_redis_down_at_the_fetch_the_change_stands_and_the_reconcile_resumes_it(redis_server, caplog):
    """The real redis-server is stopped while the fetch is asked: the change commits (its after-commit work only
    logs), and the reconcile, once Redis is back, starts the running task's chain again."""
    task = _finishing_timeout()
    redis_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="tasks.services"):
            row = refetch(task.pk, actor="ops")
    finally:
        redis_server.start()
    assert row.status == "running" and reread(task).status == "running"
    assert "_schedule_finish" in caplog.text and "not done, Redis" in caplog.text  # the step was not enqueued
    assert chain.current_job_id(task.pk) is None
    report = reconcile([task.pool_id], check_scanners=False)
    assert str(task.pk) in report.resumed and chain.current_job_id(task.pk) is not None


# ----------------------------------------------------------------------------------------- refusals and races


def _finishing_timeout(**kwargs) -> ScanTask:
    """A row as the engine leaves a task whose export kept failing until the deadline."""
    scanner = kwargs.pop("assigned_scanner", None) or ScannerFactory()
    fields = {"pool": scanner.pool, "assigned_scanner": scanner, "status": "timeout", "scanner_status": "completed",
              "scanner_scan_id": 42, "scanner_scan_uuid": "run-42", "error_kind": "timeout",
              "error_message": "deadline of 3600s passed before the results could be fetched", "progress": 100,
              "started_at": timezone.now() - timedelta(hours=2), "finished_at": timezone.now()}
    return ScanTaskFactory(**{**fields, **kwargs})


REFUSED = {
    "queued": ({"status": "queued", "scanner_status": "", "scanner_scan_id": None}, "is queued"),
    "running": ({"status": "running", "scanner_status": "running"}, "is running"),
    "finishing": ({"status": "running"}, "is fetching its results now"),
    "completed": ({"status": "completed"}, "is completed"),
    "cancelled": ({"status": "cancelled"}, "is cancelled"),
    "stopped at its deadline": ({"scanner_status": "running"}, "did not complete on its scanner"),
    "never launched": ({"status": "failed", "scanner_status": "", "scanner_scan_id": None},
                       "did not complete on its scanner"),
    "results failed validation": ({"status": "failed", "error_kind": "authentication",
                                   "results_summary": {"hosts": 1}}, "failed validation"),
    "scan replaced there": ({"status": "failed", "error_kind": "scan"}, "another reason than fetching"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_outside_a_failed_fetch_with_the_fix_and_nothing_written(case):
    fields, words = REFUSED[case]
    task = _finishing_timeout(**fields)
    before = (reread(task).status, TaskEvent.objects.filter(task_id=task.pk).count())
    with pytest.raises(TaskStateError) as excinfo:
        refetch(task.pk, actor="ops")
    assert words in excinfo.value.message and excinfo.value.field == "task_id"
    assert excinfo.value.status_code == 409
    if case not in ("queued", "running", "finishing", "completed", "cancelled"):
        assert "use retry: it scans again" in excinfo.value.message
    assert (reread(task).status, TaskEvent.objects.filter(task_id=task.pk).count()) == before


@pytest.mark.django_db
def test_refused_when_the_scanner_is_disabled_or_moved_naming_the_fix():
    task = _finishing_timeout()
    Scanner.objects.filter(pk=task.assigned_scanner_id).update(enabled=False)
    with pytest.raises(TaskStateError, match=r"is disabled: enable it .* or use retry: it scans again"):
        refetch(task.pk, actor="ops")
    Scanner.objects.filter(pk=task.assigned_scanner_id).update(enabled=True, pool=PoolFactory())
    with pytest.raises(TaskStateError, match=r"was moved to another pool.*move it back"):
        refetch(task.pk, actor="ops")
    assert reread(task).status == "timeout"


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["results", "internal"])
def test_a_failure_at_the_finish_step_before_anything_was_stored_may_be_fetched_again(kind):
    task = _finishing_timeout(status="failed", error_kind=kind, error_message="the export could not be parsed")
    row = refetch(task.pk, actor="ops")
    assert row.status == "running" and row.error_kind == "" and not row.slot_held
    asked = TaskEvent.objects.get(task_id=task.pk, **FETCHES)
    assert asked.from_status == "failed" and asked.data["previous_error"] == "the export could not be parsed"


@pytest.mark.django_db
def test_a_stale_second_fetch_or_a_racing_retry_does_nothing(monkeypatch):
    task = _finishing_timeout()
    stale = ScanTask.objects.select_related("pool", "assigned_scanner").get(pk=task.pk)
    refetch(task.pk, actor="first")
    monkeypatch.setattr(refetch_module, "load", lambda task_id: stale)  # read before the first one committed
    with pytest.raises(TaskStateError, match="changed meanwhile"):
        refetch(task.pk, actor="second")
    assert TaskEvent.objects.filter(task_id=task.pk, **FETCHES).count() == 1
    with pytest.raises(TaskStateError, match="is running"):
        retry(task.pk, actor="ops")  # retry refuses a running task: the fetch came first

    other = _finishing_timeout()
    stale = ScanTask.objects.select_related("pool", "assigned_scanner").get(pk=other.pk)
    retry(other.pk, actor="ops")  # the retry came first: queued, a new attempt
    with pytest.raises(TaskStateError, match="changed meanwhile"):
        refetch(other.pk, actor="late")
    assert reread(other).status == "queued" and not TaskEvent.objects.filter(task_id=other.pk, **FETCHES).exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_fetches_one_wins(redis_conn):
    task = _finishing_timeout()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def ask(actor: str) -> None:
        try:
            barrier.wait(5)
            refetch(task.pk, actor=actor)
            outcomes.append("fetched")
        except TaskStateError as exc:
            outcomes.append(exc.message)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=ask, args=(f"op{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes)[0] == "fetched" and outcomes.count("fetched") == 1, outcomes
    assert TaskEvent.objects.filter(task_id=task.pk, **FETCHES).count() == 1
    assert reread(task).status == "running"
