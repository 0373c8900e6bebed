"""The results summary stored on the task: hosts, findings by severity, top findings, file size."""

from __future__ import annotations

import uuid

from django.db.models import Count, F, Max

from tasks.models.results import Finding
from tasks.results.analysis import SEVERITY_NAMES, Analysis
from tasks.results.storage import StoredFile

TOP_FINDINGS = 10


def top_findings(task_id: uuid.UUID, limit: int = TOP_FINDINGS) -> list[dict[str, object]]:
    """The most severe plugins of a task (severity ≥ 1), with how many hosts have them."""
    rows = (
        Finding.objects.filter(task_id=task_id, severity__gte=1)
        .values("plugin_id")
        .annotate(
            severity=Max("severity"),
            plugin_name=Max("plugin_name"),
            plugin_family=Max("plugin_family"),
            cvss=Max("cvss"),
            hosts=Count("host", distinct=True),
            instances=Count("id"),
        )
        .order_by("-severity", F("cvss").desc(nulls_last=True), "-hosts", "plugin_id")[:limit]
    )
    return [
        {
            "plugin_id": row["plugin_id"],
            "plugin_name": row["plugin_name"],
            "plugin_family": row["plugin_family"],
            "severity": row["severity"],
            "severity_name": SEVERITY_NAMES.get(row["severity"], str(row["severity"])),
            "cvss": row["cvss"],
            "hosts": row["hosts"],
            "instances": row["instances"],
        }
        for row in rows
    ]


def build_summary(
    analysis: Analysis, stored: StoredFile, *, task_id: uuid.UUID, report_name: str, policy_name: str
) -> dict[str, object]:
    counts = analysis.severity_counts
    return {
        "hosts": analysis.hosts,
        "hosts_answered": analysis.hosts_answered,
        "hosts_credentialed": analysis.validation.get("hosts_credentialed", 0),
        "findings": analysis.findings,
        "severity_counts": counts,
        "by_severity": {SEVERITY_NAMES[i]: counts[str(i)] for i in range(4, -1, -1)},
        "top_findings": top_findings(task_id),
        "auth_status": analysis.verdict,
        "report_name": report_name,
        "policy_name": policy_name,
        "nessus_version": analysis.validation.get("nessus_version", ""),
        "scan_started": analysis.validation.get("scan_started"),
        "file_size": stored.size,
        "file_sha256": stored.sha256,
    }
