"""Circuit breakers: state changes on the scanner row, events, one trial at a time; and with the
emulator: a down scanner is skipped, a pool whose scanners are all down keeps its tasks queued."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scanners import breaker
from scanners.models import BreakerState, Scanner
from tasks.models import ScanTask, TaskEvent
from tasks.services import submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, run_jobs, run_until
from tests.factories import ScannerFactory, ScanTaskFactory


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.SCANPOOL_RETRY_INTERVALS = [0, 0]
    settings.SCANPOOL_BREAKER_THRESHOLD = 3
    settings.SCANPOOL_BREAKER_COOLDOWN = 300


def test_opens_at_threshold_with_event_and_log(db, caplog):
    scanner = ScannerFactory()
    task = ScanTaskFactory(pool=scanner.pool)
    with caplog.at_level(logging.WARNING, logger="scanners.breaker"):
        assert breaker.record_failure(scanner, "connection refused", task.pk) == BreakerState.CLOSED
        assert breaker.record_failure(scanner, "connection refused", task.pk) == BreakerState.CLOSED
        assert breaker.record_failure(scanner, "connection refused", task.pk) == BreakerState.OPEN
    scanner.refresh_from_db()
    assert scanner.breaker_state == BreakerState.OPEN and scanner.consecutive_failures == 3
    assert scanner.breaker_opened_at and scanner.last_error == "connection refused"
    assert "closed -> open" in caplog.text
    event = TaskEvent.objects.get(task=task, kind="breaker")
    assert event.data["to"] == "open" and "opened after 3 consecutive failures" in event.message


def test_success_resets_the_count(db):
    scanner = ScannerFactory()
    breaker.record_failure(scanner, "x")
    breaker.record_failure(scanner, "x")
    breaker.record_success(scanner)
    scanner.refresh_from_db()
    assert scanner.consecutive_failures == 0 and scanner.breaker_state == BreakerState.CLOSED
    breaker.record_failure(scanner, "x")
    assert Scanner.objects.get(pk=scanner.pk).breaker_state == BreakerState.CLOSED


def test_half_open_one_trial_then_close_or_reopen(db, settings):
    scanner = ScannerFactory(breaker_state=BreakerState.OPEN, breaker_opened_at=timezone.now(),
                             consecutive_failures=3)
    assert not breaker.trial_due(scanner)
    Scanner.objects.filter(pk=scanner.pk).update(breaker_opened_at=timezone.now() - timedelta(seconds=301))
    scanner.refresh_from_db()
    assert breaker.trial_due(scanner)
    assert breaker.begin_trial(scanner)
    assert not breaker.begin_trial(scanner)  # stale object: the state moved on, one trial only
    scanner.refresh_from_db()
    assert scanner.breaker_state == BreakerState.HALF_OPEN and not breaker.trial_due(scanner)
    task = ScanTaskFactory(pool=scanner.pool)
    assert breaker.record_failure(scanner, "still down", task.pk) == BreakerState.OPEN  # trial failed
    Scanner.objects.filter(pk=scanner.pk).update(breaker_state=BreakerState.HALF_OPEN)
    scanner.refresh_from_db()
    breaker.record_success(scanner, task.pk)
    scanner.refresh_from_db()
    assert scanner.breaker_state == BreakerState.CLOSED and scanner.breaker_opened_at is None
    assert TaskEvent.objects.filter(task=task, kind="breaker", message__contains="closed").exists()


@pytest.mark.django_db(transaction=True)
def test_only_one_racer_wins_the_trial():
    scanner = ScannerFactory(breaker_state=BreakerState.OPEN,
                             breaker_opened_at=timezone.now() - timedelta(seconds=999))
    wins = []
    barrier = threading.Barrier(6)

    def go():
        try:
            barrier.wait()
            wins.append(breaker.begin_trial(Scanner.objects.get(pk=scanner.pk)))
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_reset_breaker(db, redis_conn, caplog):
    scanner = ScannerFactory(breaker_state=BreakerState.OPEN, consecutive_failures=9,
                             breaker_opened_at=timezone.now())
    with caplog.at_level(logging.WARNING, logger="scanners.breaker"):
        breaker.reset_breaker(scanner.pk, actor="carol")
    scanner.refresh_from_db()
    assert (scanner.breaker_state, scanner.consecutive_failures, scanner.breaker_opened_at) == ("closed", 0, None)
    assert "reset by carol" in caplog.text


def test_down_scanner_is_skipped_then_closes_after_cooldown(transactional_db, redis_conn, emulator, settings):  # noqa: F811
    pool, (down, healthy) = emulated_pool(emulator, [2, 1])
    emulator.control(0).down()
    tasks = [submit(pool=pool.name, name=f"brk-{i}", targets=["192.0.2.10"]) for i in range(4)]
    run_until([pool], lambda: all(ScanTask.objects.get(pk=t.pk).is_terminal for t in tasks), timeout=90)
    rows = list(ScanTask.objects.filter(pk__in=[t.pk for t in tasks]))
    assert {r.status for r in rows} == {"completed"}, [(r.status, r.error_message) for r in rows]
    assert {r.assigned_scanner_id for r in rows} == {healthy.pk}
    down.refresh_from_db()
    assert down.breaker_state == BreakerState.OPEN and down.active_scans == 0
    assert TaskEvent.objects.filter(kind="breaker", data__to="open").exists()
    assert TaskEvent.objects.filter(kind="retry", message__contains="back in the queue").exists()
    # back up; after the cooldown the next task is its trial, and success closes the breaker
    emulator.control(0).up()
    settings.SCANPOOL_BREAKER_COOLDOWN = 1
    Scanner.objects.filter(pk=down.pk).update(breaker_opened_at=timezone.now() - timedelta(seconds=2))
    trial = submit(pool=pool.name, name="brk-trial", targets=["192.0.2.10"])
    run_until([pool], lambda: ScanTask.objects.get(pk=trial.pk).is_terminal, timeout=30)
    trial.refresh_from_db()
    assert trial.status == "completed" and trial.assigned_scanner_id == down.pk
    assert TaskEvent.objects.filter(task=trial, kind="breaker", data__to="half_open").exists()
    assert TaskEvent.objects.filter(task=trial, kind="breaker", data__to="closed").exists()
    assert Scanner.objects.get(pk=down.pk).breaker_state == BreakerState.CLOSED


def test_all_scanners_down_keeps_tasks_queued(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1, 1])
    emulator.control(0).down()
    emulator.control(1).down()
    tasks = [submit(pool=pool.name, name=f"alldown-{i}", targets=["192.0.2.10"]) for i in range(3)]
    for _ in range(12):
        run_jobs([pool])
    assert set(ScanTask.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True)) == {"queued"}
    assert set(Scanner.objects.filter(pool=pool).values_list("breaker_state", flat=True)) == {"open"}
    assert not ScanTask.objects.filter(slot_held=True).exists()
    assert set(Scanner.objects.filter(pool=pool).values_list("active_scans", flat=True)) == {0}


def test_scanner_seen_unreachable_gets_the_trial_after_cooldown_and_success_makes_it_ready(db):
    """A health check that ran while the scanner was down must not keep it out once its breaker's
    cooldown is over: the trial is the probe, and a call that works marks it ready again."""
    from scanners.models import Health
    from scanners.selection import candidates

    down = ScannerFactory(health=Health.UNREACHABLE, breaker_state=BreakerState.OPEN, consecutive_failures=3,
                          breaker_opened_at=timezone.now())
    assert candidates(down.pool_id) == []  # cooling down
    Scanner.objects.filter(pk=down.pk).update(breaker_opened_at=timezone.now() - timedelta(seconds=301))
    assert [s.pk for s in candidates(down.pool_id)] == [down.pk]  # due: one trial, whatever it was last seen as

    # Unreachable with a closed breaker (only a health check saw it down): out until it answers.
    quiet = ScannerFactory(health=Health.UNREACHABLE)
    assert candidates(quiet.pool_id) == []
    # A licence problem is not passing: no trial, whatever the breaker says.
    unlicensed = ScannerFactory(health=Health.UNLICENSED, breaker_state=BreakerState.OPEN, breaker_opened_at=None)
    assert candidates(unlicensed.pool_id) == []

    Scanner.objects.filter(pk=down.pk).update(breaker_opened_at=timezone.now())  # cooling down again
    down.refresh_from_db()
    breaker.record_success(down)  # a running scan's poll there worked: it answers, its trial is due now
    down.refresh_from_db()
    assert down.health == Health.READY and down.last_seen_at
    assert (down.breaker_state, down.breaker_opened_at) == (BreakerState.OPEN, None)
    assert [s.pk for s in candidates(down.pool_id)] == [down.pk]


def test_a_scan_export_the_scanner_failed_to_prepare_is_not_counted(db):
    """The scanner answered (the export's status is 'error'): one scan's results, not the scanner's health."""
    from scanners.adapters.base import ScanExportError

    scanner = ScannerFactory(consecutive_failures=2)
    for _ in range(5):
        assert breaker.record_failure(scanner, ScanExportError("export failed", scanner=scanner.name)) == "closed"
    scanner.refresh_from_db()
    assert (scanner.breaker_state, scanner.consecutive_failures, scanner.last_error) == ("closed", 2, "")


def test_another_steps_success_makes_an_open_breakers_trial_due_and_the_trial_decides(db, redis_conn, caplog):
    """A running scan's poll that works while the breaker is open does not close it (closing at once sent every
    waiting task to a scanner that may be flapping): the trial is due at once, nothing goes into the polled task's
    timeline, and only the trial's outcome closes or reopens the breaker (DESIGN §4)."""
    scanner = ScannerFactory(breaker_state=BreakerState.OPEN, breaker_opened_at=timezone.now(),
                             consecutive_failures=3)
    assert not breaker.trial_due(scanner)
    polled = ScanTaskFactory(pool=scanner.pool)
    with caplog.at_level(logging.WARNING, logger="scanners.breaker"):
        breaker.record_success(scanner, polled.pk)
    row = Scanner.objects.get(pk=scanner.pk)
    assert (row.breaker_state, row.breaker_opened_at, row.consecutive_failures) == (BreakerState.OPEN, None, 0)
    assert breaker.trial_due(row) and "trial due now" in caplog.text
    assert not TaskEvent.objects.filter(task=polled, kind="breaker").exists()
    breaker.record_success(row, polled.pk)  # another poll: still open, nothing more said
    assert Scanner.objects.get(pk=scanner.pk).breaker_state == BreakerState.OPEN
    assert breaker.begin_trial(row)
    trial = ScanTaskFactory(pool=scanner.pool)
    row.refresh_from_db()
    assert breaker.record_failure(row, "still flapping", trial.pk) == BreakerState.OPEN  # trial failed: full cooldown
    row.refresh_from_db()
    assert row.breaker_opened_at is not None and not breaker.trial_due(row)
    Scanner.objects.filter(pk=scanner.pk).update(breaker_state=BreakerState.HALF_OPEN)
    row.refresh_from_db()
    breaker.record_success(row, trial.pk)
    assert Scanner.objects.get(pk=scanner.pk).breaker_state == BreakerState.CLOSED
    assert TaskEvent.objects.filter(task=trial, kind="breaker").last().data["from"] == BreakerState.HALF_OPEN


def test_a_stale_copy_does_not_close_an_open_breaker(db, redis_conn):
    """The step's copy of the scanner row says closed with failures, another worker opened the breaker since."""
    scanner = ScannerFactory(consecutive_failures=2)
    Scanner.objects.filter(pk=scanner.pk).update(breaker_state=BreakerState.OPEN, breaker_opened_at=timezone.now(),
                                                 consecutive_failures=3)
    breaker.record_success(scanner)
    assert Scanner.objects.get(pk=scanner.pk).breaker_state == BreakerState.OPEN
