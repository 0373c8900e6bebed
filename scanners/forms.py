"""The scanner admin form: write-only credentials, one validation with the YAML loader.

A change of URL, TLS settings or pool clears every stored secret not typed again in the same form
(``scanners.services``: the rule the YAML loader applies too); the form says so next to the fields.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.views.decorators.debug import sensitive_variables

from scanners.models import Scanner
from scanners.services import connection_changes, secrets_to_clear
from scanners.validators import scanner_auth_problem
from scanpool_site.secret_forms import WriteOnlySecretsMixin

# The columns the admin form edits; everything else on the row is maintained by workers.
EDITABLE_FIELDS = (
    "pool", "name", "kind", "description", "url", "username", "password", "access_key", "secret_key",
    "verify_tls", "ca_bundle", "allow_plain_http", "max_concurrent_scans", "enabled",
)  # fmt: skip
CONNECTION_NOTE = (
    "Changing the URL, the TLS settings (verify TLS, CA bundle) or the pool clears the stored API keys and "
    "password unless you type them again in this same form: stored secrets are never sent to a new address."
)


class ScannerAdminForm(WriteOnlySecretsMixin, forms.ModelForm):
    secret_fields = ("access_key", "secret_key", "password")
    # Declared so the admin accepts them in fieldsets; removed by the mixin when nothing is stored.
    clear_access_key = forms.BooleanField(required=False)
    clear_secret_key = forms.BooleanField(required=False)
    clear_password = forms.BooleanField(required=False)

    class Meta:
        model = Scanner
        fields = EDITABLE_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cleared_secrets: list[str] = []
        if self.instance.pk and "url" in self.fields:
            self.fields["url"].help_text = f"{self.fields['url'].help_text}. {CONNECTION_NOTE}"

    def secrets_typed(self) -> list[str]:
        """Secret fields given a new value in this submission (not blank, not cleared)."""
        return [
            name for name in self.secret_fields
            if self.data.get(name) and not self.cleaned_data.get(f"clear_{name}")
        ]  # fmt: skip

    @sensitive_variables()  # error reports must not show the typed secrets among the locals
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        typed = self.secrets_typed()
        if self.instance.pk:
            changed = connection_changes(self.instance, cleaned)
            self.cleared_secrets = secrets_to_clear(self.instance, changed, typed)
            for name in self.cleared_secrets:
                cleaned[name] = ""
        problem = scanner_auth_problem(
            cleaned.get("access_key", ""),
            cleaned.get("secret_key", ""),
            cleaned.get("username", ""),
            cleaned.get("password", ""),
        )
        # Credentials dropped by a connection change (nothing typed) are allowed: the scanner is then marked
        # "login rejected" until someone types them again. Anything typed must make a complete login.
        if problem and not (self.cleared_secrets and not typed):
            if self.cleared_secrets:
                problem += f" (the stored {', '.join(self.cleared_secrets)} are cleared by the connection change)"
            raise forms.ValidationError(f"Scanner credentials: {problem}.", code="credentials")
        if cleaned.get("ca_bundle") and not cleaned.get("verify_tls"):
            self.add_error("ca_bundle", "A CA bundle is only used with TLS verification on: tick 'Verify TLS'.")
        return cleaned
