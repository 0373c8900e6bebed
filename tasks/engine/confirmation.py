"""Four eyes on where credentials go, the engine's side (docs/security.md): a task with credentials (an
authenticated scan) is claimed only onto a scanner whose connection is confirmed (``Scanner.connection_confirmed``,
checked in the slot's conditional UPDATE: :mod:`tasks.engine.slots`), and launched only while it still is.

A task held back by this stays queued at its place and its timeline says why — one event per attempt, not one
per dispatch pass. A confirmation dispatches the pool again (``scanners.signals.connection_confirmed``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from scanners.models import Scanner
from tasks.models import CREDENTIALED_SCAN_TYPES, EventKind, ScanTask, TaskEvent

WAITING_FOR = "connection_confirmation"  # TaskEvent.data["waiting_for"] of the explanation
CONFIRM_HINT = ("a person other than whoever changed it, with the permission scanners.confirm_scanner_connection, "
                "confirms it on the scanner's admin page")


def carries_credentials(scan_type: str) -> bool:
    return scan_type in CREDENTIALED_SCAN_TYPES


def explain_waiting(waiting: Iterable[tuple[uuid.UUID, int]], names: dict[uuid.UUID, list[str]]) -> int:
    """Record, once per attempt, why each ``(task id, attempt)`` waits (``names``: the unconfirmed scanners that
    hold it back); returns how many events were written. One query for the whole batch."""
    waiting = list(waiting)
    if not waiting:
        return 0
    seen = {
        (task_id, data.get("attempt"))
        for task_id, data in TaskEvent.objects.filter(
            task_id__in=[task_id for task_id, _ in waiting], data__waiting_for=WAITING_FOR
        ).values_list("task_id", "data")
    }
    events = []
    for task_id, attempt in waiting:
        if (task_id, attempt) in seen:
            continue
        seen.add((task_id, attempt))
        scanners = ", ".join(names.get(task_id, [])) or "its pool's scanners"
        events.append(TaskEvent(
            task_id=task_id, kind=EventKind.WARNING, actor="dispatcher",
            message=f"waiting: this authenticated scan carries credentials, and the connection of {scanners} changed "
            f"and is not confirmed yet, so its credentials are not sent there; {CONFIRM_HINT}. The task stays queued.",
            data={"waiting_for": WAITING_FOR, "attempt": attempt, "scanners": names.get(task_id, [])},
        ))
    TaskEvent.objects.bulk_create(events)
    return len(events)


def launch_refusal(task: ScanTask) -> str:
    """Why a claimed task may not be launched on its scanner now ("" if it may): its scanner's connection changed
    after the claim and is unconfirmed (nothing is created there yet: the task goes back to the queue)."""
    scanner = task.assigned_scanner
    if not carries_credentials(task.scan_type) or task.scanner_scan_id is not None:
        return ""
    confirmed = Scanner.objects.filter(pk=scanner.pk).values_list("connection_confirmed", flat=True).first()
    if confirmed:
        return ""
    return (f"the connection of scanner {scanner.name} changed after this task was assigned and is not confirmed "
            "for authenticated scans: its credentials are not sent there")
