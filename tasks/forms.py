"""The admin's "add scan task" form: a front end of ``tasks.services.submit`` (the API's own validation).

The form checks only the shape of the input (fields present, durations readable); every rule
(scope, pool enabled, scanner in pool, credentials per scan type, backpressure…) is the
submission service's, and its :class:`~tasks.errors.SubmissionError` is shown on the field it names.
The task is created by ``submit`` while the form is validated, so an error can still be shown on
the form; the admin's surrounding transaction makes the row and its enqueue-on-commit one unit.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from pools.models import Pool
from pools.scope import split_entries
from scanners.config.schema import parse_duration
from scanners.models import Scanner
from scanpool_site.secret_forms import secret_field
from tasks import services
from tasks.errors import SubmissionError
from tasks.models import ScanTask, ScanType

ESCALATION_CHOICES = [
    ("", "— none —"),
    ("sudo", "sudo"),
    ("su", "su"),
    ("su+sudo", "su+sudo"),
    ("pbrun", "pbrun"),
    ("dzdo", "dzdo"),
]

# submit()'s field names (and credentials.<key>) → this form's fields.
FIELD_MAP = {
    "pool": "pool",
    "scanner_instance": "scanner_instance",
    "name": "name",
    "targets": "targets",
    "scan_type": "scan_type",
    "timeout_seconds": "timeout",
    "description": "description",
    "credentials": "credential_username",
    "username": "credential_username",
    "password": "credential_password",
    "private_key": "credential_private_key",
    "elevate_privileges_with": "elevate_privileges_with",
    "escalation_account": "escalation_account",
    "escalation_password": "escalation_password",
}


class ScannerChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Scanner) -> str:
        return f"{obj.name} (pool {obj.pool.name})"


class ScanTaskSubmitForm(forms.Form):
    """A plain form (the row is built by ``submit``) with the bits of a ModelForm the admin uses."""

    requested_by: Any = None  # set per request by the admin

    pool = forms.ModelChoiceField(queryset=Pool.objects.all(), to_field_name="name", empty_label=None)
    scanner_instance = ScannerChoiceField(
        queryset=Scanner.objects.select_related("pool"),
        to_field_name="name",
        required=False,
        empty_label="— least-loaded healthy scanner of the pool —",
        help_text="Optional: pin one scanner (it must belong to the pool).",
    )
    name = forms.CharField(max_length=200)
    targets = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "192.0.2.10\n198.51.100.0/28\nhost.example.com"}),
        help_text="Addresses, CIDRs or host names; one per line, or separated by commas or spaces.",
    )
    scan_type = forms.ChoiceField(choices=ScanType.choices, initial=ScanType.UNTRUSTED)
    timeout = forms.CharField(
        required=False,
        help_text="Hard deadline from launch, e.g. 30m, 2h, 24h or seconds; blank = the pool's default.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    credential_username = forms.CharField(label="SSH username", required=False)
    credential_password = secret_field("SSH password", help_text="Write-only: never shown again.")
    credential_private_key = secret_field(
        "SSH private key", multiline=True, help_text="Instead of a password. Write-only: never shown again."
    )
    elevate_privileges_with = forms.ChoiceField(choices=ESCALATION_CHOICES, required=False)
    escalation_account = forms.CharField(required=False, help_text="e.g. root")
    escalation_password = secret_field("Escalation password", help_text="Write-only: never shown again.")

    task: ScanTask | None = None

    def __init__(self, *args: Any, instance: ScanTask | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance = instance if instance is not None else ScanTask()

    def clean_targets(self) -> list[str]:
        return split_entries(self.cleaned_data["targets"])

    def clean_timeout(self) -> int | None:
        raw = self.cleaned_data.get("timeout", "").strip()
        if not raw:
            return None
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    @sensitive_variables()  # error reports must not show the typed secrets among the locals
    def credentials(self) -> dict[str, str] | None:
        data = self.cleaned_data
        pairs = {
            "username": data.get("credential_username", ""),
            "password": data.get("credential_password", ""),
            "private_key": data.get("credential_private_key", ""),
            "elevate_privileges_with": data.get("elevate_privileges_with", ""),
            "escalation_account": data.get("escalation_account", ""),
            "escalation_password": data.get("escalation_password", ""),
        }
        credentials = {key: value for key, value in pairs.items() if value}
        return credentials or None

    @sensitive_variables()  # error reports must not show the typed secrets among the locals
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        scanner = cleaned.get("scanner_instance")
        try:
            with transaction.atomic():
                self.task = services.submit(
                    pool=cleaned["pool"].name,
                    name=cleaned["name"],
                    targets=cleaned["targets"],
                    scan_type=cleaned["scan_type"],
                    credentials=self.credentials(),
                    scanner_instance=scanner.name if scanner else None,
                    timeout_seconds=cleaned.get("timeout"),
                    description=cleaned.get("description", ""),
                    requested_by=self.requested_by,
                    requested_via="admin",
                )
        except SubmissionError as exc:
            self.add_submission_error(exc)
        return cleaned

    def add_submission_error(self, exc: SubmissionError) -> None:
        key = exc.field.removeprefix("credentials.")
        target = FIELD_MAP.get(exc.field) or FIELD_MAP.get(key)
        if target in self.fields:
            self.add_error(target, exc.message)
        else:
            self.add_error(None, f"{exc.field}: {exc.message}" if exc.field != "non_field_errors" else exc.message)

    def save(self, commit: bool = True) -> ScanTask:
        """The task ``submit`` created during validation (nothing more to save)."""
        if self.task is None:
            raise ValueError("save() called on a form that did not validate")
        self.instance = self.task
        self.save_m2m = lambda: None
        return self.task
