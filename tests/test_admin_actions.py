"""The admin's add form and actions call the engine's services: submit, cancel, retry, reset breaker."""

from __future__ import annotations

import pytest
from django.urls import reverse

from scanners.models import BreakerState, Scanner
from tasks.models import ScanTask, TaskEvent
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory, SuperUserFactory


@pytest.fixture
def admin_client_(client, db, redis_conn):
    user = SuperUserFactory(username="operator")
    client.force_login(user)
    return client


def _action(client, url_name: str, action: str, ids: list) -> object:
    return client.post(reverse(url_name), {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_add_scan_in_admin_goes_through_submit(admin_client_):
    pool = PoolFactory(name="lab", scope=["10.0.0.0/8"])
    url = reverse("admin:tasks_scantask_add")
    bad = admin_client_.post(url, {"pool": "lab", "name": "n", "targets": "192.168.1.1", "scan_type": "untrusted"})
    assert bad.status_code == 200 and "not allowed in pool" in bad.content.decode()
    assert ScanTask.objects.count() == 0
    good = admin_client_.post(url, {"pool": "lab", "name": "from admin", "targets": "10.1.2.3, 10.1.2.4",
                                    "scan_type": "authenticated", "credential_username": "root",
                                    "credential_password": "pw-xyz"})
    assert good.status_code == 302
    task = ScanTask.objects.get()
    assert (task.pool, task.status, task.requested_via) == (pool, "queued", "admin")
    assert task.targets == ["10.1.2.3", "10.1.2.4"] and task.requested_by.username == "operator"


def test_cancel_action(admin_client_):
    task = ScanTaskFactory(status="queued")
    done = ScanTaskFactory(status="completed")
    page = _action(admin_client_, "admin:tasks_scantask_changelist", "cancel_tasks", [task.pk, done.pk])
    text = page.content.decode()
    assert "Cancelled 1 task(s)" in text and "only scans pending approval, queued or running can be cancelled" in text
    task.refresh_from_db()
    assert task.status == "cancelled"
    assert TaskEvent.objects.filter(task=task, to_status="cancelled", actor="operator").exists()
    assert ScanTask.objects.get(pk=done.pk).status == "completed"


def test_retry_action(admin_client_):
    failed = ScanTaskFactory(status="failed", error_kind="permanent", error_message="refused")
    page = _action(admin_client_, "admin:tasks_scantask_changelist", "retry_dead_letters", [failed.pk])
    assert "Retried 1 task(s)" in page.content.decode()
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.error_message) == ("queued", 2, "")
    assert TaskEvent.objects.filter(task=failed, kind="retry", actor="operator").exists()


def test_reset_breaker_action(admin_client_):
    scanner = ScannerFactory(breaker_state=BreakerState.OPEN, consecutive_failures=7)
    page = _action(admin_client_, "admin:scanners_scanner_changelist", "reset_breaker_action", [scanner.pk])
    assert page.status_code == 200 and scanner.name in page.content.decode()
    scanner = Scanner.objects.get(pk=scanner.pk)
    assert scanner.breaker_state == BreakerState.CLOSED and scanner.consecutive_failures == 0
