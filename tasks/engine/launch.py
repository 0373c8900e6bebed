"""``launch(task)``: create the scan on the claimed scanner, record its id, then start it.

The scanner-side scan id is written to the row *before* the scan is launched, and a launch whose
answer was lost is never repeated blindly: the next attempt reads the scan's state first. A crash
between "create" and "record" is covered too: ``scanner_status='creating'`` on the row makes the
next attempt look the scan up by the task id in its name (``find_scan_for_task``).

Errors: a transient one is retried by RQ (backoff from settings) and counted by the breaker; when
the breaker opens, or the retries are spent, and nothing exists on the scanner yet, the task goes back
to its place in the queue (a down scanner never fails queued tasks); if the scan exists but may or may not have started,
the task is handed to the poll steps on that same scanner (never launched elsewhere: no double
launch). A permanent error fails the task with the adapter's message and dead-letters the job.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from redis.exceptions import LockError

from pools.scope import check_text_targets, text_targets
from scanners import breaker
from scanners.adapters import PermanentScannerError, TransientScannerError
from scanners.models import BreakerState
from scanners.scope import pool_scope
from tasks.engine import chain, locks
from tasks.engine.common import (
    adapter_for,
    attempt_number,
    fail,
    flag_scanner,
    give_up,
    quietly,
    retries_left,
    scan_spec,
)
from tasks.engine.transitions import add_event, transition, unclaim
from tasks.models import ErrorKind, EventKind, ScanTask, TaskStatus
from tasks.queues import get_connection

log = logging.getLogger(__name__)

LAUNCH_LOCK = "scanpool:launch:{}"


def task_lock(task_id: uuid.UUID, *, timeout: int | None = None):
    """The per-task lock held while a launch (or a stop) talks to the scanner."""
    return get_connection().lock(LAUNCH_LOCK.format(task_id), timeout=timeout or settings.SCANPOOL_STEP_TIMEOUT + 60)


def launch(task_id: uuid.UUID) -> None:
    lock = task_lock(task_id)
    if not locks.acquire(lock):
        log.info("task %s: another launch attempt is in progress; this one stops", task_id)
        return
    try:
        _launch(task_id)
    finally:
        try:
            lock.release()
        except LockError:
            pass


def _record(task_id: uuid.UUID, **fields) -> bool:
    """Write launch progress onto the row, only while the task is still queued (not cancelled)."""
    updated = ScanTask.objects.filter(pk=task_id, status=TaskStatus.QUEUED).update(**fields, updated_at=timezone.now())
    return updated == 1


def _launch(task_id: uuid.UUID) -> None:
    task = ScanTask.objects.select_related("pool", "assigned_scanner").filter(pk=task_id).first()
    if task is None or task.status != TaskStatus.QUEUED or task.claimed_at is None or not task.slot_held:
        log.info("task %s: nothing to launch (status %s)", task_id, getattr(task, "status", "deleted"))
        return
    scanner = task.assigned_scanner
    if _refuse_out_of_scope(task):
        return
    if task.scanner_scan_id is None and (scanner.breaker_state == BreakerState.OPEN or not scanner.enabled):
        why = "is disabled" if not scanner.enabled else "has its circuit breaker open"
        unclaim(task.id, f"scanner {scanner.name} {why}")
        return

    with adapter_for(scanner) as adapter:
        scan_id = task.scanner_scan_id
        try:
            resumed = scan_id is not None
            if scan_id is None and task.scanner_status == "creating":
                found = adapter.find_scan_for_task(task.id)
                if found is not None:
                    scan_id, resumed = found.scan_id, True
                    if not _record(task.id, scanner_scan_id=scan_id, scanner_status="created"):
                        quietly(task.id, "delete the scan of a cancelled task", adapter.delete_scan, scan_id)
                        return
                    add_event(task.id, f"found scan {scan_id} created by an interrupted launch on {scanner.name}")
            if scan_id is None:
                if not _record(task.id, scanner_status="creating"):
                    return
                scan_id = adapter.create_scan(scan_spec(task))
                if not _record(task.id, scanner_scan_id=scan_id, scanner_status="created"):
                    quietly(task.id, "delete the scan of a cancelled task", adapter.delete_scan, scan_id)
                    return
                add_event(task.id, f"scan {scan_id} created on {scanner.name}", data={"scan_id": scan_id})
            status, scan_uuid = "pending", ""
            state = adapter.scan_state(scan_id) if resumed else None
            if state is not None and state.launched:
                status, scan_uuid = state.status, state.uuid
                add_event(task.id, f"scan {scan_id} was already launched ({state.status}): not launched again")
            else:
                scan_uuid = adapter.launch_scan(scan_id).scan_uuid
        except TransientScannerError as exc:
            if breaker.record_failure(scanner, exc, task.id) == BreakerState.OPEN and scan_id is None:
                # Nothing exists on the scanner and it is out of selection now: back to the queue at once (its
                # FIFO place kept), not after the remaining retries on a scanner known to be down.
                unclaim(task.id, f"circuit breaker of {scanner.name} opened during the launch ({exc})")
                return
            _transient_launch_failure(task, scanner.name, exc)
            return
        except PermanentScannerError as exc:
            flag_scanner(scanner, exc)
            task.refresh_from_db()
            if task.status == TaskStatus.QUEUED:
                fail(task, ErrorKind.PERMANENT, f"scanner {scanner.name} refused the scan: {exc.message}")
            if task.scanner_scan_id:
                quietly(task.id, "delete the refused scan", adapter.delete_scan, task.scanner_scan_id)
            give_up()
            raise
        except Exception as exc:
            if retries_left() == 0:
                task.refresh_from_db()
                if task.status == TaskStatus.QUEUED:
                    fail(task, ErrorKind.INTERNAL, f"launch failed: {type(exc).__name__}: {exc}")
            raise

        breaker.record_success(scanner, task.id)
        now = timezone.now()
        started = transition(
            task.id, expect=TaskStatus.QUEUED, to=TaskStatus.RUNNING, actor="worker",
            message=f"scan {scan_id} launched on {scanner.name}",
            data={"scanner": scanner.name, "scan_id": scan_id},
            fields={"started_at": now, "deadline_at": now + timedelta(seconds=task.timeout_seconds),
                    "scanner_status": status, "scanner_scan_uuid": scan_uuid or task.scanner_scan_uuid,
                    "progress": 0, "last_polled_at": now},
        )
        if not started:  # cancelled while we were launching: the stop step releases the slot
            quietly(task.id, "stop the scan of a cancelled task", adapter.stop_scan, scan_id)
            return
    chain.schedule(task.pool, task.id, "poll", delay=task.pool.poll_interval_seconds)


def _refuse_out_of_scope(task: ScanTask) -> bool:
    """Re-check the exact ``text_targets`` the scanner will receive against the pool's scope as of now (a retried
    task meets today's scope). Refused: the task fails permanently and nothing is created (or kept) on the scanner."""
    problems = check_text_targets(text_targets(task.targets), pool_scope(task.pool))
    if not problems:
        return False
    shown = "; ".join(problems[:5]) + (" …" if len(problems) > 5 else "")
    fail(task, ErrorKind.PERMANENT, f"targets refused at launch by pool {task.pool.name}'s scope as of now: {shown}",
         data={"refused": problems[:50]})
    if task.scanner_scan_id:  # created by an interrupted earlier attempt: remove it
        with adapter_for(task.assigned_scanner) as adapter:
            quietly(task.id, "delete the refused scan", adapter.delete_scan, task.scanner_scan_id)
    log.warning("task %s: targets refused at launch: %s", task.id, shown)
    return True


def _transient_launch_failure(task: ScanTask, scanner_name: str, exc: Exception) -> None:
    attempt = attempt_number()
    if retries_left() > 0:
        add_event(task.id, f"launch attempt {attempt} on {scanner_name} failed ({exc}); retrying",
                  kind=EventKind.RETRY, data={"attempt": attempt, "error": str(exc)})
        raise exc
    task.refresh_from_db()
    if task.status != TaskStatus.QUEUED:
        return
    if task.scanner_scan_id is None:
        unclaim(task.id, f"scanner {scanner_name} unavailable after {attempt} attempts ({exc})")
        return
    # The scan exists on this scanner and may have started: follow it there, never launch it elsewhere.
    now = timezone.now()
    if transition(
        task.id, expect=TaskStatus.QUEUED, to=TaskStatus.RUNNING,
        message=f"launch of scan {task.scanner_scan_id} on {scanner_name} unconfirmed ({exc}); following it there",
        fields={"started_at": now, "deadline_at": now + timedelta(seconds=task.timeout_seconds),
                "scanner_status": "unknown", "last_polled_at": now},
    ):
        chain.schedule(task.pool, task.id, "poll", delay=task.pool.poll_interval_seconds)
