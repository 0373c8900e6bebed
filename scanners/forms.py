"""The scanner admin form: write-only credentials, one validation with the YAML loader."""

from __future__ import annotations

from typing import Any

from django import forms
from django.views.decorators.debug import sensitive_variables

from scanners.models import Scanner
from scanners.validators import scanner_auth_problem
from scanpool_site.secret_forms import WriteOnlySecretsMixin

# The columns the admin form edits; everything else on the row is maintained by workers.
EDITABLE_FIELDS = (
    "pool", "name", "kind", "description", "url", "username", "password", "access_key", "secret_key",
    "verify_tls", "ca_bundle", "max_concurrent_scans", "enabled",
)  # fmt: skip


class ScannerAdminForm(WriteOnlySecretsMixin, forms.ModelForm):
    secret_fields = ("access_key", "secret_key", "password")
    # Declared so the admin accepts them in fieldsets; removed by the mixin when nothing is stored.
    clear_access_key = forms.BooleanField(required=False)
    clear_secret_key = forms.BooleanField(required=False)
    clear_password = forms.BooleanField(required=False)

    class Meta:
        model = Scanner
        fields = EDITABLE_FIELDS

    @sensitive_variables()  # error reports must not show the typed secrets among the locals
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        problem = scanner_auth_problem(
            cleaned.get("access_key", ""),
            cleaned.get("secret_key", ""),
            cleaned.get("username", ""),
            cleaned.get("password", ""),
        )
        if problem:
            raise forms.ValidationError(f"Scanner credentials: {problem}.", code="credentials")
        if cleaned.get("ca_bundle") and not cleaned.get("verify_tls"):
            self.add_error("ca_bundle", "A CA bundle is only used with TLS verification on: tick 'Verify TLS'.")
        return cleaned
