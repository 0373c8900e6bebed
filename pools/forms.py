"""The pool admin form: the scope allow-list as one entry per line."""

from __future__ import annotations

from typing import Any

from django import forms

from pools.models import Pool
from pools.scope import scope_entry_problem, split_entries


class ScopeField(forms.CharField):
    """A list of CIDRs / addresses / host names / ``*.domain`` patterns, one per line (or comma-separated)."""

    widget = forms.Textarea(attrs={"rows": 4, "placeholder": "10.20.0.0/16\n192.0.2.10\n*.dmz.example.com"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        return split_entries(text)

    def validate(self, value: list[str]) -> None:
        problems = [p for p in (scope_entry_problem(item) for item in value) if p]
        if problems:
            raise forms.ValidationError(problems)


class PoolAdminForm(forms.ModelForm):
    scope = ScopeField(
        required=False,
        help_text="Allow-list of targets a scan in this pool may have, one per line: CIDRs, addresses, host "
        "names or *.domain patterns. Empty = no target is allowed, unless 'allow any target' is ticked. Loopback, "
        "link-local/metadata addresses and the scanners' own addresses are refused unless listed here explicitly.",
    )

    class Meta:
        model = Pool
        fields = (
            "name", "description", "enabled", "scope", "allow_any_target", "max_queued", "scan_timeout_seconds",
            "poll_interval_seconds", "allow_plain_http",
        )  # fmt: skip
        labels = {"allow_plain_http": "Allow plain HTTP"}  # not Django's "Allow plain http"
