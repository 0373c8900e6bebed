"""The submission service (DESIGN §9): ``submit``, ``cancel`` and ``retry``. The admin, the REST API
and the MCP server all call these; nothing else creates or moves tasks by hand.

``submit`` validates everything before writing anything, then writes the row and its first event
in one transaction and asks for the pool's dispatch after commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.views.decorators.debug import sensitive_variables
from rq.exceptions import NoSuchJobError

from pools.models import Pool
from pools.scope import TargetError, normalise_targets, refusals
from scanners.models import Scanner
from scanners.scope import pool_scope
from tasks.engine.dispatch import request_dispatch
from tasks.engine.transitions import add_event, transition
from tasks.errors import (
    IdempotencyConflict,
    NotFoundError,
    PoolFull,
    ScopeError,
    SubmissionError,
    TaskStateError,
)
from tasks.models import EventKind, ScanTask, ScanType, TaskStatus, TaskTarget
from tasks.models.states import RETRYABLE_STATUSES
from tasks.queues import pool_queue, pool_queues
from tasks.target_index import index_rows

log = logging.getLogger(__name__)

ESCALATION_METHODS = ("sudo", "su", "su+sudo", "pbrun", "dzdo")
_CREDENTIAL_KEYS = {"username", "password", "private_key", "elevate_privileges_with", "escalation_account",
                    "escalation_password"}
# Limits on scan credentials: (kind, most characters or bytes). Names are printable text; secrets may hold any
# character but NUL; a private key is PEM or OpenSSH text.
_NAME, _SECRET, _KEY = "name", "secret", "key"
_CREDENTIAL_RULES = {"username": (_NAME, 256), "escalation_account": (_NAME, 256),
                     "elevate_privileges_with": (_NAME, 256), "password": (_SECRET, 1024),
                     "escalation_password": (_SECRET, 1024), "private_key": (_KEY, 16 * 1024)}
_KEY_BEGIN_RE = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY)-----\r?\n")
_KEY_TEXT_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) | {"\r", "\n", "\t"}


# ----------------------------------------------------------------------------------------- validation


def _text(field: str, value: Any, *, max_length: int, required: bool = True) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise SubmissionError(field, f"must be a string, not {type(value).__name__}")
    value = value.strip()
    if required and not value:
        what = "a short name for the scan" if field == "name" else "a non-empty value (or leave it out)"
        raise SubmissionError(field, f"is required: give {what}", code="required")
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):
        raise SubmissionError(field, "contains control characters (such as NUL): remove them")
    if len(value) > max_length:
        raise SubmissionError(field, f"is {len(value)} characters long; at most {max_length} are allowed")
    return value


@sensitive_variables()  # every local: error reports (500 pages, mails) must not show the credentials
def _credentials(scan_type: str, credentials: Any) -> dict[str, str] | None:
    if scan_type == ScanType.UNTRUSTED:
        if credentials:
            raise SubmissionError(
                "credentials", "an untrusted scan takes no credentials: drop them, or use "
                "scan_type 'authenticated' (or 'authenticated_privileged') to log in to the targets")
        return None
    if not credentials:
        raise SubmissionError(
            "credentials", f"a '{scan_type}' scan needs credentials: give username and password (or private_key)",
            code="required")
    if not isinstance(credentials, dict):
        raise SubmissionError("credentials", "must be an object with username, password or private_key, …")
    unknown = sorted(set(credentials) - _CREDENTIAL_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_CREDENTIAL_KEYS))
        raise SubmissionError(f"credentials.{unknown[0]}", f"unknown key; allowed keys: {allowed}")
    clean: dict[str, str] = {}
    for key, value in credentials.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SubmissionError(f"credentials.{key}", f"must be a string, not {type(value).__name__}")
        clean[key] = value
    if not clean.get("username", "").strip():
        raise SubmissionError("credentials.username", "is required for an authenticated scan", code="required")
    if ("password" in clean) == ("private_key" in clean):
        raise SubmissionError("credentials.password", "give exactly one of password or private_key", code="required")
    for key in sorted(clean, key=sorted(_CREDENTIAL_RULES).index):
        _check_credential(key, clean[key])
    if clean.get("elevate_privileges_with", "").strip().lower() == "nothing":  # Nessus' word for "no escalation"
        del clean["elevate_privileges_with"]
    escalation = {"elevate_privileges_with", "escalation_account", "escalation_password"} & set(clean)
    if scan_type == ScanType.AUTHENTICATED and escalation:
        raise SubmissionError(
            f"credentials.{sorted(escalation)[0]}", "privilege escalation needs scan_type 'authenticated_privileged' "
            "(or drop the escalation settings)")
    if scan_type == ScanType.AUTHENTICATED_PRIVILEGED:
        method = clean.get("elevate_privileges_with", "")
        if method not in ESCALATION_METHODS:
            raise SubmissionError(
                "credentials.elevate_privileges_with",
                f"{method!r} is not supported; use one of {', '.join(ESCALATION_METHODS)}" if method else
                f"is required for an 'authenticated_privileged' scan: one of {', '.join(ESCALATION_METHODS)}",
                code="required" if not method else "invalid")
    return clean


def _check_scope(pool: Pool, targets: list) -> None:
    scope = pool_scope(pool)
    if scope.allows_nothing:
        raise ScopeError("targets", f"pool {pool.name!r} has an empty scope and allows no target: an administrator "
                         "must set its scope (or allow_any_target) before it accepts scans")
    refused = refusals(targets, scope)
    if not refused:
        return
    outside = [text for text, why in refused if why == "outside the scope"]
    protected = [f"{text} is {why}" for text, why in refused if why != "outside the scope"]
    parts = []
    if outside:
        allowed = "any target" if scope.unrestricted else ", ".join(pool.scope)
        parts.append(f"not allowed in pool {pool.name!r}: {', '.join(outside[:10])}{' …' if len(outside) > 10 else ''}"
                     f"; the pool's scope is {allowed}")
    if protected:
        parts.append("; ".join(protected[:5]) + (" …" if len(protected) > 5 else ""))
    raise ScopeError("targets", "; ".join(parts))


@sensitive_variables("value")
def _check_credential(key: str, value: str) -> None:
    """Size and character limits of one credential; messages name the field and never echo the value."""
    field = f"credentials.{key}"
    kind, limit = _CREDENTIAL_RULES[key]
    size = len(value.encode()) if kind == _KEY else len(value)
    if size > limit:
        unit = "bytes" if kind == _KEY else "characters"
        raise SubmissionError(field, f"is {size} {unit} long; at most {limit} {unit} are allowed")
    if "\x00" in value:
        raise SubmissionError(field, "contains a NUL character: remove it")
    if kind == _NAME and not value.isprintable():
        raise SubmissionError(field, "contains control or non-printable characters (new line, tab…): remove them")
    if kind == _KEY and not _looks_like_private_key(value):
        raise SubmissionError(field, "is not a PEM or OpenSSH private key: give the whole key file, from "
                              "-----BEGIN … PRIVATE KEY----- to -----END … PRIVATE KEY-----")


@sensitive_variables("value", "text", "begin")
def _looks_like_private_key(value: str) -> bool:
    """PEM (``-----BEGIN RSA PRIVATE KEY-----`` …) or OpenSSH text: a BEGIN line, ASCII text, the matching END."""
    text = value.strip()
    begin = _KEY_BEGIN_RE.match(text)
    return bool(begin) and text.endswith(f"-----END {begin.group(1)}-----") and set(text) <= _KEY_TEXT_CHARS


def _timeout(value: Any, pool: Pool) -> int:
    if value is None:
        return pool.scan_timeout_seconds
    low, high = settings.SCANPOOL_TIMEOUT_MIN_SECONDS, settings.SCANPOOL_TIMEOUT_MAX_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubmissionError("timeout_seconds", f"must be a whole number of seconds ({low}..{high})")
    if not low <= value <= high:
        raise SubmissionError("timeout_seconds", f"{value} is out of range: give {low}..{high} seconds "
                              f"(or leave it out to use the pool's default of {pool.scan_timeout_seconds})")
    return value


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
    api_token: Any = None,
) -> ScanTask:
    """Queue a scan. Raises :class:`~tasks.errors.SubmissionError` (or a subclass) naming the field."""
    if pool is not None and not isinstance(pool, str):
        raise SubmissionError("pool", f"must be a pool name (a string), not {type(pool).__name__}")
    if not pool or not pool.strip():
        raise SubmissionError("pool", "is required: give the name of a pool", code="required")
    pool_obj = Pool.objects.filter(name=pool.strip()).first()
    if pool_obj is None:
        names = ", ".join(Pool.objects.filter(enabled=True).values_list("name", flat=True)) or "none configured"
        raise NotFoundError("pool", f"no pool named {pool!r}; available pools: {names}")
    if not pool_obj.enabled:
        raise SubmissionError("pool", f"pool {pool_obj.name!r} is disabled and accepts no new scans: "
                              "choose another pool or ask an administrator to enable it", code="pool_disabled")
    name = _text("name", name, max_length=200)
    description = _text("description", description, max_length=10_000, required=False)
    if scan_type not in ScanType.values:
        raise SubmissionError("scan_type", f"{scan_type!r} is not a scan type; use one of {', '.join(ScanType.values)}")
    try:
        parsed = normalise_targets(targets)
    except TargetError as exc:
        raise SubmissionError("targets", str(exc)) from None
    _check_scope(pool_obj, parsed)
    creds = _credentials(scan_type, credentials)
    scanner = None
    if scanner_instance:
        if not isinstance(scanner_instance, str):
            raise SubmissionError("scanner_instance", "must be a scanner name (a string)")
        scanner = Scanner.objects.filter(name=scanner_instance.strip()).select_related("pool").first()
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
    timeout = _timeout(timeout_seconds, pool_obj)
    key = None
    if idempotency_key is not None:
        key = _text("idempotency_key", idempotency_key, max_length=200)
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
            locked_pool = Pool.objects.select_for_update().get(pk=pool_obj.pk)  # serialises the backpressure check
            if locked_pool.max_queued:
                waiting = ScanTask.objects.filter(pool=locked_pool, status=TaskStatus.QUEUED,
                                                  claimed_at__isnull=True).count()
                if waiting >= locked_pool.max_queued:
                    from tasks.capacity import retry_after_seconds

                    raise PoolFull("pool", f"pool {locked_pool.name!r} already has {waiting} scans waiting "
                                   f"(limit {locked_pool.max_queued}): retry later",
                                   retry_after=retry_after_seconds(locked_pool))
            task = ScanTask.objects.create(
                pool=locked_pool, name=name, description=description, targets=target_texts, scan_type=scan_type,
                credentials=creds, requested_scanner=scanner, timeout_seconds=timeout, idempotency_key=key,
                request_fingerprint=fingerprint, requested_by=requested_by, requested_via=requested_via[:32],
                api_token=api_token,
            )
            TaskTarget.objects.bulk_create(index_rows(task.id, parsed))
            add_event(task.id, f"submitted to pool {locked_pool.name}"
                      + (f", pinned to scanner {scanner.name}" if scanner else ""),
                      kind=EventKind.STATUS, actor=_actor(requested_by, requested_via),
                      data={"targets": len(target_texts), "scan_type": scan_type})
            transaction.on_commit(lambda: request_dispatch(locked_pool.pk), robust=True)
    except IntegrityError:
        if key:  # two identical requests raced on the idempotency key: the other one won
            existing = _same_request(key, fingerprint)
            if existing is not None:
                existing.replayed = True
                return existing
        raise
    log.info("task %s submitted to pool %s by %s", task.id, pool_obj.name, _actor(requested_by, requested_via))
    return task


ACCESS_RESOLUTION_SECONDS = 60


def mark_accessed(task: ScanTask) -> None:
    """Record that someone read the task (the TTL clean-up counts from it). At most one write a minute per
    task: a client polling every second must not turn every status read into a database write."""
    from datetime import timedelta

    from django.utils import timezone

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
        return ScanTask.objects.get(pk=task_id)
    except (ScanTask.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        raise NotFoundError("task_id", f"no scan task {task_id}") from None


def cancel(task_id: uuid.UUID | str, *, actor: str = "") -> ScanTask:
    """queued → cancelled (nothing on a scanner yet); claimed/running → cancelled, and a stop step on the
    pool's queue stops the scan on its scanner and then releases the slot; finished → TaskStateError."""
    for _ in range(5):  # the status may move under us (launch, finish): re-read and try again
        task = _get(task_id)
        if task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            raise TaskStateError("task_id", f"task {task.id} is {task.status}: only queued or running scans can "
                                 "be cancelled")
        on_scanner = task.slot_held
        who = f"cancelled by {actor}" if actor else "cancelled"
        if transition(task.id, expect=task.status, to=TaskStatus.CANCELLED, actor=actor, message=who,
                      release_slot=not on_scanner):
            if on_scanner:
                transaction.on_commit(lambda t=task: _enqueue_stop(t), robust=True)
            task.refresh_from_db()
            return task
    raise TaskStateError("task_id", f"task {task_id} kept changing status; try again")


def _enqueue_stop(task: ScanTask) -> None:
    from tasks import jobs

    pool_queue(task.pool_id).enqueue(
        jobs.stop, str(task.id), job_id=f"{task.id}-stop", retry=_retry(), result_ttl=600,
        failure_ttl=settings.SCANPOOL_FAILURE_TTL, job_timeout=settings.SCANPOOL_STEP_TIMEOUT * 2,
        description=f"stop task {task.id}",
    )


def _retry():
    from tasks.queues import step_retry

    return step_retry()


def retry(task_id: uuid.UUID | str, *, actor: str = "") -> ScanTask:
    """A dead letter (failed or timeout) goes back to the queue as a new attempt, with a fresh scan."""
    task = _get(task_id)
    if task.status not in RETRYABLE_STATUSES:
        raise TaskStateError("task_id", f"task {task.id} is {task.status}: only failed or timed-out scans can be "
                             "retried")
    fields = {
        "attempts": task.attempts + 1, "error_kind": "", "error_message": "", "progress": 0, "scanner_status": "",
        "scanner_scan_id": None, "scanner_scan_uuid": "", "assigned_scanner": None, "claimed_at": None,
        "started_at": None, "finished_at": None, "deadline_at": None, "last_polled_at": None,
    }
    who = actor or "unknown"
    with transaction.atomic():
        if not transition(task.id, expect=task.status, to=TaskStatus.QUEUED, actor=actor, fields=fields,
                          message=f"retried by {who} (attempt {task.attempts + 1})",
                          data={"previous_error": task.error_message[:500]}):
            raise TaskStateError("task_id", f"task {task.id} changed status meanwhile; reload and try again")
        add_event(task.id, f"retry requested by {who}", kind=EventKind.RETRY, actor=actor)
        transaction.on_commit(lambda: _drop_dead_letters(task), robust=True)
        transaction.on_commit(lambda: request_dispatch(task.pool_id), robust=True)
    task.refresh_from_db()
    return task


def _drop_dead_letters(task: ScanTask) -> None:
    """Remove the task's jobs from its pool queues' FailedJobRegistry (they are being retried)."""
    prefix = str(task.id)
    for queue in pool_queues(task.pool_id):
        registry = queue.failed_job_registry
        for job_id in registry.get_job_ids():
            if job_id == prefix or job_id.startswith(prefix + "-"):
                try:
                    registry.remove(job_id, delete_job=True)
                except NoSuchJobError:
                    registry.remove(job_id)
