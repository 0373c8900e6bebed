"""Client policies: what one API client (token) may scan, how much, and when a person must approve.

A policy narrows, never widens: every dimension left empty means "no further restriction than the
pool's own rules", and a target must be inside the pool's scope AND the policy's target allow-list.
Tokens without a policy are not restricted by one. The checks run in ``tasks.services.submit``
(through :mod:`tasks.policies`), so every caller obeys the same rules.

Refusals create no task; each is one :class:`PolicyRefusal` row (the audit trail and the source of
``nessus_policy_refusals_total``).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from pools.scope import scope_entry_problem
from tasks.models.states import ScanType


class ApprovalRule(models.TextChoices):
    NEVER = "never", "Never: in-policy scans run at once"
    ALWAYS = "always", "Always: every scan waits for approval"
    OUTSIDE = "outside", "Outside the pre-approved targets: scans touching other targets wait for approval"


def _limit(help_text: str) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)], help_text=help_text)


class ClientPolicy(models.Model):
    """The policy of one API token (one-to-one)."""

    token = models.OneToOneField("tasks.ApiToken", on_delete=models.CASCADE, related_name="policy")
    pools = models.ManyToManyField(
        "pools.Pool", blank=True, related_name="client_policies",
        help_text="Pools this client may submit to. None selected = every pool.",
    )
    target_allow_list = models.JSONField(
        default=list, blank=True,
        help_text="CIDRs, addresses, host names or *.domain patterns this client may scan, inside the pool's scope "
        "(never beyond it). Empty = the pool's scope alone.",
    )
    scan_types = models.JSONField(
        default=list, blank=True, help_text="Scan types this client may request. Empty = every type.",
    )
    max_scans_per_day = _limit("Scans per UTC day (blank = no limit).")
    max_addresses_per_day = _limit("Target addresses per UTC day, summed over its scans (blank = no limit).")
    max_concurrent_scans = _limit("Scans pending approval, queued or running at once (blank = no limit).")
    max_targets_per_scan = _limit("Target entries in one scan (blank = the site's SCANPOOL_MAX_TARGETS).")
    approval = models.CharField(max_length=16, choices=ApprovalRule.choices, default=ApprovalRule.NEVER)
    pre_approved_targets = models.JSONField(
        default=list, blank=True,
        help_text="With approval 'outside': scans whose targets all lie inside these run without approval.",
    )
    approvers = models.CharField(
        max_length=200, blank=True, default="",
        help_text="Who approves this client's scans (a team, a channel); shown to the client with a pending scan.",
    )
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Touched by every checked submission: the row lock that serialises budget accounting (see tasks.policies).
    last_submission_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "client policy"
        verbose_name_plural = "client policies"
        ordering = ["token__name"]

    def __str__(self) -> str:
        return f"policy of {self.token.name}"

    def clean(self) -> None:
        """The one validation of a policy's lists (admin form and YAML loader)."""
        errors: dict[str, list[str]] = {}
        for name in ("target_allow_list", "pre_approved_targets", "scan_types"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors[name] = ["must be a list of strings"]
        for name in ("target_allow_list", "pre_approved_targets"):
            if name not in errors:
                problems = [p for p in (scope_entry_problem(v) for v in getattr(self, name)) if p]
                if problems:
                    errors[name] = problems
        if "scan_types" not in errors:
            unknown = [v for v in self.scan_types if v not in ScanType.values]
            if unknown:
                errors["scan_types"] = [f"{unknown[0]!r} is not a scan type; use {', '.join(ScanType.values)}"]
        if errors:
            raise ValidationError(errors)


class RefusalReason(models.TextChoices):
    POOL = "pool_not_allowed", "Pool not allowed"
    TARGETS = "target_not_allowed", "Target outside the client's allow-list"
    SCAN_TYPE = "scan_type_not_allowed", "Scan type not allowed"
    TOO_MANY_TARGETS = "too_many_targets", "Too many targets in one scan"
    SCANS_PER_DAY = "scans_per_day", "Daily scan budget used up"
    ADDRESSES_PER_DAY = "addresses_per_day", "Daily address budget used up"
    CONCURRENT = "concurrent_scans", "Concurrent scan limit reached"


class PolicyRefusal(models.Model):
    """One submission a client policy refused (no task was created)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    token = models.ForeignKey("tasks.ApiToken", null=True, on_delete=models.SET_NULL, related_name="policy_refusals")
    client = models.CharField(max_length=100, help_text="The token's name when refused (kept if it is deleted).")
    pool = models.CharField(max_length=64, blank=True, default="")
    reason = models.CharField(max_length=32, choices=RefusalReason.choices)
    limit = models.CharField(max_length=200, blank=True, default="")
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["client", "reason"], name="refusal_client_reason_idx")]

    def __str__(self) -> str:
        return f"{self.client}: {self.reason}"
