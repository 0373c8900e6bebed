"""Parsed results in the admin, read-only: hosts and findings of every task, with filters that stay cheap on
millions of rows (no sidebar lists every task or host; choices come from the selected task)."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from tasks.admin.results_display import EMPTY, coloured_verdict, evidence_html
from tasks.models import Finding, ResultHost, ScanTask
from tasks.results.analysis import SEVERITY_NAMES

CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$", re.IGNORECASE)
# Large task columns the results lists never show.
TASK_DEFERRED = ("task__credentials", "task__results_summary", "task__validation", "task__warnings",
                 "task__troubleshooting", "task__targets", "task__description", "task__error_message")


class TaskFilter(admin.SimpleListFilter):
    """``?task=<uuid>``; the sidebar shows only the selected task (one query), never the list of all tasks."""

    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        task = self.selected_task()
        return [(str(task.pk), f"{task.name} ({str(task.pk)[:8]})")] if task else []

    def selected_task(self) -> ScanTask | None:
        if not hasattr(self, "_task"):
            value = self.value()
            try:
                self._task = ScanTask.objects.only("id", "name").filter(pk=value).first() if value else None
            except (ValidationError, ValueError):  # a malformed UUID is "no such task"
                self._task = None
        return self._task

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        task = self.selected_task()
        return queryset.filter(task_id=task.pk) if task else queryset.none()


class SeverityFilter(admin.SimpleListFilter):
    title = "severity"
    parameter_name = "severity"
    field = "severity"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(level), name) for level, name in sorted(SEVERITY_NAMES.items(), reverse=True)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field: int(value)}) if value and value.isdigit() else queryset


class MaxSeverityFilter(SeverityFilter):
    title = "highest severity"
    parameter_name = "max_severity"
    field = "max_severity"


class _TaskScopedChoices(admin.SimpleListFilter):
    """Choices read from the selected task's findings (bounded by the task's index); hidden without a task."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        task_id = request.GET.get(TaskFilter.parameter_name)
        if not task_id:
            return []
        try:
            values = (Finding.objects.filter(task_id=task_id).order_by(self.field)
                      .values_list(self.field, flat=True).distinct()[:200])  # fmt: skip
            return [(v, v or "(none)") for v in values]
        except (ValidationError, ValueError):  # a malformed task id: TaskFilter already shows no rows
            return []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value is not None else queryset


class PluginFamilyFilter(_TaskScopedChoices):
    title = "plugin family (pick a task first)"
    parameter_name = "family"
    field = "plugin_family"


class HostFilter(_TaskScopedChoices):
    title = "host (pick a task first)"
    parameter_name = "host"
    field = "host_name"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Results are written once by the results pipeline: view only, for everyone."""

    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def task_link(task: ScanTask) -> SafeString:
    return format_html('<a href="{}">{}</a>', reverse("admin:tasks_scantask_change", args=[task.pk]), task.name)


@admin.register(ResultHost)
class ResultHostAdmin(ReadOnlyAdmin):
    list_display = ("name", "task_display", "ip", "fqdn", "operating_system", "verdict_display", "auth_cause",
                    "findings_count", "max_severity")  # fmt: skip
    list_filter = (TaskFilter, "auth_verdict", "auth_cause", MaxSeverityFilter)
    list_select_related = ("task",)
    search_fields = ("name", "ip", "fqdn")
    search_help_text = "Host name, IP address or FQDN."
    fields = ("task_display", "name", "ip", "fqdn", "operating_system", "verdict_display", "auth_cause",
              "evidence_display", "findings_count", "severity_display", "properties_display")  # fmt: skip
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ResultHost]:
        return super().get_queryset(request).defer(*TASK_DEFERRED)

    @admin.display(description="task", ordering="task")
    def task_display(self, obj: ResultHost) -> SafeString:
        return task_link(obj.task)

    @admin.display(description="authentication", ordering="auth_verdict")
    def verdict_display(self, obj: ResultHost) -> SafeString:
        return coloured_verdict(obj.auth_verdict)

    @admin.display(description="evidence")
    def evidence_display(self, obj: ResultHost) -> SafeString:
        return evidence_html(obj.auth_evidence)

    @admin.display(description="findings by severity")
    def severity_display(self, obj: ResultHost) -> str:
        counts = obj.severity_counts or {}
        return ", ".join(f"{SEVERITY_NAMES[i]} {counts.get(str(i), 0)}" for i in range(4, -1, -1))

    @admin.display(description="host properties")
    def properties_display(self, obj: ResultHost) -> SafeString:
        if not obj.properties:
            return EMPTY
        rows = ((key, value) for key, value in sorted(obj.properties.items()))
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    list_display = ("plugin_id", "plugin_name", "severity_display", "host_name", "port_display", "plugin_family",
                    "cvss", "task_display")  # fmt: skip
    list_display_links = ("plugin_id", "plugin_name")
    list_filter = (TaskFilter, SeverityFilter, PluginFamilyFilter, HostFilter)
    list_select_related = ("task",)
    search_fields = ("plugin_name", "cve_index")
    search_help_text = "Plugin name (or part of it) or a CVE id, e.g. CVE-2021-44228."
    fields = ("task_display", "host_name", "plugin_id", "plugin_name", "plugin_family", "severity_display",
              "port_display", "svc_name", "risk_factor", "cvss2", "cvss3", "exploit_available", "cves",
              "output_display", "details_display")  # fmt: skip
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if CVE_RE.match(term):  # a whole CVE id: exactly that CVE (CVE-2021-4422 must not match CVE-2021-44228)
            return queryset.filter(cve_index__contains=f" {term.upper()} "), False
        return super().get_search_results(request, queryset, search_term)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Finding]:
        queryset = super().get_queryset(request).defer(*TASK_DEFERRED)
        match = request.resolver_match
        if match is not None and match.url_name == "tasks_finding_changelist":
            queryset = queryset.defer("plugin_output", "attributes", "data")  # not listed: not read
        return queryset

    @admin.display(description="task", ordering="task")
    def task_display(self, obj: Finding) -> SafeString:
        return task_link(obj.task)

    @admin.display(description="severity", ordering="severity")
    def severity_display(self, obj: Finding) -> str:
        return SEVERITY_NAMES.get(obj.severity, str(obj.severity))

    @admin.display(description="port", ordering="port")
    def port_display(self, obj: Finding) -> str:
        return f"{obj.port}/{obj.protocol}" if obj.protocol else str(obj.port)

    @admin.display(description="CVEs")
    def cves(self, obj: Finding) -> str:
        return ", ".join(obj.cve_index.split()) or "—"

    @admin.display(description="plugin output")
    def output_display(self, obj: Finding) -> SafeString:
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', obj.plugin_output) if obj.plugin_output \
            else EMPTY

    @admin.display(description="details")
    def details_display(self, obj: Finding) -> SafeString:
        rows = []
        for key, value in sorted({**obj.attributes, **obj.data}.items()):
            text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
            rows.append((key, text))
        if not rows:
            return EMPTY
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))
