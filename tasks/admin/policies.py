"""Client policies in the control room: edit a token's policy, see its usage against its budgets today,
and the log of refused submissions (read-only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from pools.forms import ScopeField
from tasks.admin.changelist import SafeDateHierarchyMixin
from tasks.models import ClientPolicy, PolicyRefusal, ScanType
from tasks.policies.checks import usage


class ClientPolicyForm(forms.ModelForm):
    target_allow_list = ScopeField(
        required=False, help_text="Targets this client may scan, one per line (CIDRs, addresses, host names, "
        "*.domain), inside the pool's scope: a target must be in both. Empty = the pool's scope alone.")
    pre_approved_targets = ScopeField(
        required=False, help_text="With approval 'outside': scans whose targets all lie inside these need no "
        "approval. Empty = every scan waits for approval.")
    scan_types = forms.MultipleChoiceField(
        choices=ScanType.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None ticked = every scan type.")

    class Meta:
        model = ClientPolicy
        fields = ("token", "pools", "target_allow_list", "scan_types", "max_targets_per_scan", "max_scans_per_day",
                  "max_addresses_per_day", "max_concurrent_scans", "approval", "pre_approved_targets", "approvers",
                  "notes")


def _of(used: int, limit: int | None) -> str:
    return f"{used} / {limit}" if limit is not None else f"{used} (no limit)"


@admin.register(ClientPolicy)
class ClientPolicyAdmin(admin.ModelAdmin):
    form = ClientPolicyForm
    list_display = ("token", "user", "approval", "scans_today", "addresses_today", "in_flight", "pool_names")
    list_filter = ("approval", "pools")
    list_select_related = ("token", "token__user")
    search_fields = ("token__name", "token__user__username", "approvers")
    raw_id_fields = ("token",)
    filter_horizontal = ("pools",)
    readonly_fields = ("usage_today", "created_at", "updated_at", "last_submission_at")
    fieldsets = (
        (None, {"fields": ("token", "pools", "target_allow_list", "scan_types", "max_targets_per_scan")}),
        ("Budgets (per UTC day; blank = no limit)",
         {"fields": ("max_scans_per_day", "max_addresses_per_day", "max_concurrent_scans", "usage_today")}),
        ("Approval", {"fields": ("approval", "pre_approved_targets", "approvers")}),
        (None, {"fields": ("notes", "created_at", "updated_at", "last_submission_at")}),
    )

    def _usage(self, obj: ClientPolicy):
        cache = getattr(self, "_usage_cache", None)
        if cache is None or cache[0] != obj.pk:
            self._usage_cache = (obj.pk, usage(obj.token_id))
        return self._usage_cache[1]

    @admin.display(description="user", ordering="token__user__username")
    def user(self, obj: ClientPolicy) -> str:
        return obj.token.user.get_username()

    @admin.display(description="scans today")
    def scans_today(self, obj: ClientPolicy) -> str:
        return _of(self._usage(obj).scans_today, obj.max_scans_per_day)

    @admin.display(description="addresses today")
    def addresses_today(self, obj: ClientPolicy) -> str:
        return _of(self._usage(obj).addresses_today, obj.max_addresses_per_day)

    @admin.display(description="in flight (pending, queued, running)")
    def in_flight(self, obj: ClientPolicy) -> str:
        return _of(self._usage(obj).in_flight, obj.max_concurrent_scans)

    @admin.display(description="pools")
    def pool_names(self, obj: ClientPolicy) -> str:
        return ", ".join(p.name for p in obj.pools.all()) or "all"

    @admin.display(description="usage today")
    def usage_today(self, obj: ClientPolicy) -> str:
        if obj.pk is None:
            return "—"
        used = self._usage(obj)
        rows = [("scans", _of(used.scans_today, obj.max_scans_per_day)),
                ("addresses", _of(used.addresses_today, obj.max_addresses_per_day)),
                ("pending approval, queued, running or still stopping", _of(used.in_flight, obj.max_concurrent_scans)),
                ("daily budgets refill at", used.refills_at.strftime("%Y-%m-%d %H:%M UTC"))]
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("pools")


@admin.register(PolicyRefusal)
class PolicyRefusalAdmin(SafeDateHierarchyMixin, admin.ModelAdmin):
    """Submissions a client policy refused: an audit log, never edited."""

    list_display = ("created_at", "client", "pool", "reason", "limit", "message")
    list_filter = ("reason", "client", "pool")
    search_fields = ("client", "message")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
