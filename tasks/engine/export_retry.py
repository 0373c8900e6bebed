"""A scan that completed on its scanner but whose export keeps failing (``finish`` retries spent).

The results exist only on the scanner, and a retry of a dead letter is a new scan (``tasks.services.retry``), so
giving up early would throw them away: the finish step keeps trying, with growing backoff, until the task's
deadline. Each round is the finish step's own RQ retries (``SCANPOOL_RETRY_INTERVALS``); the next round comes after
as long as the export has been failing (so the wait about doubles each round), at least the pool's poll interval
and at most ``max(poll interval, SCANPOOL_BREAKER_COOLDOWN)`` — never past the deadline, and never before a
scanner's ``Retry-After``.

The task's timeline says it once: the first failed round writes one ``warning`` event (data ``export_failing``:
the attempt number of the task, ``error``, ``deadline``); later rounds only log. The end is said once too: the
export worked (an ``info`` event, then ``completed``), or the last try at the deadline failed (``timeout`` with
the scanner's last error; the scan and its results are left on the scanner, which keeps them, and the message says
how to fetch them again: :mod:`tasks.refetch`). A fetch asked again starts its own story: the note and the end are
said again for it (the ``refetch`` status event marks its start).
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from scanners.adapters.base import ScannerError
from tasks.engine import chain
from tasks.engine.common import later
from tasks.engine.transitions import add_event, transition
from tasks.models import REFETCH_MARK, ErrorKind, EventKind, ScanTask, TaskEvent, TaskStatus

log = logging.getLogger(__name__)

MARK = "export_failing"  # data key of the one timeline note (value: the task's attempt number)
REFETCH = REFETCH_MARK  # data key of the status event of a results fetch asked again (value: the task's attempt number)
# How to get results left on the scanner (tasks.refetch; the API action and the admin action name it so).
FETCH_AGAIN = ("once the cause is fixed, fetch them again (POST /api/v1/scans/{task}/fetch-results/, or the admin "
               "action \"Fetch the results again\"); a retry would scan the targets again")


def fetch_requested_at(task: ScanTask) -> datetime | None:
    """When this attempt's results were last asked for again (:mod:`tasks.refetch`), or None."""
    return (TaskEvent.objects.filter(task_id=task.id, **{f"data__{REFETCH}": task.attempts})
            .order_by("-created_at").values_list("created_at", flat=True).first())


def failing_since(task: ScanTask) -> datetime | None:
    """When this attempt's export started failing (its one note), or None; after a fetch asked again, only a note
    since that request counts (the fetch's own failure is noted again)."""
    notes = TaskEvent.objects.filter(task_id=task.id, **{f"data__{MARK}": task.attempts})
    if (asked := fetch_requested_at(task)) is not None:
        notes = notes.filter(created_at__gte=asked)
    return notes.order_by("created_at").values_list("created_at", flat=True).first()


def next_delay(task: ScanTask, since: datetime, now: datetime) -> float:
    """Seconds until the next round: as long as the export has failed so far, within [poll interval, cap]."""
    poll = task.pool.poll_interval_seconds
    cap = max(poll, settings.SCANPOOL_BREAKER_COOLDOWN)
    return max(poll, min(cap, (now - since).total_seconds()))


def export_failed(task: ScanTask, error: ScannerError) -> None:
    """A finish round failed (its RQ retries spent): note it once, then try again later or end at the deadline."""
    now = timezone.now()
    name, scan = task.assigned_scanner.name, task.scanner_scan_id
    since = failing_since(task)
    if task.deadline_at is None or now >= task.deadline_at:
        _give_up(task, error, since or now)
        return
    delay = min(next_delay(task, since or now, now), max(1.0, (task.deadline_at - now).total_seconds()))
    delay = later(delay, error)
    if since is None:
        add_event(task.id, f"scan {scan} completed on {name}, but its export fails: {error}. The results stay on "
                  f"the scanner; scanpool keeps trying with growing backoff until the task's deadline "
                  f"({task.deadline_at:%Y-%m-%d %H:%M:%S} UTC)", kind=EventKind.WARNING,
                  data={MARK: task.attempts, "error": str(error)[:2000], "deadline": task.deadline_at.isoformat()})
    log.warning("task %s: export of scan %s from %s failed (%s); next try in %.0fs", task.id, scan, name, error, delay)
    chain.schedule(task.pool, task.id, "finish", delay=delay)


def fetch_deadline(task: ScanTask) -> str:
    """The deadline a finishing task ran against, in words: the task's own, or that of a results fetch asked for
    again (``min(timeout, SCANPOOL_FINISH_TIMEOUT)`` from the request, :mod:`tasks.refetch`)."""
    asked = fetch_requested_at(task)
    return (f"deadline of {task.timeout_seconds}s" if asked is None else
            f"deadline of the results fetch asked for at {asked:%H:%M:%S} UTC")


def _give_up(task: ScanTask, error: ScannerError, since: datetime) -> None:
    name = task.assigned_scanner.name
    window = fetch_deadline(task)
    message = (f"{window} passed before the results could be fetched: scan {task.scanner_scan_id} completed on "
               f"{name}, but its export kept failing since {since:%H:%M:%S} UTC (last error: {error}). The scan and "
               f"its results are still on {name}: " + FETCH_AGAIN.format(task=task.id))
    log.warning("task %s: %s", task.id, message)
    transition(task.id, expect=TaskStatus.RUNNING, to=TaskStatus.TIMEOUT, message=message, release_slot=True,
               fields={"error_kind": ErrorKind.TIMEOUT, "error_message": message[:5000]},
               data={"scanner_status": task.scanner_status, "error": str(error)[:2000]})


def export_recovered(task: ScanTask) -> None:
    """The export worked: if it had been failing, the timeline says so before the task completes."""
    since = failing_since(task)
    if since is not None:
        add_event(task.id, f"export of scan {task.scanner_scan_id} from {task.assigned_scanner.name} worked, after "
                  f"failing since {since:%H:%M:%S} UTC")
