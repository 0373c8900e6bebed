"""The engine's side of what lower apps report: a breaker change (``scanners.signals.breaker_changed``)
becomes a task event on the task that caused it (when it concerns that task: :func:`concerns_task`), and a
dispatch of the scanner's pool — at once when the scanner may take work again, after the cooldown when it just
opened. A scanner's connection confirmed for authenticated scans (``scanners.signals.connection_confirmed``)
dispatches its pool: authenticated tasks may have been waiting for it. So does a scanner changed by an operator
or found healthy again (``scanners.signals.scanner_changed``): a raised limit or an enabled scanner is a free slot
now. Connected in ``TasksConfig.ready``."""

from __future__ import annotations

import uuid

from django.db import transaction

from scanners.breaker import BreakerChange
from scanners.models import BreakerState
from tasks.engine.dispatch import dispatch_later, request_dispatch
from tasks.models import EventKind, TaskEvent


def concerns_task(change: BreakerChange) -> bool:
    """A change goes into the timeline of the task whose call caused it only when it is that task's story: its
    failure opened the breaker, or its call was the half-open trial. A success of some other step (a running scan's
    poll) while the breaker is open only makes the trial due: the scanner's story, not that task's: the log line and
    the scanner's row (admin, API, ``nessus_scanner_circuit_breaker_open``) have it."""
    return change.to_state == BreakerState.OPEN or change.from_state == BreakerState.HALF_OPEN


def on_breaker_changed(sender, *, change: BreakerChange, task_id: uuid.UUID | None = None, **kwargs) -> None:
    if task_id is not None and concerns_task(change):
        TaskEvent.objects.create(task_id=task_id, kind=EventKind.BREAKER, message=change.message, data=change.data,
                                 actor="worker")
    if change.retry_in is not None:
        pool_id, delay = change.pool_id, change.retry_in
        transaction.on_commit(lambda: dispatch_later(pool_id, delay), robust=True)
    else:
        pool_id = change.pool_id
        transaction.on_commit(lambda: request_dispatch(pool_id), robust=True)


def on_connection_confirmed(sender, *, scanner_id: int, pool_id: int, **kwargs) -> None:
    transaction.on_commit(lambda: request_dispatch(pool_id), robust=True)


def on_scanner_changed(sender, *, scanner_id: int, pool_id: int, **kwargs) -> None:
    """A scanner may take work it could not take before (limit raised, enabled, moved here, healthy again)."""
    transaction.on_commit(lambda: request_dispatch(pool_id), robust=True)
