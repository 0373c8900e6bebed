"""The re-check of a task about to start a scan later than its submission: a retry (:func:`tasks.services.retry`)
and an approval (:func:`tasks.policies.approval.approve`).

Both meet the rules as they are *now*, in the order and with the errors of a submission
(:func:`tasks.services.submit`): the pool must be enabled (400 ``pool_disabled``), the stored targets must still
be targets (400 ``invalid``) inside the pool's current scope, with the protected targets and the scanners
configured now (403 ``out_of_scope``), and the client's current policy must allow them (403 ``policy_refused``).
Budgets are the caller's business: a retry reserves them as a new scan, an approval does not charge them again
(the held scan was counted when it was submitted or retried).

A refusal changes nothing on the task. :func:`refused` records it once the caller's transaction rolled back: a
policy refusal is a row of the refusal log (as a submission's), and the task's timeline gets one note saying who
was refused and why — not repeated while the same person keeps being refused for the same reason.
"""

from __future__ import annotations

import logging

from pools.scope import TargetError, normalise_targets
from tasks.engine.transitions import add_event
from tasks.errors import PolicyError, SubmissionError
from tasks.models import EventKind, ScanTask
from tasks.policies.checks import Decision, evaluate, record_refusal
from tasks.submission_rules import check_pool_accepts, check_scope

log = logging.getLogger(__name__)


def recheck(task: ScanTask) -> Decision | None:
    """Check ``task`` (its pool read fresh with it) as a submission of it would be checked now; the client's
    policy decision, or None when the task has no client or the client no policy. Raises SubmissionError."""
    pool = task.pool
    check_pool_accepts(pool)
    try:
        targets = normalise_targets(task.targets)
    except TargetError as exc:
        raise SubmissionError("targets", f"the task's targets are no longer accepted ({exc}): submit a new scan "
                              "with valid targets") from None
    check_scope(pool, targets)
    if task.api_token_id is None:
        return None
    return evaluate(task.api_token, pool, targets, task.scan_type)


def refused(task: ScanTask, what: str, actor: str, exc: SubmissionError) -> None:
    """Record that ``what`` ("retry", "approval") of ``task`` by ``actor`` was refused with ``exc`` (call it after
    the transaction rolled back, so the records stay)."""
    if isinstance(exc, PolicyError):
        record_refusal(task.api_token, task.pool.name, exc)
    message = f"{what} by {actor or 'unknown'} refused ({exc.code}): {exc.field}: {exc.message}"[:2000]
    last = task.events.order_by("-created_at", "-id").values_list("message", flat=True).first()
    if last != message:
        data = {"refused": what, "code": exc.code, "field": exc.field}
        if isinstance(exc, PolicyError):
            data["reason"] = exc.reason
        add_event(task.id, message, kind=EventKind.WARNING, actor=actor[:150], data=data)
    log.info("%s of task %s by %s refused: %s (%s)", what, task.id, actor or "unknown", exc.code, exc.message)
