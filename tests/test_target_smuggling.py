"""Issue #8 item 2: one target can never carry another past the scope check — at submit (every smuggling
form) and again at launch, on the final ``text_targets`` string split the way Nessus splits it, against
the pool's scope as of now (an emulator-backed test shrinks the scope after submit)."""

from __future__ import annotations

import pytest

from pools.models import Pool
from pools.scanner_targets import check_text_targets, text_targets
from pools.scope import Scope, parse_target
from tasks.errors import ScopeError, SubmissionError
from tasks.models import ScanTask, TaskEvent
from tasks.services import retry, submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, run_until
from tests.factories import PoolFactory, ScanTaskFactory

SCOPE = ["192.0.2.0/24", "*.example.com", "2001:db8::/32"]


@pytest.fixture
def pool(db):
    return PoolFactory(name="dmz", scope=SCOPE)


def _refused(target: str) -> SubmissionError:
    with pytest.raises(SubmissionError) as info:
        submit(pool="dmz", name="n", targets=[target])
    assert ScanTask.objects.count() == 0 and TaskEvent.objects.count() == 0
    assert info.value.field == "targets"
    return info.value


@pytest.mark.parametrize(("target", "words"), [
    ("127.0.0.1\n.example.com", "white space"),  # the form: '$' matched before the new line
    ("web.example.com\n", "white space"),  # trailing new line
    ("192.0.2.1\r", "white space"),
    ("192.0.2.1\r\n127.0.0.1", "white space"),
    ("192.0.2.1\t127.0.0.1", "white space"),
    ("192.0.2.1 127.0.0.1", "white space"),  # a space inside one target
    ("192.0.2.1\u00a0127.0.0.1", "white space"),  # a no-break space
    ("2001:db8::1%eth0", "zone id"),
    ("2001:db8::1%,127.0.0.1", "','"),  # the second form
    ("192.0.2.1,127.0.0.1", "','"),
    ("192.0.2.1;127.0.0.1", "';'"),
    ("192.0.2.1\x00", "control character U+0000"),
    ("web.example.com\x00.evil.org", "control character U+0000"),
    ("192.0.2.1\x1b", "control character U+001B"),
    ("\uff11\uff19\uff12.0.2.1", "non-ASCII"),  # full-width digits
    ("w\u0435b.example.com", "punycode"),  # Cyrillic small ie (U+0435) in a look-alike name
    ("web.example.com\u200b", "non-ASCII"),  # zero-width space
])
def test_smuggling_forms_are_refused_at_submit(pool, target, words):
    err = _refused(target)
    assert err.status_code == 400 and words in err.message, err.message


@pytest.mark.parametrize(("target", "words"), [
    ("192.0.2.250-192.0.3.5", "not allowed in pool 'dmz': 192.0.2.250-192.0.3.5"),  # the range ends outside
    ("192.0.1.250-192.0.2.5", "not allowed in pool 'dmz'"),  # ... starts outside
    ("192.0.2.250-260", "valid address range"),  # short form past .255
    ("192.0.0.0/16", "not allowed in pool 'dmz': 192.0.0.0/16"),  # wider than the scope
    ("2001:db9::1", "not allowed"),
    ("example.com", "not allowed"),  # *.example.com does not cover the apex
])
def test_ranges_and_networks_must_lie_inside_the_scope(pool, target, words):
    err = _refused(target)
    assert words in err.message, err.message


def test_host_names_that_resolvers_read_as_addresses_are_refused(db):
    PoolFactory(name="dmz", allow_any_target=True, scope=[])
    for numeric in ("0x7f000001", "127.0.0.0x1", "2130706433", "127.1", "0177.0.0.1"):
        assert "not an IP address" in _refused(numeric).message


def test_valid_targets_still_pass(pool):
    task = submit(pool="dmz", name="n", targets=[" 192.0.2.7 ", "192.0.2.0/28", "192.0.2.1-20", "db.example.com",
                                                   "2001:db8::1", "xn--wb-ulc.example.com"])
    assert task.targets == ["192.0.2.7", "192.0.2.0/28", "192.0.2.1-192.0.2.20", "db.example.com", "2001:db8::1",
                            "xn--wb-ulc.example.com"]


def test_text_targets_are_rechecked_the_way_nessus_splits_them():
    scope = Scope.parse(SCOPE)
    assert check_text_targets(text_targets(["192.0.2.1", "a.example.com"]), scope) == []
    for smuggled in ("192.0.2.1,127.0.0.1", "192.0.2.1\n127.0.0.1", "192.0.2.1 10.0.0.0/8", "192.0.2.1\t8.8.8.8",
                     "192.0.2.1;8.8.8.8"):
        problems = check_text_targets(smuggled, scope)
        assert len(problems) == 1 and problems[0].split(":")[0] in smuggled, problems
    assert check_text_targets("2001:db8::1%eth0", scope) and check_text_targets("", scope) == ["no targets"]


# ------------------------------------------------------------------------------------- at launch


def _finished(task):
    return lambda: ScanTask.objects.get(pk=task.pk).is_terminal


def test_scope_shrunk_after_submit_is_refused_at_launch_and_retries_meet_todays_scope(
    transactional_db, redis_conn, emulator  # noqa: F811
):
    pool, _ = emulated_pool(emulator, [1, 1], scope=["192.0.2.0/24"])
    task = submit(pool=pool.name, name="shrunk", targets=["192.0.2.10"])
    Pool.objects.filter(pk=pool.pk).update(scope=["198.51.100.0/24"])  # an administrator narrows the pool
    run_until([pool], _finished(task), timeout=20)
    task.refresh_from_db()
    assert task.status == "failed" and task.error_kind == "permanent"
    assert "refused at launch" in task.error_message and "192.0.2.10: outside the scope" in task.error_message
    assert not task.slot_held and task.scanner_scan_id is None
    assert emulator.control(0).scans() == [] and emulator.control(1).scans() == []  # nothing created on a scanner

    with pytest.raises(ScopeError) as info:  # a retry meets today's scope at once: refused (403), not queued
        retry(task.pk, actor="bob")
    assert "192.0.2.10" in info.value.message
    assert ScanTask.objects.get(pk=task.pk).status == "failed"
    assert emulator.control(0).scans() == [] and emulator.control(1).scans() == []

    Pool.objects.filter(pk=pool.pk).update(scope=["192.0.2.0/24"])  # the scope is widened again
    retry(task.pk, actor="bob")
    run_until([pool], _finished(task), timeout=30)
    assert ScanTask.objects.get(pk=task.pk).status == "completed"


def test_a_row_written_around_submit_cannot_smuggle_at_launch(transactional_db, redis_conn, emulator):  # noqa: F811
    from tasks.engine.dispatch import request_dispatch

    pool, _ = emulated_pool(emulator, [1], scope=["192.0.2.0/24"])
    task = ScanTaskFactory(pool=pool, targets=["192.0.2.10\n127.0.0.1"])
    request_dispatch(pool.pk)
    run_until([pool], _finished(task), timeout=20)
    task.refresh_from_db()
    assert task.status == "failed" and "refused at launch" in task.error_message
    assert emulator.control(0).scans() == []


def test_protected_targets_are_refused_at_launch_too(transactional_db, redis_conn, emulator):  # noqa: F811
    pool, _ = emulated_pool(emulator, [1], scope=[], allow_any_target=True)
    task = ScanTaskFactory(pool=pool, targets=["169.254.169.254"])
    from tasks.engine.dispatch import request_dispatch

    request_dispatch(pool.pk)
    run_until([pool], _finished(task), timeout=20)
    task.refresh_from_db()
    assert task.status == "failed" and "protected" in task.error_message
    assert emulator.control(0).scans() == []


def test_parse_target_rejects_what_old_patterns_let_through():
    from pools.scope import TargetError

    for raw in ("a.example.com\n", "1.example.com\nb", "2001:db8::1%25x"):
        with pytest.raises(TargetError):
            parse_target(raw)
