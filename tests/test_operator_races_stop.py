"""Cancels whose stop is lost or late (a Redis flush, a worker killed mid-poll, Redis down past the stop grace) still
stop the scan on its scanner and free its slot. Split from tests/test_operator_races.py (same set-up: real
``scanworker`` processes, the real test Redis, the Nessus emulator over HTTP)."""

from __future__ import annotations

import pytest

from scanners.models import Scanner
from tasks.models import ScanTask, TaskStatus
from tasks.services import cancel, submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, reread
from tests.helpers import wait_for
from tests.test_operator_races import FAST, scans_of
from tests.worker_process import workers  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_cancel_whose_stop_job_is_lost_in_a_redis_flush_still_stops_the_scan_and_frees_the_slot(
        workers, emulator_factory, redis_conn):  # noqa: F811
    """The stop job lives only in Redis: a FLUSHALL before any worker ran it. The reconcile resumes the stop from
    the row (the settle step: it asks the scanner to stop again and holds the slot until the scan has ended)."""
    emu = emulator_factory(instances=1, scan_seconds=60)
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers()
    task = submit(pool=pool.name, name="flushed-stop", targets=["192.0.2.10"])
    wait_for(lambda: reread(task).progress > 0, 30, "the scan to run", [w])
    w.stop()  # no worker: the stop job waits in the queue ...
    assert cancel(task.pk, actor="ops").status == TaskStatus.CANCELLED
    redis_conn.flushall()  # ... and is gone
    assert scans_of(emu, task)[0]["status"] == "running"
    _cancelled_a_while_ago(task)

    w2 = workers(**FAST)
    wait_for(lambda: not reread(task).slot_held, 40, "the slot to be released", [w2])
    (scan,) = scans_of(emu, task)
    assert scan["status"] == "canceled" and scan["launches"] == 1
    assert reread(task).status == TaskStatus.CANCELLED
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0


def test_a_cancel_after_the_worker_died_mid_poll_stops_the_scan_and_the_orphaned_poll_stays_quiet(
        workers, emulator_factory, redis_conn):  # noqa: F811
    """kill -9 of the worker in the middle of a poll, then a cancel: the new worker stops the scan and frees the slot;
    the abandoned poll (retried by RQ or the reconcile) neither revives the task nor becomes a dead letter."""
    emu = emulator_factory(instances=1, scan_seconds=60)
    emu.control(0).set_faults(latency=1)  # a poll takes a second: the worker is mid-poll most of the time
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers()
    task = submit(pool=pool.name, name="dead-poller", targets=["192.0.2.10"])
    wait_for(lambda: reread(task).progress > 0, 30, "the scan to run", [w])
    wait_for(lambda: "-poll-" in (_current_job(w) or ""), 20, "the worker to be mid-poll", [w], interval=0.01)
    w.kill()
    assert cancel(task.pk, actor="ops").status == TaskStatus.CANCELLED

    w2 = workers(**FAST)
    wait_for(lambda: not reread(task).slot_held, 40, "the slot to be released", [w, w2])
    (scan,) = scans_of(emu, task)
    assert scan["status"] == "canceled" and scan["launches"] == 1
    # The abandoned poll comes back (RQ's retry or the reconcile's take-over) and must find nothing to do.
    wait_for(lambda: "abandoned" in w2.log(), 20, "the abandoned poll to be taken over", [w2])
    wait_for(lambda: not redis_conn.exists(f"scanpool:chain:{task.pk}"), 20, "the task's chain to end", [w2])
    task = reread(task)
    assert task.status == TaskStatus.CANCELLED and task.events.filter(to_status="running").count() == 1
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    from tasks.deadletters import failed_job_ids

    assert failed_job_ids(pool) == []


def _cancelled_a_while_ago(task) -> None:
    """Move the cancel back by the reconcile's CLAIM_GRACE, which leaves a task that just ended to its own jobs: the
    workers' next periodic reconcile (every 5 s) is the one that finds the lost stop, not the second or third."""
    from datetime import timedelta

    from django.db.models import F

    from tasks.engine.recovery import CLAIM_GRACE

    ScanTask.objects.filter(pk=task.pk).update(finished_at=F("finished_at") - CLAIM_GRACE - timedelta(seconds=1))


def _current_job(w) -> str | None:
    from rq import Worker

    from tasks.queues import get_connection

    for worker in Worker.all(connection=get_connection()):
        if worker.pid == w.proc.pid:
            return worker.get_current_job_id()
    return None


def test_a_cancel_made_while_redis_is_down_stops_the_scan_even_when_redis_returns_after_the_stop_grace(
        workers, emulator_factory, redis_server, redis_conn):  # noqa: F811
    """The cancel commits; its stop job cannot be enqueued (Redis down: logged, not raised). Redis comes back, empty,
    later than SCANPOOL_STOP_GRACE. The reconcile used to release the slot of such a task without a word to the
    scanner — the grace bounds a stop that was *asked*; this one never was —: the cancelled scan ran on to its end
    there, and the scanner took a new scan on top of it. The lost stop is enqueued again: the scan is stopped."""
    from tests.api_support import OPERATE, token_client, user_with

    emu = emulator_factory(instances=1, scan_seconds=90)
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers(SCANPOOL_STOP_GRACE="1", **FAST)
    task = submit(pool=pool.name, name="cancelled-in-the-dark", targets=["192.0.2.10"])
    wait_for(lambda: reread(task).progress > 0, 30, "the scan to run", [w])
    api, _ = token_client(user_with(OPERATE, "operator"), name="operator")
    redis_server.stop()
    answer = api.post(f"/api/v1/scans/{task.pk}/cancel/", {}, format="json")
    assert answer.status_code == 200 and answer.json()["status"] == TaskStatus.CANCELLED, answer.content
    redis_server.start()  # empty: the stop job was never enqueued anyway
    _cancelled_a_while_ago(task)  # and past SCANPOOL_STOP_GRACE (1 s) too
    wait_for(lambda: not reread(task).slot_held, 40, "the slot to be released", [w])
    (scan,) = scans_of(emu, task)
    assert scan["status"] in ("canceled", "stopping") and scan["launches"] == 1
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
