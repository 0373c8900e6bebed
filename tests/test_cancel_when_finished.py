"""A cancel that lands once the scan has finished on its scanner (an outside review): the task ended ``cancelled``
while its worker still exported and stored the results, and its timeline said the scan was "stopped" although it
had completed on the scanner.

The rule (docs/architecture.md "Cancel"): once a poll has recorded that the scan completed on its scanner, the
task is finishing — its results are being fetched and stored — and a cancel is refused as too late, through every
entry (service, API, admin, MCP); the task ends by its results. A cancel that lands before any poll saw the scan
complete wins: nothing is fetched, and the timeline says the scan had already completed there, not that it was
stopped. Either way the slot is released exactly once and no step of the task is left behind.

Real database, real Redis, the Nessus emulator over HTTP; jobs run in-process (RQ's SimpleWorker). The cancel is
made to land at an exact point of a step by wrapping the function the step calls there.
"""

from __future__ import annotations

import anyio
import pytest
from django.urls import reverse
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from scanners.adapters.nessus.adapter import NessusAdapter
from scanners.models import Scanner
from tasks.engine import chain, monitor
from tasks.errors import TaskStateError
from tasks.models import Finding, ScanTask, TaskEvent
from tasks.queues import pool_queues
from tasks.services import cancel, submit
from tests.api_support import OPERATE, assert_error, token_client, user_with
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, reread, run_jobs, run_until  # noqa: F401 - immediate_retries: fixture
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("immediate_retries")]

TOO_LATE = "already completed on scanner"




def _scan(emu, name: str) -> dict:
    return next(s for s in emu.control(0).scans() if name in s["name"])


def _messages(task) -> list[str]:
    return list(TaskEvent.objects.filter(task=task).order_by("created_at", "id").values_list("message", flat=True))


def _nothing_left_behind(task, pool, scanner) -> None:
    """Slot released exactly once, no job of the task waiting, scheduled or running, its chain ended."""
    row = reread(task)
    assert not row.slot_held and Scanner.objects.get(pk=scanner.pk).active_scans == 0
    released = [m for m in _messages(task) if "slot released" in m]
    assert len(released) <= 1, released
    for queue in pool_queues(pool):
        ids = (queue.get_job_ids() + ScheduledJobRegistry(queue=queue).get_job_ids()
               + StartedJobRegistry(queue=queue).get_job_ids())
        assert not [i for i in ids if i.startswith(str(task.pk))], ids
    assert chain.current_job_id(task.pk) is None


def _no_stop_story(task) -> None:
    """No event says scanpool stopped a scan that had completed on its scanner."""
    said = _messages(task)
    assert not [m for m in said if "stopped on" in m or "canceled on" in m], said


# ----------------------------------------------------------- the scan completed: a cancel is too late


@pytest.mark.parametrize("phase", ["exporting", "storing"])
def test_a_cancel_while_the_results_are_fetched_is_refused_and_the_task_completes(
        transactional_db, redis_conn, emulator, monkeypatch, phase):  # noqa: F811
    """The review's case: the scan completed on the scanner; the cancel lands while the worker exports the
    ``.nessus`` (before the download) or once it has stored and validated it (before the task's final status)."""
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name=f"cancel-while-{phase}", targets=["192.0.2.10"])
    refusals: list[Exception] = []

    def cancel_now():
        try:
            cancel(task.pk, actor="alice")
        except TaskStateError as exc:
            refusals.append(exc)
        else:
            refusals.append(AssertionError("the cancel was accepted"))

    if phase == "exporting":
        export = NessusAdapter.export_results

        def exporting(self, scan_id, destination):
            cancel_now()
            return export(self, scan_id, destination)

        monkeypatch.setattr(NessusAdapter, "export_results", exporting)
    else:
        ingest = monitor.ingest_results

        def storing(task_id, path):
            outcome = ingest(task_id, path)
            cancel_now()
            return outcome

        monkeypatch.setattr(monitor, "ingest_results", storing)

    run_until([pool], lambda: reread(task).is_terminal and not reread(task).slot_held, timeout=30)
    assert len(refusals) == 1 and isinstance(refusals[0], TaskStateError), refusals
    assert TOO_LATE in refusals[0].message and "results" in refusals[0].message
    row = reread(task)
    assert row.status == "completed", (row.status, row.error_message)
    assert row.results_summary and Finding.objects.filter(task=task).exists()
    assert _scan(emulator, f"cancel-while-{phase}")["status"] == "completed"  # never stopped there
    _no_stop_story(task)
    assert any("cancel by alice refused" in m for m in _messages(task)), _messages(task)
    run_jobs([pool], all_scheduled=True)
    _nothing_left_behind(task, pool, scanner)


def test_every_entry_refuses_a_cancel_once_the_scan_completed(
        transactional_db, redis_conn, emulator, live_server, client, fresh_throttle_counts):  # noqa: F811
    """Service, REST API, admin action and MCP tool give the same answer: too late, results are being stored."""
    from mcp import Client

    from tasks.mcp.client import ApiConfig, ScanpoolApi
    from tasks.mcp.server import build_server
    from tests.factories import SuperUserFactory
    from tests.mcp_support import tool_error

    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="finishing", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "running", timeout=20)
    wait_for(lambda: _scan(emulator, "finishing")["status"] == "completed", 20, "the scan to complete")
    monitor.poll(task.pk)  # the poll sees it completed: the finish step is queued, not run yet
    assert reread(task).status == "running" and reread(task).scanner_status == "completed"

    with pytest.raises(TaskStateError) as refused:
        cancel(task.pk, actor="alice")
    assert TOO_LATE in refused.value.message

    api, key = token_client(user_with(OPERATE, "api-user"))
    error = assert_error(api.post(f"/api/v1/scans/{task.pk}/cancel/", {"reason": "oops"}, format="json"), 409,
                         code="invalid_state", field="task_id")
    assert TOO_LATE in error["message"]

    client.force_login(SuperUserFactory(username="operator"))
    page = client.post(reverse("admin:tasks_scantask_changelist"),
                       {"action": "cancel_tasks", "_selected_action": [str(task.pk)]}, follow=True)
    text = page.content.decode()
    assert "Not cancelled" in text and TOO_LATE in text and "Cancelled 1 task" not in text

    server = build_server(ScanpoolApi(ApiConfig(url=live_server.url, token=key)))

    async def scenario() -> dict:
        async with Client(server) as mcp:
            return tool_error(await mcp.call_tool("cancel_scan", {"task_id": str(task.pk)}))

    mcp_error = anyio.run(scenario)
    assert mcp_error["code"] == "invalid_state" and TOO_LATE in mcp_error["message"]
    for _ in range(3):  # the same person asking again: refused each time, noted once
        with pytest.raises(TaskStateError):
            cancel(task.pk, actor="alice")

    assert reread(task).status == "running"
    run_until([pool], lambda: reread(task).is_terminal and not reread(task).slot_held, timeout=30)
    assert reread(task).status == "completed" and reread(task).results_summary
    _no_stop_story(task)
    refusals = [m for m in _messages(task) if "refused" in m and "cancel" in m]
    # One timeline note per client whose cancel was refused, naming it: the service's alice, the admin's operator,
    # and the API token's client (the MCP tool calls the API with the same token: the same client asking again).
    assert len(refusals) == 3, refusals
    run_jobs([pool], all_scheduled=True)
    _nothing_left_behind(task, pool, scanner)


# ------------------------------------------------ the scan completed, no poll saw it yet: the cancel wins


def _assert_cancelled_unfetched(task, pool, scanner, emu, name: str) -> None:
    row = reread(task)
    assert row.status == "cancelled"
    assert not row.results_summary and not row.results_file and not Finding.objects.filter(task=task).exists()
    assert _scan(emu, name)["status"] == "completed"
    _no_stop_story(task)
    said = _messages(task)
    assert any("had already completed on" in m and "not fetched" in m for m in said), said
    run_jobs([pool], all_scheduled=True)
    _nothing_left_behind(task, pool, scanner)


def test_a_cancel_before_any_poll_saw_the_scan_complete_wins_and_says_so(
        transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="done-unnoticed", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "running", timeout=20)
    wait_for(lambda: _scan(emulator, "done-unnoticed")["status"] == "completed", 20, "the scan to complete")
    assert cancel(task.pk, actor="alice").status == "cancelled"  # scanpool did not know yet: the cancel wins
    run_until([pool], lambda: not reread(task).slot_held, timeout=30)
    _assert_cancelled_unfetched(task, pool, scanner, emulator, "done-unnoticed")


def test_a_cancel_racing_the_poll_that_sees_the_scan_complete(
        transactional_db, redis_conn, emulator, monkeypatch):  # noqa: F811
    """The cancel commits after the poll read "completed" from the scanner and before it recorded it: the poll
    must not start the finish step for a cancelled task."""
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="raced-poll", targets=["192.0.2.10"])
    read = NessusAdapter.scan_state
    cancelled = []

    def scan_state(self, scan_id):
        state = read(self, scan_id)
        if state.status == "completed" and not cancelled:
            cancelled.append(cancel(task.pk, actor="alice").status)
        return state

    monkeypatch.setattr(NessusAdapter, "scan_state", scan_state)
    finishes = []
    finish = monitor.Finish.run

    def counted(self, task_, adapter):
        finishes.append(task_.pk)
        return finish(self, task_, adapter)

    monkeypatch.setattr(monitor.Finish, "run", counted)
    run_until([pool], lambda: reread(task).is_terminal and not reread(task).slot_held, timeout=30)
    assert cancelled == ["cancelled"] and finishes == []
    _assert_cancelled_unfetched(task, pool, scanner, emulator, "raced-poll")


def test_a_deadline_passing_while_the_results_cannot_be_fetched_stops_nothing(
        transactional_db, redis_conn, emulator):  # noqa: F811
    """The scan completed; its export keeps failing until the deadline. The task times out saying the results could
    not be fetched — not that a scan which had completed was stopped — and its slot is released at once."""
    from django.utils import timezone

    emulator.control(0).set_faults(export_error=True)
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="unfetchable", targets=["192.0.2.10"])
    run_until([pool], lambda: any("its export fails" in m for m in _messages(task)), timeout=30)
    assert reread(task).status == "running" and reread(task).scanner_status == "completed"
    ScanTask.objects.filter(pk=task.pk).update(deadline_at=timezone.now())  # the deadline passes meanwhile
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    row = reread(task)
    assert row.status == "timeout" and "before the results could be fetched" in row.error_message, row.error_message
    assert not row.slot_held and Scanner.objects.get(pk=scanner.pk).active_scans == 0
    assert _scan(emulator, "unfetchable")["status"] == "completed"
    _no_stop_story(task)
    run_jobs([pool], all_scheduled=True)
    _nothing_left_behind(task, pool, scanner)


def test_a_cancel_racing_the_dispatchers_claim_keeps_the_slot_for_the_stop_step(
        transactional_db, redis_conn, emulator, monkeypatch):  # noqa: F811
    """The dispatcher claims the task (slot taken, launch enqueued) after the cancel read it and before its UPDATE:
    the cancel must not free that slot itself as if the task had never reached a scanner — its launch may already
    be creating the scan. It cancels the task as claimed: the stop step looks at the scanner, then frees the slot."""
    from tasks import services
    from tasks.engine.dispatch import Claim, claim

    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="raced-claim", targets=["192.0.2.10"])
    real_get, reads = services._get, []

    def get_then_claim(task_id):
        read = real_get(task_id)
        reads.append(task_id)
        if len(reads) == 1:
            assert claim(pool.pk, task.pk, None) is Claim.CLAIMED  # the dispatcher, in between
        return read

    monkeypatch.setattr(services, "_get", get_then_claim)
    assert cancel(task.pk, actor="alice").status == "cancelled"
    monkeypatch.undo()
    assert reread(task).slot_held and Scanner.objects.get(pk=scanner.pk).active_scans == 1  # kept for the stop step
    run_until([pool], lambda: not reread(task).slot_held, timeout=30)
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    assert not [s for s in emulator.control(0).scans() if "raced-claim" in s["name"]]  # nothing created or left


def test_a_cancel_while_redis_is_down_warns_once_without_a_traceback(
        transactional_db, redis_conn, emulator, settings, caplog):  # noqa: F811
    """The cancel stands (the reconcile enqueues its lost stop later); the log says so in one warning instead of
    Django's ERROR with a traceback for the failed after-commit call."""
    from tasks.engine.dispatch import Claim, claim

    pool, _ = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="cancel-no-redis", targets=["192.0.2.10"])
    assert claim(pool.pk, task.pk, None) is Claim.CLAIMED
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    with caplog.at_level("INFO"):
        assert cancel(task.pk, actor="alice").status == "cancelled"
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith(f"enqueue_stop({pool.pk}, {task.pk}) not done, Redis: ConnectionError")
               and "the reconcile will make up for it" in w for w in warnings), warnings
