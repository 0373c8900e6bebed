"""Client policies and approval in the admin: the policy form, usage against budgets, refusal log, and the
approve / reject bulk actions guarded by tasks.approve_scantask."""

from __future__ import annotations

import pytest
from django.test import Client

from tasks.errors import BudgetExceeded
from tasks.models import ApprovalRule, ClientPolicy, PolicyRefusal, ScanTask, TaskStatus
from tasks.services import submit
from tests.api_support import user_with
from tests.factories import SuperUserFactory
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/tasks/scantask/"


def staff(perms: list[str], username: str) -> Client:
    user = user_with(perms, username)
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def pending(token, n: int = 2) -> list[ScanTask]:
    return [submit(pool="dmz", name=f"p{i}", targets="192.0.2.10", api_token=token) for i in range(n)]


def test_policy_page_shows_usage_against_budgets_and_refusals_are_listed(pool):
    token, policy, _ = policy_client(max_scans_per_day=2, max_addresses_per_day=100, max_concurrent_scans=5)
    submit(pool="dmz", name="a", targets="192.0.2.0/30", api_token=token)
    submit(pool="dmz", name="b", targets="192.0.2.9", api_token=token)
    with pytest.raises(BudgetExceeded):
        submit(pool="dmz", name="c", targets="192.0.2.9", api_token=token)
    admin = Client()
    admin.force_login(SuperUserFactory())
    page = admin.get("/admin/tasks/clientpolicy/").content.decode()
    assert "2 / 2" in page and "5 / 100" in page and "2 / 5" in page
    detail = admin.get(f"/admin/tasks/clientpolicy/{policy.pk}/change/").content.decode()
    assert "daily budgets refill at" in detail and "5 / 100" in detail
    refusals = admin.get("/admin/tasks/policyrefusal/").content.decode()
    assert "scans_per_day" in refusals or "Daily scan budget used up" in refusals
    assert admin.get(f"/admin/tasks/policyrefusal/{PolicyRefusal.objects.get().pk}/change/").status_code == 200


def test_policy_form_validates_lists(pool):
    token, _, _ = policy_client("other")
    ClientPolicy.objects.filter(token=token).delete()
    admin = Client()
    admin.force_login(SuperUserFactory())
    data = {"token": token.pk, "target_allow_list": "192.0.2.0/28\nnot a target!", "scan_types": ["untrusted"],
            "approval": "outside", "pre_approved_targets": "192.0.2.0/29", "approvers": "", "notes": ""}
    response = admin.post("/admin/tasks/clientpolicy/add/", data)
    assert response.status_code == 200 and "not a target!" in response.content.decode()
    assert not ClientPolicy.objects.exists()
    data["target_allow_list"] = "192.0.2.0/28, a.example.com"
    response = admin.post("/admin/tasks/clientpolicy/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = ClientPolicy.objects.get()
    assert policy.target_allow_list == ["192.0.2.0/28", "a.example.com"] and policy.scan_types == ["untrusted"]
    assert policy.pre_approved_targets == ["192.0.2.0/29"] and policy.approval == ApprovalRule.OUTSIDE


def test_pending_filter_and_approve_action(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    first, second = pending(token)
    approver = staff(["tasks.view_scantask", "tasks.approve_scantask"], "approver")
    listing = approver.get(CHANGELIST + "?status__exact=pending_approval").content.decode()
    assert "Pending approval" in listing and "approve_tasks" in listing and "reject_tasks" in listing
    response = approver.post(CHANGELIST, {"action": "approve_tasks", "_selected_action": [str(first.pk)]})
    assert response.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == TaskStatus.QUEUED and first.approval_decided_by == "approver"
    assert second.status == TaskStatus.PENDING_APPROVAL


def test_reject_action_asks_for_a_reason(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    tasks = pending(token)
    ids = [str(t.pk) for t in tasks]
    approver = staff(["tasks.view_scantask", "tasks.approve_scantask"], "approver")
    page = approver.post(CHANGELIST, {"action": "reject_tasks", "_selected_action": ids})
    assert page.status_code == 200 and b"Reject scans pending approval" in page.content
    assert ScanTask.objects.filter(status=TaskStatus.PENDING_APPROVAL).count() == 2
    no_reason = approver.post(CHANGELIST, {"action": "reject_tasks", "_selected_action": ids, "apply": "1",
                                           "reason": ""})
    assert no_reason.status_code == 200 and ScanTask.objects.filter(status=TaskStatus.PENDING_APPROVAL).count() == 2
    done = approver.post(CHANGELIST, {"action": "reject_tasks", "_selected_action": ids, "apply": "1",
                                      "reason": "no scans during the audit"})
    assert done.status_code == 302
    for task in tasks:
        task.refresh_from_db()
        assert task.status == TaskStatus.CANCELLED and "no scans during the audit" in task.error_message


def test_staff_without_the_approve_permission_cannot_approve(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    task = pending(token, 1)[0]
    operator = staff(["tasks.view_scantask", "tasks.change_scantask"], "operator")
    listing = operator.get(CHANGELIST).content.decode()
    assert "approve_tasks" not in listing
    operator.post(CHANGELIST, {"action": "approve_tasks", "_selected_action": [str(task.pk)]})
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING_APPROVAL
