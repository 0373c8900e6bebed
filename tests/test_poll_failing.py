"""A running scan whose scanner does not answer its status calls for a while (the emulator's ``error_match`` fault on
``GET /scans/{id}``): polling goes on, and the task's timeline says so once, then once that the scanner answered
again — not one warning per failed round."""

from __future__ import annotations

import pytest

from scanners.adapters import TransientScannerError
from tasks.engine import poll_failing
from tasks.models import TaskEvent
from tasks.services import submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, reread, run_until  # noqa: F401 - fixture
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory

STATUS_CALLS = r"^GET /scans/[0-9]+$"


def _warnings(task) -> list[str]:
    return list(TaskEvent.objects.filter(task_id=task.pk, kind="warning").values_list("message", flat=True))


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_scanner_unreachable_for_several_poll_rounds_one_warning_then_one_answered_again(
        transactional_db, redis_conn, emulator, settings):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="poll-dark", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "running" and reread(task).scanner_scan_id is not None)
    emulator.control(0).set_faults(error_match=STATUS_CALLS, error_rate=1.0)
    # Each round is the poll and its RQ retries (SCANPOOL_RETRY_INTERVALS: 3), every status call answered 500.
    per_round = 1 + len(settings.SCANPOOL_RETRY_INTERVALS)
    run_until([pool], lambda: emulator.control(0).stats()["injected_errors"] >= 4 * per_round, timeout=60)
    assert reread(task).status == "running"
    emulator.control(0).set_faults(error_rate=0.0, error_match="")
    run_until([pool], lambda: reread(task).is_terminal, timeout=60)
    row = reread(task)
    assert row.status == "completed", (row.status, row.error_message)
    warnings = _warnings(task)
    assert len(warnings) == 1, warnings
    note = TaskEvent.objects.get(task_id=task.pk, kind="warning")
    assert note.data[poll_failing.MARK] == row.attempts and note.data["error"] and note.data["deadline"]
    assert f"scanner {scanner.name} unreachable" in note.message and note.data["error"] in note.message
    assert "until the deadline" in note.message
    answered = TaskEvent.objects.filter(task_id=task.pk, message__contains="answered again")
    assert answered.count() == 1
    assert answered.get().kind == "info"
    assert f"scanner {scanner.name} answered again, after being unreachable since" in answered.get().message
    assert answered.get().created_at > note.created_at


@pytest.mark.django_db
def test_each_outage_of_an_attempt_is_noted_once_and_an_older_attempts_note_does_not_count():
    pool = PoolFactory()
    task = ScanTaskFactory(pool=pool, status="running", attempts=1, scanner_scan_id=7,
                           assigned_scanner=ScannerFactory(pool=pool))
    error = TransientScannerError("connection refused")
    for _ in range(3):
        poll_failing.poll_failed(task, error, "unreachable", 5, 5)
    poll_failing.poll_answered(task)
    poll_failing.poll_answered(task)
    assert len(_warnings(task)) == 1
    poll_failing.poll_failed(task, error, "unreachable", 5, 5)  # a new outage: noted again, once
    poll_failing.poll_failed(task, error, "unreachable", 5, 5)
    assert len(_warnings(task)) == 2
    task.attempts = 2  # retried: the first attempt's unanswered note is not this attempt's outage
    assert poll_failing.failing_since(task) is None
    poll_failing.poll_answered(task)
    assert TaskEvent.objects.filter(task_id=task.pk, message__contains="answered again").count() == 1
