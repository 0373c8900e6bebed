"""The engine obeys a scanner's ``Retry-After``: a launch or poll answered 429 "come back in N seconds" is retried
by RQ no earlier than N seconds later (not after the immediate retry intervals of these tests), the task's
timeline says the scanner asked to wait, the reconcile does not restart the waiting poll early, and the scan
completes launched once. Real Redis, the real database, the emulator over HTTP; jobs run in-process."""

from __future__ import annotations

import time

import pytest

from scanners.models import Scanner
from tasks.engine.recovery import reconcile
from tasks.models import EventKind, TaskEvent
from tasks.services import submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, reread, run_until  # noqa: F401 - fixture
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("immediate_retries")]


def calls(emu, method: str, path: str) -> list[list]:
    """[[time, method, path, status], …] of the emulator's recent requests to ``method path``."""
    return [r for r in emu.control(0).stats()["recent"] if r[1] == method and r[2] == path]


def after_429(requests: list[list]) -> tuple[float, float]:
    """The time of the 429 answer and of the next request to the same endpoint."""
    index = next(i for i, r in enumerate(requests) if r[3] == 429)
    return requests[index][0], requests[index + 1][0]


def test_launch_answered_429_retry_after_is_retried_after_the_wait_and_said_in_the_timeline(
        transactional_db, redis_conn, emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(error_match=r"^POST /scans/\d+/launch$", error_burst=1, error_status=429,
                                   retry_after="2")
    task = submit(pool=pool.name, name="paced-launch", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "completed", timeout=40)

    row = reread(task)
    launches = calls(emulator, "POST", f"/scans/{row.scanner_scan_id}/launch")
    assert [r[3] for r in launches] == [429, 200]
    refused, retried = after_429(launches)
    assert retried - refused >= 2  # not at the immediate retry interval: when the scanner said
    assert emulator.control(0).launches_for("paced-launch") == 1  # launched once, on the same scan
    event = TaskEvent.objects.get(task=task, kind=EventKind.RETRY)
    assert "asked scanpool to wait 2s" in event.message and "HTTP 429 Retry-After" in event.message
    assert event.data["retry_after"] == 2 and event.data["status_code"] == 429 and event.data["not_before"]
    assert Scanner.objects.get(pk=scanner.pk).consecutive_failures == 0  # the launch then worked


def test_poll_answered_429_retry_after_waits_and_the_reconcile_does_not_poll_early(
        transactional_db, redis_conn, emulator, settings):  # noqa: F811
    settings.SCANPOOL_STALE_AFTER = 1  # the reconcile would call a poll idle this long stalled
    pool, _ = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="paced-poll", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "running", timeout=20)
    path = f"/scans/{reread(task).scanner_scan_id}"
    emulator.control(0).set_faults(error_match=f"^GET {path}$", error_burst=1, error_status=429, retry_after="3")
    run_until([pool], lambda: any(r[3] == 429 for r in calls(emulator, "GET", path)), timeout=20)
    refused_at = next(r[0] for r in calls(emulator, "GET", path) if r[3] == 429)
    wait_for(lambda: time.time() - refused_at > 1.5, timeout=5, what="the poll to look idle to the reconcile")
    report = reconcile([pool.pk], check_scanners=False)
    assert str(task.pk) not in report.resumed  # its poll is scheduled for after the wait: not stalled
    run_until([pool], lambda: reread(task).status == "completed", timeout=40)

    refused, polled = after_429(calls(emulator, "GET", path))
    assert polled - refused >= 3
    event = TaskEvent.objects.get(task=task, message__contains="asked scanpool to wait")
    assert event.kind == EventKind.WARNING  # not "retry": those count against a client's daily budget
    assert "asked scanpool to wait 3s" in event.message and "during poll attempt 1" in event.message
    assert emulator.control(0).launches_for("paced-poll") == 1


def test_a_429_retry_after_counts_for_the_breaker_and_its_trial_comes_no_earlier_than_the_capped_wait(
        transactional_db, redis_conn, emulator, settings):  # noqa: F811
    settings.SCANPOOL_BREAKER_THRESHOLD = 1
    settings.SCANPOOL_BREAKER_COOLDOWN = 2  # also the cap of a Retry-After
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(error_match="^POST /scans$", error_burst=1, error_status=429, retry_after="3600")
    task = submit(pool=pool.name, name="paced-create", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "completed", timeout=40)

    refused, created = after_429(calls(emulator, "POST", "/scans"))
    assert created - refused >= 2  # the breaker's trial: after the cooldown, which the asked wait was capped to
    opened = TaskEvent.objects.get(task=task, kind=EventKind.BREAKER, message__contains="opened")
    assert "asked to wait 2s (Retry-After)" in opened.message
    assert Scanner.objects.get(pk=scanner.pk).breaker_state == "closed"  # the trial worked
    assert emulator.control(0).launches_for("paced-create") == 1
