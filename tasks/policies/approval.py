"""Approval of scans a client policy held back: approve, reject, expire.

``pending_approval`` is not queued: no slot, no queue position, no RQ job. Approving moves the task to
``queued`` through the status machine's compare-and-set; the pool's FIFO orders by submission time
(``created_at``), so an approved task takes its ORIGINAL place, ahead of everything submitted after it.
Rejection and expiry move it to ``cancelled`` with the reason on the row. Every decision is a task
event naming who took it. Four eyes: nobody approves a scan they submitted themselves.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from tasks.capacity import forget_pool
from tasks.engine.dispatch import request_dispatch
from tasks.engine.transitions import transition
from tasks.errors import ApprovalRefused, NotFoundError, SubmissionError, TaskStateError
from tasks.models import ApiToken, ScanTask, TaskStatus
from tasks.policies.checks import approvers as approvers  # re-exported: its home was here (tasks.api imports it)
from tasks.policies.recheck import recheck, refused

log = logging.getLogger(__name__)

APPROVE_PERMISSION = "tasks.approve_scantask"
EXPIRY_ACTOR = "approval expiry"


def _pending(task_id: uuid.UUID | str) -> ScanTask:
    try:
        task = ScanTask.objects.select_related("pool").get(pk=task_id)
    except (ScanTask.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise NotFoundError("task_id", f"no scan task {task_id}") from None
    if task.status != TaskStatus.PENDING_APPROVAL:
        raise TaskStateError("task_id", f"task {task.id} is {task.status}: only scans pending approval can be "
                             "approved or rejected")
    return task


def _expired(task: ScanTask, now: datetime) -> bool:
    return task.approval_expires_at is not None and task.approval_expires_at <= now


def approve(task_id: uuid.UUID | str, *, actor: str, user: Any = None, reason: str = "") -> ScanTask:
    """pending_approval → queued, at its original FIFO place; the pool's dispatch runs after commit.

    The scan is checked as a submission would be now (:func:`~tasks.policies.recheck.recheck`): a disabled pool,
    targets the pool's scope or the client's policy no longer allow refuse the approval with the submission's
    error (400 ``pool_disabled``, 403 ``out_of_scope`` / ``policy_refused``) and leave the task pending, with a
    note in its timeline."""
    task = _pending(task_id)
    now = timezone.now()
    if _expired(task, now):
        expire(task, now)
        raise TaskStateError("task_id", f"task {task.id} waited longer than SCANPOOL_APPROVAL_TTL and has expired "
                             "(cancelled): the client must submit it again")
    if task.api_token_id is not None and not ApiToken.objects.active().filter(pk=task.api_token_id).exists():
        raise ApprovalRefused("task_id", f"task {task.id} was submitted with an API token that has since been revoked "
                              "(or whose user was deactivated): its client is no longer trusted — reject it; the "
                              "client submits again with a valid token if the scan is still wanted")
    if user is not None and user.pk is not None and user.pk in (task.requested_by_id, task.retried_by_id):
        asked = "submitted" if user.pk == task.requested_by_id else "retried"
        raise ApprovalRefused("task_id", f"task {task.id} was {asked} by {user.get_username()!r}: another "
                              "person must approve it (four eyes)")
    try:  # the rules of today, except the approval rule itself; budgets were charged when it was submitted
        recheck(task)
    except SubmissionError as exc:
        refused(task, "approval", actor, exc)
        raise
    message = f"approved by {actor}" + (f": {reason}" if reason else "")
    with transaction.atomic():
        if not transition(task.id, expect=TaskStatus.PENDING_APPROVAL, to=TaskStatus.QUEUED, actor=actor,
                          message=message, data={"decision": "approved", "reason": reason},
                          fields={"approval_decided_by": actor[:150], "approval_decided_at": now}):
            raise TaskStateError("task_id", f"task {task.id} changed status meanwhile; reload and try again")
        transaction.on_commit(lambda: request_dispatch(task.pool_id), robust=True)
    forget_pool(task.pool_id)  # it joined at its original place: cached positions behind it moved
    log.info("task %s approved by %s", task.id, actor)
    task.refresh_from_db()
    return task


def reject(task_id: uuid.UUID | str, *, actor: str, reason: str) -> ScanTask:
    """pending_approval → cancelled, with the reason on the task (its error message) and in the event."""
    reason = (reason or "").strip()
    if not reason:
        raise SubmissionError("reason", "is required: say why the scan is rejected (the client sees it)",
                              code="required")
    task = _pending(task_id)
    now = timezone.now()
    message = f"rejected by {actor}: {reason}"
    if not transition(task.id, expect=TaskStatus.PENDING_APPROVAL, to=TaskStatus.CANCELLED, actor=actor,
                      message=message, data={"decision": "rejected", "reason": reason},
                      fields={"approval_decided_by": actor[:150], "approval_decided_at": now,
                              "error_message": message[:2000]}):
        raise TaskStateError("task_id", f"task {task.id} changed status meanwhile; reload and try again")
    log.info("task %s rejected by %s", task.id, actor)
    task.refresh_from_db()
    return task


def expire(task: ScanTask, now: datetime | None = None) -> bool:
    """Cancel one unapproved task whose approval time is over (False if it moved meanwhile)."""
    now = now or timezone.now()
    ttl = settings.SCANPOOL_APPROVAL_TTL
    message = f"not approved within {ttl} s (SCANPOOL_APPROVAL_TTL): expired"
    return transition(task.id, expect=TaskStatus.PENDING_APPROVAL, to=TaskStatus.CANCELLED, actor=EXPIRY_ACTOR,
                      message=message, data={"decision": "expired", "ttl_seconds": ttl},
                      fields={"approval_decided_by": EXPIRY_ACTOR, "approval_decided_at": now,
                              "error_message": message})


def expire_pending(pool_ids: list[int] | None = None, now: datetime | None = None) -> list[str]:
    """Cancel every task of these pools (all when None) still pending approval after its expiry time.
    Run by the periodic reconcile; returns the ids of the tasks it expired."""
    now = now or timezone.now()
    due = ScanTask.objects.filter(status=TaskStatus.PENDING_APPROVAL, approval_expires_at__lte=now)
    if pool_ids is not None:
        due = due.filter(pool_id__in=pool_ids)
    return [str(task.id) for task in due.only("id", "pool_id") if expire(task, now)]
