"""The Pool page as the control room shows it: the pool's scanners and its live load (capacity, active scans,
utilisation, queued tasks), computed in the list query.

Registered from the tasks app because it reads scanners and tasks (``tasks.control_room``); the pool-only part
(scope, limits, scope history, saving) is :class:`pools.admin.PoolAdmin`, extended here. Imports stay one way
(DESIGN §8): ``pools`` never imports ``scanners`` or ``tasks``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from pools import admin as pool_admin
from pools.admin import PoolEventInline, utilisation_bar
from pools.models import Pool
from scanners.models import Scanner
from tasks.control_room import annotate_load
from tasks.policies.pool_guard import policies_naming
from tasks.pool_load import PoolLoad


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


class PoolAdmin(pool_admin.PoolAdmin):
    list_display = (
        "name",
        "enabled",
        "targets_display",
        "scanners_display",
        "capacity_display",
        "active_display",
        "utilisation_display",
        "queued_display",
        "max_queued",
    )  # the poll interval is on the pool's page: the list must fit a 1400 px screen
    inlines = (ScannerInline, PoolEventInline)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pool]:
        return annotate_load(super().get_queryset(request))

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """Client policies naming a pool protect it (tasks.policies.pool_guard): the page says so."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        protected = [*protected, *(str(p) for p in policies_naming(list(objs)))]
        return deleted, counts, perms_needed, protected

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
        load = PoolLoad.of_annotated(obj)  # the computation the API uses: bar of the usable scanners only
        return utilisation_bar(load.active_usable, load.capacity, unavailable=load.unavailable_active)

    @admin.display(description="queued", ordering="queued")
    def queued_display(self, obj: Pool) -> str:
        url = reverse("admin:tasks_scantask_changelist") + f"?pool__id__exact={obj.pk}&status__exact=queued"
        return format_html('<a href="{}">{}</a>', url, obj.queued)


# pools.admin registered the pool-only page (its module is imported above, so it ran first): replace it.
if admin.site.is_registered(Pool):
    admin.site.unregister(Pool)
admin.site.register(Pool, PoolAdmin)
