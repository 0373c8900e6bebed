"""A scan that completed on its scanner but whose export keeps failing (the emulator's ``export_error`` fault).

The results exist only on the scanner: the finish step keeps trying with growing backoff until the task's deadline;
the timeline says once that the export fails (with the scanner's error) and then how it ended; an export failure is
about one scan's results, so the scanner's breaker does not count it (it neither opens for launches nor flaps)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from scanners.models import BreakerState, Scanner
from tasks.engine import chain, export_retry
from tasks.models import MetricTotal, ScanTask, TaskEvent
from tasks.services import submit
from tests.emulator import emulator, emulator_factory  # noqa: F401 - fixtures
from tests.engine_support import emulated_pool, immediate_retries, reread, run_until  # noqa: F401 - fixture
from tests.factories import PoolFactory, ScanTaskFactory
from tests.helpers import wait_for
from tests.worker_process import workers  # noqa: F401 - fixture

FAILING = {f"data__{export_retry.MARK}__isnull": False}


def _breaker_events(task) -> list[str]:
    return list(TaskEvent.objects.filter(task_id=task.pk, kind="breaker").values_list("message", flat=True))


def _export_warnings(task) -> list[str]:
    return [m for m in TaskEvent.objects.filter(task_id=task.pk, kind="warning").values_list("message", flat=True)
            if "export" in m]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_export_fails_a_few_rounds_then_works_one_note_no_breaker_flaps(workers, emulator_factory):  # noqa: F811
    """The tester's report, with a real worker: every round of failed export attempts (3 here, as many as the
    breaker's threshold) opened the scanner's breaker and the next poll closed it, each flip and each round written
    into the task's timeline."""
    emu = emulator_factory(instances=1, scan_seconds=1)
    emu.control(0).set_faults(export_error=True)
    pool, (scanner,) = emulated_pool(emu, [2])
    # A round is the finish step and its 2 RQ retries: 3 failed exports in a row, as many as the breaker's threshold.
    # The retries come at once: their spacing is not under test, and 1 s each made every round (and so the growing
    # wait between rounds, which is as long as the export has been failing) seconds longer.
    w = workers(SCANPOOL_BREAKER_THRESHOLD="3", SCANPOOL_BREAKER_COOLDOWN="60", SCANPOOL_RETRY_INTERVALS="0,0")
    task = submit(pool=pool.name, name="export-flaky", targets=["192.0.2.10"])
    seen: set[str] = set()

    def rounds_after_note(n: int):
        seen.add(Scanner.objects.get(pk=scanner.pk).breaker_state)
        note = TaskEvent.objects.filter(task_id=task.pk, **FAILING).first()
        if note is None:
            return None
        links.add(chain.current_job_id(task.pk) or "")
        return len(links - {""}) > n  # a new chain link per failed round

    links: set[str] = set()
    wait_for(lambda: rounds_after_note(2), 60, "two more failed export rounds after the note", [w])
    emu.control(0).set_faults(export_error=False)
    wait_for(lambda: (seen.add(Scanner.objects.get(pk=scanner.pk).breaker_state) or reread(task).is_terminal),
             60, "the task to end", [w])
    row = reread(task)
    assert row.status == "completed", (row.status, row.error_message)
    assert row.results_summary["hosts"] == 1 and row.progress == 100
    notes = TaskEvent.objects.filter(task_id=task.pk, **FAILING)
    assert notes.count() == 1
    note = notes.get()
    assert note.kind == "warning" and "completed on" in note.message and "its export fails" in note.message
    assert "failed to prepare the export" in note.message and "failed to prepare" in note.data["error"]
    assert len(_export_warnings(task)) == 1, _export_warnings(task)
    assert TaskEvent.objects.filter(task_id=task.pk, message__contains="worked, after failing since").count() == 1
    assert _breaker_events(task) == []
    assert seen == {BreakerState.CLOSED}
    scanner.refresh_from_db()
    assert scanner.breaker_state == BreakerState.CLOSED and scanner.consecutive_failures == 0
    assert not row.slot_held and scanner.active_scans == 0


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_export_failing_until_the_deadline_times_out_with_the_error_and_keeps_the_scan(
        transactional_db, redis_conn, emulator, settings):  # noqa: F811
    settings.SCANPOOL_DELETE_FINISHED_SCANS = True  # only a fetched scan is deleted: this one stays on the scanner
    settings.SCANPOOL_BREAKER_THRESHOLD = 2
    emulator.control(0).set_faults(export_error=True)
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="export-broken", targets=["192.0.2.10"])
    run_until([pool], lambda: TaskEvent.objects.filter(task_id=task.pk, **FAILING).exists(), timeout=30)
    assert reread(task).status == "running" and reread(task).scanner_status == "completed"
    ScanTask.objects.filter(pk=task.pk).update(deadline_at=timezone.now() + timedelta(seconds=3))
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    row = reread(task)
    assert row.status == "timeout" and row.error_kind == "timeout", (row.status, row.error_message)
    assert "before the results could be fetched" in row.error_message
    assert "its export kept failing since" in row.error_message and "failed to prepare the export" in row.error_message
    assert f"still on {scanner.name}" in row.error_message
    assert not row.slot_held and Scanner.objects.get(pk=scanner.pk).active_scans == 0
    scans = [s for s in emulator.control(0).scans() if "export-broken" in s["name"]]
    assert [s["status"] for s in scans] == ["completed"]  # neither stopped nor deleted: its results are there
    assert TaskEvent.objects.filter(task_id=task.pk, **FAILING).count() == 1 and len(_export_warnings(task)) == 1
    assert _breaker_events(task) == []
    scanner.refresh_from_db()
    assert scanner.breaker_state == BreakerState.CLOSED and scanner.consecutive_failures == 0
    ended = TaskEvent.objects.get(task_id=task.pk, kind="status", to_status="timeout")
    assert ended.message == row.error_message
    totals = {(m.metric, m.labels): m.value for m in MetricTotal.objects.all()}
    labels = json.dumps({"pool": pool.name, "scan_type": "untrusted", "status": "timeout"}, separators=(",", ":"))
    assert totals[("nessus_scans_total", labels)] == 1
    assert not any(m == "nessus_validation_failures_total" for m, _ in totals)


@pytest.mark.django_db
def test_the_wait_between_rounds_grows_with_the_failure_within_bounds(settings):
    settings.SCANPOOL_BREAKER_COOLDOWN = 300
    task = ScanTaskFactory(pool=PoolFactory(poll_interval_seconds=5))
    now = timezone.now()
    waits = [export_retry.next_delay(task, now - timedelta(seconds=s), now) for s in (0, 3, 20, 120, 299, 5000)]
    assert waits == [5, 5, 20, 120, 299, 300]
