"""API tokens in the admin: create one (the key is shown once, on the page after saving), revoke,
see when it was last used. Only the hash is stored, so a lost key is replaced, never recovered."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from tasks.models import ApiToken


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

    @admin.display(description="key id")
    def key_id(self, obj: ApiToken) -> str:
        return f"sp_{obj.prefix}_…" if obj.prefix else "—"

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        key = None if change else obj.set_new_key()
        super().save_model(request, obj, form, change)
        if key:
            messages.warning(request, format_html(
                "API key for <b>{}</b> — copy it now, it is shown only this once: <code>{}</code>", obj.name, key))

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} token(s) revoked.")
