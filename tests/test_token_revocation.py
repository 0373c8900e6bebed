"""Revoking API tokens (tasks.revocation): a rotation revokes only, and the old token's queued scans still run; after
a leak the token's scans that have not started (pending approval, queued and not given a scanner) are cancelled
through tasks.services.cancel, each with a timeline event naming the revocation and who revoked. Scans already
given a scanner — even between the revocation's read and its cancel — are left alone and counted as still active;
other tokens' scans are untouched; running it again changes nothing.

Real database (SQLite, and PostgreSQL with scripts/ensure-postgres.sh), real Redis for the on-commit dispatches.
The claim that lands between the read and the cancel is made to land there by wrapping the read (the claim itself
is the dispatcher's real ``claim``)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from scanners.models import Scanner
from tasks import services
from tasks.engine.dispatch import Claim, claim, dispatch_round
from tasks.errors import TokenRevoked
from tasks.models import ApiToken, ApprovalRule, ScanTask, TaskEvent, TaskStatus, TaskTarget
from tasks.revocation import revoke_tokens
from tests.api_support import SUBMIT, user_with
from tests.factories import ScannerFactory
from tests.policy_support import policy_client

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_conn", "fresh_throttle_counts")]


def go(token, name: str = "scan", targets: str = "192.0.2.10") -> ScanTask:
    return services.submit(pool="dmz", name=name, targets=targets, api_token=token, requested_by=token.user,
                           requested_via="api")


def status(task) -> str:
    return ScanTask.objects.get(pk=task.pk).status


def cancel_events(task) -> list[TaskEvent]:
    return list(TaskEvent.objects.filter(task_id=task.pk, to_status=TaskStatus.CANCELLED))


@pytest.fixture
def leaky(pool):
    """Token ``leaky`` (its policy holds scans outside 192.0.2.0/28 for approval) with a scan of every stage."""
    token, _, _ = policy_client("leaky", approval=ApprovalRule.OUTSIDE, pre_approved_targets=["192.0.2.0/28"])
    scans = {"running": go(token, "running"), "launching": go(token, "launching")}
    assert dispatch_round(pool.pk) == 2  # both given a scanner: "launching"
    ScanTask.objects.filter(pk=scans["running"].pk).update(status=TaskStatus.RUNNING, started_at=timezone.now())
    scans["done"] = go(token, "done", "192.0.2.11")
    ScanTask.objects.filter(pk=scans["done"].pk).update(status=TaskStatus.COMPLETED)
    Scanner.objects.filter(pool=pool).update(enabled=False)  # what is queued from here stays queued
    scans["pending"] = go(token, "pending", "192.0.2.200")
    scans["queued"] = go(token, "queued", "192.0.2.12")
    assert scans["pending"].status == TaskStatus.PENDING_APPROVAL and scans["queued"].status == TaskStatus.QUEUED
    return token, scans


def test_a_rotation_revokes_only_and_says_what_still_runs(leaky):
    token, scans = leaky
    result = revoke_tokens([token.pk], actor="alice")
    assert (result.revoked, result.cancelled) == (1, 0)
    assert result.still_active == {"pending_approval": 1, "queued": 1, "launching": 1, "running": 1}
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert [status(scans[s]) for s in ("pending", "queued", "launching", "running")] == [
        TaskStatus.PENDING_APPROVAL, TaskStatus.QUEUED, TaskStatus.QUEUED, TaskStatus.RUNNING]
    revoked_at = ApiToken.objects.get(pk=token.pk).revoked_at
    again = revoke_tokens([token.pk], actor="alice")
    assert (again.revoked, again.cancelled, again.active) == (0, 0, 4)
    assert ApiToken.objects.get(pk=token.pk).revoked_at == revoked_at  # the first revocation's time stays


def test_a_leak_cancels_the_waiting_scans_and_leaves_the_started_ones(leaky, pool):
    token, scans = leaky
    other, _, _ = policy_client("other", approval=ApprovalRule.OUTSIDE, pre_approved_targets=["192.0.2.0/28"])
    others = [go(other, "other-queued"), go(other, "other-pending", "192.0.2.201")]
    scanner = Scanner.objects.get(pk=ScanTask.objects.get(pk=scans["launching"].pk).assigned_scanner_id)
    slots_before = sum(Scanner.objects.filter(pool=pool).values_list("active_scans", flat=True))

    result = revoke_tokens([token.pk], actor="alice", cancel_waiting=True)

    assert (result.revoked, result.cancelled) == (1, 2)
    assert result.still_active == {"launching": 1, "running": 1}
    for name in ("pending", "queued"):
        task = ScanTask.objects.get(pk=scans[name].pk)
        assert task.status == TaskStatus.CANCELLED and task.credentials is None and not task.slot_held
        (event,) = cancel_events(task)
        assert event.actor == "alice"
        assert event.message == (f"cancelled by alice: API token 'leaky' (leaky, sp_{token.prefix}_…) revoked, its "
                                 "waiting scans cancelled")
    assert status(scans["launching"]) == TaskStatus.QUEUED and status(scans["running"]) == TaskStatus.RUNNING
    assert status(scans["done"]) == TaskStatus.COMPLETED
    assert ScanTask.objects.get(pk=scans["launching"].pk).slot_held
    assert sum(Scanner.objects.filter(pool=pool).values_list("active_scans", flat=True)) == slots_before
    assert Scanner.objects.get(pk=scanner.pk).active_scans >= 1
    # another client's scans and token are untouched
    assert [status(t) for t in others] == [TaskStatus.QUEUED, TaskStatus.PENDING_APPROVAL]
    assert ApiToken.objects.get(pk=other.pk).revoked_at is None

    again = revoke_tokens([token.pk], actor="bob", cancel_waiting=True)  # idempotent
    assert (again.revoked, again.cancelled, again.still_active) == (0, 0, {"launching": 1, "running": 1})
    assert len(cancel_events(scans["queued"])) == 1


def test_a_scan_given_a_scanner_between_the_read_and_the_cancel_is_left_whole(pool, monkeypatch):
    """The dispatcher claims the queued scan after the revocation read it and before its cancel: the cancel's
    conditional UPDATE loses, the scan keeps its scanner and its slot (launching, counted as still active), and
    nothing of a cancel is written."""
    token, _, _ = policy_client("raced")
    first, raced = go(token, "first"), go(token, "raced")
    reads = []
    real_get = services._get

    def get_then_claim(task_id):
        task = real_get(task_id)
        reads.append(task_id)
        if str(task_id) == str(raced.pk) and reads.count(task_id) == 1:
            assert claim(pool.pk, raced.pk, None) is Claim.CLAIMED  # the dispatcher, in between
        return task

    monkeypatch.setattr(services, "_get", get_then_claim)
    result = revoke_tokens([token.pk], actor="alice", cancel_waiting=True)

    assert (result.revoked, result.cancelled, result.still_active) == (1, 1, {"launching": 1})
    assert status(first) == TaskStatus.CANCELLED
    task = ScanTask.objects.get(pk=raced.pk)
    assert task.status == TaskStatus.QUEUED and task.claimed_at is not None and task.slot_held
    assert Scanner.objects.get(pk=task.assigned_scanner_id).active_scans == 1
    assert cancel_events(raced) == []
    assert not TaskEvent.objects.filter(task_id=raced.pk, message__contains="slot released").exists()


def test_revoking_while_the_dispatcher_runs_never_half_cancels(pool):
    """A dispatcher thread claims the token's scans while the revocation cancels them: each scan ends either
    cancelled without a slot or claimed with one, and the scanners count exactly the slots held."""
    ScannerFactory(pool=pool, name="dmz-3", max_concurrent_scans=20)
    token, _, _ = policy_client("busy")
    tasks = [go(token, f"scan-{i}", f"192.0.2.{i + 1}") for i in range(12)]
    start, errors = threading.Barrier(2), []

    def dispatcher() -> None:
        try:
            start.wait()
            dispatch_round(pool.pk)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=dispatcher)
    thread.start()
    start.wait()
    result = revoke_tokens([token.pk], actor="alice", cancel_waiting=True)
    thread.join()
    assert errors == []
    rows = ScanTask.objects.filter(pk__in=[t.pk for t in tasks])
    cancelled = [t for t in rows if t.status == TaskStatus.CANCELLED]
    claimed = [t for t in rows if t.status == TaskStatus.QUEUED and t.claimed_at is not None]
    assert len(cancelled) + len(claimed) == 12 and result.cancelled == len(cancelled)
    assert all(not t.slot_held and t.claimed_at is None for t in cancelled)
    assert all(t.slot_held for t in claimed) and result.still_active.get("launching", 0) == len(claimed)
    held = sum(Scanner.objects.filter(pool=pool).values_list("active_scans", flat=True))
    assert held == len(claimed)


def test_tokens_without_scans_and_several_tokens_at_once(pool):
    quiet = ApiToken.issue(user_with(SUBMIT, "quiet"), "quiet")[0]
    token, _, _ = policy_client("loud")
    go(token)
    result = revoke_tokens([quiet.pk, token.pk, quiet.pk], actor="alice", cancel_waiting=True)
    assert (result.token_ids, result.revoked, result.cancelled, result.active) == (
        tuple(sorted((quiet.pk, token.pk))), 2, 1, 0)
    assert not ApiToken.objects.active().exists()


# ------------------------------------------------------------ a submission in flight at the revocation
def test_a_submission_whose_token_was_revoked_after_it_was_authenticated_creates_nothing(pool):
    token, _, _ = policy_client("late")  # read (authenticated) before the revocation below
    before = (ScanTask.objects.count(), TaskEvent.objects.count(), TaskTarget.objects.count())
    revoke_tokens([token.pk], actor="alice", cancel_waiting=True)
    with pytest.raises(TokenRevoked) as caught:
        go(token)
    assert caught.value.status_code == 401 and "revoked while this request was in flight" in caught.value.message
    assert (ScanTask.objects.count(), TaskEvent.objects.count(), TaskTarget.objects.count()) == before


def test_a_submission_in_flight_at_the_revocation_is_seen_and_cancelled_by_it(pool, monkeypatch):
    """Found in review: a scan whose transaction was open while a leaked key was revoked landed after the cancel pass
    and ran. The submission locks its token's row (PostgreSQL; SQLite's write lock does the same), so the revocation
    waits for it — up to a second is given here for it not to — and its cancel pass sees the scan."""
    token = ApiToken.issue(user_with(SUBMIT, "racer"), "racer")[0]
    results, threads, real_rows = [], [], services.index_rows

    def revoke() -> None:
        try:
            results.append(revoke_tokens([token.pk], actor="alice", cancel_waiting=True))
        finally:
            connection.close()

    def rows_while_revoking(task_id, parsed):  # inside the submission's transaction, after its token check
        threads.append(threading.Thread(target=revoke))
        threads[0].start()
        threads[0].join(timeout=1.0)
        return real_rows(task_id, parsed)

    monkeypatch.setattr(services, "index_rows", rows_while_revoking)
    task = go(token, "in-flight")
    threads[0].join(30)
    (result,) = results
    assert result.revoked == 1 and result.cancelled == 1 and result.active == 0
    assert status(task) == TaskStatus.CANCELLED and "revoked" in cancel_events(task)[0].message


def test_the_api_answers_401_to_a_submission_whose_token_was_revoked_in_flight(pool, monkeypatch):
    from tasks.api.auth import ApiTokenAuthentication
    from tests.api_support import assert_error, token_client

    client, _ = token_client(user_with(SUBMIT, "api-late"))
    real = ApiTokenAuthentication.authenticate

    def authenticate_then_revoke(self, request):
        user, token = real(self, request)
        revoke_tokens([token.pk], actor="alice", cancel_waiting=True)
        return user, token

    monkeypatch.setattr(ApiTokenAuthentication, "authenticate", authenticate_then_revoke)
    response = client.post("/api/v1/scans/", {"name": "late", "targets": "192.0.2.10", "scanner_pool": "dmz"},
                           format="json", secure=True)
    error = assert_error(response, 401, code="authentication_failed")
    assert "revoked while this request was in flight" in error["message"]
    assert response["WWW-Authenticate"] == 'Token realm="api"' and not ScanTask.objects.exists()
