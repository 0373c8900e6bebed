"""Client policies through tasks.services.submit: every dimension, narrowing vs widening, refusal log, events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.errors import BudgetExceeded, PolicyError, ScopeError
from tasks.models import ApprovalRule, EventKind, PolicyRefusal, ScanTask, TaskStatus
from tasks.policies.checks import day_start
from tasks.services import cancel, submit
from tests.factories import PoolFactory
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db


def go(token, targets="192.0.2.10", **kw):
    return submit(pool=kw.pop("pool", "dmz"), name=kw.pop("name", "scan"), targets=targets, api_token=token,
                  requested_via="api", **kw)


def test_token_without_policy_is_unrestricted_by_policies(pool):
    token, policy, _ = policy_client()
    policy.delete()
    task = go(token)
    assert task.status == TaskStatus.QUEUED and task.api_token == token
    assert not task.events.filter(kind=EventKind.POLICY).exists()


def test_allowed_submission_is_a_policy_event_with_the_actor(pool):
    token, _, _ = policy_client(max_scans_per_day=5)
    task = go(token, targets=["192.0.2.0/30", "host.example.com"])
    assert task.status == TaskStatus.QUEUED and task.address_count == 5
    event = task.events.get(kind=EventKind.POLICY)
    assert event.actor == "policy of client agent" and event.data["decision"] == "allowed"
    assert event.data["scans_today"] == 0  # counted before this one


def test_allowed_pools(pool):
    other = PoolFactory(name="other", scope=["192.0.2.0/24"])
    token, _, _ = policy_client(pools=[other])
    with pytest.raises(PolicyError) as info:
        go(token)
    err = info.value
    assert (err.status_code, err.code, err.field, err.reason) == (403, "policy_refused", "pool", "pool_not_allowed")
    assert err.limit == ["other"] and "may not submit to pool 'dmz'" in err.message
    assert go(token, pool="other").pool == other


def test_allowed_scan_types(pool):
    token, _, _ = policy_client(scan_types=["untrusted"])
    with pytest.raises(PolicyError) as info:
        go(token, scan_type="authenticated_privileged", credentials={
            "username": "u", "password": "p", "elevate_privileges_with": "sudo"})
    assert info.value.field == "scan_type" and info.value.reason == "scan_type_not_allowed"
    assert info.value.limit == ["untrusted"] and ScanTask.objects.count() == 0
    assert go(token).scan_type == "untrusted"


def test_max_targets_per_scan(pool):
    token, _, _ = policy_client(max_targets_per_scan=2)
    with pytest.raises(PolicyError) as info:
        go(token, targets=["192.0.2.1", "192.0.2.2", "192.0.2.3"])
    assert info.value.reason == "too_many_targets" and info.value.limit == 2 and "split the scan" in info.value.message
    go(token, targets=["192.0.2.1", "192.0.2.2"])


def test_target_allow_list_narrows_the_pool_scope(pool):
    token, _, _ = policy_client(target_allow_list=["192.0.2.0/28", "a.example.com"])
    assert go(token, targets=["192.0.2.0/29", "a.example.com"]).status == TaskStatus.QUEUED
    for outside in ("192.0.2.16", "192.0.2.0/27", "b.example.com", "198.51.100.1"):  # all inside the pool's scope
        with pytest.raises(PolicyError) as info:
            go(token, targets=["192.0.2.1", outside])
        assert info.value.reason == "target_not_allowed" and outside in info.value.message
        assert info.value.field == "targets"


def test_target_allow_list_never_widens_the_pool_scope(pool):
    # The client's list names 10.0.0.0/8 and *.internal, which the pool's scope does not: still refused.
    token, _, _ = policy_client(target_allow_list=["10.0.0.0/8", "*.internal", "192.0.2.0/24"])
    for widened in ("10.1.2.3", "db.internal"):
        with pytest.raises(ScopeError):
            go(token, targets=[widened])
    # A CIDR half inside the pool scope and wholly inside the client's list: refused by the pool.
    with pytest.raises(ScopeError):
        go(token, targets=["192.0.2.0/23"])
    assert ScanTask.objects.count() == 0


def test_addresses_per_day_single_scan_too_big_is_403_not_429(pool):
    token, _, _ = policy_client(max_addresses_per_day=8)
    with pytest.raises(PolicyError) as info:
        go(token, targets="192.0.2.0/28")  # 16 addresses can never fit
    assert not isinstance(info.value, BudgetExceeded) and info.value.reason == "addresses_per_day"


def test_scans_per_day_budget_refills_at_utc_midnight(pool):
    token, _, _ = policy_client(max_scans_per_day=2)
    go(token), go(token)
    with pytest.raises(BudgetExceeded) as info:
        go(token)
    err = info.value
    assert (err.status_code, err.code, err.reason, err.limit, err.used) == (429, "budget_exceeded",
                                                                            "scans_per_day", 2, 2)
    refill = day_start(timezone.now()) + timedelta(days=1)
    assert err.refills_at == refill.isoformat()
    assert 0 < err.retry_after <= (refill - timezone.now()).total_seconds() + 2
    # Yesterday's scans do not count.
    ScanTask.objects.update(created_at=timezone.now() - timedelta(days=1, hours=1))
    go(token)


def test_addresses_per_day_budget(pool):
    token, _, _ = policy_client(max_addresses_per_day=10)
    go(token, targets="192.0.2.0/29")  # 8
    with pytest.raises(BudgetExceeded) as info:
        go(token, targets="192.0.2.8/30")  # 4 more: 12 > 10
    assert info.value.reason == "addresses_per_day" and info.value.used == 8 and "2 of its 10" in info.value.message
    go(token, targets=["192.0.2.20", "192.0.2.21"])  # exactly 10


def test_cancelled_before_launch_gives_the_daily_budget_back(pool):
    token, _, _ = policy_client(max_scans_per_day=1)
    first = go(token)
    cancel(first.pk, actor="agent")
    go(token)


def test_concurrent_scans_count_pending_queued_running(pool):
    token, _, _ = policy_client(max_concurrent_scans=2, approval=ApprovalRule.ALWAYS)
    a, b = go(token), go(token)
    assert a.status == b.status == TaskStatus.PENDING_APPROVAL
    with pytest.raises(BudgetExceeded) as info:
        go(token)
    assert info.value.reason == "concurrent_scans" and info.value.refills_at is None and info.value.retry_after >= 1
    ScanTask.objects.filter(pk=a.pk).update(status=TaskStatus.COMPLETED)
    go(token)


def test_approval_always_and_outside(pool):
    token, policy, _ = policy_client(approval=ApprovalRule.OUTSIDE, pre_approved_targets=["192.0.2.0/28"])
    inside = go(token, targets="192.0.2.0/29")
    assert inside.status == TaskStatus.QUEUED and inside.approval_reason == ""
    held = go(token, targets=["192.0.2.1", "192.0.2.100"])
    assert held.status == TaskStatus.PENDING_APPROVAL and "192.0.2.100" in held.approval_reason
    assert "192.0.2.1," not in held.approval_reason
    assert held.approval_expires_at > timezone.now() and not held.slot_held
    event = held.events.get(kind=EventKind.POLICY)
    assert event.data["decision"] == "held for approval" and "tasks.approve_scantask" in event.message
    policy.pre_approved_targets = []  # "outside" an empty list: everything waits
    policy.save()
    assert go(token).status == TaskStatus.PENDING_APPROVAL
    policy.approval = ApprovalRule.ALWAYS
    policy.pre_approved_targets = ["192.0.2.0/24"]
    policy.save()
    assert go(token).status == TaskStatus.PENDING_APPROVAL


def test_pending_tasks_ignore_backpressure_and_hold_no_queue_place(pool):
    pool.max_queued = 1
    pool.save()
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    go(token), go(token)  # pending: not in the queue
    assert submit(pool="dmz", name="x", targets="192.0.2.1").status == TaskStatus.QUEUED


def test_refusals_are_logged_with_reason_and_limit(pool):
    token, _, _ = policy_client(scan_types=["untrusted"], max_scans_per_day=1)
    go(token)
    with pytest.raises(BudgetExceeded):
        go(token)
    with pytest.raises(PolicyError):
        go(token, scan_type="authenticated", credentials={"username": "u", "password": "p"})
    rows = list(PolicyRefusal.objects.order_by("created_at").values_list("client", "pool", "reason", "limit"))
    assert rows == [("agent", "dmz", "scans_per_day", "1"), ("agent", "dmz", "scan_type_not_allowed", "['untrusted']")]
    assert ScanTask.objects.count() == 1


def test_idempotent_replay_is_not_counted_twice(pool):
    token, _, _ = policy_client(max_scans_per_day=1)
    first = go(token, idempotency_key="k")
    again = go(token, idempotency_key="k")
    assert again.pk == first.pk and getattr(again, "replayed", False)


def test_a_cancelled_scan_still_stopping_on_its_scanner_counts_as_concurrent(pool, redis_conn):
    """Cancel, resubmit: the cancelled scan runs on its scanner until its stop is seen (it keeps its slot), so it
    still uses the client's concurrency budget; the budget frees when the scan is seen stopped."""
    token, _, _ = policy_client(max_concurrent_scans=1)
    first = go(token)
    scanner = pool.scanners.first()
    ScanTask.objects.filter(pk=first.pk).update(status=TaskStatus.RUNNING, slot_held=True, assigned_scanner=scanner,
                                                scanner_scan_id=7, started_at=timezone.now())
    assert cancel(first.pk, actor="agent").status == TaskStatus.CANCELLED
    with pytest.raises(BudgetExceeded) as info:
        go(token)
    assert info.value.reason == "concurrent_scans" and "still stopping" in info.value.message
    ScanTask.objects.filter(pk=first.pk).update(slot_held=False)  # settled: the stop was seen
    go(token)


def test_a_pool_a_policy_names_cannot_be_deleted_which_would_widen_the_policy_to_every_pool(pool):
    """An empty pools list means every pool: deleting a client's only allowed pool would silently allow it all."""
    from django.db import transaction
    from django.db.models import ProtectedError
    from django.test import Client

    from tests.factories import SuperUserFactory

    staging = PoolFactory(name="staging", scope=["192.0.2.0/24"])
    token, policy, _ = policy_client(pools=[staging])
    with pytest.raises(ProtectedError, match="client policy"), transaction.atomic():
        staging.delete()
    with pytest.raises(PolicyError):
        go(token)  # still staging only
    admin = Client()
    admin.force_login(SuperUserFactory())
    page = admin.post(f"/admin/pools/pool/{staging.pk}/delete/", {"post": "yes"})
    assert page.status_code == 200 and b"policy of agent" in page.content  # protected: nothing deleted
    assert list(policy.pools.all()) == [staging]
    policy.pools.clear()
    staging.delete()
