"""Write-only secrets in forms, and their masked display.

A stored secret is never sent back to the browser: its input is a password box that renders
empty, leaving it blank keeps the stored value, typing a value replaces it, and an explicit
"clear" checkbox removes it. Displays show only whether a secret is set.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import FieldDoesNotExist
from django.db.models.constants import LOOKUP_SEP
from django.views.decorators.debug import sensitive_variables

from scanpool_site import crypto
from scanpool_site.fields import EncryptedJSONField, EncryptedTextField

SET = "•••• set"
NOT_SET = "not set"


def mask(value: object) -> str:
    """``"•••• set"`` or ``"not set"``: all anyone is shown of a secret."""
    return SET if value else NOT_SET


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value (for private keys)."""

    def format_value(self, value: Any) -> None:
        return None


def secret_field(label: str, *, multiline: bool = False, help_text: str = "") -> forms.CharField:
    widget = (
        WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off"})
        if multiline
        else forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
    )
    return forms.CharField(label=label, required=False, strip=False, widget=widget, help_text=help_text)


class WriteOnlySecretsMixin:
    """For a ModelForm whose ``secret_fields`` are encrypted model fields.

    Shows a ``clear_<field>`` checkbox per secret that is set (declare them as
    ``forms.BooleanField(required=False)`` on the form, so the admin accepts the names);
    in ``clean`` a blank input keeps the stored value.
    """

    secret_fields: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = getattr(self, "instance", None)
        for name in self.secret_fields:
            stored = getattr(instance, name, "") if instance is not None and instance.pk else ""
            self.initial.pop(name, None)  # the stored value never reaches the page, not even as "initial"
            label = self.fields[name].label if name in self.fields else name.replace("_", " ")
            self.fields[name] = secret_field(
                label,
                help_text=f"Currently {mask(stored)}. Write-only: leave blank to keep it, type a value to replace it.",
            )
            if stored:
                self.fields[f"clear_{name}"] = forms.BooleanField(
                    label=f"Clear {label.lower()}", required=False, help_text=f"Remove the stored {label.lower()}."
                )
            else:
                self.fields.pop(f"clear_{name}", None)

    @sensitive_variables()  # error reports must not show the typed secrets among the locals
    def effective_secret(self, name: str) -> str:
        """The value the secret will have after saving (for cross-field checks)."""
        cleaned = self.cleaned_data
        if cleaned.get(f"clear_{name}"):
            return ""
        if cleaned.get(name):
            return cleaned[name]
        instance = getattr(self, "instance", None)
        return str(getattr(instance, name, "") or "") if instance is not None and instance.pk else ""

    @sensitive_variables()  # error reports must not show the typed secrets among the locals
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in self.secret_fields:
            typed = cleaned.get(name)
            if isinstance(typed, str) and typed.startswith(crypto.PREFIX):
                # The model field reads such a value as stored ciphertext and decrypts it: typing one (from a backup,
                # a dump) would make the form a decryption oracle. No real secret starts so.
                self.add_error(name, f"may not start with {crypto.PREFIX!r} (the form of an encrypted value): type "
                                     "the secret itself")
                cleaned.pop(name, None)
                continue
            cleaned[name] = self.effective_secret(name)
        return cleaned

    def secrets_changed(self) -> list[str]:
        """Secret fields this submission replaced or cleared."""
        return [name for name in self.secret_fields if self.cleaned_data.get(f"clear_{name}") or self.data.get(name)]


class NoSecretLookupsAdminMixin:
    """For a ModelAdmin of a model with encrypted fields: its list refuses lookups on them.

    Django's admin lets anyone who may view the list filter by any field of the model in the query string
    (``?access_key__startswith=fernet:gAAAA``), and the answer (rows or none) reads the stored ciphertext out a
    character at a time. Ciphertext is not for viewers either (keys of older releases were derived from a published
    key), so such a lookup is refused (400) like a lookup the admin does not allow."""

    def lookup_allowed(self, lookup: str, value: Any, request: Any = None) -> bool:
        model = self.model  # type: ignore[attr-defined]
        for part in lookup.split(LOOKUP_SEP):
            try:
                field = model._meta.get_field(part)
            except FieldDoesNotExist:
                break
            if isinstance(field, EncryptedTextField | EncryptedJSONField):
                return False
            if not getattr(field, "related_model", None):
                break
            model = field.related_model
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]
