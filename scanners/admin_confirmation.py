"""The scanner admin's four-eyes confirmation of a connection for authenticated scans (docs/security.md).

A mixin for :class:`scanners.admin.ScannerAdmin`: the state (list column, change-page field with a *Confirm
connection for authenticated scans* button), the admin action of the same name, and the POST-only view the
button submits to. Who may confirm is decided by :func:`scanners.services.confirmation_problem` (the permission
``scanners.confirm_scanner_connection``; nobody confirms a connection they set, except a superuser).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from scanners.models import Scanner
from scanners.services import (
    CONFIRM_PERMISSION,
    confirm_connection,
    confirmation_problem,
    connection_changers,
    connection_fingerprint,
    connection_summary,
)

CONFIRM_LABEL = "Confirm connection for authenticated scans"


class ConnectionConfirmationAdminMixin:
    """State, action and button for ``Scanner.connection_confirmed``."""

    def has_confirm_connection_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CONFIRM_PERMISSION)

    @admin.display(description="credentials", ordering="connection_confirmed", boolean=False)
    def confirmation_state(self, obj: Scanner) -> str:
        if obj.connection_confirmed:
            return format_html('<span style="color:#2e7d32" title="confirmed by {}">confirmed</span>',
                               obj.connection_confirmed_by or "—")
        return format_html('<b style="color:#ba2121" title="{}">unconfirmed: no authenticated scans</b>',
                           "its connection changed; another person must confirm it")

    @admin.display(description="confirmed for authenticated scans")
    def connection_confirmation_text(self, obj: Scanner) -> str:
        """The state in words, without the button: for whoever may not confirm (see the change page's fieldsets)."""
        if obj.connection_confirmed:
            when = f"{obj.connection_confirmed_at:%Y-%m-%d %H:%M:%S} UTC" if obj.connection_confirmed_at else "—"
            return format_html('<b style="color:#2e7d32">confirmed</b> by {} at {}: scans with credentials may be '
                               "dispatched here", obj.connection_confirmed_by or "—", when)
        changers = ", ".join(sorted(name for name in connection_changers(obj) if name)) or "—"
        return format_html(
            '<b style="color:#ba2121">unconfirmed</b>: authenticated scans (which carry SSH credentials) are not '
            "dispatched here until a person other than whoever set this connection ({}) confirms it (permission "
            "{}); scans without credentials are.", changers, CONFIRM_PERMISSION)

    @admin.display(description="confirmed for authenticated scans")
    def connection_confirmation(self, obj: Scanner) -> str:
        text = self.connection_confirmation_text(obj)
        if obj.connection_confirmed:
            return text
        url = reverse("admin:scanners_scanner_confirm_connection", args=[obj.pk])
        # formaction: submits the change form's CSRF token to the confirm view (the other fields are ignored there).
        # Its value names the connection shown on this page: one changed meanwhile is not confirmed by the click.
        return format_html('{}<br><button type="submit" class="button" formaction="{}" formmethod="post" '
                           'name="_confirm_connection" value="{}">{}</button>', text, url,
                           connection_fingerprint(obj), CONFIRM_LABEL)

    @admin.action(description=CONFIRM_LABEL, permissions=["confirm_connection"])
    def confirm_connection_action(self, request: HttpRequest, queryset: QuerySet[Scanner]) -> TemplateResponse | None:
        """First a page showing each chosen connection (the list's URL column may be older than the rows); then
        the connections shown there, and only those, are confirmed."""
        scanners = list(queryset.select_related("pool").order_by("name"))
        if "apply" in request.POST:
            for scanner in scanners:
                self._confirm(request, scanner, request.POST.get(f"seen_{scanner.pk}"))
            return None
        to_review = []
        for scanner in scanners:
            if problem := confirmation_problem(scanner, request.user):
                self.message_user(request, f"Scanner {scanner.name}: not confirmed: {problem}", messages.ERROR)  # type: ignore[attr-defined]
            elif scanner.connection_confirmed:
                self.message_user(request, f"Scanner {scanner.name}: already confirmed.", messages.SUCCESS)  # type: ignore[attr-defined]
            else:
                to_review.append((scanner, connection_summary(scanner), connection_fingerprint(scanner)))
        if not to_review:
            return None
        return TemplateResponse(request, "admin/scanners/scanner/confirm_connection.html", {
            **self.admin_site.each_context(request), "title": CONFIRM_LABEL, "scanners": to_review,  # type: ignore[attr-defined]
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    def _confirm(self, request: HttpRequest, scanner: Scanner, seen: str | None) -> None:
        try:
            done = confirm_connection(scanner.pk, user=request.user, seen=seen)
        except PermissionDenied as exc:
            self.message_user(request, f"Scanner {scanner.name}: not confirmed: {exc}", messages.ERROR)  # type: ignore[attr-defined]
            return
        text = "connection confirmed for authenticated scans" if done else "already confirmed"
        self.message_user(request, f"Scanner {scanner.name}: {text}.", messages.SUCCESS)  # type: ignore[attr-defined]

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.confirm_connection_view)  # type: ignore[attr-defined]
        own = [path("<int:object_id>/confirm-connection/", view, name="scanners_scanner_confirm_connection")]
        return own + super().get_urls()  # type: ignore[misc]

    def confirm_connection_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """POST only (CSRF-checked by the admin site): confirm one scanner, back to its change page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        scanner = get_object_or_404(Scanner, pk=object_id)
        if not self.has_view_or_change_permission(request, scanner):  # type: ignore[attr-defined]
            raise PermissionDenied
        if problem := confirmation_problem(scanner, request.user):
            self.message_user(request, f"Scanner {scanner.name}: not confirmed: {problem}", messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(reverse("admin:scanners_scanner_change", args=[scanner.pk]))
        self._confirm(request, scanner, request.POST.get("_confirm_connection"))
        return HttpResponseRedirect(reverse("admin:scanners_scanner_change", args=[scanner.pk]))

