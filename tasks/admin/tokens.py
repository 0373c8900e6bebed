"""API tokens in the admin: create one (the key is shown once, on the page after saving), revoke,
see when it was last used. Only the hash is stored, so a lost key is replaced, never recovered.

Two ways to revoke (:mod:`tasks.revocation`): *Revoke selected tokens* for a rotation (their queued scans still
run), and *Revoke and cancel their waiting scans* after a leak, which also needs the permission every cancel needs
(``tasks.change_scantask``) and otherwise changes nothing. Both say what is still active, with a link to it.

A token acts as its user: a staff user who is not a superuser makes tokens only for themselves and cannot make
another user's read-only token writable (``tasks.token_rules.token_grant_problem``); a token's user never changes
and a revoked token stays revoked, so an edit cannot turn an existing key into someone else's or revive it."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from tasks.models import ApiToken
from tasks.models.states import CANCELLABLE_STATUSES
from tasks.revocation import Revocation, revoke_tokens
from tasks.token_rules import token_grant_problem

CANCEL_PERMISSION = "tasks.change_scantask"  # what cancelling a scan needs in the admin and the API


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "key_id", "read_only", "created_at", "last_used_at", "revoked_at")
    list_filter = ("read_only", ("revoked_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("name", "user__username", "prefix")
    raw_id_fields = ("user",)
    readonly_fields = ("key_id", "created_at", "last_used_at")
    fields = ("user", "name", "read_only", "key_id", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke", "revoke_and_cancel"]

    def get_readonly_fields(self, request, obj: ApiToken | None = None) -> tuple[str, ...]:
        fields = self.readonly_fields
        if obj is not None:
            fields = (*fields, "user") + (("revoked_at",) if obj.revoked_at else ())
        return fields

    def get_changeform_initial_data(self, request) -> dict:
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    def get_form(self, request, obj: ApiToken | None = None, change: bool = False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        actor = request.user

        class TokenForm(form_class):
            def clean(self) -> dict:
                cleaned = super().clean()
                user = obj.user if obj is not None else cleaned.get("user")
                widened = obj is None or (obj.read_only and not cleaned.get("read_only", True))
                if user is not None and widened and (problem := token_grant_problem(actor, user)):
                    raise ValidationError({"user" if obj is None else "read_only": problem})
                return cleaned

        return TokenForm

    @admin.display(description="key id")
    def key_id(self, obj: ApiToken) -> str:
        return f"sp_{obj.prefix}_…" if obj.prefix else "—"

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        key = None if change else obj.set_new_key()
        super().save_model(request, obj, form, change)
        if key:
            messages.warning(request, format_html(
                "API key for <b>{}</b> — copy it now, it is shown only this once: <code>{}</code>", obj.name, key))

    # --- revoking (tasks.revocation): a rotation keeps the old token's queued scans, a leak cancels them
    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        result = revoke_tokens(queryset.values_list("pk", flat=True), actor=request.user.get_username())
        self._report(request, result, cancel_waiting=False)

    @admin.action(description="Revoke and cancel their waiting scans", permissions=["change"])
    def revoke_and_cancel(self, request, queryset) -> None:
        if not request.user.has_perm(CANCEL_PERMISSION):
            self.message_user(request, f"Nothing revoked or cancelled: cancelling scans needs the permission "
                              f"{CANCEL_PERMISSION} (Can change scan task), which you do not have. Ask someone who "
                              "has it, or use *Revoke selected tokens* to revoke only.", messages.ERROR)
            return
        result = revoke_tokens(queryset.values_list("pk", flat=True), actor=request.user.get_username(),
                               cancel_waiting=True)
        self._report(request, result, cancel_waiting=True)

    def _report(self, request, result: Revocation, *, cancel_waiting: bool) -> None:
        already = len(result.token_ids) - result.revoked
        text = f"{result.revoked} token(s) revoked" + (f" ({already} already were)" if already else "")
        if cancel_waiting:
            text += f", {result.cancelled} waiting scan(s) cancelled"
        if not result.active:
            self.message_user(request, f"{text}; none of their scans is pending approval, queued or running.",
                              messages.SUCCESS)
            return
        counts = ", ".join(f"{n} {stage.replace('_', ' ')}" for stage, n in result.still_active.items())
        then = ("scans already given a scanner are left to run: cancel them there if they must not finish"
                if cancel_waiting else
                "queued scans still run (a rotation); after a leak use *Revoke and cancel their waiting scans*; "
                "scans pending approval can no longer be approved")
        if not request.user.has_perm("tasks.view_scantask"):  # the link would be a 403 page
            self.message_user(request, f"{text}; {result.active} of their scans still active ({counts}) — {then}.",
                              messages.WARNING)
            return
        link = reverse("admin:tasks_scantask_changelist") + "?" + urlencode({
            "api_token__id__in": ",".join(str(pk) for pk in result.token_ids),
            "status__in": ",".join(sorted(CANCELLABLE_STATUSES))})
        self.message_user(request, format_html("{}; {} of their scans still active ({}): <a href=\"{}\">see them</a> — "
                                               "{}.", text, result.active, counts, link, then), messages.WARNING)
