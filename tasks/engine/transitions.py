"""Every status change of a task goes through :func:`transition`: the status machine's check, a
compare-and-set UPDATE (``filter(pk, status=old).update(...)``), a TaskEvent, and — on terminal
states — the slot released exactly once and the pool's dispatch requested after commit. A task that
ends ``completed`` or ``cancelled`` has its stored scan credentials erased in the same UPDATE
(``failed``/``timeout`` keep them for a retry, until a retry ends completed or cancelled, or the row is deleted)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tasks.engine.chain import end_chain
from tasks.engine.dispatch import request_dispatch
from tasks.engine.slots import release_task_slot
from tasks.models import TERMINAL_STATUSES, EventKind, ScanTask, TaskEvent, TaskStatus, check_transition
from tasks.observability.totals import record_terminal

# Terminal states after which a task's scan credentials are never needed again (no retry from there).
ERASE_CREDENTIALS_ON = frozenset({TaskStatus.COMPLETED, TaskStatus.CANCELLED})

log = logging.getLogger(__name__)


def add_event(
    task_id: uuid.UUID, message: str, *, kind: str = EventKind.INFO, data: dict | None = None, actor: str = "worker"
) -> TaskEvent:
    return TaskEvent.objects.create(task_id=task_id, kind=kind, message=message, data=data or {}, actor=actor)


def transition(
    task_id: uuid.UUID,
    *,
    expect: str,
    to: str,
    message: str = "",
    actor: str = "worker",
    fields: dict[str, Any] | None = None,
    data: dict | None = None,
    release_slot: bool | None = None,
    where: Q | None = None,
) -> bool:
    """Move ``task_id`` from ``expect`` to ``to``; False (and nothing written) if it is no longer ``expect``
    (or, with ``where``, the row no longer meets that condition: checked in the same conditional UPDATE).

    ``release_slot`` defaults to True for terminal states. Cancelling a task that may still run on a
    scanner passes False: the stop step releases the slot once the scan is stopped there.
    """
    check_transition(expect, to)
    now = timezone.now()
    values: dict[str, Any] = {**(fields or {}), "status": to, "updated_at": now}
    terminal = to in TERMINAL_STATUSES
    if terminal:
        values.setdefault("finished_at", now)
    if release_slot is None:
        release_slot = terminal
    erase = to in ERASE_CREDENTIALS_ON
    with transaction.atomic():
        had_credentials = erase and _has_credentials(task_id)
        if erase:
            values["credentials"] = None
        row = ScanTask.objects.filter(pk=task_id, status=expect)
        if where is not None:
            row = row.filter(where)
        if row.update(**values) != 1:
            return False
        TaskEvent.objects.create(
            task_id=task_id, kind=EventKind.STATUS, from_status=expect, to_status=to,
            message=message or f"{expect} → {to}", data=data or {}, actor=actor,
        )
        if terminal:
            record_terminal(task_id, expect=expect, to=to)  # metrics totals, in the same transaction
        if had_credentials:
            add_event(task_id, f"stored scan credentials erased (task {to})", actor=actor,
                      data={"credentials": "erased"})
        released = release_task_slot(task_id) if release_slot else False
        if released:
            _dispatch_pools_on_commit(task_id)
        if terminal:
            transaction.on_commit(lambda: _end_chain(task_id), robust=True)
    log.info("task %s: %s -> %s (%s) %s", task_id, expect, to, actor, message)
    return True


def _has_credentials(task_id: uuid.UUID) -> bool:
    return ScanTask.objects.filter(pk=task_id, credentials__isnull=False).exists()


def release_and_dispatch(task_id: uuid.UUID) -> bool:
    """Release the task's slot (exactly once) and let its pool dispatch the next task."""
    with transaction.atomic():
        released = release_task_slot(task_id)
        if released:
            _dispatch_pools_on_commit(task_id)
    return released


def unclaim(task_id: uuid.UUID, reason: str, *, actor: str = "worker") -> bool:
    """Give a claimed-but-not-launched task back to its pool's queue, at its original place (FIFO by
    submission time), releasing its slot. Only for tasks with nothing created on a scanner."""
    with transaction.atomic():
        base = ScanTask.objects.filter(
            pk=task_id, status=TaskStatus.QUEUED, claimed_at__isnull=False, scanner_scan_id__isnull=True
        )
        if not base.exists():
            return False
        release_task_slot(task_id)
        _dispatch_pools_on_commit(task_id)  # read before the scanner is forgotten: a moved scanner's pool too
        base.update(claimed_at=None, assigned_scanner=None, scanner_status="", updated_at=timezone.now())
        add_event(task_id, f"back in the queue: {reason}", kind=EventKind.RETRY, actor=actor)
    log.info("task %s: unclaimed (%s)", task_id, reason)
    return True


def _dispatch_on_commit(pool_id: int) -> None:
    transaction.on_commit(lambda: request_dispatch(pool_id), robust=True)


def _dispatch_pools_on_commit(task_id: uuid.UUID) -> None:
    """After a slot release: dispatch the task's pool and, when its scanner has been moved to another pool since
    the claim, that pool too (the freed slot is there now)."""
    row = ScanTask.objects.filter(pk=task_id).values_list("pool_id", "assigned_scanner__pool_id").first()
    for pool_id in dict.fromkeys(row or ()):
        if pool_id is not None:
            _dispatch_on_commit(pool_id)


def _end_chain(task_id: uuid.UUID) -> None:
    """Forget the ended task's step chain. With Redis unreachable (a cancel during an outage) the key stays: harmless,
    a stray link of an ended task finds nothing to do and ends it (``chain.end_if_current``); one warning, no
    traceback."""
    try:
        end_chain(task_id)
    except redis.RedisError as exc:
        log.warning("task %s ended; its step chain key is left (Redis: %s: %s)", task_id, type(exc).__name__, exc)
