"""Every state of a scan task, and the one place that says which transitions are legal."""

from __future__ import annotations

from django.db import models


class TaskStatus(models.TextChoices):
    PENDING_APPROVAL = "pending_approval", "Pending approval"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    TIMEOUT = "timeout", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})
TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED})
RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.TIMEOUT})
# Cancellable by its submitter or an operator (pending_approval holds no slot and is in no queue) — except a
# running task that is finishing (below).
CANCELLABLE_STATUSES = frozenset({TaskStatus.PENDING_APPROVAL, TaskStatus.QUEUED, TaskStatus.RUNNING})
# Scanner statuses of a scan that ended with results to fetch. Once a poll has recorded one of them on a running
# task (``scanner_status``), the task is *finishing*: its results are being exported and stored, it ends by them
# (completed or failed) and a cancel is refused as too late (docs/architecture.md "Cancel").
SCAN_COMPLETED_STATUSES = frozenset({"completed", "imported"})

# queued → running → completed | failed | timeout; queued | running → cancelled;
# pending_approval → queued (approved: at its original FIFO place, the queue orders by submission time)
# | cancelled (rejected, expired or withdrawn) — a task its client's policy holds for approval is not
# queued, holds no slot and counts in no queue position or depth;
# a queued task may also fail (permanent error before launch, e.g. a pinned scanner removed);
# failed | timeout → queued only through an explicit retry of a dead letter (→ pending_approval when the
# client's policy now holds that scan for approval: a retry is a new scan);
# failed | timeout → running only through an explicit fetch of the results again (tasks.refetch): the scan completed
# on its scanner and only fetching or storing its results failed; the same scan's results are fetched, nothing is
# scanned again and no slot is taken (a completed scan does not run on the scanner).
TRANSITIONS: dict[str, frozenset[str]] = {
    TaskStatus.PENDING_APPROVAL: frozenset({TaskStatus.QUEUED, TaskStatus.CANCELLED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset({TaskStatus.QUEUED, TaskStatus.PENDING_APPROVAL, TaskStatus.RUNNING}),
    TaskStatus.TIMEOUT: frozenset({TaskStatus.QUEUED, TaskStatus.PENDING_APPROVAL, TaskStatus.RUNNING}),
    TaskStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: str, target: str) -> None:
        self.current, self.target = current, target
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (terminal)"
        super().__init__(f"illegal status transition {current} → {target} (allowed from {current}: {allowed})")


def check_transition(current: str, target: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current → target`` is legal."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(current, target)


class ScanType(models.TextChoices):
    UNTRUSTED = "untrusted", "Untrusted (network only)"
    AUTHENTICATED = "authenticated", "Authenticated (SSH)"
    AUTHENTICATED_PRIVILEGED = "authenticated_privileged", "Authenticated with privilege escalation"


# Scans that carry credentials: dispatched only to scanners whose connection is confirmed (four eyes).
CREDENTIALED_SCAN_TYPES = frozenset({ScanType.AUTHENTICATED, ScanType.AUTHENTICATED_PRIVILEGED})


class AuthStatus(models.TextChoices):
    SUCCESS = "success", "Success"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"
    NOT_APPLICABLE = "not_applicable", "Not applicable"
    UNKNOWN = "unknown", "Unknown"
    # The scanner scanned itself: its local checks prove nothing about the supplied credentials.
    LOCAL_ONLY = "local_only", "Scanner itself only"


class ErrorKind(models.TextChoices):
    NONE = "", "—"
    TRANSIENT = "transient", "Transient (scanner unavailable)"
    PERMANENT = "permanent", "Permanent (scanner refused)"
    TIMEOUT = "timeout", "Deadline exceeded"
    AUTHENTICATION = "authentication", "Scan credentials failed"
    SCAN = "scan", "Scan aborted on the scanner"
    RESULTS = "results", "Results unusable"
    INTERNAL = "internal", "Internal error"


# Data key of the status event of a results fetch asked again (tasks.refetch; value: the task's attempt number). Such
# an attempt's launch-to-end time is not a scan's duration (it spans the failed fetch and the wait for the new one).
REFETCH_MARK = "refetch"


class EventKind(models.TextChoices):
    STATUS = "status", "Status change"
    SCANNER = "scanner", "Scanner assigned"
    PROGRESS = "progress", "Progress"
    RETRY = "retry", "Retry"
    BREAKER = "breaker", "Circuit breaker"
    ERROR = "error", "Error"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"
    POLICY = "policy", "Client policy decision"
