"""``POST /api/v1/scans/{id}/fetch-results/``, the admin action "Fetch the results again" and ``manage.py dlq
refetch``: thin entry points to ``tasks.refetch``, with retry's permission (``tasks.change_scantask``), its error
shapes, and the status API's troubleshooting naming the endpoint for a scan whose results are still on its scanner."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from tasks.engine import export_retry
from tasks.models import ScanTask, TaskEvent
from tasks.services import submit
from tests.api_support import OPERATE, READ, SUBMIT, assert_error, staff_client, token_client, user_with
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, reread, run_until  # noqa: F401 - fixture
from tests.factories import ScannerFactory, ScanTaskFactory

URL = "/api/v1/scans/{}/fetch-results/"
FETCHES = {f"data__{export_retry.REFETCH}__isnull": False}


def _finishing_timeout(**kwargs) -> ScanTask:
    scanner = ScannerFactory()
    fields = {"pool": scanner.pool, "assigned_scanner": scanner, "status": "timeout", "scanner_status": "completed",
              "scanner_scan_id": 42, "error_kind": "timeout", "progress": 100,
              "error_message": "deadline of 3600s passed before the results could be fetched",
              "started_at": timezone.now() - timedelta(hours=1), "finished_at": timezone.now()}
    return ScanTaskFactory(**{**fields, **kwargs})


@pytest.mark.django_db
def test_operator_fetches_read_only_and_submit_only_get_403(fresh_throttle_counts, redis_conn):
    task = _finishing_timeout()
    read_only, _ = token_client(user_with(OPERATE, "ro-operator"), read_only=True, name="ro")
    submitter, _ = token_client(user_with(SUBMIT, "submitter"), name="submit")
    reader, _ = token_client(user_with(READ, "reader"), name="read")
    for client in (read_only, submitter, reader):
        assert_error(client.post(URL.format(task.pk), format="json"), 403)
    assert reread(task).status == "timeout" and not TaskEvent.objects.filter(task_id=task.pk, **FETCHES).exists()

    operator, _ = token_client(user_with(OPERATE, "op"), name="ops")
    response = operator.post(URL.format(task.pk), {"reason": "scanner disk cleaned"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "running" and body["scanner_status"] == "completed" and body["error_message"] == ""
    event = TaskEvent.objects.get(task_id=task.pk, **FETCHES)
    assert event.message.startswith("results fetch requested by op via api token ops: scanner disk cleaned")
    # Again: it is fetching now (409, naming the field); unknown task 404; unknown body field 400.
    error = assert_error(operator.post(URL.format(task.pk), format="json"), 409, code="invalid_state",
                         field="task_id")
    assert "is fetching its results now" in error["message"]
    assert_error(operator.post(URL.format("6b1f0c3e-0000-4000-8000-000000000000"), format="json"), 404,
                 code="not_found")
    assert_error(operator.post(URL.format(task.pk), {"why": "x"}, format="json"), 400, code="unknown_field")


@pytest.mark.django_db
def test_a_scan_that_did_not_complete_is_409_use_retry(api):
    task = _finishing_timeout(scanner_status="running")
    error = assert_error(api.post(URL.format(task.pk), format="json"), 409, code="invalid_state", field="task_id")
    assert "did not complete on its scanner" in error["message"] and "use retry: it scans again" in error["message"]


@pytest.mark.django_db
def test_status_troubleshooting_names_the_endpoint_only_when_the_results_can_be_fetched_again(api):
    task = _finishing_timeout()
    entries = api.get(f"/api/v1/scans/{task.pk}/").json()["troubleshooting"]
    assert [e["cause"] for e in entries] == ["results_on_scanner"]
    steps = " ".join(entries[0]["next_steps"])
    assert f"POST /api/v1/scans/{task.pk}/fetch-results/" in steps and "Fetch the results again" in steps
    assert "a retry scans the targets again" in steps and entries[0]["evidence"] == task.error_message
    stopped = _finishing_timeout(scanner_status="canceled")
    assert api.get(f"/api/v1/scans/{stopped.pk}/").json()["troubleshooting"] == []
    # Its results endpoints say the same instead of "will never have any".
    error = assert_error(api.get(f"/api/v1/scans/{task.pk}/results/"), 409, code="no_results", field="task_id")
    assert "still on scanner" in error["message"] and f"/api/v1/scans/{task.pk}/fetch-results/" in error["message"]
    assert "never" not in error["message"]
    error = assert_error(api.get(f"/api/v1/scans/{stopped.pk}/results/"), 409, code="no_results")
    assert "will never have any" in error["message"]


@pytest.mark.integration
@pytest.mark.usefixtures("immediate_retries")
def test_fetch_results_over_the_api_completes_the_same_scan(transactional_db, redis_conn, emulator, api):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(export_error=True)
    task = submit(pool=pool.name, name="api-refetch", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).scanner_status == "completed", timeout=30)
    ScanTask.objects.filter(pk=task.pk).update(deadline_at=timezone.now() + timedelta(seconds=2))
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    timed_out = reread(task)
    assert timed_out.status == "timeout"
    emulator.control(0).set_faults(export_error=False)
    assert api.post(URL.format(task.pk), format="json").json()["status"] == "running"
    run_until([pool], lambda: reread(task).is_terminal, timeout=30)
    body = api.get(f"/api/v1/scans/{task.pk}/").json()
    assert body["status"] == "completed" and body["results_summary"]["hosts"] == 1, body["error_message"]
    assert body["troubleshooting"] == [] and reread(task).scanner_scan_id == timed_out.scanner_scan_id
    assert [s["launches"] for s in emulator.control(0).scans() if "api-refetch" in s["name"]] == [1]
    assert api.get(f"/api/v1/scans/{task.pk}/results/").status_code == 200


@pytest.mark.django_db
def test_admin_action_fetches_again_and_says_why_not(redis_conn):
    client = staff_client(user_with(OPERATE, "admin-op"))
    task = _finishing_timeout()
    done = ScanTaskFactory(status="completed")
    page = client.post(reverse("admin:tasks_scantask_changelist"),
                       {"action": "refetch_results", "_selected_action": [str(task.pk), str(done.pk)]}, follow=True)
    text = page.content.decode()
    assert "Fetching the results again of 1 task(s)" in text
    assert "is completed: only a failed or timed-out scan whose results could not be fetched" in text
    assert reread(task).status == "running" and reread(done).status == "completed"
    assert TaskEvent.objects.filter(task_id=task.pk, actor="admin-op", **FETCHES).exists()


@pytest.mark.django_db
def test_admin_action_needs_the_change_permission(redis_conn):
    client = staff_client(user_with(READ, "admin-reader"))
    page = client.get(reverse("admin:tasks_scantask_changelist"))
    assert page.status_code == 200 and "refetch_results" not in page.content.decode()


@pytest.mark.django_db
def test_dlq_refetch_command_fetches_one_task_or_says_why_not(redis_conn):
    def dlq(*args: str) -> str:
        out = StringIO()
        call_command("dlq", *args, stdout=out, verbosity=2)
        return out.getvalue()

    task = _finishing_timeout()
    with pytest.raises(CommandError, match="refetch: name one task with --task ID"):
        dlq("refetch", "--all")
    assert "would fetch the results again" in dlq("refetch", "--task", str(task.pk), "--dry-run")
    assert reread(task).status == "timeout"
    assert "fetching the results of scan 42 again (no new scan)" in dlq("refetch", "--task", str(task.pk))
    assert reread(task).status == "running"
    assert TaskEvent.objects.get(task_id=task.pk, **FETCHES).actor.startswith("dlq refetch (")
    with pytest.raises(CommandError, match=r"refetch: .* is fetching its results now"):
        dlq("refetch", "--task", str(task.pk))
    with pytest.raises(CommandError, match="refetch: no scan task"):
        dlq("refetch", "--task", "6b1f0c3e-0000-4000-8000-000000000000")
