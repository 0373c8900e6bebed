"""Fetch a scan's results again (``refetch``) instead of scanning again (``tasks.services.retry``).

For a task whose scan **completed on its scanner** but whose results could not be fetched or stored: ``timeout``
after its export kept failing until the deadline (:mod:`tasks.engine.export_retry`), or ``failed`` at the finish
step before anything was stored (the scanner refused the export, the file could not be parsed, our cap, an internal
error such as a full disk: ``error_kind`` ``results`` or ``internal`` with no results shown). The results are still
on the scanner; once the cause is fixed, this brings the task back to ``running`` — the *finishing* state the poll
leaves it in when it sees the scan completed — and schedules the engine's finish step (export → ingest → completed
or failed) for the **same scan id on the same scanner**. Nothing is scanned again.

* **Slots:** none is taken. A slot is one scan running on the scanner (``max_concurrent_scans``); a completed scan
  does not run there, and an export is a read of its results. The task stays ``slot_held=False``: its end releases
  nothing (``release_task_slot`` flips only a held slot), and the reconcile's recount (tasks holding slots) does not
  count it. So ``active_scans`` is neither raised nor lowered by a fetch, and new scans may use every slot meanwhile.
* **Deadline:** the fetch gets ``min(timeout_seconds, SCANPOOL_FINISH_TIMEOUT)`` from now: the budget the engine
  gives one export and ingest (1 h by default), and never more than the task's own timeout. A fetch whose cause was
  fixed works at its first round; one that still fails goes on with the export's growing backoff and ends ``timeout``
  again within that bound, saying so — a finishing task cannot be cancelled, so the window stays short.
* **Refusals** (:class:`~tasks.errors.TaskStateError`, 409 ``invalid_state`` in the API) name the fix: any other
  status; a scan that did not complete on its scanner, a failure that was not the fetch, or results already stored
  (they failed validation) — "use retry: it scans again"; a scanner removed, disabled or moved to another pool.
* **Concurrency:** one conditional transition (``expect`` = the status read, and the scanner, scan id, attempt and
  no held slot as read): two fetches, or a fetch racing a retry or the clean-up, do one thing; the loser is refused
  and writes nothing. The finish step is enqueued after commit; with Redis down the change stands and the periodic
  reconcile starts the running task's chain again (a poll, which sees the scan completed and schedules the finish).
* The finish step of a fetch asked again first checks that the scan id still names this task's completed run; a scan
  gone from the scanner (404) fails the task saying its results are gone and a retry scans again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tasks.engine import chain
from tasks.engine.export_retry import REFETCH
from tasks.engine.transitions import transition
from tasks.errors import NotFoundError, TaskStateError
from tasks.models import ErrorKind, ScanTask, TaskStatus
from tasks.models.states import RETRYABLE_STATUSES, SCAN_COMPLETED_STATUSES
from tasks.services import after_commit, drop_dead_letters

log = logging.getLogger(__name__)

# How a ``failed`` task ended when only fetching or storing its completed scan's results failed.
FETCH_FAILURES = frozenset({ErrorKind.RESULTS, ErrorKind.INTERNAL})
RETRY_INSTEAD = "use retry: it scans again"


def refusal(task: ScanTask) -> str:
    """Why ``task``'s results cannot be fetched again ("" when they can). Reads the row and its scanner only."""
    if task.status not in RETRYABLE_STATUSES:
        if task.is_finishing:
            return f"task {task.id} is fetching its results now (its scan completed on its scanner)"
        return (f"task {task.id} is {task.status}: only a failed or timed-out scan whose results could not be "
                "fetched can have them fetched again")
    if task.scanner_status not in SCAN_COMPLETED_STATUSES or task.scanner_scan_id is None:
        return (f"the scan of task {task.id} did not complete on its scanner (scanner status "
                f"{task.scanner_status or 'none'}): there are no results to fetch; {RETRY_INSTEAD}")
    if task.status == TaskStatus.FAILED and task.results_summary:
        return (f"the results of task {task.id} were fetched and stored, and failed validation ({task.error_kind}): "
                f"fetching them again gives the same results; {RETRY_INSTEAD}")
    if task.status == TaskStatus.FAILED and task.error_kind not in FETCH_FAILURES:
        return (f"task {task.id} failed for another reason than fetching its results ({task.error_kind}: "
                f"{task.error_message[:200]}); {RETRY_INSTEAD}")
    scanner = task.assigned_scanner
    if scanner is None:
        return f"the scanner of task {task.id} is gone, and its results with it; {RETRY_INSTEAD}"
    if scanner.pool_id != task.pool_id:
        return (f"scanner {scanner.name} was moved to another pool since scan {task.scanner_scan_id} ran there: the "
                "workers of the task's pool may no longer reach it; move it back to fetch the results, or "
                f"{RETRY_INSTEAD}")
    if not scanner.enabled:
        return (f"scanner {scanner.name} is disabled: enable it (admin > Scanners) to fetch the results of scan "
                f"{task.scanner_scan_id}, or {RETRY_INSTEAD}")
    return ""


def advice(task: ScanTask) -> dict[str, object] | None:
    """A troubleshooting entry (the shape of :mod:`tasks.results.troubleshooting`'s) for a task whose results can be
    fetched again; None for any other task."""
    if task.status not in RETRYABLE_STATUSES or refusal(task):
        return None
    scan, name = task.scanner_scan_id, task.assigned_scanner.name
    return {
        "cause": "results_on_scanner", "title": "Results still on the scanner", "host_count": 0, "hosts": [],
        "evidence": task.error_message[:500] or None,
        "likely_cause": f"Scan {scan} completed on scanner {name}, but its results could not be fetched or stored "
                        "(see error_message). They stay on the scanner.",
        "next_steps": [
            "Fix the cause first (the scanner's export or disk, scanpool's results storage): see error_message.",
            f"Then fetch the results again, without scanning: POST /api/v1/scans/{task.id}/fetch-results/ (or the "
            "admin action \"Fetch the results again\" on Scan tasks). The task runs again on the same scan; no scanner "
            "slot is taken.",
            "Retry only if the results are gone from the scanner: a retry scans the targets again.",
        ],
    }


def fetch_window(task: ScanTask) -> int:
    """Seconds a fetch asked again may take before it ends ``timeout`` (see the module's docstring)."""
    return max(1, min(task.timeout_seconds, settings.SCANPOOL_FINISH_TIMEOUT))


def refetch(task_id: uuid.UUID | str, *, actor: str = "", reason: str = "", user: Any = None) -> ScanTask:
    """Fetch the results of ``task_id``'s completed scan again: ``failed | timeout → running`` and the finish step,
    same scanner and scan id, no slot. Raises :class:`TaskStateError` (naming the fix) when it does not apply, or
    when the task changed meanwhile; :class:`NotFoundError` for an unknown task."""
    task = load(task_id)
    if why := refusal(task):
        raise TaskStateError("task_id", why)
    who = actor or (user.get_username() if user is not None else "") or "unknown"
    now = timezone.now()
    deadline = now + timedelta(seconds=fetch_window(task))
    scan, scanner = task.scanner_scan_id, task.assigned_scanner
    message = (f"results fetch requested by {who}" + (f": {reason}" if reason else "")
               + f" (scan {scan} on {scanner.name}, until {deadline:%Y-%m-%d %H:%M:%S} UTC; no new scan)")
    # The row as read: its status, scan, scanner and attempt, and no slot (nothing of it runs on the scanner).
    where = Q(slot_held=False, attempts=task.attempts, scanner_scan_id=scan, assigned_scanner_id=scanner.pk,
              scanner_status__in=SCAN_COMPLETED_STATUSES)
    fields = {"error_kind": ErrorKind.NONE, "error_message": "", "finished_at": None, "deadline_at": deadline,
              "last_polled_at": now}
    with transaction.atomic():
        if not transition(task.id, expect=task.status, to=TaskStatus.RUNNING, actor=actor or who, fields=fields,
                          message=message, where=where,
                          data={REFETCH: task.attempts, "previous_error": task.error_message[:500],
                                "deadline": deadline.isoformat()}):
            raise TaskStateError("task_id", f"task {task.id} changed meanwhile (another fetch of its results, a retry "
                                 "or its clean-up came first); reload it and try again")
        transaction.on_commit(lambda: after_commit(drop_dead_letters, task), robust=True)
        transaction.on_commit(lambda: after_commit(_schedule_finish, task.pool_id, task.id), robust=True)
    log.info("task %s: results fetch of scan %s on %s requested by %s", task.id, scan, scanner.name, who)
    task.refresh_from_db()
    return task


def _schedule_finish(pool_id: int, task_id: uuid.UUID) -> None:
    chain.schedule(pool_id, task_id, "finish")


def load(task_id: uuid.UUID | str) -> ScanTask:
    """The task with what :func:`refusal` reads; :class:`NotFoundError` for an unknown id."""
    try:
        return ScanTask.objects.select_related("pool", "assigned_scanner").get(pk=task_id)
    except (ScanTask.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise NotFoundError("task_id", f"no scan task {task_id}") from None
