from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from scanpool_site.fields import EncryptedJSONField
from tasks.models.states import (
    SCAN_COMPLETED_STATUSES,
    TERMINAL_STATUSES,
    AuthStatus,
    ErrorKind,
    EventKind,
    ScanType,
    TaskStatus,
)


class ScanTaskQuerySet(models.QuerySet):
    """The words the engine repeats, in one place."""

    def waiting(self) -> ScanTaskQuerySet:
        """Queued and not yet given a scanner (a pool's queue, in FIFO order by ``created_at, id``)."""
        return self.filter(status=TaskStatus.QUEUED, claimed_at__isnull=True)

    def running(self) -> ScanTaskQuerySet:
        return self.filter(status=TaskStatus.RUNNING)

    def finishing(self) -> ScanTaskQuerySet:
        """Running tasks whose scan completed on the scanner: results being fetched and stored (not cancellable)."""
        return self.filter(status=TaskStatus.RUNNING, scanner_status__in=SCAN_COMPLETED_STATUSES)

    def holding_slot(self) -> ScanTaskQuerySet:
        """Tasks counted in a scanner's ``active_scans``: claimed, running, or ended with a scan still settling."""
        return self.filter(slot_held=True)


class ScanTask(models.Model):
    """One requested scan. The row is the durable record; RQ jobs carry only its id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False, verbose_name="task id")
    trace_id = models.UUIDField(default=uuid.uuid4, editable=False, db_index=True)
    # The API stores a client's key (at most 200 characters) as "api:<user id>:<key>": room for that prefix.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, editable=False)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True, default="", editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="scan_tasks"
    )
    requested_via = models.CharField(max_length=32, blank=True, default="", help_text="admin, api, mcp, cli…")
    # db_index=False on api_token, pool and assigned_scanner: each leads a composite index of Meta.indexes, which
    # serves every lookup by it (leftmost prefix, SQLite and PostgreSQL); a second index only cost every insert.
    api_token = models.ForeignKey(  # the API client (per-client policies and budgets count from it)
        "tasks.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks", editable=False,
        db_index=False,
    )

    pool = models.ForeignKey("pools.Pool", on_delete=models.PROTECT, related_name="tasks", db_index=False)
    requested_scanner = models.ForeignKey(
        "scanners.Scanner", null=True, blank=True, on_delete=models.PROTECT, related_name="pinned_tasks"
    )
    assigned_scanner = models.ForeignKey(
        "scanners.Scanner", null=True, blank=True, on_delete=models.PROTECT, related_name="assigned_tasks",
        db_index=False,
    )

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    targets = models.JSONField(default=list, help_text="Normalised list of targets (addresses, CIDRs, hostnames).")
    scan_type = models.CharField(max_length=32, choices=ScanType.choices, default=ScanType.UNTRUSTED)
    credentials = EncryptedJSONField(null=True, blank=True, editable=False)
    address_count = models.PositiveIntegerField(default=0, help_text="Addresses the targets cover (host name = 1).")

    # Approval (client policies): why it waits, until when, and who decided.
    approval_reason = models.TextField(blank=True, default="")
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    approval_decided_by = models.CharField(max_length=150, blank=True, default="")
    approval_decided_at = models.DateTimeField(null=True, blank=True)
    # Who asked for the current attempt when it is a retry: like the submitter, they may not approve it (four eyes).
    # No index: only a user's deletion looks rows up by it, and every submission would pay for one.
    retried_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", db_index=False, editable=False)

    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    scanner_scan_id = models.BigIntegerField(null=True, blank=True, help_text="Scan id on the scanner.")
    scanner_scan_uuid = models.CharField(max_length=64, blank=True, default="")
    scanner_status = models.CharField(max_length=32, blank=True, default="", help_text="Last status the scanner gave.")
    slot_held = models.BooleanField(default=False, editable=False)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_accessed_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(help_text="Hard deadline, in seconds from launch.")
    deadline_at = models.DateTimeField(null=True, blank=True)

    attempts = models.PositiveIntegerField(default=1)
    error_kind = models.CharField(max_length=16, choices=ErrorKind.choices, blank=True, default=ErrorKind.NONE)
    error_message = models.TextField(blank=True, default="")

    auth_status = models.CharField(max_length=16, choices=AuthStatus.choices, default=AuthStatus.UNKNOWN)
    validation = models.JSONField(default=dict, blank=True, help_text="Validation stats (hosts, causes, feed age…).")
    warnings = models.JSONField(default=list, blank=True)
    troubleshooting = models.JSONField(default=list, blank=True)
    results_summary = models.JSONField(default=dict, blank=True)
    results_file = models.CharField(max_length=500, blank=True, default="")
    results_size = models.BigIntegerField(null=True, blank=True)
    results_sha256 = models.CharField(max_length=64, blank=True, default="")

    objects = ScanTaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [("approve_scantask", "Can approve or reject scan tasks pending approval")]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__gte=0, progress__lte=100), name="task_progress_0_100"),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in TaskStatus]), name="task_status_valid"
            ),
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="task_idempotency_key_unique",
            ),
        ]
        indexes = [
            # FIFO: oldest queued task of a pool, and its queue position (an indexed count).
            models.Index(fields=["pool", "status", "created_at"], name="task_pool_fifo_idx"),
            models.Index(fields=["status", "created_at"], name="task_status_idx"),
            models.Index(fields=["assigned_scanner", "status"], name="task_scanner_status_idx"),
            models.Index(fields=["scan_type"], name="task_scan_type_idx"),
            models.Index(fields=["auth_status"], name="task_auth_status_idx"),
            models.Index(fields=["error_kind"], name="task_error_kind_idx"),  # admin filter
            models.Index(fields=["slot_held"], name="task_slot_held_idx"),
            models.Index(fields=["api_token", "created_at"], name="task_api_token_created_idx"),  # budgets
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    def __repr__(self) -> str:
        return f"<ScanTask {self.id} {self.status} pool={self.pool_id}>"

    @property
    def job_id(self) -> str:
        return str(self.id)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_finishing(self) -> bool:
        """Running, and a poll saw its scan completed on the scanner: the results are being fetched and stored."""
        return self.status == TaskStatus.RUNNING and self.scanner_status in SCAN_COMPLETED_STATUSES


class TaskEvent(models.Model):
    """Append-only timeline of a task."""

    # No index of its own: taskevent_task_time_idx (task, created_at) serves every lookup by task.
    task = models.ForeignKey(ScanTask, on_delete=models.CASCADE, related_name="events", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=16, choices=EventKind.choices, default=EventKind.INFO)
    from_status = models.CharField(max_length=16, choices=TaskStatus.choices, blank=True, default="")
    to_status = models.CharField(max_length=16, choices=TaskStatus.choices, blank=True, default="")
    message = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, blank=True, default="", help_text="Who caused it (user, worker…).")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["task", "created_at"], name="taskevent_task_time_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind}: {self.message[:60]}"
