"""Findings grouped by plugin: one row per plugin with its severity, the number of affected hosts and
their names — the view Nessus users read first. Two queries per page (the groups, then their hosts)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping

from django.db.models import Count, Max

from tasks.results.analysis import SEVERITY_NAMES
from tasks.results.query import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, _positive_int, findings_queryset

MAX_HOSTS_LISTED = 100  # per plugin row; host_count is always exact


def get_plugin_page(
    task_id: uuid.UUID | str,
    *,
    filters: Mapping[str, object] | None = None,
    page: object = 1,
    page_size: object = DEFAULT_PAGE_SIZE,
) -> Page:
    """Plugins of the task's (filtered) findings, most severe first, then by affected host count."""
    page_number = _positive_int("page", page, 1)
    size = _positive_int("page_size", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    base = findings_queryset(task_id, filters, profile="minimal").order_by()
    groups = (base.values("plugin_id")
              .annotate(severity=Max("severity"), plugin_name=Max("plugin_name"), plugin_family=Max("plugin_family"),
                        host_count=Count("host_name", distinct=True), findings=Count("id"))
              .order_by("-severity", "-host_count", "plugin_id"))
    total = base.values("plugin_id").distinct().count()
    start = (page_number - 1) * size
    rows = list(groups[start : start + size]) if start < total else []
    hosts: dict[int, list[str]] = {row["plugin_id"]: [] for row in rows}
    if rows:
        for plugin_id, host in (base.filter(plugin_id__in=hosts).values_list("plugin_id", "host_name")
                                .distinct().order_by("plugin_id", "host_name")):
            if len(hosts[plugin_id]) < MAX_HOSTS_LISTED:
                hosts[plugin_id].append(host)
    results = [{
        "plugin_id": row["plugin_id"], "plugin_name": row["plugin_name"], "plugin_family": row["plugin_family"],
        "severity": row["severity"], "severity_name": SEVERITY_NAMES.get(row["severity"], str(row["severity"])),
        "host_count": row["host_count"], "findings": row["findings"], "hosts": hosts[row["plugin_id"]],
    } for row in rows]
    return Page(page=page_number, page_size=size, total=total, pages=math.ceil(total / size) if total else 0,
                profile="plugin", ordering="-severity,-host_count", results=results)
