"""Parse once: the finish step of a scan stores its export, parses it into rows and records the verdicts.

``ingest_results(task_id, nessus_path)`` is what the dispatch engine calls when a scan has finished.
It never changes the task's ``status`` (the engine owns transitions): it returns an
:class:`IngestOutcome` that says whether the task should fail and why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from django.db import connection, reset_queries, transaction
from django.utils import timezone

from tasks.models import Finding, ResultHost, ScanTask
from tasks.models.states import AuthStatus
from tasks.results.analysis import Analysis, ReportAnalyzer, severity_bucket
from tasks.results.parser import Finding as ParsedFinding
from tasks.results.parser import NessusParseError, NessusReader, ReportHostBlock
from tasks.results.rows import BatchTuning, db_task_id, ingest_connection, insert_rows, row_values
from tasks.results.storage import StoredFile, store_results_file
from tasks.results.summary import build_summary

BATCH_SIZE = 2000  # findings per write transaction
HOST_BATCH_SIZE = 500  # new hosts per write transaction (hosts without findings fill no finding batch)
ANALYZE_AFTER = 20000  # findings: a bulk load this big refreshes PostgreSQL's planner statistics

__all__ = ["IngestOutcome", "NessusParseError", "after_bulk_load", "ingest_results"]


@dataclass
class IngestOutcome:
    auth_status: str
    should_fail: bool  # authenticated scan whose credentials failed on every host, or no host answered
    failure_message: str  # one clear sentence for the task's error_message when should_fail
    hosts: int
    findings: int
    warnings: list[str] = field(default_factory=list)
    results_file: str = ""
    results_size: int = 0
    results_sha256: str = ""
    bulk_loaded: bool = False  # PostgreSQL wants after_bulk_load() (statistics, visibility map)


def _first(value: object) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").strip()


def _merge(row: ResultHost, block: ReportHostBlock, counts: list[int]) -> None:
    """Merge a later block of the same host into its ResultHost (properties, addresses, counts)."""
    row.properties = {**row.properties, **block.properties}
    row.ip = row.ip or _first(block.properties.get("host-ip"))[:64]
    row.fqdn = row.fqdn or _first(block.properties.get("host-fqdn"))[:255]
    row.operating_system = row.operating_system or _first(block.properties.get("operating-system"))
    merged = [row.severity_counts.get(str(i), 0) + counts[i] for i in range(5)]
    row.severity_counts = {str(i): n for i, n in enumerate(merged)}
    row.findings_count += len(block.findings)
    row.max_severity = max((i for i, n in enumerate(merged) if n), default=0)


def _float(value: object) -> float | None:
    if isinstance(value, list):
        value = "\n".join(value)
    try:
        return float(value) if value and value.strip() else None  # type: ignore[union-attr, arg-type]
    except ValueError:
        return None


class _WrittenHost(NamedTuple):
    """What the finding rows need of a host already written: a model instance per host was ~9 KB of peak
    memory per host of a 1 GB export (4,461 hosts, measured with the analyzer's state)."""

    pk: int
    name: str


def _finding_row(task_db_id: object, host: ResultHost | _WrittenHost, seq: int, item: ParsedFinding) -> tuple:
    # Direct reads of item.data (not the Finding properties, each a dict lookup and a join): once per finding.
    data = item.data
    if "plugin_output" in data:  # its own column: a C-level copy without it, not a comprehension (profiled)
        data = data.copy()
        del data["plugin_output"]
    cves = item.cves if "cve" in data else ()
    cvss2 = _float(data.get("cvss_base_score"))
    cvss3 = _float(data.get("cvss3_base_score"))
    risk = data.get("risk_factor", "")
    return row_values({
        "task_id": task_db_id,
        "host_id": host.pk,
        "seq": seq,
        "host_name": host.name,
        "plugin_id": item.plugin_id,
        "plugin_name": item.plugin_name[:500],
        "plugin_family": item.plugin_family[:200],
        "severity": item.severity,
        "port": item.port,
        "protocol": item.protocol[:16],
        "svc_name": item.svc_name[:100],
        "risk_factor": (risk if isinstance(risk, str) else "\n".join(risk)).strip()[:32],
        "cvss2": cvss2,
        "cvss3": cvss3,
        "cvss": cvss3 if cvss3 is not None else cvss2,
        "exploit_available": item.exploit_available if "exploit_available" in data else None,
        "cve_index": f" {' '.join(cves)} " if cves else "",
        "plugin_output": item.plugin_output,
        "attributes": item.attributes,
        "data": data,
    })


class _Loader:
    """Writes hosts and findings of one export for one task, batch by batch.

    A batch (new hosts, then their findings) is one short write transaction: nothing is written while the
    file is parsed, so SQLite's write lock is held only for the insert itself, and PostgreSQL commits once
    per batch instead of once per host (one fsync per host was ~1.4 s of a 50 MB export, profiled).
    """

    def __init__(self, task: ScanTask, tuning: BatchTuning) -> None:
        self.task = task
        self.tuning = tuning
        self.hosts: dict[str, ResultHost | _WrittenHost] = {}
        self.new_hosts: list[tuple[str, ResultHost]] = []  # (name in the file, row) not yet written
        self.pending: list[tuple[ResultHost | _WrittenHost, int, ParsedFinding]] = []
        self.seq = 0
        self.task_db_id = db_task_id(task.pk)

    def add(self, block: ReportHostBlock) -> None:
        counts = [0, 0, 0, 0, 0]
        for item in block.findings:
            counts[severity_bucket(item.severity)] += 1
        host = self.hosts.get(block.name)
        if host is None:
            host = ResultHost(
                task=self.task,
                seq=len(self.hosts),
                name=block.name[:255],
                ip=_first(block.properties.get("host-ip"))[:64],
                fqdn=_first(block.properties.get("host-fqdn"))[:255],
                operating_system=_first(block.properties.get("operating-system")),
                properties=block.properties,
                findings_count=len(block.findings),
                severity_counts={str(i): n for i, n in enumerate(counts)},
                max_severity=max((i for i, n in enumerate(counts) if n), default=0),
            )
            self.hosts[block.name] = host
            self.new_hosts.append((block.name, host))
        elif host.pk is None:  # the same host again, not written yet: merge in memory
            _merge(host, block, counts)
        else:  # the same host again, already written: merge into its row
            row = ResultHost.objects.get(pk=host.pk)
            _merge(row, block, counts)
            with transaction.atomic():
                row.save()
        for item in block.findings:
            self.pending.append((host, self.seq, item))
            self.seq += 1
        if len(self.pending) >= BATCH_SIZE or len(self.new_hosts) >= HOST_BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self.pending and not self.new_hosts:
            return
        with transaction.atomic():  # one short write transaction per batch (SQLite's lock is shared)
            self.tuning.begin_batch()
            if self.new_hosts:
                ResultHost.objects.bulk_create([host for _name, host in self.new_hosts])  # sets pk (RETURNING)
            task_db_id = self.task_db_id
            insert_rows(_finding_row(task_db_id, host, seq, item) for host, seq, item in self.pending)
        for name, host in self.new_hosts:
            # Keep only what the finding rows need: memory stays small however many hosts there are.
            self.hosts[name] = _WrittenHost(host.pk, host.name)
        self.new_hosts = []
        self.pending = []
        # With DEBUG on (development workers), Django keeps the SQL of the last 9000 queries, here
        # with hosts' properties in it: hundreds of MB for a large export. Drop it as we go.
        reset_queries()

    def save_verdicts(self, analysis: Analysis) -> None:
        rows = []
        for name, host in self.hosts.items():
            verdict = analysis.host_verdicts[name]
            rows.append(
                ResultHost(pk=host.pk, auth_verdict=verdict.verdict, auth_cause=verdict.cause,
                           auth_evidence=verdict.evidence)
            )
        ResultHost.objects.bulk_update(rows, ["auth_verdict", "auth_cause", "auth_evidence"], batch_size=BATCH_SIZE)


DELETE_BATCH = 5000


def _clear_results(task_id: uuid.UUID) -> None:
    """Delete the task's rows a few thousand at a time: each chunk is its own short write transaction."""
    for model in (Finding, ResultHost):
        while True:
            ids = list(model.objects.filter(task_id=task_id).values_list("pk", flat=True)[:DELETE_BATCH])
            if not ids:
                break
            with transaction.atomic():
                model.objects.filter(pk__in=ids).delete()


def _hide_results(task_id: uuid.UUID) -> None:
    """Results are served only while ``results_summary`` is set (tasks.results.query): clearing it hides
    whatever rows exist, so rows written batch by batch stay invisible until the final commit."""
    ScanTask.objects.filter(pk=task_id).update(
        auth_status=AuthStatus.UNKNOWN, validation={}, warnings=[], troubleshooting=[], results_summary={},
        updated_at=timezone.now(),
    )


def ingest_results(task_id: uuid.UUID, nessus_path: Path, *, move: bool = False) -> IngestOutcome:
    """Store, parse and validate a finished scan's export; save verdicts, stats and summary on the task.

    Idempotent: the task's previous result rows are replaced. Raises :class:`NessusParseError` when the
    file is unreadable, malformed or hostile; the previous results are then cleared too (the stored file,
    its size and sha256 stay recorded for inspection). Does not change ``status``.
    """
    task = ScanTask.objects.only("id", "scan_type", "targets").get(pk=task_id)
    source = Path(nessus_path)
    if not source.is_file():
        raise NessusParseError("cannot read the file: it does not exist or is not a regular file", path=source)
    stored = store_results_file(task.pk, source, move=move)
    ScanTask.objects.filter(pk=task.pk).update(
        results_file=str(stored.path), results_size=stored.size, results_sha256=stored.sha256,
        updated_at=timezone.now(),
    )
    _hide_results(task.pk)
    _clear_results(task.pk)
    try:
        with ingest_connection() as tuning:
            return _ingest(task, stored, tuning)
    except BaseException:
        _clear_results(task.pk)  # nothing half-written stays behind (and it was never visible)
        _hide_results(task.pk)
        raise


def _ingest(task: ScanTask, stored: StoredFile, tuning: BatchTuning) -> IngestOutcome:
    reader = NessusReader(stored.path)
    analyzer = ReportAnalyzer(scan_type=task.scan_type, scan_type_source="task", targets=list(task.targets or []))
    loader = _Loader(task, tuning)
    for block in reader:
        analyzer.add(block)
        loader.add(block)
    loader.flush()
    analysis = analyzer.finish(reader.policy, parse_warnings=reader.warnings)
    with transaction.atomic():  # the one commit that makes the results visible
        outcome = _publish(task, stored, reader, loader, analysis)
    outcome.bulk_loaded = connection.vendor == "postgresql" and loader.seq >= ANALYZE_AFTER
    return outcome


def after_bulk_load(outcome: IngestOutcome) -> None:
    """After a bulk load on PostgreSQL (``outcome.bulk_loaded``): fresh statistics and visibility map for the
    findings. The finish step calls it once the task is completed (the results are already visible): without
    statistics the first results pages of a 1 GB export were planned at ~0.5 s instead of ~20 ms; without
    the visibility map (set by VACUUM, not by ANALYZE) a page's count of 80,000 findings fetched every row
    from the heap instead of an index-only scan, 145 to 183 ms per page until autovacuum happened to run
    (make bench). VACUUM skips the pages already all-visible, so it costs about the new rows. It cannot run
    inside a transaction: a caller's atomic block gets ANALYZE only."""
    if not outcome.bulk_loaded:
        return
    table = connection.ops.quote_name(Finding._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}" if connection.in_atomic_block else f"VACUUM (ANALYZE) {table}")


def _publish(
    task: ScanTask, stored: StoredFile, reader: NessusReader, loader: _Loader, analysis: Analysis
) -> IngestOutcome:
    loader.save_verdicts(analysis)
    summary = build_summary(
        analysis, stored, task_id=task.pk, report_name=reader.report_name, policy_name=reader.policy.policy_name
    )
    validation = {**analysis.validation, "file": {"size": stored.size, "sha256": stored.sha256}}
    ScanTask.objects.filter(pk=task.pk).update(
        auth_status=analysis.verdict,
        validation=validation,
        warnings=analysis.warnings,
        troubleshooting=analysis.troubleshooting,
        results_summary=summary,
        updated_at=timezone.now(),
    )
    return IngestOutcome(
        auth_status=analysis.verdict,
        should_fail=analysis.should_fail,
        failure_message=analysis.failure_message,
        hosts=analysis.hosts,
        findings=analysis.findings,
        warnings=list(analysis.warnings),
        results_file=str(stored.path),
        results_size=stored.size,
        results_sha256=stored.sha256,
    )
