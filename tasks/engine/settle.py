"""``settle(task)``: a timed-out or cancelled task whose scan may still run on its scanner keeps its slot
until a poll sees the scan inactive there (so a scanner's real load never exceeds its limit).

The scan was asked to stop (by the timeout or the stop step). Every poll interval this step reads the
scan's state: ended (``canceled``, ``completed``, ``aborted``, …) or gone (404) → the slot is released
and the pool dispatched. Still active → the stop is asked again (unless Nessus already says
``stopping``) and the step comes back. The wait is bounded: ``SCANPOOL_STOP_GRACE`` seconds (default
300) after the task ended the slot is released anyway (after one last stop request if the scanner answers), with
a warning event naming the scan left on the scanner. A scanner that does not answer counts against the same bound;
a ``Retry-After`` wait does not: the grace counts from the end of a wait that outlasted the task's end (no step calls a
waiting scanner, so it could not be asked to stop before).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from scanners.adapters import PermanentScannerError, ScanState, TransientScannerError
from scanners.adapters.base import ScannerAdapter, ScannerError
from tasks.engine import chain
from tasks.engine.common import SCANNER_WIDE, later, quietly
from tasks.engine.runner import Step
from tasks.engine.transitions import add_event, release_and_dispatch
from tasks.models import TERMINAL_STATUSES, EventKind, ScanTask

log = logging.getLogger(__name__)


def begin(task: ScanTask) -> None:
    """Hold ``task``'s slot until its scan is seen inactive (first look at once)."""
    chain.schedule(task.pool_id, task.id, "settle")


class Settle(Step):
    name = "settle"
    chained = True
    retry_transient = False  # an unanswered look counts against the grace; the next look comes at the interval

    def load(self) -> ScanTask | None:
        task = ScanTask.objects.select_related("pool", "assigned_scanner").filter(pk=self.task_id).first()
        if task is None or not task.slot_held or task.status not in TERMINAL_STATUSES:
            return None
        return task

    def prepare(self, task: ScanTask) -> bool:
        if task.assigned_scanner is None or task.scanner_scan_id is None:
            _release(task, "nothing was created on a scanner")
            return False
        return True

    def run(self, task: ScanTask, adapter: ScannerAdapter) -> ScanState:
        return adapter.scan_state(task.scanner_scan_id)

    def succeeded(self, task: ScanTask, adapter: ScannerAdapter, state: ScanState) -> None:
        if state.terminal or not state.launched:
            _release(task, f"scan {task.scanner_scan_id} is {state.status} on {task.assigned_scanner.name}")
            return
        self._wait(task, adapter, state)

    def retries_spent(self, task: ScanTask, adapter: ScannerAdapter, exc: TransientScannerError) -> None:
        self._wait(task, adapter, None, exc)

    def refused(self, task: ScanTask, adapter: ScannerAdapter, exc: PermanentScannerError) -> None:
        if isinstance(exc, SCANNER_WIDE):  # login rejected, unlicensed: no answer about the scan, as if unreachable
            self._wait(task, adapter, None, exc)
            return
        # The scan is gone from the scanner.
        _release(task, f"scan {task.scanner_scan_id} is gone from {task.assigned_scanner.name} ({exc.message})")

    @staticmethod
    def _wait(task: ScanTask, adapter: ScannerAdapter, state: ScanState | None,
              error: ScannerError | None = None) -> None:
        """Still active (or no answer): release anyway past the grace, else ask to stop again and look later
        (not before the scanner's Retry-After, if ``error`` carries one)."""
        scanner = task.assigned_scanner
        waited = (timezone.now() - grace_start(task)).total_seconds()
        if waited >= settings.SCANPOOL_STOP_GRACE:
            status = state.status if state is not None else "unknown"
            if state is not None and status != "stopping":  # one last stop request: the slot goes, the scan should too
                quietly(task.id, f"stop scan {task.scanner_scan_id} on {scanner.name}", adapter.stop_scan,
                        task.scanner_scan_id)
            message = (f"scan {task.scanner_scan_id} still {status} on {scanner.name} "
                       f"{settings.SCANPOOL_STOP_GRACE}s after the task ended: slot released anyway "
                       "(stop the scan on the scanner by hand if it is still running)")
            add_event(task.id, message, kind=EventKind.WARNING)
            log.warning("task %s: %s", task.id, message)
            _release(task, None)
            return
        if state is not None and state.status != "stopping":
            quietly(task.id, f"stop scan {task.scanner_scan_id} on {scanner.name}", adapter.stop_scan,
                    task.scanner_scan_id)
        delay = max(1, min(task.pool.poll_interval_seconds, int(settings.SCANPOOL_STOP_GRACE - waited) + 1))
        chain.schedule(task.pool_id, task.id, "settle", delay=later(delay, error))


settle = Settle.handle


def grace_start(task: ScanTask) -> datetime:
    """When the stop grace starts: when the task ended, or when the scanner's ``Retry-After`` wait ends (or ended) if
    that is later (no step may call it before then, so the scan could not be asked to stop, nor seen stopped, earlier).
    """
    ended = task.finished_at or timezone.now()
    until = task.assigned_scanner.wait_until if task.assigned_scanner is not None else None
    return until if until is not None and until > ended else ended


def _release(task: ScanTask, why: str | None) -> None:
    if release_and_dispatch(task.id) and why:
        add_event(task.id, f"{why}: slot released")
    chain.end_chain(task.id)
