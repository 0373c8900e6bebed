"""Client policies through the REST API: the token's policy applies, refusals are 403 / 429 + Retry-After
with reason and limit, pending_approval with who approves, POST …/approve/ and …/reject/."""

from __future__ import annotations

import pytest

from tasks.models import ApprovalRule, ScanTask, TaskStatus
from tests.api_support import assert_error, token_client, user_with
from tests.factories import PoolFactory
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db

APPROVE = ["tasks.view_scantask", "tasks.approve_scantask"]


def post(client, **body):
    return client.post("/api/v1/scans/", {"name": "n", "targets": "192.0.2.10", "scanner_pool": "dmz", **body},
                       format="json")


@pytest.fixture
def approver(fresh_throttle_counts):
    client, _ = token_client(user_with(APPROVE, "approver"), name="approver")
    return client


def test_every_policy_dimension_is_a_403_with_reason_and_limit(pool, fresh_throttle_counts):
    PoolFactory(name="other", scope=["192.0.2.0/24"])
    _, policy, client = policy_client(
        target_allow_list=["192.0.2.0/28"], scan_types=["untrusted"], max_targets_per_scan=2,
        max_addresses_per_day=100)
    policy.pools.set([pool])
    cases = [
        ({"scanner_pool": "other"}, "scanner_pool", "pool_not_allowed", ["dmz"]),
        ({"scan_type": "authenticated", "credentials": {"username": "u", "password": "p"}}, "scan_type",
         "scan_type_not_allowed", ["untrusted"]),
        ({"targets": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]}, "targets", "too_many_targets", 2),
        ({"targets": "192.0.2.100"}, "targets", "target_not_allowed", ["192.0.2.0/28"]),
        ({"targets": "192.0.2.0/28", "scanner_pool": "dmz"}, None, None, None),  # 16 addresses: allowed
    ]
    for body, field, reason, limit in cases:
        response = post(client, **body)
        if reason is None:
            assert response.status_code == 202, response.content
            continue
        error = assert_error(response, 403, code="policy_refused", field=field)
        assert error["details"]["reason"] == reason and error["details"]["limit"] == limit, error
    assert ScanTask.objects.count() == 1


def test_budget_is_429_with_retry_after_naming_the_refill(pool, fresh_throttle_counts):
    _, _, client = policy_client(max_scans_per_day=1)
    assert post(client).status_code == 202
    response = post(client)
    error = assert_error(response, 429, code="budget_exceeded")
    details = error["details"]
    assert details["reason"] == "scans_per_day" and details["limit"] == 1 and details["used"] == 1
    assert int(response["Retry-After"]) == details["retry_after"] > 0
    assert details["refills_at"].endswith("T00:00:00+00:00") and details["refills_at"] in error["message"]


def test_pending_approval_response_says_who_approves(pool, fresh_throttle_counts):
    _, _, client = policy_client(approval=ApprovalRule.OUTSIDE, pre_approved_targets=["192.0.2.0/28"],
                                      approvers="secops on-call (#sec-approvals)")
    queued = post(client, targets="192.0.2.1").json()
    assert queued["status"] == "queued" and queued["approval"] is None
    body = post(client, targets="192.0.2.99").json()
    assert body["status"] == "pending_approval" and body["queue_position"] is None
    approval = body["approval"]
    assert approval["required"] is True and "192.0.2.99" in approval["reason"]
    assert approval["approvers"].startswith("secops on-call (#sec-approvals)")
    assert "tasks.approve_scantask" in approval["approvers"] and approval["expires_at"]
    listed = client.get("/api/v1/scans/?status=pending_approval").json()["results"]
    assert [r["task_id"] for r in listed] == [body["task_id"]]


def test_approve_and_reject_endpoints(pool, approver, fresh_throttle_counts):
    _, _, client = policy_client(approval=ApprovalRule.ALWAYS)
    first, second = post(client).json()["task_id"], post(client).json()["task_id"]
    # The submitter lacks tasks.approve_scantask.
    assert_error(client.post(f"/api/v1/scans/{first}/approve/", {}, format="json"), 403, code="permission_denied")
    response = approver.post(f"/api/v1/scans/{first}/approve/", {"reason": "change CHG-42"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "queued" and body["approval"]["decided_by"] == "approver via api token approver"
    assert body["queue_position"] == 0
    missing = assert_error(approver.post(f"/api/v1/scans/{second}/reject/", {}, format="json"), 400, field="reason")
    assert "give the reason for the rejection" in missing["message"]  # not DRF's "This field is required."
    response = approver.post(f"/api/v1/scans/{second}/reject/", {"reason": "outside the window"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert "outside the window" in response.json()["error_message"]
    # Decided tasks cannot be decided again.
    assert_error(approver.post(f"/api/v1/scans/{first}/approve/", {}, format="json"), 409, code="invalid_state")
    assert_error(approver.post(f"/api/v1/scans/{second}/reject/", {"reason": "x"}, format="json"), 409)
    events = client.get(f"/api/v1/scans/{first}/").json()["events"]
    assert any(e["kind"] == "policy" and e["actor"] == "policy of client agent" for e in events)
    assert any(e["to_status"] == "queued" and e["actor"] == "approver via api token approver" for e in events)


def test_no_self_approval_and_no_approval_with_a_read_only_token(pool, fresh_throttle_counts):
    _, _, client = policy_client(approval=ApprovalRule.ALWAYS, perms=["tasks.view_scantask", "tasks.add_scantask",
                                                                      "tasks.approve_scantask"])
    task_id = post(client).json()["task_id"]
    assert_error(client.post(f"/api/v1/scans/{task_id}/approve/", {}, format="json"), 403, code="approval_refused")
    read_only, _ = token_client(user_with(APPROVE, "viewer"), read_only=True, name="ro")
    assert_error(read_only.post(f"/api/v1/scans/{task_id}/approve/", {}, format="json"), 403)
    assert ScanTask.objects.get(pk=task_id).status == TaskStatus.PENDING_APPROVAL


def test_the_submitter_may_cancel_its_pending_scan(pool, fresh_throttle_counts):
    _, _, client = policy_client(approval=ApprovalRule.ALWAYS,
                                 perms=["tasks.view_scantask", "tasks.add_scantask", "tasks.change_scantask"])
    task_id = post(client).json()["task_id"]
    response = client.post(f"/api/v1/scans/{task_id}/cancel/", {}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_schema_lists_approve_and_reject(pool, api):
    schema = api.get("/api/schema/?format=json").json()
    assert "/api/v1/scans/{id}/approve/" in schema["paths"] and "/api/v1/scans/{id}/reject/" in schema["paths"]


def test_a_replay_answers_its_task_after_the_policy_changed(pool, fresh_throttle_counts):
    """A client retrying a request it already made (same key, same body) learns what happened to it, even when its
    policy was tightened since: the scan exists. A new scan is refused by the new policy."""
    _, policy, client = policy_client(scan_types=["untrusted"])
    first = post(client, idempotency_key="nightly-1")
    assert first.status_code == 202, first.content
    policy.target_allow_list = ["198.51.100.0/24"]  # 192.0.2.10 no longer allowed
    policy.save()
    again = post(client, idempotency_key="nightly-1")
    assert again.status_code == 200 and again.json()["task_id"] == first.json()["task_id"], again.content
    assert_error(post(client, idempotency_key="nightly-2"), 403, field="targets")
    assert ScanTask.objects.count() == 1
