"""Approval: pending_approval → queued at the original FIFO place | cancelled (rejected, expired), the
status machine, four eyes, expiry through the reconcile, and budgets racing for the last unit."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tasks.capacity import queue_position
from tasks.engine.dispatch import dispatch_round
from tasks.engine.recovery import reconcile
from tasks.errors import ApprovalRefused, BudgetExceeded, SubmissionError, TaskStateError
from tasks.models import ApprovalRule, IllegalTransition, PolicyRefusal, ScanTask, TaskStatus, check_transition
from tasks.policies.approval import approve, expire_pending, reject
from tasks.pool_load import pool_load
from tasks.services import cancel, submit
from tests.api_support import user_with
from tests.factories import PoolFactory
from tests.policy_support import policy_client


def go(token, targets="192.0.2.10", name="scan"):
    return submit(pool="dmz", name=name, targets=targets, api_token=token, requested_by=token.user,
                  requested_via="api")


def test_status_machine_of_pending_approval():
    check_transition(TaskStatus.PENDING_APPROVAL, TaskStatus.QUEUED)
    check_transition(TaskStatus.PENDING_APPROVAL, TaskStatus.CANCELLED)
    for illegal in (TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED):
        with pytest.raises(IllegalTransition):
            check_transition(TaskStatus.PENDING_APPROVAL, illegal)
    with pytest.raises(IllegalTransition):
        check_transition(TaskStatus.QUEUED, TaskStatus.PENDING_APPROVAL)


@pytest.mark.django_db
def test_approved_task_keeps_its_fifo_place(pool):
    # The pool fixture has dmz-1 (2 slots) and dmz-2 (1 slot): fill them first.
    token, _, _ = policy_client(approval=ApprovalRule.OUTSIDE, pre_approved_targets=["192.0.2.0/28"])
    fillers = [go(token, name=f"fill-{i}") for i in range(3)]
    assert dispatch_round(pool.pk) == 3  # every slot taken
    held = go(token, targets="192.0.2.200", name="held")
    later = [go(token, name=f"later-{i}") for i in range(2)]
    assert held.status == TaskStatus.PENDING_APPROVAL
    assert [queue_position(t) for t in later] == [0, 1]  # the pending task is not in the queue
    assert pool_load(pool).queued == 2
    approver = user_with([], "approver")
    held = approve(held.pk, actor="approver", user=approver)
    assert held.status == TaskStatus.QUEUED and held.approval_decided_by == "approver"
    for task in later:
        task.refresh_from_db()
    assert queue_position(held) == 0 and [queue_position(t) for t in later] == [1, 2]
    event = held.events.filter(to_status=TaskStatus.QUEUED).get()
    assert event.actor == "approver" and event.data["decision"] == "approved"
    # A slot frees: the approved task (submitted before the later ones) is dispatched first.
    cancel(fillers[0].pk, actor="test")  # claimed, not launched: the stop step will release; release it now
    from tasks.engine.transitions import release_and_dispatch

    release_and_dispatch(fillers[0].pk)
    assert dispatch_round(pool.pk) == 1
    held.refresh_from_db()
    assert held.claimed_at is not None and ScanTask.objects.get(pk=later[0].pk).claimed_at is None


@pytest.mark.django_db
def test_reject_cancels_with_the_reason(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    task = go(token)
    with pytest.raises(SubmissionError) as info:
        reject(task.pk, actor="boss", reason="  ")
    assert info.value.field == "reason"
    task = reject(task.pk, actor="boss", reason="not during the change freeze")
    assert task.status == TaskStatus.CANCELLED and "not during the change freeze" in task.error_message
    event = task.events.get(to_status=TaskStatus.CANCELLED)
    assert event.actor == "boss" and event.data == {"decision": "rejected", "reason": "not during the change freeze"}
    with pytest.raises(TaskStateError):
        approve(task.pk, actor="boss")


@pytest.mark.django_db
def test_only_pending_tasks_are_approved_and_never_by_their_submitter(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS, perms=["tasks.add_scantask", "tasks.approve_scantask"])
    task = go(token)
    with pytest.raises(ApprovalRefused) as info:
        approve(task.pk, actor="agent", user=token.user)
    assert info.value.status_code == 403 and "four eyes" in info.value.message
    queued = submit(pool="dmz", name="plain", targets="192.0.2.1")
    with pytest.raises(TaskStateError):
        approve(queued.pk, actor="x")
    with pytest.raises(SubmissionError) as missing:
        approve("00000000-0000-0000-0000-000000000000", actor="x")
    assert missing.value.status_code == 404


@pytest.mark.django_db
def test_submitter_may_withdraw_a_pending_scan(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    task = cancel(go(token).pk, actor="agent")
    assert task.status == TaskStatus.CANCELLED


@pytest.mark.django_db
def test_unapproved_tasks_expire_in_the_reconcile(pool, settings, redis_conn):
    settings.SCANPOOL_APPROVAL_TTL = 60
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    old, fresh = go(token), go(token)
    assert fresh.approval_expires_at - fresh.created_at >= timedelta(seconds=59)
    ScanTask.objects.filter(pk=old.pk).update(approval_expires_at=timezone.now() - timedelta(seconds=1))
    report = reconcile([pool.pk], check_scanners=False)
    assert report.expired == [str(old.pk)]
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.status == TaskStatus.CANCELLED and "SCANPOOL_APPROVAL_TTL" in old.error_message
    assert fresh.status == TaskStatus.PENDING_APPROVAL
    event = old.events.get(to_status=TaskStatus.CANCELLED)
    assert event.actor == "approval expiry" and event.data["decision"] == "expired"
    assert expire_pending() == []  # nothing left to expire


@pytest.mark.django_db
def test_approving_an_expired_task_expires_it(pool):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    task = go(token)
    ScanTask.objects.filter(pk=task.pk).update(approval_expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(TaskStateError) as info:
        approve(task.pk, actor="boss")
    assert "expired" in info.value.message
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("budget", ["max_scans_per_day", "max_addresses_per_day", "max_concurrent_scans"])
def test_concurrent_submissions_never_overspend_a_budget(redis_conn, budget):
    PoolFactory(name="dmz", scope=["192.0.2.0/24"])
    limit = 3
    token, _, _ = policy_client(**{budget: limit})
    go(token)  # one unit used: the threads race for the remaining ones (the last one included)
    created, refused, errors = [], [], []
    start = threading.Barrier(8)

    def attempt(i: int) -> None:
        try:
            start.wait()
            created.append(go(token, targets=f"192.0.2.{i + 1}", name=f"race-{i}").pk)
        except BudgetExceeded as exc:
            refused.append(exc.reason)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(created) == limit - 1 and len(refused) == 8 - (limit - 1)
    assert ScanTask.objects.filter(api_token=token).count() == limit
    assert PolicyRefusal.objects.filter(token=token).count() == len(refused)


@pytest.mark.django_db
def test_a_scan_of_a_client_whose_token_was_revoked_is_not_approved(pool):
    """Revoking a token withdraws the trust its pending scans were waiting on: approving one is refused (403, the
    reason said) and it stays pending, to be rejected; a scan of a valid token is approved as before."""
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    held, other = go(token), go(token, name="other")
    token.revoked_at = timezone.now()
    token.save()
    approver = user_with([], "approver")
    with pytest.raises(ApprovalRefused) as info:
        approve(held.pk, actor="approver", user=approver)
    assert info.value.status_code == 403 and "revoked" in info.value.message
    assert ScanTask.objects.get(pk=held.pk).status == TaskStatus.PENDING_APPROVAL
    assert reject(held.pk, actor="approver", reason="client revoked").status == TaskStatus.CANCELLED
    token.revoked_at = None
    token.save()
    assert approve(other.pk, actor="approver", user=approver).status == TaskStatus.QUEUED
