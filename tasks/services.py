"""The submission service (DESIGN §9): ``submit``, ``cancel`` and ``retry``. The admin, the REST API
and the MCP server all call these; nothing else creates or moves tasks by hand.

``submit`` validates everything before writing anything (field rules in :mod:`tasks.submission_rules`, the
client's policy in :mod:`tasks.policies`), then writes the row and its first event
in one transaction and asks for the pool's dispatch after commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from rq.exceptions import NoSuchJobError

from pools.models import Pool
from pools.scope import TargetError, normalise_targets
from scanners.models import Scanner
from scanners.scope import pool_with_scanner_urls
from scanpool_site.inserts import insert_new
from tasks.capacity import forget_pool, retry_after_seconds
from tasks.engine.abandoned import drop_lost_executions_of
from tasks.engine.dispatch import request_dispatch
from tasks.engine.monitor import enqueue_stop
from tasks.engine.transitions import add_event, transition
from tasks.errors import IdempotencyConflict, NotFoundError, PolicyError, PoolFull, SubmissionError, TaskStateError
from tasks.models import ApiToken, EventKind, ScanTask, ScanType, TaskEvent, TaskStatus
from tasks.models.states import CANCELLABLE_STATUSES, RETRYABLE_STATUSES, SCAN_COMPLETED_STATUSES
from tasks.policies.checks import evaluate as evaluate_policy
from tasks.policies.checks import policy_event, record_refusal
from tasks.policies.recheck import recheck, refused
from tasks.queues import pool_queues
from tasks.results.ingest import HIDDEN_RESULTS, discard_results
from tasks.submission_rules import (
    check_pool_accepts,
    check_scope,
    check_token_still_valid,
    clean_credentials,
    clean_text,
    clean_timeout,
)
from tasks.target_index import index_rows

# Longest idempotency key the task row holds (the API scopes a client's key as "api:<user id>:<key>").
IDEMPOTENCY_KEY_COLUMN = ScanTask._meta.get_field("idempotency_key").max_length
ACCESS_RESOLUTION_SECONDS = 60  # mark_accessed writes a task's last access at most this often

log = logging.getLogger(__name__)

@sensitive_variables("request", "canonical")
def _fingerprint(request: dict[str, Any]) -> str:
    # HMAC, not a bare hash: the request includes credentials, which must not be guessable from the row.
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(settings.SECRET_KEY.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def _same_request(key: str, fingerprint: str) -> ScanTask | None:
    existing = ScanTask.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "idempotency_key", f"was already used for a different request (task {existing.id}): "
            "send the same request to get that task back, or use a new key for a new scan")
    return existing


# ------------------------------------------------------------------------------------------- submit


@sensitive_variables("credentials", "creds")
def submit(
    *,
    pool: str,
    name: str,
    targets: Any,
    scan_type: str = ScanType.UNTRUSTED,
    credentials: dict[str, Any] | None = None,
    scanner_instance: str | None = None,
    idempotency_key: str | None = None,
    timeout_seconds: int | None = None,
    description: str = "",
    requested_by: Any = None,
    requested_via: str = "",
    api_token: ApiToken | None = None,
) -> ScanTask:
    """Queue a scan. Raises :class:`~tasks.errors.SubmissionError` (or a subclass) naming the field.

    ``api_token`` is the API token (client) the request came with: its policy (if any) is enforced here, and a scan the
    policy holds for approval is created ``pending_approval`` instead of ``queued``."""
    try:
        return _submit(pool=pool, name=name, targets=targets, scan_type=scan_type, credentials=credentials,
                       scanner_instance=scanner_instance, idempotency_key=idempotency_key,
                       timeout_seconds=timeout_seconds, description=description, requested_by=requested_by,
                       requested_via=requested_via, api_token=api_token)
    except PolicyError as exc:  # after the transaction rolled back: the refusal row stays
        record_refusal(api_token, pool if isinstance(pool, str) else "", exc)
        log.info("submission by client %s refused by its policy: %s (%s)", api_token.name if api_token else "-",
                 exc.reason, exc.message)
        raise


@sensitive_variables("credentials", "creds")
def _submit(*, pool: str, name: str, targets: Any, scan_type: str, credentials: dict[str, Any] | None,
            scanner_instance: str | None, idempotency_key: str | None, timeout_seconds: int | None,
            description: str, requested_by: Any, requested_via: str, api_token: ApiToken | None) -> ScanTask:
    if pool is not None and not isinstance(pool, str):
        raise SubmissionError("pool", f"must be a pool name (a string), not {type(pool).__name__}")
    if not pool or not pool.strip():
        raise SubmissionError("pool", "is required: give the name of a pool", code="required")
    # A control character (NUL) would reach the database in the lookup: PostgreSQL refuses it with an error.
    pool = clean_text("pool", pool, max_length=200)
    pool_obj = pool_with_scanner_urls(pool)  # with the scanners' addresses the scope check needs
    if pool_obj is None:
        names = ", ".join(Pool.objects.filter(enabled=True).values_list("name", flat=True)) or "none configured"
        raise NotFoundError("pool", f"no pool named {pool!r}; available pools: {names}")
    check_pool_accepts(pool_obj)
    name = clean_text("name", name, max_length=200)
    description = clean_text("description", description, max_length=10_000, required=False)
    if scan_type not in ScanType.values:
        raise SubmissionError("scan_type", f"{scan_type!r} is not a scan type; use one of {', '.join(ScanType.values)}")
    try:
        parsed = normalise_targets(targets)
    except TargetError as exc:
        raise SubmissionError("targets", str(exc)) from None
    check_scope(pool_obj, parsed)
    creds = clean_credentials(scan_type, credentials)
    scanner = None
    if scanner_instance:
        if not isinstance(scanner_instance, str):
            raise SubmissionError("scanner_instance", "must be a scanner name (a string)")
        scanner_instance = clean_text("scanner_instance", scanner_instance, max_length=200)
        scanner = Scanner.objects.filter(name=scanner_instance).select_related("pool").first()
        if scanner is None:
            in_pool = ", ".join(pool_obj.scanners.values_list("name", flat=True)) or "none"
            raise NotFoundError("scanner_instance", f"no scanner named {scanner_instance!r}; "
                                f"scanners of pool {pool_obj.name!r}: {in_pool}")
        if scanner.pool_id != pool_obj.pk:
            raise SubmissionError("scanner_instance", f"scanner {scanner.name!r} belongs to pool "
                                  f"{scanner.pool.name!r}, not {pool_obj.name!r}: "
                                  "submit to that pool or pick a scanner of this one")
        if not scanner.enabled:
            raise SubmissionError("scanner_instance", f"scanner {scanner.name!r} is disabled: "
                                  "leave scanner_instance out to use any scanner of the pool")
    timeout = clean_timeout(timeout_seconds, pool_obj)
    key = None
    if idempotency_key is not None:
        key = clean_text("idempotency_key", idempotency_key, max_length=IDEMPOTENCY_KEY_COLUMN)
    target_texts = [t.text for t in parsed]
    fingerprint = _fingerprint({
        "pool": pool_obj.name, "name": name, "targets": target_texts, "scan_type": scan_type, "credentials": creds,
        "scanner_instance": scanner.name if scanner else None, "timeout_seconds": timeout_seconds,
        "description": description,
    })
    if key:
        existing = _same_request(key, fingerprint)
        if existing is not None:
            existing.replayed = True  # callers (the API) answer 200 instead of 202
            return existing

    try:
        with transaction.atomic():
            check_token_still_valid(api_token)  # and whether its client has a policy, checked next under its lock
            decision = evaluate_policy(api_token, pool_obj, parsed, scan_type)
            # The pool's row lock serialises the backpressure check and the client's budgets; without either
            # there is nothing to serialise.
            locked_pool = (Pool.objects.select_for_update().get(pk=pool_obj.pk)
                           if pool_obj.max_queued or decision is not None else pool_obj)
            if decision is not None:
                if key and (existing := _same_request(key, fingerprint)) is not None:  # raced a replay
                    existing.replayed = True
                    return existing
                decision.reserve(locked_pool)  # locks the client's policy row; budgets counted under it
            held = decision is not None and decision.needs_approval
            if locked_pool.max_queued and not held:
                waiting = ScanTask.objects.filter(pool=locked_pool, status=TaskStatus.QUEUED,
                                                  claimed_at__isnull=True).count()
                if waiting >= locked_pool.max_queued:
                    raise PoolFull("pool", f"pool {locked_pool.name!r} already has {waiting} scans waiting "
                                   f"(limit {locked_pool.max_queued}): retry later",
                                   retry_after=retry_after_seconds(locked_pool))
            task = ScanTask(
                pool=locked_pool, name=name, description=description, targets=target_texts, scan_type=scan_type,
                credentials=creds, requested_scanner=scanner, timeout_seconds=timeout, idempotency_key=key,
                request_fingerprint=fingerprint, requested_by=requested_by, requested_via=requested_via[:32],
                api_token=api_token, address_count=sum(t.size for t in parsed),
                status=TaskStatus.PENDING_APPROVAL if held else TaskStatus.QUEUED,
                approval_reason=decision.approval_reason if held else "",
                approval_expires_at=_approval_expiry() if held else None,
            )
            insert_new([task])  # by a statement made once (scanpool_site.inserts), as the next two
            insert_new(index_rows(task.id, parsed))
            insert_new([TaskEvent(task_id=task.id, kind=EventKind.STATUS, actor=_actor(requested_by, requested_via),
                                  message=f"submitted to pool {locked_pool.name}"
                                  + (f", pinned to scanner {scanner.name}" if scanner else ""),
                                  data={"targets": len(target_texts), "scan_type": scan_type})])
            if decision is not None:
                policy_event(task, decision)
            if not held:
                transaction.on_commit(lambda: request_dispatch(locked_pool), robust=True)
    except IntegrityError:
        if key:  # two identical requests raced on the idempotency key: the other one won
            existing = _same_request(key, fingerprint)
            if existing is not None:
                existing.replayed = True
                return existing
        raise
    log.info("task %s submitted to pool %s by %s", task.id, pool_obj.name, _actor(requested_by, requested_via))
    return task


def _approval_expiry():
    return timezone.now() + timedelta(seconds=settings.SCANPOOL_APPROVAL_TTL)


def mark_accessed(task: ScanTask) -> None:
    """Record that someone read the task (the TTL clean-up counts from it). At most one write a minute per
    task: a client polling every second must not turn every status read into a database write."""
    now = timezone.now()
    if task.last_accessed_at is None or now - task.last_accessed_at > timedelta(seconds=ACCESS_RESOLUTION_SECONDS):
        ScanTask.objects.filter(pk=task.pk).update(last_accessed_at=now)
        task.last_accessed_at = now


def _actor(user: Any, via: str = "") -> str:
    name = getattr(user, "get_username", lambda: "")() if user is not None else ""
    return f"{name} via {via}" if name and via else (name or via or "")


# ------------------------------------------------------------------------------------ cancel / retry


def _get(task_id: uuid.UUID | str) -> ScanTask:
    try:
        return ScanTask.objects.select_related("pool", "api_token").get(pk=task_id)
    except (ScanTask.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise NotFoundError("task_id", f"no scan task {task_id}") from None


def cancel(task_id: uuid.UUID | str, *, actor: str = "", reason: str = "", waiting_only: bool = False) -> ScanTask:
    """pending_approval | queued → cancelled (nothing on a scanner yet); claimed/running → cancelled, and a stop
    step on the pool's queue stops the scan on its scanner and then releases the slot; finished → TaskStateError.

    ``waiting_only``: only a scan that has not started (pending approval, or queued and not claimed by dispatch);
    one given a scanner — even between the read and the cancel: the UPDATE checks it — is left alone
    (TaskStateError). Revoking a leaked token cancels its waiting scans this way (:mod:`tasks.revocation`).

    Too late, too (TaskStateError, and a note in the task's timeline): a running task that is *finishing* — a poll
    saw its scan completed on the scanner, its results are being fetched and stored, and it ends by them. The check
    is part of the cancel's conditional UPDATE, so a cancel and the poll that records the completion never both
    win (docs/architecture.md "Cancel")."""
    for _ in range(5):  # the status may move under us (launch, finish): re-read and try again
        task = _get(task_id)
        if task.is_finishing:
            raise _too_late(task, actor)
        if task.status not in CANCELLABLE_STATUSES:
            raise TaskStateError("task_id", f"task {task.id} is {task.status}: only scans pending approval, queued "
                                 "or running can be cancelled")
        if waiting_only and (task.status == TaskStatus.RUNNING or task.claimed_at is not None):
            raise TaskStateError("task_id", f"task {task.id} has started (given a scanner): left {task.status}; "
                                 "cancel it on its own to stop it")
        on_scanner = task.slot_held
        who = (f"cancelled by {actor}" if actor else "cancelled") + (f": {reason}" if reason else "")
        # slot_held as read: a claim landing in between (slot taken, launch on its way) makes the UPDATE miss and
        # the loop read again, so a claimed task is never cancelled as one that never reached a scanner.
        where = (~Q(scanner_status__in=SCAN_COMPLETED_STATUSES) & Q(slot_held=on_scanner)
                 & (Q(claimed_at__isnull=True) if waiting_only else Q()))
        if transition(task.id, expect=task.status, to=TaskStatus.CANCELLED, actor=actor, message=who,
                      release_slot=not on_scanner, where=where):
            if on_scanner:
                transaction.on_commit(lambda t=task: after_commit(enqueue_stop, t.pool_id, t.id), robust=True)
            # The tasks behind it moved up: this process's cached snapshot must not show their old places, whoever
            # cancels (API, admin, MCP through the API).
            forget_pool(task.pool_id)
            task.refresh_from_db()
            return task
    raise TaskStateError("task_id", f"task {task_id} kept changing status; try again")


def _too_late(task: ScanTask, actor: str) -> TaskStateError:
    """The refusal of a cancel that came after the task's scan completed on its scanner, noted in its timeline."""
    scanner = task.assigned_scanner.name if task.assigned_scanner else "its scanner"
    noted = TaskEvent.objects.filter(task_id=task.id, actor=actor, data__cancel="refused").exists()
    if not noted:  # one note per person asking: a client retrying its cancel in a loop does not fill the timeline
        add_event(task.id, f"cancel by {actor or 'unknown'} refused: scan {task.scanner_scan_id} had already "
                  f"completed on {scanner}; its results are being stored", actor=actor,
                  data={"cancel": "refused", "scanner_status": task.scanner_status})
    log.info("task %s: cancel by %s refused: the scan already completed on %s", task.id, actor or "unknown", scanner)
    return TaskStateError("task_id", f"too late to cancel task {task.id}: its scan {task.scanner_scan_id} already "
                          f"completed on scanner {scanner}, and its results are being fetched and stored; the task "
                          "ends by them: completed, or failed if they fail validation or cannot be fetched before "
                          "its deadline")


def retry(task_id: uuid.UUID | str, *, actor: str = "", reason: str = "", user: Any = None) -> ScanTask:
    """A dead letter (failed or timeout) goes back to the queue as a new attempt, with a fresh scan.

    A retry is a new scan: it meets today's rules as a submission would (:mod:`tasks.policies.recheck`): the pool
    must be enabled (400 ``pool_disabled``) and its scope allow the targets (403 ``out_of_scope``), and the policy
    of the task's client applies as it is now (pools, scan types, targets, budgets — a retry counts as a scan of
    the day — and approval, which holds the retry as pending). A refusal leaves the task as it was, consumes no
    budget, and is recorded: a note in the task's timeline, and a policy refusal also in the refusal log.

    ``user`` (the person or API client's user asking) is recorded as ``retried_by``: like the submitter, they may not
    approve the attempt they asked for (four eyes)."""
    task = _get(task_id)
    if task.status not in RETRYABLE_STATUSES:
        raise TaskStateError("task_id", f"task {task.id} is {task.status}: only failed or timed-out scans can be "
                             "retried")
    if task.slot_held:
        raise _still_stopping(task)
    try:
        return _retry_task(task, actor, reason, user)
    except TaskStateError:
        raise
    except SubmissionError as exc:  # after the transaction rolled back: the refusal's records stay
        refused(task, "retry", actor, exc)
        raise


def _still_stopping(task: ScanTask) -> TaskStateError:
    """A retry while the last scan may still run (slot held, tasks.engine.settle) would exceed the scanner's limit."""
    scanner = task.assigned_scanner.name if task.assigned_scanner else "its scanner"
    return TaskStateError("task_id", f"task {task.id} cannot be retried yet: its scan {task.scanner_scan_id} may still "
                          f"be running on scanner {scanner}, which keeps its slot until the scan is seen stopped (at "
                          f"most {settings.SCANPOOL_STOP_GRACE}s after the task ended); retry it after that")


def _retry_task(task: ScanTask, actor: str, reason: str = "", user: Any = None) -> ScanTask:
    decision = recheck(task)  # pool enabled, scope and policy as of now, as submit checks them
    held = decision is not None and decision.needs_approval
    fields = {
        "attempts": task.attempts + 1, "error_kind": "", "error_message": "", "progress": 0, "scanner_status": "",
        "scanner_scan_id": None, "scanner_scan_uuid": "", "assigned_scanner": None, "claimed_at": None,
        "started_at": None, "finished_at": None, "deadline_at": None, "last_polled_at": None,
        "retried_by": user if getattr(user, "pk", None) is not None else None,
        **HIDDEN_RESULTS,  # the new attempt has none yet: the previous one's are not shown as its own
    }
    if held:  # a new approval for this attempt (the first attempt's decision stays in the events)
        fields.update(approval_reason=decision.approval_reason, approval_expires_at=_approval_expiry(),
                      approval_decided_by="", approval_decided_at=None)
    who = actor or "unknown"
    with transaction.atomic():
        if decision is not None:
            decision.reserve(task.pool)  # locks the client's policy row; budgets counted under it
        if not transition(task.id, expect=task.status, to=TaskStatus.PENDING_APPROVAL if held else TaskStatus.QUEUED,
                          actor=actor, fields=fields, message=f"retried by {who} (attempt {task.attempts + 1})",
                          data={"previous_error": task.error_message[:500]}, where=Q(slot_held=False)):
            raise TaskStateError("task_id", f"task {task.id} changed status meanwhile; reload and try again")
        add_event(task.id, f"retry requested by {who}" + (f": {reason}" if reason else ""), kind=EventKind.RETRY,
                  actor=actor)
        if decision is not None:
            policy_event(task, decision)
        transaction.on_commit(lambda: after_commit(drop_dead_letters, task), robust=True)
        if task.results_file:
            transaction.on_commit(lambda: discard_results(task.id), robust=True)
        if not held:
            transaction.on_commit(lambda: request_dispatch(task.pool_id), robust=True)
    forget_pool(task.pool_id)  # it rejoins the queue at its FIFO place: cached positions behind it moved
    task.refresh_from_db()
    return task


def after_commit(work: Any, *args: Any) -> None:
    """Redis work after a cancel, retry or results fetch committed. With Redis unreachable the change stands (the
    request succeeded) and the reconcile makes up for it (a lost stop enqueued again, an earlier attempt's failed jobs
    deleted, a lost step of a running task started again): a warning, not an ERROR with a traceback for every request
    during an outage."""
    try:
        work(*args)
    except redis.RedisError as exc:
        log.warning("%s(%s) not done, Redis: %s: %s; the reconcile will make up for it", work.__name__,
                    ", ".join(map(str, args)), type(exc).__name__, exc)


def drop_dead_letters(task: ScanTask) -> None:
    """Remove the task's jobs from its pool queues' FailedJobRegistry (they are being retried)."""
    prefix = str(task.id)
    for queue in pool_queues(task.pool_id):
        registry = queue.failed_job_registry
        for job_id in registry.get_job_ids():
            if job_id == prefix or job_id.startswith(prefix + "-"):
                drop_lost_executions_of(job_id, queue.connection)  # else RQ's delete may fail on a dead run
                try:
                    registry.remove(job_id, delete_job=True)
                except NoSuchJobError:
                    registry.remove(job_id)
