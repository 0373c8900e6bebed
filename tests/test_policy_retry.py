"""A retry is a new scan on behalf of the task's client: its policy as it is now applies (pools, scan types,
target allow-list, daily budgets where a retry counts as a scan, concurrency, approval), through the service,
the REST API and ``dlq retry``. A refusal leaves the task as it was and is recorded like a submission's."""

from __future__ import annotations

import pytest

from tasks.deadletters import DeadLetter
from tasks.deadletters import retry as retry_letters
from tasks.errors import BudgetExceeded, PolicyError
from tasks.models import ApprovalRule, EventKind, PolicyRefusal, ScanTask, TaskStatus
from tasks.policies.checks import usage
from tasks.services import retry, submit
from tests.api_support import OPERATE, fresh_throttle_counts, pool  # noqa: F401
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db


def failed(token, targets="192.0.2.10", **kw) -> ScanTask:
    task = submit(pool="dmz", name="scan", targets=targets, api_token=token, requested_via="api", **kw)
    ScanTask.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED, error_message="scanner said no")
    return ScanTask.objects.get(pk=task.pk)


def test_a_retry_counts_as_a_scan_of_the_day(pool):  # noqa: F811
    token, policy, _ = policy_client(max_scans_per_day=2, max_addresses_per_day=10)
    first = failed(token, targets="192.0.2.0/30")  # 4 addresses
    assert retry(first.pk, actor="agent").status == TaskStatus.QUEUED
    assert (usage(token.pk).scans_today, usage(token.pk).addresses_today) == (2, 8)
    ScanTask.objects.filter(pk=first.pk).update(status=TaskStatus.FAILED)
    with pytest.raises(BudgetExceeded) as info:
        retry(first.pk, actor="agent")
    assert info.value.reason == "scans_per_day" and info.value.used == 2
    task = ScanTask.objects.get(pk=first.pk)
    assert task.status == TaskStatus.FAILED and task.attempts == 2  # left as it was
    assert task.events.filter(kind=EventKind.RETRY).count() == 1
    refusal = PolicyRefusal.objects.get()
    assert (refusal.client, refusal.pool, refusal.reason) == ("agent", "dmz", "scans_per_day")
    policy.max_scans_per_day = 3
    policy.save()
    with pytest.raises(BudgetExceeded) as info:  # 8 + 4 addresses > 10
        retry(first.pk, actor="agent")
    assert info.value.reason == "addresses_per_day"
    policy.max_addresses_per_day = 12
    policy.save()
    assert retry(first.pk, actor="agent").attempts == 3
    assert task.events.filter(kind=EventKind.POLICY).count() == 3  # the submission and both retries


def test_a_retry_meets_todays_allow_list_pools_and_scan_types(pool):  # noqa: F811
    token, policy, _ = policy_client(target_allow_list=["192.0.2.0/28"])
    task = failed(token, targets=["192.0.2.1", "192.0.2.9"])
    policy.target_allow_list = ["192.0.2.0/29"]  # narrowed after the submission: 192.0.2.9 is out
    policy.save()
    with pytest.raises(PolicyError) as info:
        retry(task.pk, actor="operator")
    assert info.value.status_code == 403 and info.value.reason == "target_not_allowed"
    assert "192.0.2.9" in info.value.message
    assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.FAILED
    policy.target_allow_list = ["192.0.2.0/28"]
    policy.scan_types = ["authenticated"]
    policy.save()
    with pytest.raises(PolicyError) as info:
        retry(task.pk, actor="operator")
    assert info.value.reason == "scan_type_not_allowed"
    policy.scan_types = []
    policy.save()
    assert retry(task.pk, actor="operator").status == TaskStatus.QUEUED


def test_a_retry_respects_the_concurrency_budget(pool):  # noqa: F811
    token, _, _ = policy_client(max_concurrent_scans=1)
    task = failed(token)
    other = submit(pool="dmz", name="running", targets="192.0.2.11", api_token=token, requested_via="api")
    with pytest.raises(BudgetExceeded) as info:
        retry(task.pk, actor="agent")
    assert info.value.reason == "concurrent_scans"
    ScanTask.objects.filter(pk=other.pk).update(status=TaskStatus.COMPLETED)
    assert retry(task.pk, actor="agent").status == TaskStatus.QUEUED


def test_a_retry_the_policy_now_holds_waits_for_approval(pool):  # noqa: F811
    token, policy, _ = policy_client()
    task = failed(token)
    policy.approval = ApprovalRule.ALWAYS
    policy.save()
    held = retry(task.pk, actor="agent")
    assert held.status == TaskStatus.PENDING_APPROVAL and held.attempts == 2 and not held.slot_held
    assert "requires approval" in held.approval_reason and held.approval_expires_at is not None
    assert held.events.filter(kind=EventKind.POLICY).latest("id").data["decision"] == "held for approval"


def test_a_task_without_a_client_is_retried_as_before(pool):  # noqa: F811
    task = submit(pool="dmz", name="admin scan", targets="192.0.2.10", requested_via="admin")
    ScanTask.objects.filter(pk=task.pk).update(status=TaskStatus.TIMEOUT)
    assert retry(task.pk, actor="operator").status == TaskStatus.QUEUED


def test_api_retry_refused_by_the_budget_is_429_and_changes_nothing(pool, fresh_throttle_counts):  # noqa: F811
    token, _, client = policy_client(max_scans_per_day=1, perms=OPERATE)
    task = failed(token)
    response = client.post(f"/api/v1/scans/{task.pk}/retry/", format="json")
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["details"]["reason"] == "scans_per_day"
    assert int(response["Retry-After"]) >= 1
    assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_dlq_retry_reports_each_refusal_and_retries_the_rest(pool):  # noqa: F811
    limited, _, _ = policy_client("limited", max_scans_per_day=1)
    free, _, _ = policy_client("free")
    refused, allowed = failed(limited), failed(free)
    outcome = retry_letters([DeadLetter(pool="dmz", task_id=str(t.pk), task=t) for t in (refused, allowed)],
                            actor="dlq retry (ops)")
    results = {entry["task_id"]: entry["result"] for entry in outcome}
    assert results[str(refused.pk)].startswith("error: ") and "scans for today" in results[str(refused.pk)]
    assert results[str(allowed.pk)] == "retried (attempt 2)"
    assert ScanTask.objects.get(pk=refused.pk).status == TaskStatus.FAILED


def test_who_asked_for_a_retry_held_for_approval_may_not_approve_it(pool, fresh_throttle_counts):  # noqa: F811
    """Four eyes: a retry held for approval is a new request, so its retrier (like its submitter) may not approve
    it — through the API and the admin alike. Someone else may."""
    from django.test import Client
    from rest_framework.test import APIClient

    from tasks.models import ApiToken
    from tests.api_support import user_with

    token, policy, _ = policy_client()
    by_api, by_admin = failed(token), failed(token)
    policy.approval = ApprovalRule.ALWAYS
    policy.save()
    operator = user_with([*OPERATE, "tasks.approve_scantask", "tasks.view_scantask"], "operator")
    _, key = ApiToken.issue(operator, "operator")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.post(f"/api/v1/scans/{by_api.pk}/retry/", format="json").json()["status"] == "pending_approval"
    refused = api.post(f"/api/v1/scans/{by_api.pk}/approve/", format="json")
    assert refused.status_code == 403, refused.content
    error = refused.json()["error"]
    assert error["code"] == "approval_refused" and "retried by 'operator'" in error["message"]
    assert ScanTask.objects.get(pk=by_api.pk).status == TaskStatus.PENDING_APPROVAL

    operator.is_staff = True
    operator.save()
    admin = Client()
    admin.force_login(operator)
    changelist = "/admin/tasks/scantask/"
    admin.post(changelist, {"action": "retry_dead_letters", "_selected_action": [str(by_admin.pk)]})
    assert ScanTask.objects.get(pk=by_admin.pk).status == TaskStatus.PENDING_APPROVAL
    page = admin.post(changelist, {"action": "approve_tasks", "_selected_action": [str(by_admin.pk)]}, follow=True)
    assert "four eyes" in page.content.decode()
    assert ScanTask.objects.get(pk=by_admin.pk).status == TaskStatus.PENDING_APPROVAL

    other = user_with(["tasks.approve_scantask", "tasks.view_scantask"], "other")
    _, other_key = ApiToken.issue(other, "other")
    api.credentials(HTTP_AUTHORIZATION=f"Token {other_key}")
    for task in (by_api, by_admin):
        assert api.post(f"/api/v1/scans/{task.pk}/approve/", format="json").status_code == 200
        assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.QUEUED


def test_the_engines_own_retries_do_not_spend_the_clients_daily_budget(pool):  # noqa: F811
    """The engine records its launch retries and un-claims as ``retry`` events too; only a retry someone asked for
    (failed/timed out → queued) is one more scan of the client's day."""
    from django.utils import timezone

    from tasks.engine.transitions import unclaim
    from tests.factories import ScannerFactory

    token, _, _ = policy_client(max_scans_per_day=2)
    task = submit(pool="dmz", name="scan", targets="192.0.2.10", api_token=token, requested_via="api")
    scanner = ScannerFactory(pool=task.pool)
    for attempt in range(3):  # claimed, then given back by the engine (scanner busy, launch retries spent…)
        ScanTask.objects.filter(pk=task.pk).update(claimed_at=timezone.now(), assigned_scanner=scanner)
        assert unclaim(task.pk, f"launch attempt {attempt + 1} failed")
    assert task.events.filter(kind=EventKind.RETRY).count() == 3
    assert usage(token.pk).scans_today == 1
    submit(pool="dmz", name="second", targets="192.0.2.11", api_token=token, requested_via="api")  # within budget
    assert usage(token.pk).scans_today == 2
