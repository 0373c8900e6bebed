"""``manage.py validate_nessus FILE [--scan-type …] [--json]`` — parse and validate any .nessus export.

Exit 0 when the file parsed (whatever the verdict), 2 when it is unreadable, malformed or hostile; with
``--fail-on-auth`` (for CI pipelines), 1 when the task-level authentication verdict is ``failed`` or ``partial``.
Verdicts: success, partial, failed, not_applicable, unknown, local_only (the scanner scanning itself).
Needs no database row: it works on exports from scanpool or from anywhere else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tasks.models.states import ScanType
from tasks.results.analysis import SEVERITY_NAMES, Analysis, analyze_file
from tasks.results.parser import NessusParseError, NessusReader

AUTH_FAILURES = ("failed", "partial")
# Scanner text (host names, banners, report and policy names) is attacker-controlled and the text report goes
# to a terminal: C0/C1 controls (CR overwrites a line, newlines forge lines, U+009B is CSI), DEL and the bidi
# overrides/isolates are printed as escapes (docs/security.md).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(line: str) -> str:
    """``line`` with every terminal control character shown as its Python escape (``\\r``, ``\\x9b``…)."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], line)


class Command(BaseCommand):
    help = "Parse and validate a .nessus export: counts, severities, authentication verdicts, warnings."
    # It reads one file and needs no database row, URL or template (as mcp_server): the project's system checks are
    # not its business. They cost a third of every run (~0.35 s of CPU) and could fail a CI pipeline's file check
    # on an unrelated setting.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="path of the .nessus (NessusClientData_v2) export")
        parser.add_argument(
            "--scan-type",
            choices=[s.value for s in ScanType],
            help="what the scan was meant to be; default: inferred from the file (credentials in its policy…)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON document")
        parser.add_argument("--fail-on-auth", action="store_true",
                            help="exit 1 when the authentication verdict is failed or partial (for CI pipelines); "
                                 "the report is printed first")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        try:
            analysis, reader = analyze_file(path, scan_type=options.get("scan_type"))
        except NessusParseError as exc:
            raise CommandError(f"cannot use {path}: {exc.message}" + (f" (line {exc.line})" if exc.line else ""),
                               returncode=2) from None
        if options["json"]:
            self.stdout.write(json.dumps(as_document(analysis, reader), indent=2, ensure_ascii=False))
        else:
            self.stdout.write(as_text(analysis, reader, path))
        if options["fail_on_auth"] and analysis.verdict in AUTH_FAILURES:
            raise CommandError(f"--fail-on-auth: authentication verdict is {analysis.verdict}", returncode=1)


def as_document(analysis: Analysis, reader: NessusReader) -> dict[str, object]:
    """The ``--json`` document (DESIGN §9 keys first, then details)."""
    return {
        "hosts": analysis.hosts,
        "findings": analysis.findings,
        "severity_counts": analysis.severity_counts,
        "host_verdicts": analysis.host_verdicts_dict(),
        "verdict": analysis.verdict,
        "warnings": analysis.warnings,
        "troubleshooting": analysis.troubleshooting,
        "scan_type": analysis.scan_type,
        "scan_type_source": analysis.scan_type_source,
        "should_fail": analysis.should_fail,
        "failure_message": analysis.failure_message,
        "report_name": reader.report_name,
        "validation": analysis.validation,
    }


def as_text(analysis: Analysis, reader: NessusReader, path: Path) -> str:
    lines = [
        f"File:       {path}",
        f"Report:     {reader.report_name or '—'} (policy: {reader.policy.policy_name or '—'})",
        f"Scan type:  {analysis.scan_type} ({analysis.scan_type_source or 'given'})",
        f"Hosts:      {analysis.hosts} ({analysis.hosts_answered} answered)",
        f"Findings:   {analysis.findings}",
        "Severity:   " + "  ".join(
            f"{SEVERITY_NAMES[i]} {analysis.severity_counts[str(i)]}" for i in range(4, -1, -1)
        ),
        f"Auth:       {analysis.verdict}",
    ]
    feed = analysis.validation.get("plugin_feed_version")
    if feed:
        lines.append(f"Feed:       {feed} ({analysis.validation.get('plugin_feed_age_days')} days old at scan time)")
    lines.append("")
    lines.append("Authentication per host:")
    for name, verdict in analysis.host_verdicts.items():
        lines.append(f"  {name:<28} {verdict.verdict:<15} {verdict.cause or '-'}")
        for evidence in verdict.evidence[:3]:
            line = str(evidence.get("line") or "")
            plugin = evidence.get("plugin_id") or ("policy" if line.startswith("Scan policy") else "props")
            lines.append(f"      [{plugin}] {line}")
    if analysis.should_fail:
        lines += ["", f"FAIL: {analysis.failure_message}"]
    if analysis.warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in analysis.warnings]
    if analysis.troubleshooting:
        lines += ["", "Troubleshooting:"]
        for entry in analysis.troubleshooting:
            lines.append(f"  * {entry['title']} ({entry['host_count']} host(s): {', '.join(entry['hosts'])})")
            lines.append(f"    likely cause: {entry['likely_cause']}")
            lines.extend(f"    - {step}" for step in entry["next_steps"])
    return "\n".join(printable(line) for line in lines)
