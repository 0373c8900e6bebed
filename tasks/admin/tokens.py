"""API tokens in the admin: create one (the key is shown once, on the page after saving), revoke,
see when it was last used. Only the hash is stored, so a lost key is replaced, never recovered.

A token acts as its user: a staff user who is not a superuser makes tokens only for themselves and cannot make
another user's read-only token writable (``tasks.token_rules.token_grant_problem``); a token's user never changes
and a revoked token stays revoked, so an edit cannot turn an existing key into someone else's or revive it."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.html import format_html

from tasks.models import ApiToken
from tasks.token_rules import token_grant_problem


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "key_id", "read_only", "created_at", "last_used_at", "revoked_at")
    list_filter = ("read_only", ("revoked_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("name", "user__username", "prefix")
    raw_id_fields = ("user",)
    readonly_fields = ("key_id", "created_at", "last_used_at")
    fields = ("user", "name", "read_only", "key_id", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

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

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} token(s) revoked.")
