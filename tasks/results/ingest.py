"""Parse once: the finish step of a scan stores its export, parses it into rows and records the verdicts.

``ingest_results(task_id, nessus_path)`` is what the dispatch engine calls when a scan has finished.
It never changes the task's ``status`` (the engine owns transitions): it returns an
:class:`IngestOutcome` that says whether the task should fail and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
from tasks.results.rows import COLUMNS, BatchTuning, db_task_id, ingest_connection, insert_rows, row_values
from tasks.results.storage import StoredFile, delete_results_file, store_results_file
from tasks.results.summary import build_summary
from tasks.results.writer import BatchWriter, can_write_in_thread

BATCH_SIZE = 2000  # findings per write transaction, at most
# Characters of long text (plugin output, the JSON columns) per write transaction, at most: what a batch's rows
# weigh in memory, whatever the size of the findings. With the writer thread three batches are alive at once
# (built, queued, written): 2,000 findings of a real export were ~7.7 MiB of rows each and a 1 GB ingest peaked at
# 127.5 MiB on SQLite; with this limit (~1,100 findings of a real export per batch) 116.1 MiB (VmHWM).
BATCH_CHARS = 4_000_000
HOST_BATCH_SIZE = 500  # new hosts per write transaction (hosts without findings fill no finding batch)
WRITER_THREAD = True  # write batches on a thread of their own when the database allows (tasks/results/writer.py)
WRITER_QUEUE_DEPTH = 1  # full batches waiting for the writer (each one is memory, see BATCH_CHARS)
ANALYZE_AFTER = 20000  # findings: a bulk load this big refreshes PostgreSQL's planner statistics

__all__ = ["IngestOutcome", "NessusParseError", "after_bulk_load", "discard_results", "ingest_results"]


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


class _Repeat(NamedTuple):
    """A later block of a host already seen: what its row needs (not the block's findings, which are rows)."""

    properties: dict[str, str | list[str]]
    counts: list[int]  # findings by severity bucket
    findings: int


def _merge(row: ResultHost, repeat: _Repeat) -> None:
    """Merge a later block of the same host into its ResultHost (properties, addresses, counts)."""
    properties, counts = repeat.properties, repeat.counts
    row.properties = {**row.properties, **properties}
    row.ip = row.ip or _first(properties.get("host-ip"))[:64]
    row.fqdn = row.fqdn or _first(properties.get("host-fqdn"))[:255]
    row.operating_system = row.operating_system or _first(properties.get("operating-system"))
    merged = [row.severity_counts.get(str(i), 0) + counts[i] for i in range(5)]
    row.severity_counts = {str(i): n for i, n in enumerate(merged)}
    row.findings_count += repeat.findings
    row.max_severity = max((i for i, n in enumerate(merged) if n), default=0)


def _float(value: object) -> float | None:
    if isinstance(value, list):
        value = "\n".join(value)
    try:
        return float(value) if value and value.strip() else None  # type: ignore[union-attr, arg-type]
    except ValueError:
        return None


_HOST_ID, _OUTPUT, _ATTRIBUTES, _DATA = (COLUMNS.index(c) for c in ("host_id", "plugin_output", "attributes", "data"))


def _finding_row(task_db_id: object, host_name: str, seq: int, item: ParsedFinding) -> tuple:
    """The finding's row, JSON encoded, without its host's id (``host_id`` is None: known once the host is
    written). Built on the parsing thread: a batch of rows takes ~40 % less memory than its parsed findings."""
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
        "host_id": None,
        "seq": seq,
        "host_name": host_name,
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


@dataclass
class _Batch:
    """One write transaction's worth: built by the parsing thread, written by the writer (tasks/results/writer.py).
    Findings and merges name their host by its name in the file: its row id is known only once written."""

    new_hosts: list[tuple[str, ResultHost]] = field(default_factory=list)  # (name in the file, row) to insert
    merges: list[tuple[str, _Repeat]] = field(default_factory=list)  # hosts whose row was handed over already
    pending: list[tuple[str, tuple]] = field(default_factory=list)  # (host name in the file, row without host_id)
    chars: int = 0  # long text in the rows (see BATCH_CHARS)


_HANDED_OVER = None  # a host whose row is in a batch already given to the writer


class _Loader:
    """Writes hosts and findings of one export for one task, batch by batch.

    A batch (new hosts, then their findings) is one short write transaction that spans its insert only, never
    the parsing of the file, so SQLite's write lock is held only for the insert itself, and PostgreSQL commits once
    per batch instead of once per host (one fsync per host was ~1.4 s of a 50 MB export, profiled).

    ``add`` runs on the parsing thread and returns each full batch; ``flush`` writes one batch, on the
    writer's thread (or inline): only ``flush`` touches the database and ``written``.
    """

    def __init__(self, task: ScanTask) -> None:
        self.task = task
        self.tuning = BatchTuning()
        self.hosts: dict[str, ResultHost | None] = {}  # parsing side: None once handed to the writer
        self.batch = _Batch()
        self.written: dict[str, int] = {}  # writing side: the row id of every host written, by name in the file
        self.seq = 0
        self.task_db_id = db_task_id(task.pk)

    @contextmanager
    def session(self) -> Iterator[None]:
        """The writing connection's tuning for the whole load (entered on the writing thread)."""
        with ingest_connection() as tuning:
            self.tuning = tuning
            yield

    def add(self, block: ReportHostBlock) -> _Batch | None:
        """Take one host block; return the batch to write when it is full."""
        counts = [0, 0, 0, 0, 0]
        for item in block.findings:
            counts[severity_bucket(item.severity)] += 1
        batch = self.batch
        name = block.name
        if name not in self.hosts:
            host = ResultHost(
                task=self.task,
                seq=len(self.hosts),
                name=name[:255],
                ip=_first(block.properties.get("host-ip"))[:64],
                fqdn=_first(block.properties.get("host-fqdn"))[:255],
                operating_system=_first(block.properties.get("operating-system")),
                properties=block.properties,
                findings_count=len(block.findings),
                severity_counts={str(i): n for i, n in enumerate(counts)},
                max_severity=max((i for i, n in enumerate(counts) if n), default=0),
            )
            self.hosts[name] = host
            batch.new_hosts.append((name, host))
        else:  # the same host again: merged in memory, or into its row by the writer once handed over
            repeat = _Repeat(block.properties, counts, len(block.findings))
            if (pending_host := self.hosts[name]) is not _HANDED_OVER:
                _merge(pending_host, repeat)
            else:
                batch.merges.append((name, repeat))
        task_db_id, host_name, seq, chars = self.task_db_id, name[:255], self.seq, batch.chars
        append = batch.pending.append
        for item in block.findings:
            row = _finding_row(task_db_id, host_name, seq, item)
            chars += len(row[_OUTPUT]) + len(row[_ATTRIBUTES]) + len(row[_DATA])
            append((name, row))
            seq += 1
        self.seq, batch.chars = seq, chars
        if len(batch.pending) >= BATCH_SIZE or chars >= BATCH_CHARS or len(batch.new_hosts) >= HOST_BATCH_SIZE:
            return self.take()
        return None

    def take(self) -> _Batch:
        """Hand over the batch being built (possibly empty) and start a new one."""
        batch, self.batch = self.batch, _Batch()
        for name, _host in batch.new_hosts:
            # The parsing side keeps no row: memory stays small however many hosts there are.
            self.hosts[name] = _HANDED_OVER
        return batch

    def flush(self, batch: _Batch) -> None:
        """Write one batch in its own transaction (SQLite's lock is shared with the web and other workers)."""
        if not batch.pending and not batch.new_hosts and not batch.merges:
            return
        written = self.written
        with transaction.atomic():
            self.tuning.begin_batch()
            for name, repeat in batch.merges:  # hosts repeated in the file, written by an earlier batch
                row = ResultHost.objects.get(pk=written[name])
                _merge(row, repeat)
                row.save()
            if batch.new_hosts:
                ResultHost.objects.bulk_create([host for _name, host in batch.new_hosts])  # sets pk (RETURNING)
                for name, host in batch.new_hosts:
                    written[name] = host.pk
            h = _HOST_ID
            insert_rows((*row[:h], written[name], *row[h + 1:]) for name, row in batch.pending)
        # With DEBUG on (development workers), Django keeps the SQL of the last 9000 queries, here
        # with hosts' properties in it: hundreds of MB for a large export. Drop it as we go.
        reset_queries()

    def save_verdicts(self, analysis: Analysis) -> None:
        """One UPDATE per host, parameters streamed from a generator. ``bulk_update`` of model instances (with
        its CASE statements, kept in the DEBUG query log) raised a 1 GB ingest's peak memory from 108 to 135 MiB
        (4,461 hosts, VmHWM before and after it)."""
        meta = ResultHost._meta
        evidence = meta.get_field("auth_evidence")
        quote = connection.ops.quote_name
        fields = ("auth_verdict", "auth_cause", "auth_evidence")
        columns = ", ".join(f"{quote(meta.get_field(f).column)} = %s" for f in fields)
        sql = f"UPDATE {quote(meta.db_table)} SET {columns} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
        host_verdicts = analysis.host_verdicts
        params = (
            (str(v.verdict), str(v.cause), evidence.get_db_prep_save(v.evidence, connection), pk)
            for name, pk in self.written.items()
            for v in (host_verdicts[name],)
        )
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


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
        return _ingest(task, stored)
    except BaseException:
        _clear_results(task.pk)  # nothing half-written stays behind (and it was never visible)
        _hide_results(task.pk)
        raise


# A task's fields with no results shown (a retry's new attempt, until it stores its own).
HIDDEN_RESULTS = {"auth_status": AuthStatus.UNKNOWN, "validation": {}, "warnings": [], "troubleshooting": [],
                  "results_summary": {}, "results_file": "", "results_size": None, "results_sha256": ""}


def discard_results(task_id: uuid.UUID) -> None:
    """Remove a task's results: hidden first, then its rows, its stored file and the file's record."""
    _hide_results(task_id)
    _clear_results(task_id)
    delete_results_file(task_id)
    ScanTask.objects.filter(pk=task_id).update(results_file="", results_size=None, results_sha256="",
                                               updated_at=timezone.now())


def _ingest(task: ScanTask, stored: StoredFile) -> IngestOutcome:
    reader = NessusReader(stored.path)
    analyzer = ReportAnalyzer(scan_type=task.scan_type, scan_type_source="task", targets=list(task.targets or []))
    loader = _Loader(task)
    threaded = WRITER_THREAD and can_write_in_thread()
    # The writer thread leaves its connection closed and its last batch committed when the block exits, error
    # or not: the caller's clean-up (_clear_results) never races a write.
    with BatchWriter(loader.flush, loader.session, threaded=threaded, depth=WRITER_QUEUE_DEPTH) as writer:
        for block in reader:
            analyzer.add(block)
            if (batch := loader.add(block)) is not None:
                writer.put(batch)
        writer.put(loader.take())
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
