"""Pools in the admin: what a pool may scan, its limits and its scope history.

The control-room parts of the Pool page (its scanners, capacity, load and queue depth, computed in the list
query) read scanners and tasks, so they are added from the tasks app (``tasks/admin/pools.py``), which sees all
three apps: this module imports nothing above ``pools`` (DESIGN §8)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from pools.forms import PoolAdminForm
from pools.models import Pool, PoolEvent
from pools.services import record_created, record_scope_changes, snapshot

admin.site.site_header = "scanpool control room"
# Change lists fit a 1400 px screen: the app list is on the index and in the breadcrumbs, not in a 300 px sidebar.
admin.site.enable_nav_sidebar = False
admin.site.site_title = "scanpool"
admin.site.index_title = "Pools, scanners and scans"


def utilisation_bar(active: int, capacity: int, *, unavailable: int = 0) -> str:
    """``active/capacity`` with a small bar that never passes 100 %; full pools stand out. ``unavailable``: scans
    running on scanners that cannot take work now (down, breaker open, disabled), said next to the bar instead
    of being counted against a capacity they are not part of."""
    if not capacity:
        bar = format_html('<span title="no usable scanner">{}/0 —</span>', active)
    else:
        percent = min(100, round(100 * active / capacity))
        colour = "#ba2121" if percent >= 100 else "#c68a00" if percent >= 75 else "#417690"
        bar = format_html(
            '<span style="display:inline-block;width:60px;height:8px;background:#ddd;vertical-align:middle">'
            '<span style="display:block;height:8px;width:{}%;background:{}"></span></span> {}/{} ({}%)',
            percent,
            colour,
            active,
            capacity,
            percent,
        )
    if not unavailable:
        return bar
    return format_html('{} <span style="color:#ba2121" title="{}">{} running on unavailable scanners</span>', bar,
                       "scans still running on scanners that are down, whose breaker is open or that are disabled; "
                       "they hold none of the usable slots", unavailable)


class PoolEventInline(admin.TabularInline):
    """Who changed what the pool may scan (scope, allow_any_target), newest first; append-only."""

    model = PoolEvent
    fields = ("created_at", "actor", "message")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name = "scope change"
    verbose_name_plural = "scope history"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may see the pool sees who changed what it may scan (no separate permission to forget).
        return request.user.has_perm("pools.view_pool") or request.user.has_perm("pools.change_pool")


def targets_allowed(pool: Pool) -> str:
    """What the pool may scan, in words that stand out when it is "anything" or "nothing"."""
    if pool.allow_any_target:
        return format_html('<strong style="color:#ba2121">{}</strong> (except protected addresses)', "ANY target")
    if not pool.scope:
        return format_html('<strong style="color:#c68a00">{}</strong>: empty scope, scans are refused', "nothing")
    shown = ", ".join(str(entry) for entry in pool.scope[:3])
    more = f" … (+{len(pool.scope) - 3})" if len(pool.scope) > 3 else ""
    return f"{shown}{more}"


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    form = PoolAdminForm
    list_display = ("name", "enabled", "targets_display", "max_queued")
    list_filter = ("enabled", "allow_any_target")
    search_fields = ("name", "description")
    readonly_fields = ("queue_name", "targets_display", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "queue_name")}),
        ("What this pool may scan", {
            "fields": ("targets_display", "scope", "allow_any_target"),
            "description": "An empty scope allows no target. Ticking <strong>allow any target</strong> lets this "
            "pool scan every address and host name except loopback, link-local/metadata addresses and the "
            "scanners' own addresses (list those in the scope to allow them). Changes are recorded below.",
        }),
        ("Limits", {"fields": ("max_queued", "scan_timeout_seconds", "poll_interval_seconds")}),
        ("Scanner connections", {"fields": ("allow_plain_http",)}),
        ("History", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )
    inlines: tuple = (PoolEventInline,)
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Pool | None = None) -> Any:
        # Its queues are named after it (Pool.save refuses a rename): fixed once the pool exists.
        readonly = tuple(super().get_readonly_fields(request, obj))
        return readonly if obj is None else ("name", *readonly)

    def save_model(self, request: HttpRequest, obj: Pool, form: Any, change: bool) -> None:
        actor = request.user.get_username()
        if change:
            before = snapshot(Pool.objects.get(pk=obj.pk))
            obj.save(update_fields=[*form.changed_data, "updated_at"] if form.changed_data else ["updated_at"])
            record_scope_changes(obj, before, actor=actor)
        else:
            super().save_model(request, obj, form, change)
            record_created(obj, actor=actor)

    @admin.display(description="may scan")
    def targets_display(self, obj: Pool) -> str:
        return targets_allowed(obj) if obj.pk else "—"
