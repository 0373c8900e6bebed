"""tasks.services.submit: validation (every field, named in the error), scope, idempotency, backpressure,
row + event written, dispatch requested on commit with ids only."""

from __future__ import annotations

import threading

import pytest
from rq.job import Job

from pools.scope import Scope, TargetError, normalise_targets, out_of_scope, parse_target
from tasks.errors import IdempotencyConflict, NotFoundError, PoolFull, ScopeError, SubmissionError
from tasks.models import ScanTask, TaskEvent
from tasks.queues import SERIALIZER, pool_launch_queue
from tasks.services import submit
from tests.factories import PoolFactory, ScannerFactory, UserFactory

GOOD_CREDS = {"username": "root", "password": "s3cret-pass"}


# ------------------------------------------------------------------------------ targets and scope


@pytest.mark.parametrize(("raw", "text"), [
    ("10.0.0.1", "10.0.0.1"), (" 2001:db8::1 ", "2001:db8::1"), ("10.0.0.0/24", "10.0.0.0/24"),
    ("10.0.0.1-10.0.0.20", "10.0.0.1-10.0.0.20"), ("10.0.0.1-20", "10.0.0.1-10.0.0.20"),
    ("Host-1.Example.COM.", "host-1.example.com"), ("scanner", "scanner"),
])
def test_targets_are_normalised(raw, text):
    assert parse_target(raw).text == text


@pytest.mark.parametrize(("raw", "hint"), [
    ("10.0.0.5/24", "did you mean 10.0.0.0/24"), ("10.0.0.300", "not an IP address"),
    ("http://example.com", "no URL"), ("10.0.0.20-10.0.0.1", "lower address first"),
    ("-bad-.example.com", "valid host name"), ("", "empty target"), ("10.0.0.1-2001:db8::1", "mixes IPv4 and IPv6"),
])
def test_bad_targets_say_how_to_fix_them(raw, hint):
    with pytest.raises(TargetError, match=hint):
        parse_target(raw)


def test_target_list_dedupes_and_limits(settings):
    assert [t.text for t in normalise_targets("10.0.0.1, 10.0.0.1 host.example.com")] == ["10.0.0.1",
                                                                                           "host.example.com"]
    settings.SCANPOOL_MAX_TARGET_ADDRESSES = 256
    with pytest.raises(TargetError, match="cover 65536 addresses; at most 256"):
        normalise_targets(["10.0.0.0/16"])


def test_scope_rules(settings):
    settings.SCANPOOL_MAX_TARGET_ADDRESSES = 10**6
    scope = ["10.20.0.0/16", "192.0.2.0/25", "192.0.2.128/25", "*.dmz.example.com", "exact.example.org",
             "2001:db8::/32"]
    targets = normalise_targets(["10.20.3.4", "10.20.0.0/20", "192.0.2.0/24", "a.dmz.example.com",
                                 "exact.example.org", "2001:db8::5", "10.20.255.250-10.20.255.255"])
    assert out_of_scope(targets, scope) == []  # adjacent /25s collapse into the /24
    bad = normalise_targets(["10.21.0.1", "10.20.0.0/15", "dmz.example.com", "x.example.org",
                             "10.19.255.250-10.20.0.5"])
    assert out_of_scope(bad, scope) == [t.text for t in bad]
    assert not Scope.parse([]).allows(parse_target("8.8.8.8"))  # empty scope: nothing allowed
    assert Scope.parse([], allow_any=True).allows(parse_target("8.8.8.8"))  # unless the pool allows any target


# --------------------------------------------------------------------------------------- submit


@pytest.fixture
def pool(db):
    return PoolFactory(name="dmz", scope=["10.20.0.0/16", "*.dmz.example.com"], scan_timeout_seconds=7200)


def test_submit_writes_row_event_and_enqueues_dispatch_with_ids_only(
    pool, redis_conn, django_capture_on_commit_callbacks
):
    user = UserFactory()
    with django_capture_on_commit_callbacks(execute=True):
        task = submit(pool="dmz", name="weekly", targets=["10.20.0.5", "web.dmz.example.com"],
                      scan_type="authenticated", credentials=GOOD_CREDS, requested_by=user)
    task.refresh_from_db()
    assert task.status == "queued" and task.timeout_seconds == 7200 and task.requested_by == user
    assert task.targets == ["10.20.0.5", "web.dmz.example.com"]
    assert task.credentials == GOOD_CREDS and len(task.request_fingerprint) == 64
    assert "s3cret-pass" not in task.request_fingerprint
    assert TaskEvent.objects.filter(task=task, message__startswith="submitted to pool dmz").exists()
    queue = pool_launch_queue(pool)  # dispatch and launch have their own queue, served first
    jobs = [Job.fetch(jid, connection=redis_conn, serializer=SERIALIZER) for jid in queue.get_job_ids()]
    assert [j.func_name for j in jobs] == ["tasks.jobs.dispatch"]
    assert jobs[0].args == [pool.pk]
    raw = b"".join(v for k in redis_conn.keys("rq:job:*") for v in redis_conn.hgetall(k).values())
    assert b"s3cret-pass" not in raw and b"root" not in raw


def _error(**kwargs) -> SubmissionError:
    base = {"pool": "dmz", "name": "n", "targets": ["10.20.0.1"]}
    with pytest.raises(SubmissionError) as info:
        submit(**{**base, **kwargs})
    return info.value


@pytest.mark.parametrize(("kwargs", "field", "words", "status"), [
    ({"pool": "nope"}, "pool", "no pool named 'nope'; available pools: dmz", 404),
    ({"name": "  "}, "name", "is required", 400),
    ({"name": "x" * 201}, "name", "at most 200", 400),
    ({"targets": []}, "targets", "no targets given", 400),
    ({"targets": ["10.20.0.5/24"]}, "targets", "did you mean 10.20.0.0/24", 400),
    ({"targets": ["10.30.0.1"]}, "targets", "not allowed in pool 'dmz': 10.30.0.1", 403),
    ({"targets": ["www.example.com"]}, "targets", "not allowed", 403),
    ({"scan_type": "deep"}, "scan_type", "use one of untrusted, authenticated", 400),
    ({"credentials": GOOD_CREDS}, "credentials", "untrusted scan takes no credentials", 400),
    ({"scan_type": "authenticated"}, "credentials", "an 'authenticated' scan needs credentials", 400),
    ({"scan_type": "authenticated", "credentials": {"username": "u"}}, "credentials.password", "exactly one", 400),
    ({"scan_type": "authenticated", "credentials": {"username": "u", "password": "p", "private_key": "k"}},
     "credentials.private_key", "not both", 400),
    ({"scan_type": "authenticated", "credentials": {"username": "u", "private_key": "nope"}},
     "credentials.private_key", "PEM", 400),
    ({"scan_type": "authenticated", "credentials": {"username": "u", "password": "p", "pin": "1"}},
     "credentials.pin", "unknown key", 400),
    ({"scan_type": "authenticated", "credentials": {**GOOD_CREDS, "elevate_privileges_with": "sudo"}},
     "credentials.elevate_privileges_with", "authenticated_privileged", 400),
    ({"scan_type": "authenticated_privileged", "credentials": GOOD_CREDS},
     "credentials.elevate_privileges_with", "is required", 400),
    ({"scan_type": "authenticated_privileged", "credentials": {**GOOD_CREDS, "elevate_privileges_with": "doas"}},
     "credentials.elevate_privileges_with", "is not a supported method; use one of sudo, su", 400),
    ({"timeout_seconds": 5}, "timeout_seconds", "out of range", 400),
    ({"timeout_seconds": "60"}, "timeout_seconds", "whole number", 400),
    ({"scanner_instance": "ghost"}, "scanner_instance", "no scanner named 'ghost'", 404),
])
def test_invalid_input_names_the_field_and_writes_nothing(pool, kwargs, field, words, status):
    err = _error(**kwargs)
    assert (err.field, err.status_code) == (field, status)
    assert words in err.message
    assert ScanTask.objects.count() == 0 and TaskEvent.objects.count() == 0


def test_pinned_scanner_must_be_in_the_pool_and_enabled(pool):
    other = ScannerFactory(name="elsewhere")
    err = _error(scanner_instance="elsewhere")
    assert err.status_code == 400 and f"belongs to pool '{other.pool.name}', not 'dmz'" in err.message
    ScannerFactory(pool=pool, name="off", enabled=False)
    assert "is disabled" in _error(scanner_instance="off").message
    ScannerFactory(pool=pool, name="dmz-1")
    task = submit(pool="dmz", name="n", targets=["10.20.0.1"], scanner_instance="dmz-1")
    assert task.requested_scanner.name == "dmz-1"


def test_disabled_pool_accepts_nothing(pool):
    pool.enabled = False
    pool.save()
    err = _error()
    assert err.code == "pool_disabled" and "is disabled" in err.message


def test_privileged_scan_accepted(pool):
    creds = {**GOOD_CREDS, "elevate_privileges_with": "su+sudo", "escalation_account": "root",
             "escalation_password": "x"}
    task = submit(pool="dmz", name="n", targets="10.20.0.1", scan_type="authenticated_privileged", credentials=creds)
    assert task.credentials["elevate_privileges_with"] == "su+sudo"


def test_idempotency_key_same_request_same_task_different_request_conflict(pool):
    first = submit(pool="dmz", name="n", targets=["10.20.0.1"], idempotency_key="k-1")
    again = submit(pool="dmz", name="n", targets=[" 10.20.0.1 "], idempotency_key="k-1")
    assert again.pk == first.pk and ScanTask.objects.count() == 1
    with pytest.raises(IdempotencyConflict) as info:
        submit(pool="dmz", name="n", targets=["10.20.0.2"], idempotency_key="k-1")
    assert info.value.status_code == 409 and str(first.pk) in info.value.message


@pytest.mark.django_db(transaction=True)
def test_idempotency_race_gives_everyone_the_same_task(redis_conn):
    PoolFactory(name="race", scope=["10.0.0.0/24"])
    results, errors = [], []

    def go():
        from django.db import connection

        try:
            results.append(submit(pool="race", name="n", targets=["10.0.0.1"], idempotency_key="same").pk)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and ScanTask.objects.count() == 1


def test_backpressure_pool_full_with_retry_after(pool):
    pool.max_queued = 2
    pool.save()
    submit(pool="dmz", name="a", targets=["10.20.0.1"])
    submit(pool="dmz", name="b", targets=["10.20.0.1"])
    with pytest.raises(PoolFull) as info:
        submit(pool="dmz", name="c", targets=["10.20.0.1"])
    assert info.value.status_code == 429 and info.value.retry_after >= 1
    assert "2 scans waiting (limit 2)" in info.value.message and ScanTask.objects.count() == 2


def test_unknown_pool_is_404(db):
    with pytest.raises(NotFoundError):
        submit(pool="missing", name="n", targets=["10.0.0.1"])


def test_scope_error_is_403(pool):
    with pytest.raises(ScopeError):
        submit(pool="dmz", name="n", targets=["8.8.8.8"])
