"""The results query layer the API uses: profiles, filters, stable ordering, pagination, JSON lines.

Everything reads the rows ``ingest`` wrote; nothing re-parses the file. docs/results.md lists the
fields of each profile.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from django.db.models import F, Q, QuerySet

from tasks.models import AuthStatus, Finding, ResultHost, ScanTask
from tasks.results.analysis import SEVERITY_NAMES
from tasks.results.filters import FilterError, parse_filters

PROFILES = ("minimal", "summary", "brief", "full")
DEFAULT_PROFILE = "summary"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
BRIEF_OUTPUT_CHARS = 2000
ORDERINGS: dict[str, tuple] = {
    "-severity": ("-severity", "seq"),
    "severity": ("severity", "seq"),
    "host": ("host_name", "seq"),
    "-host": ("-host_name", "seq"),
    "plugin_id": ("plugin_id", "seq"),
    "-plugin_id": ("-plugin_id", "seq"),
    "port": ("port", "seq"),
    "-port": ("-port", "seq"),
    "-cvss": (F("cvss").desc(nulls_last=True), "seq"),
    "cvss": (F("cvss").asc(nulls_first=True), "seq"),
    "file": ("seq",),
}
DEFAULT_ORDERING = "-severity"
# Columns each profile needs (the big ones stay on disk unless asked for).
_PROFILE_COLUMNS = {
    "minimal": ("id", "host_name", "port", "protocol", "plugin_id", "plugin_name", "severity", "seq"),
    "summary": ("id", "host_name", "port", "protocol", "plugin_id", "plugin_name", "severity", "seq",
                "plugin_family", "svc_name", "risk_factor", "cvss", "cvss2", "cvss3", "cve_index", "exploit_available"),
}


def _profile(profile: str | None) -> str:
    profile = (profile or DEFAULT_PROFILE).strip().lower()
    if profile not in PROFILES:
        raise FilterError("profile", f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    return profile


def _ordering(ordering: str | None) -> tuple:
    key = (ordering or DEFAULT_ORDERING).strip()
    if key not in ORDERINGS:
        raise FilterError("ordering", f"unknown ordering {key!r}: use one of {', '.join(ORDERINGS)}")
    return ORDERINGS[key]


def _positive_int(name: str, value: object, default: int, maximum: int | None = None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value), 10)
    except ValueError:
        raise FilterError(name, f"{value!r} is not a whole number: use {name}=1 or more") from None
    if number < 1:
        raise FilterError(name, f"{name} must be 1 or more, not {number}")
    if maximum is not None and number > maximum:
        raise FilterError(name, f"{name} {number} is too large: use at most {maximum}")
    return number


def check_controls(*, profile: object = None, ordering: object = None, page: object = None,
                   page_size: object = None) -> None:
    """Raise :class:`FilterError` for a bad profile, ordering, page or page size, also where the answer does not
    use it (a stream has no pages; plugin groups have their own order): a wrong value is never silently ignored."""
    _profile(profile)  # type: ignore[arg-type]
    _ordering(ordering)  # type: ignore[arg-type]
    _positive_int("page", page, 1)
    _positive_int("page_size", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# Ingest writes rows batch by batch and sets results_summary in its last commit: rows are served only then.
PUBLISHED = {"task__results_summary__has_key": "findings"}


def findings_queryset(
    task_id: uuid.UUID | str,
    filters: Mapping[str, object] | Q | None = None,
    *,
    ordering: str | None = None,
    profile: str | None = None,
) -> QuerySet[Finding]:
    """Findings of a task, filtered and in a stable order (every ordering ends with the file order)."""
    condition = filters if isinstance(filters, Q) else parse_filters(filters or {})
    qs = Finding.objects.filter(task_id=task_id, **PUBLISHED).filter(condition).order_by(*_ordering(ordering))
    columns = _PROFILE_COLUMNS.get(_profile(profile))
    if columns:
        qs = qs.only(*columns)
    elif _profile(profile) == "full":
        qs = qs.annotate(host_ip=F("host__ip"))  # not select_related: that would load every host's properties
    return qs


def _cves(finding: Finding) -> list[str]:
    return finding.cve_index.split()


def serialize_finding(finding: Finding, profile: str = DEFAULT_PROFILE) -> dict[str, object]:
    """One finding in the given profile (each profile is a superset of the previous one)."""
    profile = _profile(profile)
    out: dict[str, object] = {
        "id": finding.id,
        "host": finding.host_name,
        "port": finding.port,
        "protocol": finding.protocol,
        "plugin_id": finding.plugin_id,
        "plugin_name": finding.plugin_name,
        "severity": finding.severity,
    }
    if profile == "minimal":
        return out
    out.update(
        severity_name=SEVERITY_NAMES.get(finding.severity, str(finding.severity)),
        plugin_family=finding.plugin_family,
        svc_name=finding.svc_name,
        risk_factor=finding.risk_factor,
        cvss=finding.cvss,
        cvss3=finding.cvss3,
        cvss2=finding.cvss2,
        cves=_cves(finding),
        exploit_available=finding.exploit_available,
    )
    if profile == "summary":
        return out
    data = finding.data or {}

    def text(key: str) -> str:
        value = data.get(key, "")
        return "\n".join(value) if isinstance(value, list) else str(value)

    def many(key: str) -> list[str]:
        value = data.get(key, [])
        return list(value) if isinstance(value, list) else [value] if value else []

    output = finding.plugin_output
    out.update(
        synopsis=text("synopsis").strip(),
        solution=text("solution").strip(),
        cvss3_vector=text("cvss3_vector").strip(),
        cvss_vector=text("cvss_vector").strip(),
        see_also=many("see_also"),
        bid=many("bid"),
        cwe=many("cwe"),
        xref=many("xref"),
    )
    if profile == "brief":
        out["plugin_output"] = output[:BRIEF_OUTPUT_CHARS]
        out["plugin_output_truncated"] = len(output) > BRIEF_OUTPUT_CHARS
        return out
    out.update(
        host_ip=getattr(finding, "host_ip", None) or (finding.host.ip if finding.host_id else ""),
        description=text("description").strip(),
        plugin_output=output,
        attributes=finding.attributes,
        data=data,
    )
    return out


@dataclass
class Page:
    page: int
    page_size: int
    total: int
    pages: int
    profile: str
    ordering: str
    results: list[dict[str, object]]

    def as_dict(self) -> dict[str, object]:
        return {
            "page": self.page, "page_size": self.page_size, "total": self.total, "pages": self.pages,
            "profile": self.profile, "ordering": self.ordering, "results": self.results,
        }


def get_page(
    task_id: uuid.UUID | str,
    *,
    filters: Mapping[str, object] | None = None,
    profile: str | None = None,
    ordering: str | None = None,
    page: object = 1,
    page_size: object = DEFAULT_PAGE_SIZE,
) -> Page:
    """One page of findings with the total after filtering. A page past the end is empty, not an error."""
    profile_name = _profile(profile)
    page_number = _positive_int("page", page, 1)
    size = _positive_int("page_size", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    qs = findings_queryset(task_id, filters, ordering=ordering, profile=profile_name)
    total = qs.count()
    start = (page_number - 1) * size
    rows = list(qs[start : start + size]) if start < total else []
    return Page(
        page=page_number,
        page_size=size,
        total=total,
        pages=math.ceil(total / size) if total else 0,
        profile=profile_name,
        ordering=(ordering or DEFAULT_ORDERING).strip(),
        results=[serialize_finding(f, profile_name) for f in rows],
    )


def iter_jsonl(
    task_id: uuid.UUID | str,
    *,
    filters: Mapping[str, object] | None = None,
    profile: str | None = None,
    ordering: str | None = None,
    chunk_size: int = 500,
) -> Iterator[str]:
    """Every matching finding as one JSON document per line, streamed from the database in chunks.

    Filters, profile and ordering are validated before the first line is produced.
    """
    profile_name = _profile(profile)
    qs = findings_queryset(task_id, filters, ordering=ordering, profile=profile_name)

    def lines() -> Iterator[str]:
        for finding in qs.iterator(chunk_size=chunk_size):
            yield json.dumps(serialize_finding(finding, profile_name), ensure_ascii=False) + "\n"

    return lines()


def serialize_host(host: ResultHost, *, with_properties: bool = False) -> dict[str, object]:
    out: dict[str, object] = {
        "name": host.name,
        "ip": host.ip,
        "fqdn": host.fqdn,
        "operating_system": host.operating_system,
        "findings": host.findings_count,
        "severity_counts": host.severity_counts,
        "max_severity": host.max_severity,
        "auth": {"verdict": host.auth_verdict, "cause": host.auth_cause, "evidence": host.auth_evidence},
    }
    if with_properties:
        out["properties"] = host.properties
    return out


def _hosts_queryset(task_id: uuid.UUID | str, verdict: str | None, with_properties: bool) -> QuerySet[ResultHost]:
    qs = ResultHost.objects.filter(task_id=task_id, **PUBLISHED).order_by("seq")
    if verdict:
        verdicts = [v.strip() for v in verdict.split(",") if v.strip()]
        allowed = {v.value for v in AuthStatus}
        bad = [v for v in verdicts if v not in allowed]
        if bad:
            raise FilterError("verdict", f"unknown verdict {bad[0]!r}: use one of {', '.join(sorted(allowed))}")
        qs = qs.filter(auth_verdict__in=verdicts)
    return qs if with_properties else qs.defer("properties")


def list_hosts(
    task_id: uuid.UUID | str, *, verdict: str | None = None, with_properties: bool = False
) -> list[dict[str, object]]:
    """The task's hosts in file order, with their authentication verdicts (optionally only some verdicts)."""
    qs = _hosts_queryset(task_id, verdict, with_properties)
    return [serialize_host(h, with_properties=with_properties) for h in qs]


def get_hosts_page(
    task_id: uuid.UUID | str,
    *,
    verdict: str | None = None,
    with_properties: bool = False,
    page: object = 1,
    page_size: object = DEFAULT_PAGE_SIZE,
) -> Page:
    """One page of hosts in file order (``profile`` is ``hosts``, ``ordering`` is ``file``)."""
    page_number = _positive_int("page", page, 1)
    size = _positive_int("page_size", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    qs = _hosts_queryset(task_id, verdict, with_properties)
    total = qs.count()
    start = (page_number - 1) * size
    rows = list(qs[start : start + size]) if start < total else []
    return Page(page=page_number, page_size=size, total=total, pages=math.ceil(total / size) if total else 0,
                profile="hosts", ordering="file",
                results=[serialize_host(h, with_properties=with_properties) for h in rows])


def results_overview(task: ScanTask) -> dict[str, object]:
    """What a status page shows about a task's results (no findings)."""
    return {
        "auth_status": task.auth_status,
        "summary": task.results_summary,
        "validation": task.validation,
        "warnings": task.warnings,
        "troubleshooting": task.troubleshooting,
        "results_file": {"size": task.results_size, "sha256": task.results_sha256} if task.results_file else None,
    }
