"""A scanner that asked to wait (HTTP 429 ``Retry-After: N``, answered to one task's poll) is called by no step of any
task before N seconds: the polls of the other scans running there come back when the wait ends, without a failure
counted, a retry spent or a timeline entry; a poll held off past the task's deadline still times the task out at
the deadline, and the scan is stopped once the wait is over. Real Redis, the real database, the emulator over HTTP
(its request log is the witness); jobs run in-process by a real RQ worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rq.registry import ScheduledJobRegistry

from scanners import pacing
from scanners.models import Scanner
from tasks.engine.recovery import CLAIM_GRACE, reconcile
from tasks.models import EventKind, ScanTask, TaskEvent, TaskStatus
from tasks.queues import pool_queues
from tasks.services import submit
from tests.engine_support import emulated_pool, reread, run_jobs, run_until
from tests.ops_support import wait_for

pytestmark = pytest.mark.integration
WAIT = 4
LONG_WAIT = 600  # seconds: outlasts any step of the test that must see the scanner still waiting


def requests(emu) -> list[list]:
    """[[time, method, path, status], …] of the emulator's recent requests (the last 200)."""
    return emu.control(0).stats()["recent"]


def scheduled(pool, task: ScanTask, step: str) -> list[float]:
    """When the task's scheduled ``step`` jobs are due (unix time, RQ's whole seconds)."""
    return [score for queue in pool_queues(pool)
            for job_id, score in queue.connection.zrange(ScheduledJobRegistry(queue=queue).key, 0, -1, withscores=True)
            if job_id.decode().startswith(f"{task.id}-{step}-")]


def polls_of(emu, task: ScanTask) -> list[list]:
    path = f"/scans/{reread(task).scanner_scan_id}"
    return [r for r in requests(emu) if r[1] == "GET" and r[2] == path]


def test_polls_of_other_scans_wait_for_the_end_of_a_wait_asked_in_answer_to_one_poll(
        transactional_db, redis_conn, emulator_factory):
    emu = emulator_factory(instances=1, scan_seconds=12)
    pool, (scanner,) = emulated_pool(emu, [2])
    first = submit(pool=pool.name, name="asked-to-wait", targets=["192.0.2.10"])
    other = submit(pool=pool.name, name="other-scan", targets=["192.0.2.11"])
    run_until([pool], lambda: {reread(first).status, reread(other).status} == {TaskStatus.RUNNING}, timeout=20)
    run_until([pool], lambda: polls_of(emu, other), timeout=10)  # the other scan is being polled
    emu.control(0).set_faults(error_match=f"^GET /scans/{reread(first).scanner_scan_id}$", error_burst=1,
                              error_status=429, retry_after=str(WAIT))
    run_until([pool], lambda: any(r[3] == 429 for r in polls_of(emu, first)), timeout=20)
    refused_at = next(r[0] for r in polls_of(emu, first) if r[3] == 429)

    run_until([pool], lambda: {reread(first).status, reread(other).status} == {TaskStatus.COMPLETED}, timeout=60)

    during = [r for r in requests(emu) if refused_at < r[0] < refused_at + WAIT]
    assert during == []  # no call at all to the scanner during the wait: not the other scan's polls either
    assert [r for r in polls_of(emu, other) if r[0] > refused_at]  # they came back after it
    assert not TaskEvent.objects.filter(task=other, message__contains="wait").exists()  # no timeline entry
    assert not TaskEvent.objects.filter(task=other, kind__in=[EventKind.RETRY, EventKind.WARNING]).exists()
    assert Scanner.objects.get(pk=scanner.pk).consecutive_failures == 0  # nothing counted as a failure
    assert emu.control(0).launches_for("other-scan") == 1


def test_a_poll_held_off_past_the_deadline_times_the_task_out_then_and_stops_the_scan_after_the_wait(
        transactional_db, redis_conn, emulator_factory, settings):
    settings.SCANPOOL_STOP_GRACE = 60
    emu = emulator_factory(instances=1, scan_seconds=30)
    pool, (scanner,) = emulated_pool(emu, [1], scan_timeout_seconds=3)
    task = submit(pool=pool.name, name="deadline-during-wait", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == TaskStatus.RUNNING, timeout=20)
    # Answered to another call: a wait far longer than the task has left and than the test takes to see it time out,
    # so no step may call the scanner until the test ends the wait below. (It was 6 s: the held-off poll is due up to
    # 2 s after the 3 s deadline, RQ keeping whole seconds, so on a loaded machine the burst that ran it started just
    # before the wait ended, and the settle step the timeout enqueues ran in the same burst just after: its GET and
    # stop, rightly made once the wait was over, were counted as calls made by the timeout.)
    until = pacing.record_wait(scanner, LONG_WAIT)
    seen = len(requests(emu))

    # At the deadline, not at the end of the wait: only a poll brought back at the deadline times the task out in 20 s.
    run_until([pool], lambda: reread(task).status == TaskStatus.TIMEOUT, timeout=20)
    timed_out = reread(task)
    assert timed_out.deadline_at <= timed_out.finished_at < until
    assert len(requests(emu)) == seen  # timed out without calling the scanner (not even to stop the scan)
    assert "not stopped yet" in reread(task).error_message
    # The settle step (it stops the scan, then releases the slot) was held off too: it comes back when the wait ends.
    run_until([pool], lambda: scheduled(pool, task, "settle"), timeout=10)
    (due,) = scheduled(pool, task, "settle")
    assert until.timestamp() <= due < until.timestamp() + 3  # RQ's whole seconds; not_before adds one
    assert len(requests(emu)) == seen and reread(task).slot_held

    # The wait ends (moved to now rather than waited out), and the settle step runs as RQ's scheduler would run it then.
    ended = timezone.now()
    Scanner.objects.filter(pk=scanner.pk).update(wait_until=ended)
    run_jobs([pool], all_scheduled=True)
    run_until([pool], lambda: not reread(task).slot_held, timeout=30)  # the settle step, once the wait is over
    stops = [r for r in requests(emu) if r[1] == "POST" and r[2].endswith("/stop")]
    assert stops and all(r[0] >= ended.timestamp() for r in requests(emu)[seen:])


def test_a_wait_that_outlasts_the_stop_grace_does_not_release_the_slot_before_the_scan_is_asked_to_stop(
        transactional_db, redis_conn, emulator_factory, settings):
    """The grace for a timed-out scan to stop counts from the end of a wait the scanner asked for, not from the
    task's end: no step could call the scanner before, so the scan was never asked to stop. Counted from the task's
    end, the first look after the wait found the grace spent and released the slot without any stop request: the
    scan kept running on the scanner with its slot given to the next task."""
    settings.SCANPOOL_STOP_GRACE = 5
    emu = emulator_factory(instances=1, scan_seconds=60)
    pool, (scanner,) = emulated_pool(emu, [1], scan_timeout_seconds=2)
    task = submit(pool=pool.name, name="grace-during-wait", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == TaskStatus.RUNNING, timeout=20)
    # A wait far longer than the test: the reconcile below looks while it is certainly in effect, however slow the
    # machine (it was 20 s, ~5 s more than the test needed to get there), and the test ends it itself.
    pacing.record_wait(scanner, LONG_WAIT)
    seen = len(requests(emu))

    run_until([pool], lambda: reread(task).status == TaskStatus.TIMEOUT, timeout=20)
    # The periodic reconcile, past the grace after the task's end but during the wait, does not release it either.
    past_grace = reread(task).finished_at + max(timedelta(seconds=settings.SCANPOOL_STOP_GRACE), CLAIM_GRACE) \
        + timedelta(seconds=0.5)
    wait_for(lambda: timezone.now() > past_grace, timeout=15)
    report = reconcile([pool.pk], check_scanners=False)
    assert reread(task).slot_held and str(task.id) not in report.released
    assert len(requests(emu)) == seen  # nothing called the scanner during the wait

    # The wait ends (moved to now rather than waited out); the settle step runs as RQ's scheduler would run it then.
    ended = timezone.now()
    Scanner.objects.filter(pk=scanner.pk).update(wait_until=ended)
    run_jobs([pool], all_scheduled=True)
    run_until([pool], lambda: not reread(task).slot_held, timeout=40)
    after = requests(emu)[seen:]
    stops = [r for r in after if r[1] == "POST" and r[2].endswith("/stop")]
    assert stops and stops[0][0] >= ended.timestamp()  # asked to stop, after the wait
    scan = next(s for s in emu.control(0).scans() if "grace-during-wait" in s["name"])
    assert scan["status"] in ("canceled", "stopping", "aborted"), scan  # seen stopped before the slot went
    assert not TaskEvent.objects.filter(task=task, message__contains="slot released anyway").exists()
