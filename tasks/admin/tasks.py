"""Scan tasks in the control room: filters, search, the event timeline; add = submit, cancel, retry, fetch again.

Task rows are written by the services and workers only: the change page is read-only (saving it
would overwrite what a worker just wrote), "add" goes through ``tasks.services.submit`` and the
actions through ``tasks.services.cancel`` / ``retry`` and ``tasks.refetch.refetch``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters

from scanpool_site.secret_forms import NoSecretLookupsAdminMixin, mask
from tasks import refetch, services
from tasks.admin import results_display
from tasks.admin.changelist import SafeDateHierarchyMixin
from tasks.engine.transitions import ERASE_CREDENTIALS_ON
from tasks.errors import SubmissionError
from tasks.forms import ScanTaskSubmitForm
from tasks.models import ScanTask, ScanType, TaskEvent, TaskStatus
from tasks.models.states import RETRYABLE_STATUSES
from tasks.policies.approval import APPROVE_PERMISSION, approve, reject
from tasks.results.storage import results_path

STATUS_COLOURS = {
    TaskStatus.PENDING_APPROVAL: "#8e44ad",
    TaskStatus.QUEUED: "#666",
    TaskStatus.RUNNING: "#417690",
    TaskStatus.COMPLETED: "#2e7d32",
    TaskStatus.FAILED: "#ba2121",
    TaskStatus.TIMEOUT: "#ba2121",
    TaskStatus.CANCELLED: "#c68a00",
}

SUMMARY_FIELDS = (
    "id",
    "name",
    "description",
    "status_display",
    "progress",
    "pool",
    "requested_scanner",
    "assigned_scanner",
    "scan_type",
    "targets_display",
    "credentials_display",
)
TIMING_FIELDS = (
    "created_at",
    "claimed_at",
    "started_at",
    "finished_at",
    "deadline_at",
    "timeout_seconds",
    "last_polled_at",
    "last_accessed_at",
    "attempts",
)
RESULT_FIELDS = (
    "error_kind",
    "error_message",
    "results_links",
    "summary_display",
    "auth_detail",
    "warnings_display",
    "troubleshooting_display",
    "validation_display",
    "results_sha256",
)
APPROVAL_FIELDS = (
    "api_token",
    "approval_reason",
    "approval_expires_at",
    "approval_decided_by",
    "approval_decided_at",
    "address_count",
)
SYSTEM_FIELDS = (
    "trace_id",
    "idempotency_key",
    "requested_by",
    "requested_via",
    "scanner_scan_id",
    "scanner_scan_uuid",
    "scanner_status",
    "slot_held",
    "updated_at",
)

SCAN_TYPE_SHORT = {"untrusted": "untrusted", "authenticated": "SSH", "authenticated_privileged": "SSH + escalation"}


def compact_time(value: datetime | None) -> str:
    """``12-01 23:49`` in the current time zone (the year only when it is not this year); ``-`` when unset."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return local.strftime("%m-%d %H:%M" if local.year == timezone.localtime().year else "%Y-%m-%d %H:%M")


LIST_DEFERRED = ("credentials", "validation", "warnings", "troubleshooting", "results_summary", "error_message")

ADD_FIELDSETS = (
    (None, {"fields": ("pool", "scanner_instance", "name", "targets", "scan_type", "timeout", "description")}),
    (
        "Credentials (authenticated scans only; write-only)",
        {
            "fields": (
                "credential_username",
                "credential_password",
                "credential_private_key",
                "elevate_privileges_with",
                "escalation_account",
                "escalation_password",
            ),
        },
    ),
)


def credentials_note(task: ScanTask) -> str:
    """Whether the task's scan credentials are still stored, and why (erased on completed/cancelled)."""
    stored = bool(task.credentials)
    if task.scan_type == ScanType.UNTRUSTED and not stored:
        return "none: an untrusted scan takes no credentials"
    if task.status in ERASE_CREDENTIALS_ON:
        if stored:  # transition() erases them in the same UPDATE: only rows written around it
            return "still stored (encrypted), although the task has ended"
        return f"erased when the task ended {task.status}"
    if not stored:
        return "none stored"
    if task.status in RETRYABLE_STATUSES:
        return (f"stored (encrypted): kept because the task {task.status} and a retry reuses them; erased when a "
                "retry completes or is cancelled, or with the task when the retention clean-up deletes it")
    return "stored (encrypted) while the scan is queued or running; erased when it completes or is cancelled"


class TaskEventInline(admin.TabularInline):
    """The task's timeline, oldest first; append-only."""

    model = TaskEvent
    fields = ("created_at", "kind", "from_status", "to_status", "message", "actor", "data")
    readonly_fields = fields
    ordering = ("created_at", "id")
    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ScanTask)
class ScanTaskAdmin(NoSecretLookupsAdminMixin, SafeDateHierarchyMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "name",
        "pool",
        "scanner_short",
        "status_display",
        "scan_type_short",
        "auth_display",
        "attempts",
        "created_short",
        "finished_short",
    )
    list_display_links = ("short_id", "name")
    list_filter = ("status", "pool", "assigned_scanner", "scan_type", "auth_status", "error_kind", "api_token")
    list_select_related = ("pool", "assigned_scanner")
    search_fields = ("id", "name", "targets")
    search_help_text = "Task id (or part of it), scan name or a target."
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_per_page = 50
    inlines = (TaskEventInline,)
    fieldsets = (
        (None, {"fields": SUMMARY_FIELDS}),
        ("Timing", {"fields": TIMING_FIELDS}),
        ("Outcome and results", {"fields": RESULT_FIELDS}),
        ("Client and approval", {"fields": APPROVAL_FIELDS}),
        ("System", {"fields": SYSTEM_FIELDS, "classes": ("collapse",)}),
    )
    readonly_fields = (*SUMMARY_FIELDS, *TIMING_FIELDS, *RESULT_FIELDS, *APPROVAL_FIELDS, *SYSTEM_FIELDS)
    actions = ("cancel_tasks", "retry_dead_letters", "refetch_results", "approve_tasks", "reject_tasks")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScanTask]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name == "tasks_scantask_changelist":
            # Large JSON columns are not listed: don't read them for 50 rows at a time.
            queryset = queryset.defer(*LIST_DEFERRED)
        return queryset

    # --- the raw export, for staff who may view the task
    def get_urls(self) -> list[URLPattern]:
        download = path("<path:object_id>/results.nessus", self.admin_site.admin_view(self.results_file_view),
                        name="tasks_scantask_results_file")  # fmt: skip
        return [download, *super().get_urls()]

    def results_file_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        """Stream the task's stored .nessus file; 404 when the task or its file is absent."""
        try:
            task = ScanTask.objects.only("id", "name").filter(pk=object_id).first()
        except (ValidationError, ValueError):
            task = None
        if task is None:
            raise Http404("No such scan task.")
        if not self.has_view_permission(request, task):
            raise PermissionDenied
        file_path = results_path(task.pk)
        if not file_path.is_file():
            raise Http404("This task has no stored .nessus file (not finished, failed before export, or cleaned up).")
        return FileResponse(file_path.open("rb"), as_attachment=True, filename=f"scanpool-{task.pk}.nessus",
                            content_type="application/xml")  # fmt: skip

    # --- add = submit(); the change page is read-only
    @method_decorator(sensitive_post_parameters("credential_password", "credential_private_key", "escalation_password"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        # Django's error reports (500 pages, mails) then hide the typed credentials.
        return super().changeform_view(*args, **kwargs)

    def get_form(self, request: HttpRequest, obj: ScanTask | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None and not change:
            return type("AdminScanTaskSubmitForm", (ScanTaskSubmitForm,), {"requested_by": request.user})
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: ScanTask | None = None) -> Any:
        return ADD_FIELDSETS if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: ScanTask | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def get_inlines(self, request: HttpRequest, obj: ScanTask | None) -> Any:
        return () if obj is None or obj._state.adding else self.inlines

    def has_change_permission(self, request: HttpRequest, obj: ScanTask | None = None) -> bool:
        # The changelist (and its actions) need "change"; a task's own page is view-only.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ScanTask | None = None) -> bool:
        return False  # a deleted task could leak a scanner slot; expired tasks are cleaned up by a command

    def save_model(self, request: HttpRequest, obj: ScanTask, form: Any, change: bool) -> None:
        if change:  # pragma: no cover - the change page is read-only
            raise PermissionError("scan tasks are changed through their services only")
        # submit() created and saved the row while the form was validated.

    # --- columns
    @admin.display(description="task id", ordering="id")
    def short_id(self, obj: ScanTask) -> str:
        return str(obj.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ScanTask) -> str:
        progress = f" {obj.progress}%" if obj.status == TaskStatus.RUNNING else ""
        return format_html(
            '<b style="color:{}">{}</b>{}', STATUS_COLOURS.get(obj.status, "#666"), obj.get_status_display(), progress
        )

    @admin.display(description="progress", ordering="progress")
    def progress_display(self, obj: ScanTask) -> str:
        return f"{obj.progress}%"

    # --- compact list columns (the change list fits a 1400 px screen)
    @admin.display(description="scan type", ordering="scan_type")
    def scan_type_short(self, obj: ScanTask) -> str:
        return SCAN_TYPE_SHORT.get(obj.scan_type, obj.scan_type)

    @admin.display(description="targets")
    def targets_display(self, obj: ScanTask) -> str:
        targets = list(obj.targets or [])
        if not targets:
            return "-"
        lines = format_html_join(mark_safe("<br>"), "<code>{}</code>", ((t,) for t in targets))
        return format_html("{} target(s):<br>{}", len(targets), lines)

    @admin.display(description="scanner", ordering="assigned_scanner__name")
    def scanner_short(self, obj: ScanTask) -> str:
        return obj.assigned_scanner.name if obj.assigned_scanner_id else "-"

    @admin.display(description="created", ordering="created_at")
    def created_short(self, obj: ScanTask) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished_short(self, obj: ScanTask) -> str:
        return compact_time(obj.finished_at)

    @admin.display(description="auth", ordering="auth_status")
    def auth_display(self, obj: ScanTask) -> str:
        return results_display.coloured_verdict(obj.auth_status)

    @admin.display(description="credentials")
    def credentials_display(self, obj: ScanTask) -> str:
        return f"{mask(obj.credentials)} — {credentials_note(obj)}"

    # --- results, readable (see results_display)
    @admin.display(description="results")
    def results_links(self, obj: ScanTask) -> str:
        return results_display.links_html(obj)

    @admin.display(description="summary")
    def summary_display(self, obj: ScanTask) -> str:
        return results_display.summary_html(obj)

    @admin.display(description="authentication")
    def auth_detail(self, obj: ScanTask) -> str:
        return results_display.auth_html(obj)

    @admin.display(description="warnings")
    def warnings_display(self, obj: ScanTask) -> str:
        return results_display.warnings_html(obj)

    @admin.display(description="troubleshooting")
    def troubleshooting_display(self, obj: ScanTask) -> str:
        return results_display.troubleshooting_html(obj)

    @admin.display(description="validation")
    def validation_display(self, obj: ScanTask) -> str:
        return results_display.validation_html(obj)

    # --- actions (thin: the services decide what is allowed)
    def _run_per_task(self, request: HttpRequest, queryset: QuerySet[ScanTask], operation: Any, verb: str) -> None:
        actor = request.user.get_username()
        done, refused = 0, []
        for task_id in queryset.values_list("pk", flat=True):
            try:
                operation(task_id, actor=actor)
                done += 1
            except SubmissionError as exc:
                refused.append(f"{str(task_id)[:8]}: {exc.message}")
        if done:
            self.message_user(request, f"{verb} {done} task(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Not {verb.lower()}: " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[ScanTask]) -> None:
        self._run_per_task(request, queryset, services.cancel, "Cancelled")

    @admin.action(description="Retry selected dead letters (failed / timed out)", permissions=["change"])
    def retry_dead_letters(self, request: HttpRequest, queryset: QuerySet[ScanTask]) -> None:
        self._run_per_task(request, queryset,
                           lambda task_id, actor: services.retry(task_id, actor=actor, user=request.user), "Retried")

    @admin.action(description="Fetch the results again (scan completed, results not stored; no new scan)",
                  permissions=["change"])
    def refetch_results(self, request: HttpRequest, queryset: QuerySet[ScanTask]) -> None:
        self._run_per_task(request, queryset, lambda task_id, actor: refetch.refetch(task_id, actor=actor,
                           user=request.user), "Fetching the results again of")

    # --- approval (client policies): staff with tasks.approve_scantask
    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(APPROVE_PERMISSION)

    @admin.action(description="Approve selected scans pending approval", permissions=["approve"])
    def approve_tasks(self, request: HttpRequest, queryset: QuerySet[ScanTask]) -> None:
        self._run_per_task(request, queryset, lambda task_id, actor: approve(task_id, actor=actor, user=request.user),
                           "Approved")

    @admin.action(description="Reject selected scans pending approval…", permissions=["approve"])
    def reject_tasks(self, request: HttpRequest, queryset: QuerySet[ScanTask]) -> TemplateResponse | None:
        form = RejectForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            self._run_per_task(request, queryset, lambda task_id, actor: reject(task_id, actor=actor, reason=reason),
                               "Rejected")
            return None
        return TemplateResponse(request, "admin/tasks/scantask/reject_tasks.html", {
            **self.admin_site.each_context(request), "title": "Reject scans pending approval", "form": form,
            "tasks": list(queryset.select_related(None).only("id", "name", "status", "targets")),
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        })


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Why: the client sees it on the cancelled task.")
