"""Scanners in the control room: health, circuit breaker and slots; credentials write-only and masked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters

from pools.admin import utilisation_bar
from scanners.adapters.base import ScannerError
from scanners.admin_confirmation import ConnectionConfirmationAdminMixin
from scanners.breaker import reset_breaker
from scanners.forms import CONNECTION_NOTE, ScannerAdminForm
from scanners.health import check_health
from scanners.models import BreakerState, Health, Scanner
from scanners.services import record_created, update_scanner
from scanpool_site.secret_forms import NoSecretLookupsAdminMixin, mask

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
    "license_display",
    "last_seen_at",
    "health_checked_at",
    "breaker_state",
    "consecutive_failures",
    "breaker_opened_at",
    "wait_until",
    "last_error",
    "created_at",
    "updated_at",
)


LICENCE_LABELS = {"name": "edition", "type": "type", "expiration_date": "expires", "ips": "licensed IPs",
                  "scan_api": "scan API"}


def licence_html(info: dict[str, Any] | None) -> str:
    """The licence a health check read (``/server/properties``), as labelled lines instead of raw JSON."""
    if not info:
        return "— (not read yet: run Check health now)"
    rows = []
    for key, value in info.items():
        if value in (None, ""):
            continue
        if key == "expiration_date" and isinstance(value, int | float):
            value = datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d")
        elif key == "scan_api":
            value = "yes" if value else "no (Nessus answers 412 to scan creation: this scanner is never chosen)"
        rows.append((LICENCE_LABELS.get(key, key.replace("_", " ")), value))
    return format_html_join(mark_safe("<br>"), "{}: <b>{}</b>", rows)


def badge(text: str, colour: str) -> str:
    return format_html('<b style="color:{}">{}</b>', colour, text)


@admin.register(Scanner)
class ScannerAdmin(NoSecretLookupsAdminMixin, ConnectionConfirmationAdminMixin, admin.ModelAdmin):
    form = ScannerAdminForm
    list_display = (
        "name",
        "pool",
        "url",
        "enabled",
        "health_display",  # with the Nessus edition under it (one column less: the list fits 1400 px)
        "breaker_display",
        "slots_display",
        "auth_display",  # with the four-eyes confirmation state under it (scanners.admin_confirmation)
        "last_seen_at",
    )
    list_filter = ("pool", "enabled", "health", "breaker_state", "kind", "connection_confirmed")
    list_select_related = ("pool",)
    search_fields = ("name", "url", "description")
    show_full_result_count = False
    readonly_fields = ("credentials_display", "connection_confirmation", "connection_confirmation_text",
                       "connection_history", *RUNTIME_FIELDS)
    fieldsets = (
        (None, {"fields": ("pool", "name", "kind", "description", "url", "enabled", "max_concurrent_scans")}),
        (
            "Credentials (write-only)",
            {
                "fields": ("credentials_display", "username", "password", "access_key", "secret_key"),
                "description": "Give either API keys or a username and password. Stored values are never shown: "
                f"leave a box blank to keep what is stored. {CONNECTION_NOTE}",
            },
        ),
        ("Connection security", {"fields": ("verify_tls", "ca_bundle", "allow_plain_http")}),
        ("Connection history (append-only)", {"fields": ("connection_confirmation", "connection_history")}),
        (
            "Health and circuit breaker (maintained by workers; use the actions to check or reset)",
            {"fields": RUNTIME_FIELDS},
        ),
    )
    actions = ("reset_breaker_action", "check_health_action", "confirm_connection_action")

    @method_decorator(sensitive_post_parameters("password", "access_key", "secret_key"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        # Django's error reports (500 pages, mails) then hide the typed secrets.
        return super().changeform_view(*args, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Scanner | None = None) -> Any:
        fieldsets = [(name, dict(options)) for name, options in self.fieldsets]
        credentials = fieldsets[1][1]
        fields = list(credentials["fields"])
        if obj is None:
            fieldsets = fieldsets[:-2]  # no history or run-time state before the scanner exists
            fields.remove("credentials_display")
        elif not self.has_change_permission(request, obj):
            # A viewer gets every field read-only, shown from the model: the stored secrets would be printed in
            # clear. They see the masked summary (credentials_display) only.
            fields = [name for name in fields if name not in ScannerAdminForm.secret_fields]
        else:
            # the clear checkboxes exist only for secrets that are set (see WriteOnlySecretsMixin)
            for name in ScannerAdminForm.secret_fields:
                if getattr(obj, name):
                    fields.insert(fields.index(name) + 1, f"clear_{name}")
        credentials["fields"] = tuple(fields)
        if obj is not None and not self.has_confirm_connection_permission(request):
            # The Confirm button only for whoever may press it (anyone else's click was refused with a message).
            history = fieldsets[3][1]
            history["fields"] = tuple("connection_confirmation_text" if name == "connection_confirmation" else name
                                      for name in history["fields"])
        return fieldsets

    def save_model(self, request: HttpRequest, obj: Scanner, form: Any, change: bool) -> None:
        actor = request.user.get_username()
        if not change:
            super().save_model(request, obj, form, change)
            record_created(obj, actor)
            return
        # Only what the form changed: workers update slots, health and breaker on this row concurrently.
        changed = [name for name in form.changed_data if not name.startswith("clear_")]
        changed += [name for name in form.secrets_changed() if name not in changed]
        values = {name: getattr(obj, name) for name in changed}
        result = update_scanner(obj.pk, values, given_secrets=form.secrets_typed(), actor=actor)
        if result.cleared:
            self.message_user(
                request,
                f"{obj.name}: the stored {', '.join(result.cleared)} "
                f"{'was' if len(result.cleared) == 1 else 'were'} cleared because the "
                f"{', '.join(result.connection_changed)} changed. Type the credentials again for the new connection; "
                "until then the scanner gets no work.",
                messages.WARNING,
            )
        if result.unconfirmed:
            self.message_user(
                request,
                f"{obj.name}: its {', '.join(result.unconfirmed)} changed, so its connection is unconfirmed: "
                "authenticated scans are not dispatched to it until another person confirms it.",
                messages.WARNING,
            )

    @admin.display(description="connection history")
    def connection_history(self, obj: Scanner) -> str:
        events = obj.events.all()[:50]
        if not events:
            return "—"
        return format_html(
            "<table><tr><th>when (UTC)</th><th>who</th><th>what</th><th>change</th></tr>{}</table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor or "—", e.get_kind_display(), e.message) for e in events),
            ),
        )

    @admin.display(description="health", ordering="health")
    def health_display(self, obj: Scanner) -> str:
        health = badge(obj.get_health_display(), HEALTH_COLOURS.get(obj.health, "#ba2121"))
        if not (obj.license_info or {}):
            return health
        return format_html("{}<br><small>{}</small>", health, self.edition_display(obj))

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
        shown = badge(text, BREAKER_COLOURS.get(obj.breaker_state, "#666"))
        if (until := obj.waiting_until) is not None:  # Retry-After: no new scan to it before then
            return format_html('{}<br><span title="HTTP 429/503 Retry-After">asked to wait until {} UTC</span>', shown,
                               f"{until:%H:%M:%S}")
        return shown

    @admin.display(description="active / max", ordering="active_scans")
    def slots_display(self, obj: Scanner) -> str:
        return utilisation_bar(obj.active_scans, obj.max_concurrent_scans)

    @admin.display(description="login")
    def auth_display(self, obj: Scanner) -> str:
        if obj.access_key or obj.secret_key:
            login = f"API keys {mask(obj.access_key and obj.secret_key)}"
        else:
            login = f"{obj.username or '?'} / password {mask(obj.password)}"
        return format_html("{}<br><small>{}</small>", login, self.confirmation_state(obj))

    @admin.display(description="licence")
    def license_display(self, obj: Scanner) -> str:
        return licence_html(obj.license_info)

    @admin.display(description="stored credentials")
    def credentials_display(self, obj: Scanner) -> str:
        return (
            f"access key {mask(obj.access_key)} · secret key {mask(obj.secret_key)} · "
            f"username {obj.username or '—'} · password {mask(obj.password)}"
        )

    @admin.action(description="Reset circuit breaker", permissions=["change"])
    def reset_breaker_action(self, request: HttpRequest, queryset: QuerySet[Scanner]) -> None:
        names, waits = [], []
        for scanner in queryset:
            reset_breaker(scanner.pk, actor=request.user.get_username())  # clears its Retry-After wait too
            names.append(scanner.name)
            if scanner.waiting_until is not None:
                waits.append(scanner.name)
        cleared = f" Retry-After wait cleared for: {', '.join(waits)}." if waits else ""
        self.message_user(request, f"Circuit breaker reset (closed) for {len(names)}: {', '.join(names)}.{cleared}")

    @admin.action(description="Check health now", permissions=["change"])
    def check_health_action(self, request: HttpRequest, queryset: QuerySet[Scanner]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for scanner_id in ids:
            try:  # asked for by a person: a scanner waiting out a Retry-After is called too (docs/admin.md)
                check_health(scanner_id, call_waiting=True)
            except ScannerError as exc:
                self.message_user(request, f"Health check failed: {exc}", level=messages.WARNING)
        for scanner in Scanner.objects.filter(pk__in=ids).order_by("name"):
            level = messages.SUCCESS if scanner.health == Health.READY else messages.WARNING
            detail = f" ({scanner.health_detail})" if scanner.health_detail else ""
            version = f", version {scanner.version}" if scanner.version else ""
            if (until := scanner.waiting_until) is not None:
                detail += f"; it asked scanpool to wait until {until:%H:%M:%S} UTC: no call to it before then"
                level = messages.WARNING
            health = scanner.get_health_display()
            self.message_user(request, f"Scanner {scanner.name}: {health}{version}{detail}", level)
