"""``launch(task)``: create the scan on the claimed scanner, record its id, then start it.

The scanner-side scan id is written to the row *before* the scan is launched, and a launch whose
answer was lost is never repeated blindly: the next attempt reads the scan's state first. A crash
between "create" and "record" is covered too: ``scanner_status='creating'`` on the row makes the
next attempt look the scan up by the task id in its name (``find_scan_for_task``): only a scan never launched,
since a retried task's earlier attempts may have left launched scans with the same id in their names.

Errors: a transient one is retried by RQ (backoff from settings) and counted by the breaker; when
the breaker opens, or the retries are spent, and nothing exists on the scanner yet, the task goes back
to its place in the queue (a down scanner never fails queued tasks); if the scan exists but may or may not have started,
the task is handed to the poll steps on that same scanner (never launched elsewhere: no double
launch). A permanent error fails the task with the adapter's message and dead-letters the job.

Only the domain is here (the hooks of :class:`Launch`); the lock, breaker gate and error mapping are the step
runner's (:mod:`tasks.engine.runner`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.utils import timezone

from pools.scanner_targets import check_text_targets, text_targets
from scanners.adapters import PermanentScannerError, TransientScannerError
from scanners.adapters.base import ScannerAdapter
from scanners.scope import pool_scope
from tasks.engine import chain
from tasks.engine.common import adapter_for, attempt_number, fail, flag_scanner, later, quietly, scan_spec
from tasks.engine.confirmation import launch_refusal
from tasks.engine.runner import LAUNCH_LOCK, Failure, Step, task_lock
from tasks.engine.transitions import add_event, transition, unclaim
from tasks.models import ErrorKind, ScanTask, TaskStatus

__all__ = ["LAUNCH_LOCK", "Launch", "launch", "task_lock"]

log = logging.getLogger(__name__)


def _record(task_id: uuid.UUID, **fields) -> bool:
    """Write launch progress onto the row, only while the task is still queued (not cancelled)."""
    updated = ScanTask.objects.filter(pk=task_id, status=TaskStatus.QUEUED).update(**fields, updated_at=timezone.now())
    return updated == 1


class Launch(Step):
    name = "launch"
    lock = "skip"
    breaker_gate = True
    retry_event = True
    internal_failure = "launch failed"

    scan_id: int | None = None  # the scan on the scanner, once it exists

    def load(self) -> ScanTask | None:
        task = ScanTask.objects.select_related("pool", "assigned_scanner").filter(pk=self.task_id).first()
        if task is None or task.status != TaskStatus.QUEUED or task.claimed_at is None or not task.slot_held:
            log.info("task %s: nothing to launch (status %s)", self.task_id, getattr(task, "status", "deleted"))
            return None
        self.scan_id = task.scanner_scan_id
        return task

    def prepare(self, task: ScanTask) -> bool:
        refusal = launch_refusal(task)  # its scanner's connection changed since the claim: not confirmed yet
        if refusal:
            unclaim(task.id, refusal)
            return False
        if task.scanner_scan_id is not None and task.assigned_scanner.waiting_until is not None:
            return True  # the runner's wait gate brings it back after the wait; the scope is checked then
        return not _refuse_out_of_scope(task)

    def scanner_unavailable(self, task: ScanTask, why: str) -> None:
        unclaim(task.id, why)

    def run(self, task: ScanTask, adapter: ScannerAdapter) -> tuple[str, str] | None:
        """Create (or find) the scan and start it; ``(status, uuid)`` or ``None`` when the task was cancelled."""
        scanner = task.assigned_scanner
        resumed = self.scan_id is not None
        if self.scan_id is None and task.scanner_status == "creating":
            # Only a scan never launched: one launched with this task's id is an earlier attempt's (a retried task).
            found = adapter.find_scan_for_task(task.id, unlaunched=True)
            if found is not None:
                self.scan_id, resumed = found.scan_id, True
                if not _record(task.id, scanner_scan_id=self.scan_id, scanner_status="created"):
                    quietly(task.id, "delete the scan of a cancelled task", adapter.delete_scan, self.scan_id)
                    return None
                add_event(task.id, f"found scan {self.scan_id} created by an interrupted launch on {scanner.name}")
        if self.scan_id is None:
            if not _record(task.id, scanner_status="creating"):
                return None
            self.scan_id = adapter.create_scan(scan_spec(task))
            if not _record(task.id, scanner_scan_id=self.scan_id, scanner_status="created"):
                quietly(task.id, "delete the scan of a cancelled task", adapter.delete_scan, self.scan_id)
                return None
            add_event(task.id, f"scan {self.scan_id} created on {scanner.name}", data={"scan_id": self.scan_id})
        state = adapter.scan_state(self.scan_id) if resumed else None
        if state is not None and state.launched:
            add_event(task.id, f"scan {self.scan_id} was already launched ({state.status}): not launched again")
            return state.status, state.uuid
        # Cancelled since the scan was created? Then it is deleted, never launched: the targets of a cancelled task
        # are not scanned, not even until the stop step comes. (A cancel after this line is stopped by that step.)
        if not _record(task.id, scanner_status="launching"):
            quietly(task.id, "delete the scan of a cancelled task", adapter.delete_scan, self.scan_id)
            return None
        return "pending", adapter.launch_scan(self.scan_id).scan_uuid

    def succeeded(self, task: ScanTask, adapter: ScannerAdapter, result: tuple[str, str] | None) -> None:
        if result is None:  # cancelled while creating: nothing more to do here
            return
        status, scan_uuid = result
        scanner = task.assigned_scanner
        now = timezone.now()
        started = transition(
            task.id, expect=TaskStatus.QUEUED, to=TaskStatus.RUNNING, actor="worker",
            message=f"scan {self.scan_id} launched on {scanner.name}",
            data={"scanner": scanner.name, "scan_id": self.scan_id},
            fields={"started_at": now, "deadline_at": now + timedelta(seconds=task.timeout_seconds),
                    "scanner_status": status, "scanner_scan_uuid": scan_uuid or task.scanner_scan_uuid,
                    "progress": 0, "last_polled_at": now},
        )
        if not started:  # cancelled while we were launching: the stop step releases the slot
            quietly(task.id, "stop the scan of a cancelled task", adapter.stop_scan, self.scan_id)
            return
        chain.schedule(task.pool, task.id, "poll", delay=task.pool.poll_interval_seconds)

    def breaker_opened(self, task: ScanTask, exc: TransientScannerError) -> bool:
        if self.scan_id is not None:
            return False
        # Nothing exists on the scanner and it is out of selection now: back to the queue at once (its FIFO place
        # kept), not after the remaining retries on a scanner known to be down.
        unclaim(task.id, f"circuit breaker of {task.assigned_scanner.name} opened during the launch ({exc})")
        return True

    def retries_spent(self, task: ScanTask, adapter: ScannerAdapter, exc: TransientScannerError) -> None:
        scanner_name = task.assigned_scanner.name
        task.refresh_from_db()
        if task.status != TaskStatus.QUEUED:
            return
        if task.scanner_scan_id is None:
            unclaim(task.id, f"scanner {scanner_name} unavailable after {attempt_number()} attempts ({exc})")
            return
        # The scan exists on this scanner and may have started: follow it there, never launch it elsewhere.
        now = timezone.now()
        if transition(
            task.id, expect=TaskStatus.QUEUED, to=TaskStatus.RUNNING,
            message=f"launch of scan {task.scanner_scan_id} on {scanner_name} unconfirmed ({exc}); following it there",
            fields={"started_at": now, "deadline_at": now + timedelta(seconds=task.timeout_seconds),
                    "scanner_status": "unknown", "last_polled_at": now},
        ):
            chain.schedule(task.pool, task.id, "poll", delay=later(task.pool.poll_interval_seconds, exc))

    def refused(self, task: ScanTask, adapter: ScannerAdapter, exc: PermanentScannerError) -> Failure:
        scanner = task.assigned_scanner
        flag_scanner(scanner, exc)
        if self.scan_id:
            quietly(task.id, "delete the refused scan", adapter.delete_scan, self.scan_id)
        return Failure(ErrorKind.PERMANENT, f"scanner {scanner.name} refused the scan: {exc.message}")


launch = Launch.handle


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
