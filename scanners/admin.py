"""Scanners in the control room: health, circuit breaker and slots; credentials write-only and masked."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from pools.admin import utilisation_bar
from scanners.adapters.base import ScannerError
from scanners.forms import ScannerAdminForm
from scanners.models import BreakerState, Health, Scanner
from scanpool_site.secret_forms import mask

HEALTH_COLOURS = {
    Health.READY: "#2e7d32",
    Health.UNKNOWN: "#666",
    Health.NOT_READY: "#c68a00",
}
BREAKER_COLOURS = {BreakerState.CLOSED: "#2e7d32", BreakerState.HALF_OPEN: "#c68a00", BreakerState.OPEN: "#ba2121"}

RUNTIME_FIELDS = (
    "active_scans",
    "health",
    "edition_display",
    "health_detail",
    "version",
    "license_info",
    "last_seen_at",
    "health_checked_at",
    "breaker_state",
    "consecutive_failures",
    "breaker_opened_at",
    "last_error",
    "created_at",
    "updated_at",
)


def badge(text: str, colour: str) -> str:
    return format_html('<b style="color:{}">{}</b>', colour, text)


@admin.register(Scanner)
class ScannerAdmin(admin.ModelAdmin):
    form = ScannerAdminForm
    list_display = (
        "name",
        "pool",
        "url",
        "enabled",
        "health_display",
        "edition_display",
        "breaker_display",
        "slots_display",
        "auth_display",
        "last_seen_at",
    )
    list_filter = ("pool", "enabled", "health", "breaker_state", "kind")
    list_select_related = ("pool",)
    search_fields = ("name", "url", "description")
    show_full_result_count = False
    readonly_fields = ("credentials_display", *RUNTIME_FIELDS)
    fieldsets = (
        (None, {"fields": ("pool", "name", "kind", "description", "url", "enabled", "max_concurrent_scans")}),
        (
            "Credentials (write-only)",
            {
                "fields": ("credentials_display", "username", "password", "access_key", "secret_key"),
                "description": "Give either API keys or a username and password. Stored values are never shown: "
                "leave a box blank to keep what is stored.",
            },
        ),
        ("TLS", {"fields": ("verify_tls", "ca_bundle")}),
        (
            "Health and circuit breaker (maintained by workers; use the actions to check or reset)",
            {"fields": RUNTIME_FIELDS},
        ),
    )
    actions = ("reset_breaker_action", "check_health_action")

    @method_decorator(sensitive_post_parameters("password", "access_key", "secret_key"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        # Django's error reports (500 pages, mails) then hide the typed secrets.
        return super().changeform_view(*args, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Scanner | None = None) -> Any:
        fieldsets = [(name, dict(options)) for name, options in self.fieldsets]
        credentials = fieldsets[1][1]
        fields = list(credentials["fields"])
        if obj is None:
            fieldsets.pop()  # nothing to show before the scanner exists
            fields.remove("credentials_display")
        else:
            # the clear checkboxes exist only for secrets that are set (see WriteOnlySecretsMixin)
            for name in ScannerAdminForm.secret_fields:
                if getattr(obj, name):
                    fields.insert(fields.index(name) + 1, f"clear_{name}")
        credentials["fields"] = tuple(fields)
        return fieldsets

    def save_model(self, request: HttpRequest, obj: Scanner, form: Any, change: bool) -> None:
        if change:
            # Only what the form changed: workers update slots, health and breaker on this row concurrently.
            changed = [name for name in form.changed_data if not name.startswith("clear_")]
            changed += [name for name in form.secrets_changed() if name not in changed]
            obj.save(update_fields=[*changed, "updated_at"])
        else:
            super().save_model(request, obj, form, change)

    @admin.display(description="health", ordering="health")
    def health_display(self, obj: Scanner) -> str:
        return badge(obj.get_health_display(), HEALTH_COLOURS.get(obj.health, "#ba2121"))

    @admin.display(description="edition")
    def edition_display(self, obj: Scanner) -> str:
        """The Nessus edition from the last health check; one without the scan API says why it is refused."""
        info = obj.license_info or {}
        name = info.get("name") or info.get("type") or "—"
        if info.get("scan_api") is False:
            return format_html('{} <b style="color:#ba2121" title="{}">no scan API: never chosen</b>', name,
                               obj.health_detail)
        return name

    @admin.display(description="breaker", ordering="breaker_state")
    def breaker_display(self, obj: Scanner) -> str:
        text = obj.get_breaker_state_display()
        if obj.consecutive_failures:
            text = f"{text} ({obj.consecutive_failures} failures)"
        return badge(text, BREAKER_COLOURS.get(obj.breaker_state, "#666"))

    @admin.display(description="active / max", ordering="active_scans")
    def slots_display(self, obj: Scanner) -> str:
        return utilisation_bar(obj.active_scans, obj.max_concurrent_scans)

    @admin.display(description="login")
    def auth_display(self, obj: Scanner) -> str:
        if obj.access_key or obj.secret_key:
            return f"API keys {mask(obj.access_key and obj.secret_key)}"
        return f"{obj.username or '?'} / password {mask(obj.password)}"

    @admin.display(description="stored credentials")
    def credentials_display(self, obj: Scanner) -> str:
        return (
            f"access key {mask(obj.access_key)} · secret key {mask(obj.secret_key)} · "
            f"username {obj.username or '—'} · password {mask(obj.password)}"
        )

    @admin.action(description="Reset circuit breaker", permissions=["change"])
    def reset_breaker_action(self, request: HttpRequest, queryset: QuerySet[Scanner]) -> None:
        from scanners.breaker import reset_breaker

        names = []
        for scanner_id, name in queryset.values_list("pk", "name"):
            reset_breaker(scanner_id, actor=request.user.get_username())
            names.append(name)
        self.message_user(request, f"Circuit breaker reset (closed) for {len(names)}: {', '.join(names)}.")

    @admin.action(description="Check health now", permissions=["change"])
    def check_health_action(self, request: HttpRequest, queryset: QuerySet[Scanner]) -> None:
        from scanners.health import check_health

        ids = list(queryset.values_list("pk", flat=True))
        for scanner_id in ids:
            try:
                check_health(scanner_id)
            except ScannerError as exc:
                self.message_user(request, f"Health check failed: {exc}", level=messages.WARNING)
        for scanner in Scanner.objects.filter(pk__in=ids).order_by("name"):
            level = messages.SUCCESS if scanner.health == Health.READY else messages.WARNING
            detail = f" ({scanner.health_detail})" if scanner.health_detail else ""
            version = f", version {scanner.version}" if scanner.version else ""
            self.message_user(request, f"{scanner.name}: {scanner.get_health_display()}{version}{detail}", level)
