"""Slots: the atomic counter that caps each scanner (DESIGN §4). This module owns acquire, release and
recompute; nothing else writes ``Scanner.active_scans``.

A slot is ``Scanner.active_scans``, changed only by conditional UPDATEs:

* acquire: ``UPDATE scanner SET active_scans = active_scans + 1 WHERE id = … AND active_scans <
  max_concurrent_scans`` — rowcount 1 means the slot is ours, whatever other workers do at the same time;
* release: flip the task's ``slot_held`` from true to false (rowcount 1 = we are the one releasing) and
  decrement in the same transaction, so every terminal path releases exactly once;
* :func:`recompute_active` rebuilds the counter from the tasks that hold slots (the reconciler).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F

from scanners import breaker
from scanners.models import BreakerState, Scanner
from scanners.selection import candidates
from tasks.models import ScanTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acquired:
    scanner: Scanner
    trial: bool  # a half-open breaker's one trial


def acquire_slot(scanner_id: int, *, credentials: bool = False) -> bool:
    """Take one slot on the scanner if one is free (one conditional UPDATE); with ``credentials``, only while its
    connection is confirmed (checked in the same UPDATE: a change committed meanwhile wins)."""
    qs = Scanner.objects.filter(pk=scanner_id, active_scans__lt=F("max_concurrent_scans"))
    if credentials:
        qs = qs.for_credentials()
    return qs.update(active_scans=F("active_scans") + 1) == 1


def _decrement(scanner_id: int) -> None:
    Scanner.objects.filter(pk=scanner_id, active_scans__gt=0).update(active_scans=F("active_scans") - 1)


def release_task_slot(task_id: uuid.UUID) -> bool:
    """Release the slot ``task_id`` holds, exactly once. Returns True when this call released it."""
    with transaction.atomic():
        row = ScanTask.objects.filter(pk=task_id, slot_held=True).values_list("assigned_scanner_id", flat=True).first()
        if row is None:
            return False
        if ScanTask.objects.filter(pk=task_id, slot_held=True).update(slot_held=False) != 1:
            return False
        _decrement(row)
    return True


def select_and_acquire(
    pool_id: int, pinned_scanner_id: int | None = None, *, credentials: bool = False
) -> Acquired | None:
    """Pick the best scanner and take a slot on it atomically; ``None`` when nothing is free.
    ``credentials``: the task carries credentials, so only scanners with a confirmed connection qualify.

    Must run inside a transaction (the caller's claim and this acquisition commit together).
    A scanner whose breaker is due for a trial is taken only if this call wins the trial.
    """
    for scanner in candidates(pool_id, pinned_scanner_id, credentials=credentials):
        with transaction.atomic():  # a savepoint: losing the trial undoes the slot
            if not acquire_slot(scanner.pk, credentials=credentials):
                continue
            trial = scanner.breaker_state != BreakerState.CLOSED
            if trial and not breaker.begin_trial(scanner):
                transaction.set_rollback(True)
                continue
        scanner.refresh_from_db(fields=["active_scans", "breaker_state", "breaker_opened_at"])
        return Acquired(scanner=scanner, trial=trial)
    return None


def recompute_active(scanner_id: int | None = None) -> list[tuple[str, int, int]]:
    """Set ``active_scans`` from the tasks holding slots; returns (scanner, old, new) for each change."""
    changed: list[tuple[str, int, int]] = []
    ids = [scanner_id] if scanner_id is not None else list(Scanner.objects.values_list("pk", flat=True))
    for sid in ids:
        with transaction.atomic():
            scanner = Scanner.objects.select_for_update().filter(pk=sid).first()
            if scanner is None:
                continue
            held = ScanTask.objects.filter(assigned_scanner_id=sid, slot_held=True).count()
            if held != scanner.active_scans:
                Scanner.objects.filter(pk=sid).update(active_scans=held)
                changed.append((scanner.name, scanner.active_scans, held))
                log.warning("scanner %s: active_scans was %d, tasks hold %d slots: corrected", scanner.name,
                            scanner.active_scans, held)
    return changed
