"""A scanner that asked to wait (HTTP 429 ``Retry-After: N``) is not picked before its wait is over: a launch whose
retries were all spent on such answers goes back to the queue and is not dispatched to that scanner again before N
seconds (another free scanner of the pool takes it), the reconcile neither health-checks it nor lists its scans in
the meantime, a task claimed for it before it asked is not launched there, and the wait estimate, the API and the
admin show the wait. Real Redis, the real database, the emulator over HTTP (its request log is the witness); jobs
run in-process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rq.registry import ScheduledJobRegistry

from scanners import pacing
from scanners.admin import ScannerAdmin
from scanners.models import Scanner
from scanners.selection import candidates
from tasks.capacity import estimated_wait
from tasks.engine.dispatch import dispatch_pool
from tasks.engine.recovery import reconcile
from tasks.models import EventKind, TaskEvent, TaskStatus
from tasks.queues import SERIALIZER, pool_launch_queue
from tasks.services import submit
from tests.api_support import api, fresh_throttle_counts, operator  # noqa: F401 - fixtures
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, reread, run_until

pytestmark = pytest.mark.integration
WAIT = 3


def requests(emu, index: int) -> list[list]:
    """[[time, method, path, status], …] of the emulator instance's recent requests."""
    return emu.control(index).stats()["recent"]


def creates(emu, index: int) -> list[list]:
    return [r for r in requests(emu, index) if r[1] == "POST" and r[2] == "/scans"]


@pytest.fixture
def two_attempts(settings):
    """A launch gets one RQ retry (at once, but for the Retry-After): two answers spend its retries."""
    settings.SCANPOOL_RETRY_INTERVALS = [0]


def test_a_launch_spent_on_retry_after_goes_to_the_free_scanner_not_back_to_the_waiting_one(
        transactional_db, redis_conn, emulator, two_attempts, api):  # noqa: F811
    pool, (waiting, free) = emulated_pool(emulator, [1, 1])
    emulator.control(0).set_faults(error_match="^POST /scans$", error_burst=2, error_status=429,
                                   retry_after=str(WAIT))
    task = submit(pool=pool.name, name="paced-away", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).assigned_scanner_id == free.pk, timeout=30)
    assert Scanner.objects.get(pk=waiting.pk).waiting_until is not None
    shown = api.get(f"/api/v1/scanners/{waiting.name}/").json()["wait_until"]  # where operators look
    assert shown and timezone.now() < parse_datetime(shown) <= timezone.now() + timedelta(seconds=WAIT)
    assert api.get(f"/api/v1/scanners/{free.name}/").json()["wait_until"] is None
    assert "asked to wait until" in ScannerAdmin(Scanner, None).breaker_display(Scanner.objects.get(pk=waiting.pk))

    run_until([pool], lambda: reread(task).status == TaskStatus.COMPLETED, timeout=30)

    refused = creates(emulator, 0)
    assert [r[3] for r in refused] == [429, 429]  # both attempts, then it went elsewhere
    last = refused[-1][0]
    assert not [r for r in requests(emulator, 0) if last < r[0] < last + WAIT]  # nothing during the wait
    assert emulator.control(0).launches_for("paced-away") == 0
    assert emulator.control(1).launches_for("paced-away") == 1
    assert TaskEvent.objects.filter(task=task, message__startswith="back in the queue").exists()


def test_with_no_other_scanner_the_task_waits_for_the_end_of_the_wait_and_the_reconcile_leaves_it_alone(
        transactional_db, redis_conn, emulator, two_attempts):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(error_match="^POST /scans$", error_burst=2, error_status=429,
                                   retry_after=str(WAIT))
    task = submit(pool=pool.name, name="paced-wait", targets=["192.0.2.10"])
    run_until([pool], lambda: len(creates(emulator, 0)) == 2 and reread(task).claimed_at is None, timeout=30)
    last = creates(emulator, 0)[-1][0]

    report = reconcile([pool.pk])  # health checks and the orphan listing included; dispatches the pool too
    assert [name for name, _ in report.waiting] == [scanner.name]
    assert any("not checked: it asked scanpool to wait" in line for line in report.notes())
    assert reread(task).claimed_at is None and candidates(pool.pk) == []
    estimate = estimated_wait(reread(task))  # the scanner's slot is free, but not before the wait ends
    assert estimate.seconds is not None and 1 <= estimate.seconds <= WAIT
    scheduled = ScheduledJobRegistry(queue=pool_launch_queue(pool), serializer=SERIALIZER).get_job_ids()
    assert any(job_id.startswith(f"dispatch-{pool.pk}-wait-") for job_id in scheduled)  # woken when it ends

    run_until([pool], lambda: reread(task).status == TaskStatus.COMPLETED, timeout=30)
    created = creates(emulator, 0)
    assert [r[3] for r in created] == [429, 429, 200]
    assert created[2][0] - last >= WAIT  # dispatched to it again only once the wait was over
    assert not [r for r in requests(emulator, 0) if last < r[0] < last + WAIT]  # no call at all meanwhile
    assert emulator.control(0).launches_for("paced-wait") == 1


def test_a_task_claimed_before_its_scanner_asked_to_wait_is_not_launched_there(
        transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (waiting, free) = emulated_pool(emulator, [1, 1])
    task = submit(pool=pool.name, name="claimed-then-paced", targets=["192.0.2.10"])
    dispatch_pool(pool.pk)
    assert reread(task).assigned_scanner_id == waiting.pk
    pacing.record_wait(waiting, 30)  # another call to it was answered 429 Retry-After: 30 meanwhile
    run_until([pool], lambda: reread(task).status == TaskStatus.COMPLETED, timeout=30)

    assert reread(task).assigned_scanner_id == free.pk
    assert creates(emulator, 0) == []
    unclaimed = TaskEvent.objects.get(task=task, kind=EventKind.RETRY, message__startswith="back in the queue")
    assert "asked scanpool to wait until" in unclaimed.message


def test_a_wait_only_moves_later(transactional_db, emulator):  # noqa: F811
    _, (scanner,) = emulated_pool(emulator, [1])
    long = pacing.record_wait(scanner, 60)
    assert pacing.record_wait(scanner, 5) == long  # a shorter wait answered meanwhile does not shorten it
    assert pacing.record_wait(scanner, 0) is None
    assert Scanner.objects.get(pk=scanner.pk).waiting_until == long
    assert pacing.next_wait_end(scanner.pool_id) == long


def test_a_retry_after_answered_to_the_reconciles_orphan_listing_holds_off_the_next_reconcile(
        transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(error_match="^GET /scans$", error_burst=1, error_status=429, retry_after="30")
    first = reconcile([pool.pk])
    assert any("could not list scans" in error for error in first.errors)
    assert Scanner.objects.get(pk=scanner.pk).waiting_until is not None
    seen = len(requests(emulator, 0))

    second = reconcile([pool.pk])
    assert [name for name, _ in second.waiting] == [scanner.name] and not second.errors
    assert len(requests(emulator, 0)) == seen  # not called again during the wait
