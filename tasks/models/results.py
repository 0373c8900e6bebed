"""Parsed results of a scan task: one row per host and per finding, written once when the scan finishes.

Pages of results are database queries (time proportional to the page), never a re-parse of the file.
Numbers are stored as numbers (severity, port, plugin id, CVSS scores) so filters compare numbers.
"""

from __future__ import annotations

from django.db import models

from tasks.models.states import AuthStatus


class AuthCause(models.TextChoices):
    """Why a host's authentication verdict is what it is (see docs/results.md)."""

    NONE = "", "—"
    CREDENTIALS_REJECTED = "credentials_rejected", "Credentials rejected"
    CONNECTIVITY = "connectivity", "Could not connect to the login service"
    INSUFFICIENT_PRIVILEGE = "insufficient_privilege", "Logged in without enough privilege"
    NO_CREDENTIALS = "no_credentials", "No credentials provided"
    LOCAL_CHECKS_FAILED = "local_checks_failed", "Local checks failed"
    LOCAL_CHECKS_NOT_RUN = "local_checks_not_run", "Credentialed checks did not run"
    NOT_SUPPORTED = "not_supported", "Credentialed checks not supported on the host"
    UNTRUSTED_SCAN = "untrusted_scan", "Untrusted scan"
    HOST_UNREACHABLE = "host_unreachable", "Host did not answer"
    SCANNER_ITSELF = "scanner_itself", "The scanner scanned itself (local checks, not the supplied credentials)"
    NO_EVIDENCE = "no_evidence", "No authentication evidence"


class ResultHost(models.Model):
    """A host of a task's results; a host repeated in the export is merged into one row."""

    task = models.ForeignKey("tasks.ScanTask", on_delete=models.CASCADE, related_name="result_hosts")
    seq = models.PositiveIntegerField(help_text="Order of first appearance in the export.")
    name = models.CharField(max_length=255)
    ip = models.CharField(max_length=64, blank=True, default="")
    fqdn = models.CharField(max_length=255, blank=True, default="")
    operating_system = models.TextField(blank=True, default="")
    properties = models.JSONField(default=dict, blank=True, help_text="Every HostProperties tag.")
    findings_count = models.PositiveIntegerField(default=0)
    severity_counts = models.JSONField(default=dict, blank=True)
    max_severity = models.PositiveSmallIntegerField(default=0)
    auth_verdict = models.CharField(max_length=16, choices=AuthStatus.choices, default=AuthStatus.UNKNOWN)
    auth_cause = models.CharField(max_length=32, choices=AuthCause.choices, blank=True, default=AuthCause.NONE)
    auth_evidence = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["task", "seq"]
        constraints = [models.UniqueConstraint(fields=["task", "name"], name="resulthost_task_name_unique")]
        indexes = [
            models.Index(fields=["task", "seq"], name="resulthost_task_seq_idx"),
            models.Index(fields=["task", "auth_verdict"], name="resulthost_task_verdict_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class Finding(models.Model):
    """One ReportItem. Core fields are columns (indexed for the filters); everything else is in ``data``."""

    task = models.ForeignKey("tasks.ScanTask", on_delete=models.CASCADE, related_name="findings")
    host = models.ForeignKey(ResultHost, on_delete=models.CASCADE, related_name="findings")
    seq = models.PositiveIntegerField(help_text="Order in the export (stable tie-breaker).")
    host_name = models.CharField(max_length=255)
    plugin_id = models.IntegerField()
    plugin_name = models.CharField(max_length=500, blank=True, default="")
    plugin_family = models.CharField(max_length=200, blank=True, default="")
    severity = models.PositiveSmallIntegerField()
    port = models.PositiveIntegerField(default=0)
    protocol = models.CharField(max_length=16, blank=True, default="")
    svc_name = models.CharField(max_length=100, blank=True, default="")
    risk_factor = models.CharField(max_length=32, blank=True, default="")
    cvss2 = models.FloatField(null=True, blank=True, help_text="cvss_base_score")
    cvss3 = models.FloatField(null=True, blank=True, help_text="cvss3_base_score")
    cvss = models.FloatField(null=True, blank=True, help_text="The score filters use: v3 when present, else v2.")
    exploit_available = models.BooleanField(null=True, blank=True)
    cve_index = models.TextField(
        blank=True, default="", help_text="CVE ids, upper case, space separated and padded (' CVE-… CVE-… ')."
    )
    plugin_output = models.TextField(blank=True, default="")
    attributes = models.JSONField(default=dict, blank=True, help_text="Every ReportItem attribute, verbatim.")
    data = models.JSONField(default=dict, blank=True, help_text="Every child element except plugin_output.")

    class Meta:
        ordering = ["task", "-severity", "seq"]
        indexes = [
            models.Index(fields=["task", "-severity", "seq"], name="finding_task_sev_idx"),
            models.Index(fields=["task", "seq"], name="finding_task_seq_idx"),
            models.Index(fields=["task", "plugin_id"], name="finding_task_plugin_idx"),
            models.Index(fields=["task", "host_name"], name="finding_task_host_idx"),
            models.Index(fields=["task", "port"], name="finding_task_port_idx"),
            models.Index(fields=["task", "cvss"], name="finding_task_cvss_idx"),
            models.Index(fields=["task", "plugin_family"], name="finding_task_family_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.host_name}:{self.port}/{self.protocol} plugin {self.plugin_id} (severity {self.severity})"
