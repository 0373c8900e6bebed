"""A running scan whose scanner does not answer its polls (``poll`` retries spent, or a scanner-wide refusal).

The scan may still be running there, so the task is not failed: polling goes on at the pool's interval until the
scanner answers or the task's deadline passes (:mod:`tasks.engine.monitor`). The task's timeline says it once: the
first round whose retries are spent writes one ``warning`` event naming the scanner and its error (data
``poll_failing``: the attempt number of the task, ``error``, ``deadline``); later rounds only log, at WARNING. When
a poll works again, one ``info`` event says the scanner answered again and since when it had not (data
``poll_answered``); a later outage of the same attempt is noted again, once.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q

from scanners.adapters.base import ScannerError
from tasks.engine.transitions import add_event
from tasks.models import EventKind, ScanTask, TaskEvent

log = logging.getLogger(__name__)

MARK = "poll_failing"  # data key of the one warning of an outage (value: the task's attempt number)
ANSWERED = "poll_answered"  # data key of the event that ends it (value: the task's attempt number)


def failing_since(task: ScanTask) -> datetime | None:
    """When this attempt's polls started failing (the outage's warning, not yet followed by an answer), or None."""
    last = (TaskEvent.objects.filter(task_id=task.id).filter(Q(data__has_key=MARK) | Q(data__has_key=ANSWERED))
            .order_by("-created_at", "-id").values_list("data", "created_at").first())
    if last is None or last[0].get(MARK) != task.attempts:
        return None
    return last[1]


def poll_failed(task: ScanTask, exc: ScannerError, what: str, interval: float, delay: float) -> None:
    """A poll round failed: the first of an outage writes the warning, the others only log."""
    name, scan = task.assigned_scanner.name, task.scanner_scan_id
    if failing_since(task) is not None:
        log.warning("task %s: scanner %s still %s (%s); next poll of scan %s in %.0fs", task.id, name, what, exc,
                    scan, delay)
        return
    deadline = f" ({task.deadline_at:%Y-%m-%d %H:%M:%S} UTC)" if task.deadline_at else ""
    add_event(task.id, f"scanner {name} {what} ({exc}); still following scan {scan} every {interval}s until the "
              f"deadline{deadline}", kind=EventKind.WARNING,
              data={MARK: task.attempts, "error": str(exc)[:2000],
                    "deadline": task.deadline_at.isoformat() if task.deadline_at else None})
    log.warning("task %s: scanner %s %s (%s); next poll of scan %s in %.0fs", task.id, name, what, exc, scan, delay)


def poll_answered(task: ScanTask) -> None:
    """A poll worked: if an outage had been noted, the timeline says it is over."""
    since = failing_since(task)
    if since is None:
        return
    name = task.assigned_scanner.name
    add_event(task.id, f"scanner {name} answered again, after being unreachable since {since:%H:%M:%S} UTC",
              data={ANSWERED: task.attempts})
    log.info("task %s: scanner %s answered again (polls failing since %s)", task.id, name, since)
