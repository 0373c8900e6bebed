"""Pools in the control room: capacity, load and queue depth per pool, computed in the list query."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from pools.forms import PoolAdminForm
from pools.models import Pool
from scanners.models import Scanner
from tasks.control_room import annotate_load

admin.site.site_header = "scanpool control room"
admin.site.site_title = "scanpool"
admin.site.index_title = "Pools, scanners and scans"


def utilisation_bar(active: int, capacity: int) -> str:
    """``active/capacity`` with a small bar; full or overloaded pools stand out."""
    if not capacity:
        return format_html('<span title="no enabled scanner">{}/0 —</span>', active)
    percent = round(100 * active / capacity)
    colour = "#ba2121" if percent >= 100 else "#c68a00" if percent >= 75 else "#417690"
    return format_html(
        '<span style="display:inline-block;width:60px;height:8px;background:#ddd;vertical-align:middle">'
        '<span style="display:block;height:8px;width:{}%;background:{}"></span></span> {}/{} ({}%)',
        min(percent, 100),
        colour,
        active,
        capacity,
        percent,
    )


class ScannerInline(admin.TabularInline):
    """The pool's scanners at a glance; edit them on their own page (credentials are write-only there)."""

    model = Scanner
    fields = ("name", "url", "enabled", "health", "breaker_state", "active_scans", "max_concurrent_scans")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    form = PoolAdminForm
    list_display = (
        "name",
        "enabled",
        "scanners_display",
        "capacity_display",
        "active_display",
        "utilisation_display",
        "queued_display",
        "max_queued",
        "poll_interval_seconds",
    )
    list_filter = ("enabled",)
    search_fields = ("name", "description")
    readonly_fields = ("queue_name", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "queue_name")}),
        ("Scope and limits", {"fields": ("scope", "max_queued", "scan_timeout_seconds", "poll_interval_seconds")}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )
    inlines = (ScannerInline,)
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pool]:
        return annotate_load(super().get_queryset(request))

    def save_model(self, request: HttpRequest, obj: Pool, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=[*form.changed_data, "updated_at"] if form.changed_data else ["updated_at"])
        else:
            super().save_model(request, obj, form, change)

    @admin.display(description="scanners", ordering="n_scanners")
    def scanners_display(self, obj: Pool) -> str:
        url = reverse("admin:scanners_scanner_changelist") + f"?pool__id__exact={obj.pk}"
        return format_html('<a href="{}">{} ({} enabled)</a>', url, obj.n_scanners, obj.n_enabled_scanners)

    @admin.display(description="capacity (usable / enabled)", ordering="total_capacity")
    def capacity_display(self, obj: Pool) -> str:
        if obj.total_capacity == obj.total_slots:
            return str(obj.total_capacity)
        title = "slots of scanners that can take work now / slots of all enabled scanners"
        return format_html('<span title="{}" style="color:#ba2121">{} / {}</span>', title, obj.total_capacity,
                           obj.total_slots)  # fmt: skip

    @admin.display(description="active scans", ordering="active")
    def active_display(self, obj: Pool) -> int:
        return obj.active

    @admin.display(description="utilisation")
    def utilisation_display(self, obj: Pool) -> str:
        return utilisation_bar(obj.active, obj.total_capacity)

    @admin.display(description="queued", ordering="queued")
    def queued_display(self, obj: Pool) -> str:
        url = reverse("admin:tasks_scantask_changelist") + f"?pool__id__exact={obj.pk}&status__exact=queued"
        return format_html('<a href="{}">{}</a>', url, obj.queued)
