"""A retry and an approval are decisions taken after the submission: both meet the rules as they are *now*, the
way a submission does — the pool must be enabled, the targets inside its current scope (and still valid
targets), and the client's current policy must allow them (for an approval: everything but the approval rule
itself, and budgets are not charged twice). A refusal is the submission's error (400 ``pool_disabled``, 403
``out_of_scope`` / ``policy_refused``), changes nothing (status, attempts, budgets) and leaves one note in the
task's timeline saying who was refused and why."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from pools.models import Pool
from tasks.errors import PolicyError, ScopeError, SubmissionError
from tasks.models import ApprovalRule, EventKind, PolicyRefusal, ScanTask, TaskStatus
from tasks.policies.approval import approve
from tasks.policies.checks import retried_today, usage
from tasks.services import retry, submit
from tests.api_support import OPERATE, assert_error, token_client, user_with
from tests.factories import PoolFactory, ScannerFactory
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db

APPROVE = ["tasks.view_scantask", "tasks.approve_scantask"]


@pytest.fixture
def narrow():
    """Pool ``narrow`` (scope 192.0.2.0/24 and 10.20.0.0/16) with one scanner."""
    pool = PoolFactory(name="narrow", scope=["192.0.2.0/24", "10.20.0.0/16"])
    ScannerFactory(pool=pool, name="narrow-1", url="https://narrow-1.example.net:8834")
    return pool


@pytest.fixture
def operator_api(fresh_throttle_counts):
    client, _ = token_client(user_with(OPERATE, "operator"), name="operator")
    return client


@pytest.fixture
def approver_api(fresh_throttle_counts):
    client, _ = token_client(user_with(APPROVE, "approver"), name="approver")
    return client


def failed(targets: str = "10.20.0.5", **kw) -> ScanTask:
    task = submit(pool="narrow", name="scan", targets=targets, requested_via="api", **kw)
    ScanTask.objects.filter(pk=task.pk).update(status=TaskStatus.FAILED, error_message="scanner said no")
    return ScanTask.objects.get(pk=task.pk)


def set_pool(pool: Pool, **fields) -> None:
    for name, value in fields.items():
        setattr(pool, name, value)
    pool.save()


def assert_unchanged_failed(task: ScanTask) -> ScanTask:
    now = ScanTask.objects.get(pk=task.pk)
    assert (now.status, now.attempts, now.error_message) == (TaskStatus.FAILED, task.attempts, task.error_message)
    assert not now.events.filter(kind=EventKind.RETRY).exists()
    return now


def notes(task: ScanTask) -> list[str]:
    return list(task.events.filter(kind=EventKind.WARNING).values_list("message", flat=True))


# ------------------------------------------------------------------------------------------------ retry


def test_api_retry_of_targets_the_scope_now_refuses_is_403_out_of_scope_and_changes_nothing(
        narrow, operator_api):
    token, _, _ = policy_client(max_scans_per_day=5)
    task = failed(api_token=token)
    set_pool(narrow, scope=["192.0.2.0/24"])  # 10.20.0.0/16 dropped since the submission
    response = operator_api.post(f"/api/v1/scans/{task.pk}/retry/", format="json")
    error = assert_error(response, 403, code="out_of_scope", field="targets")
    assert "10.20.0.5" in error["message"] and "'narrow'" in error["message"], error
    now = assert_unchanged_failed(task)
    assert usage(token.pk).scans_today == 1 and retried_today(token.pk, now.created_at).count() == 0  # no budget
    assert not PolicyRefusal.objects.exists()  # not a policy refusal: the pool's scope said no
    [note] = notes(now)
    assert "retry by operator via api token operator refused" in note and "10.20.0.5" in note, note
    # The same targets inside today's scope again: the retry goes through.
    set_pool(narrow, scope=["192.0.2.0/24", "10.20.0.0/16"])
    response = operator_api.post(f"/api/v1/scans/{task.pk}/retry/", format="json")
    assert response.status_code == 200 and response.json()["status"] == "queued", response.content


def test_retry_of_a_task_without_a_client_meets_the_scope_and_protected_targets_too(narrow):
    task = failed(targets="192.0.2.7")
    set_pool(narrow, scope=["10.20.0.0/16"])
    with pytest.raises(ScopeError) as info:
        retry(task.pk, actor="ops")
    assert info.value.status_code == 403 and info.value.field == "targets" and "192.0.2.7" in info.value.message
    assert_unchanged_failed(task)
    # A scanner now sits on the task's target: protected, refused like a submission would be.
    set_pool(narrow, scope=["192.0.2.0/24"])
    ScannerFactory(pool=narrow, name="narrow-2", url="https://192.0.2.7:8834")
    with pytest.raises(ScopeError) as info:
        retry(task.pk, actor="ops")
    assert "192.0.2.7 is protected" in info.value.message, info.value.message
    assert_unchanged_failed(task)


def test_retry_in_a_pool_that_now_allows_nothing_is_refused(narrow):
    task = failed()
    set_pool(narrow, scope=[])
    with pytest.raises(ScopeError) as info:
        retry(task.pk, actor="ops")
    assert "empty scope" in info.value.message
    assert_unchanged_failed(task)


def test_retry_of_stored_targets_that_are_no_longer_valid_is_400_naming_targets(narrow):
    task = failed()
    ScanTask.objects.filter(pk=task.pk).update(targets=["10.20.0.5,10.20.0.6"])  # smuggled past an older parser
    with pytest.raises(SubmissionError) as info:
        retry(task.pk, actor="ops")
    assert (info.value.status_code, info.value.field) == (400, "targets")
    assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_api_retry_in_a_disabled_pool_is_400_pool_disabled_like_a_submission(narrow, operator_api):
    token, _, _ = policy_client(max_scans_per_day=5)
    task = failed(targets="192.0.2.10", api_token=token)
    set_pool(narrow, enabled=False)
    with pytest.raises(SubmissionError) as submitted:
        submit(pool="narrow", name="new", targets="192.0.2.10")
    response = operator_api.post(f"/api/v1/scans/{task.pk}/retry/", format="json")
    error = assert_error(response, 400, code="pool_disabled", field="scanner_pool")
    assert error["message"] == f"scanner_pool: {submitted.value.message}"
    now = assert_unchanged_failed(task)
    assert usage(token.pk).scans_today == 1
    assert len(notes(now)) == 1
    set_pool(narrow, enabled=True)
    assert retry(task.pk, actor="ops").status == TaskStatus.QUEUED


def test_a_refused_retry_tried_again_leaves_one_note_not_one_per_attempt(narrow):
    task = failed()
    set_pool(narrow, enabled=False)
    for _ in range(3):
        with pytest.raises(SubmissionError):
            retry(task.pk, actor="dlq retry (ops)")
    assert len(notes(task)) == 1
    with pytest.raises(SubmissionError):
        retry(task.pk, actor="someone else")
    assert len(notes(task)) == 2


def test_scope_and_pool_are_checked_before_the_policy(narrow):
    # The order a submission uses: pool enabled, then the scope, then the client's policy.
    token, policy, _ = policy_client(target_allow_list=["192.0.2.0/28"])
    task = failed(targets="192.0.2.5", api_token=token)
    policy.target_allow_list = ["192.0.2.128/28"]
    policy.save()
    set_pool(narrow, scope=["10.20.0.0/16"])
    with pytest.raises(ScopeError):
        retry(task.pk, actor="ops")
    set_pool(narrow, scope=["192.0.2.0/24"])
    with pytest.raises(PolicyError) as info:
        retry(task.pk, actor="ops")
    assert info.value.reason == "target_not_allowed"
    assert PolicyRefusal.objects.get().reason == "target_not_allowed"
    assert len(notes(task)) == 2


# ---------------------------------------------------------------------------------------------- approve


POLICY = """\
clients:
  - token: agent
    user: agent
    targets: ["{targets}"]
    approval: always
"""


def load_policy(tmp_path, targets: str) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICY.format(targets=targets))
    call_command("load_client_policies", str(path), stdout=StringIO())


def held(token) -> ScanTask:
    task = submit(pool="narrow", name="held", targets="192.0.2.20", api_token=token, requested_by=token.user,
                  requested_via="api")
    assert task.status == TaskStatus.PENDING_APPROVAL
    return task


def assert_still_pending(task: ScanTask) -> ScanTask:
    now = ScanTask.objects.get(pk=task.pk)
    assert now.status == TaskStatus.PENDING_APPROVAL and not now.approval_decided_by
    assert now.approval_decided_at is None and not now.events.filter(to_status=TaskStatus.QUEUED).exists()
    return now


def test_api_approve_after_the_policy_was_narrowed_is_403_policy_refused_and_leaves_it_pending(
        narrow, approver_api, tmp_path):
    token, _, _ = policy_client(target_allow_list=["192.0.2.0/25"], approval=ApprovalRule.ALWAYS)
    task = held(token)
    load_policy(tmp_path, "192.0.2.0/28")  # manage.py load_client_policies: 192.0.2.20 is no longer allowed
    response = approver_api.post(f"/api/v1/scans/{task.pk}/approve/", {"reason": "CHG-1"}, format="json")
    error = assert_error(response, 403, code="policy_refused", field="targets")
    assert error["details"]["reason"] == "target_not_allowed" and error["details"]["limit"] == ["192.0.2.0/28"]
    assert "192.0.2.20" in error["message"]
    now = assert_still_pending(task)
    refusal = PolicyRefusal.objects.get()
    assert (refusal.client, refusal.pool, refusal.reason) == ("agent", "narrow", "target_not_allowed")
    [note] = notes(now)
    assert note.startswith("approval by approver via api token approver refused") and "192.0.2.20" in note, note
    # Widened again: the approval goes through (the approval rule itself never refuses an approval).
    load_policy(tmp_path, "192.0.2.0/25")
    response = approver_api.post(f"/api/v1/scans/{task.pk}/approve/", {}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "queued", response.content


def test_api_approve_of_targets_the_scope_now_refuses_is_403_out_of_scope(narrow, approver_api):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    task = held(token)
    set_pool(narrow, scope=["10.20.0.0/16"])
    response = approver_api.post(f"/api/v1/scans/{task.pk}/approve/", {}, format="json")
    error = assert_error(response, 403, code="out_of_scope", field="targets")
    assert "192.0.2.20" in error["message"]
    assert_still_pending(task)
    assert not PolicyRefusal.objects.exists()


def test_api_approve_in_a_disabled_pool_is_400_pool_disabled(narrow, approver_api):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    task = held(token)
    set_pool(narrow, enabled=False)
    response = approver_api.post(f"/api/v1/scans/{task.pk}/approve/", {}, format="json")
    error = assert_error(response, 400, code="pool_disabled", field="scanner_pool")
    assert "'narrow' is disabled" in error["message"]
    assert_still_pending(task)
    set_pool(narrow, enabled=True)
    assert approve(task.pk, actor="boss").status == TaskStatus.QUEUED


def test_approve_checks_the_policy_but_charges_no_budget_twice(narrow):
    # The held scan used the day's only scan and the only concurrent slot when it was submitted: approving it
    # is not one more scan. Other dimensions are checked as they are now.
    token, policy, _ = policy_client(approval=ApprovalRule.ALWAYS, max_scans_per_day=1, max_concurrent_scans=1)
    task = held(token)
    policy.scan_types = ["authenticated"]
    policy.save()
    with pytest.raises(PolicyError) as info:
        approve(task.pk, actor="boss")
    assert info.value.reason == "scan_type_not_allowed"
    assert_still_pending(task)
    policy.scan_types = []
    policy.save()
    approved = approve(task.pk, actor="boss")
    assert approved.status == TaskStatus.QUEUED and approved.approval_decided_by == "boss"
    assert usage(token.pk).scans_today == 1


def test_approve_of_a_held_retry_meets_the_scope_of_the_day(narrow):
    token, policy, _ = policy_client()
    task = failed(targets="10.20.0.5", api_token=token)
    policy.approval = ApprovalRule.ALWAYS
    policy.save()
    assert retry(task.pk, actor="ops").status == TaskStatus.PENDING_APPROVAL
    set_pool(narrow, scope=["192.0.2.0/24"])
    with pytest.raises(ScopeError):
        approve(task.pk, actor="boss")
    assert_still_pending(task)
