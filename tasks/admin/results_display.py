"""Readable HTML for a task's results on its admin page: summary, authentication verdicts, warnings,
troubleshooting and links (never raw JSON). Every value is escaped by ``format_html``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from tasks.models import AuthStatus, ResultHost, ScanTask
from tasks.models.results import AuthCause
from tasks.results.analysis import SEVERITY_NAMES
from tasks.results.storage import results_path

# Hosts listed on the task page; the rest are one click away on the hosts list.
MAX_HOSTS_ON_PAGE = 50
VERDICT_COLOURS = {
    AuthStatus.SUCCESS: "#2e7d32",
    AuthStatus.PARTIAL: "#c68a00",
    AuthStatus.FAILED: "#ba2121",
    AuthStatus.UNKNOWN: "#666",
    AuthStatus.NOT_APPLICABLE: "#666",
    AuthStatus.LOCAL_ONLY: "#8e5bb5",
}
EMPTY = mark_safe('<span class="quiet">—</span>')


def coloured_verdict(verdict: str) -> SafeString:
    label = AuthStatus(verdict).label if verdict in AuthStatus.values else verdict
    return format_html('<b style="color:{}">{}</b>', VERDICT_COLOURS.get(verdict, "#666"), label)


def evidence_html(evidence: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None) -> SafeString:
    if not evidence:
        return EMPTY
    items = [evidence] if isinstance(evidence, Mapping) else list(evidence)
    return format_html(
        '<ul style="margin:0;padding-left:1em">{}</ul>',
        format_html_join(
            "", "<li>plugin {}{}: <code>{}</code></li>",
            ((e.get("plugin_id") or "—", f" port {e['port']}" if e.get("port") else "", e.get("line", ""))
             for e in items),
        ),
    )  # fmt: skip


def summary_html(task: ScanTask) -> SafeString:
    summary = task.results_summary or {}
    if not summary:
        return EMPTY
    counts = summary.get("severity_counts") or {}
    rows = [
        ("Hosts", f"{summary.get('hosts', 0)} ({summary.get('hosts_answered', 0)} answered, "
                  f"{summary.get('hosts_credentialed', 0)} credentialed)"),
        ("Findings", summary.get("findings", 0)),
        ("By severity", ", ".join(f"{SEVERITY_NAMES[i]} {counts.get(str(i), 0)}" for i in range(4, -1, -1))),
        ("Report / policy", f"{summary.get('report_name') or '—'} / {summary.get('policy_name') or '—'}"),
        ("Nessus version", summary.get("nessus_version") or "—"),
    ]  # fmt: skip
    table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    top = summary.get("top_findings") or []
    top_html = format_html_join(
        "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        ((t.get("severity_name", ""), t.get("plugin_id", ""), t.get("plugin_name", ""), t.get("hosts", ""),
          t.get("cvss") if t.get("cvss") is not None else "—") for t in top),
    )  # fmt: skip
    if top:
        top_html = format_html(
            "<p><b>Top findings</b></p><table><tr><th>severity</th><th>plugin</th><th>name</th><th>hosts</th>"
            "<th>CVSS</th></tr>{}</table>", top_html,
        )  # fmt: skip
    return format_html("<table>{}</table>{}", table, top_html)


def auth_html(task: ScanTask) -> SafeString:
    """The task verdict, then one row per host (verdict, cause, evidence), at most MAX_HOSTS_ON_PAGE."""
    hosts = list(
        ResultHost.objects.filter(task=task)
        .only("name", "auth_verdict", "auth_cause", "auth_evidence")
        .order_by("seq")[: MAX_HOSTS_ON_PAGE + 1]
    )
    head = format_html("Task verdict: {}", coloured_verdict(task.auth_status))
    if not hosts:
        return head
    causes = dict(AuthCause.choices)
    rows = format_html_join(
        "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        ((h.name, coloured_verdict(h.auth_verdict), causes.get(h.auth_cause, h.auth_cause) if h.auth_cause else "—",
          evidence_html(h.auth_evidence)) for h in hosts[:MAX_HOSTS_ON_PAGE]),
    )  # fmt: skip
    more = ""
    if len(hosts) > MAX_HOSTS_ON_PAGE:
        more = format_html('<p><a href="{}">All hosts of this task …</a></p>', hosts_url(task))
    return format_html(
        "{}<table><tr><th>host</th><th>verdict</th><th>cause</th><th>evidence</th></tr>{}</table>{}", head, rows, more
    )


def warnings_html(task: ScanTask) -> SafeString:
    if not task.warnings:
        return EMPTY
    return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((w,) for w in task.warnings)))


def troubleshooting_html(task: ScanTask) -> SafeString:
    if not task.troubleshooting:
        return EMPTY
    blocks = []
    for entry in task.troubleshooting:
        hosts = ", ".join(str(h) for h in entry.get("hosts") or [])
        steps = format_html_join("", "<li>{}</li>", ((s,) for s in entry.get("next_steps") or []))
        blocks.append(format_html(
            "<div><b>{}</b> — {} host(s): {}<br>Likely cause: {}<br>Evidence: {}<ol>{}</ol></div>",
            entry.get("title") or entry.get("cause", ""), entry.get("host_count", 0), hosts,
            entry.get("likely_cause", ""), evidence_html(entry.get("evidence")), steps,
        ))  # fmt: skip
    return format_html_join("", "{}", ((b,) for b in blocks))


def validation_html(task: ScanTask) -> SafeString:
    if not task.validation:
        return EMPTY
    rows = ((key.replace("_", " "), _plain(value)) for key, value in sorted(task.validation.items()))
    return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "—"
    return "—" if value is None or value == "" else str(value)


def findings_url(task: ScanTask) -> str:
    return f"{reverse('admin:tasks_finding_changelist')}?task={task.pk}"


def hosts_url(task: ScanTask) -> str:
    return f"{reverse('admin:tasks_resulthost_changelist')}?task={task.pk}"


def download_url(task: ScanTask) -> str:
    return reverse("admin:tasks_scantask_results_file", args=[task.pk])


def links_html(task: ScanTask) -> SafeString:
    links = [
        format_html('<a href="{}">Findings</a>', findings_url(task)),
        format_html('<a href="{}">Hosts</a>', hosts_url(task)),
    ]
    if results_path(task.pk).is_file():
        size = f" ({task.results_size:,} bytes)" if task.results_size else ""
        links.append(format_html('<a href="{}">Raw .nessus file{}</a>', download_url(task), size))
    else:
        links.append(mark_safe('<span class="quiet">no raw .nessus file stored</span>'))
    return format_html_join(" · ", "{}", ((link,) for link in links))
