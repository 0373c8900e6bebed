"""Ingest's write path (tasks/results/rows.py, the loader): batches, connection tuning, row building."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from tasks.models import Finding, ResultHost, ScanType, TaskStatus
from tasks.results import ingest as ingest_module
from tasks.results import rows
from tasks.results.ingest import ingest_results
from tests.factories import ScanTaskFactory
from tests.results_support import host, item, nessus, scan_info, write

pytestmark = pytest.mark.django_db


def _task(scan_type=ScanType.UNTRUSTED):
    return ScanTaskFactory(scan_type=scan_type, targets=["192.0.2.0/24"], status=TaskStatus.RUNNING)


def _export(tmp_path, hosts: int, items_per_host: int):
    blocks = [
        host(f"192.0.2.{h + 1}", *(item(10000 + i, f"output {h}/{i} é", severity=i % 5, port=i) for i in
                                   range(items_per_host)), props={"host-ip": f"192.0.2.{h + 1}"})
        for h in range(hosts)
    ]
    return write(tmp_path, nessus(*blocks))


def test_hosts_are_written_per_batch_not_one_transaction_per_host(monkeypatch, tmp_path):
    """Profiled on PostgreSQL: one autocommitted INSERT (and fsync) per host was ~1.4 s of a 50 MB export."""
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 20)
    task = _task()
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    path = _export(tmp_path, hosts=30, items_per_host=4)
    with connection.execute_wrapper(record):  # not CaptureQueriesContext: ingest drops the DEBUG query log
        outcome = ingest_results(task.id, path)
    assert outcome.hosts == 30 and outcome.findings == 120
    host_inserts = [sql for sql in statements if sql.startswith('INSERT INTO "tasks_resulthost"')]
    assert 1 <= len(host_inserts) <= 120 // 20 + 1  # one multi-row INSERT per batch, not 30
    for row in ResultHost.objects.filter(task=task):
        # every finding points at its own host row (host ids are known only after the batch's INSERT)
        assert row.findings.count() == row.findings_count == 4
        assert set(row.findings.values_list("host_name", flat=True)) == {row.name}
        assert row.ip == row.name
    assert list(Finding.objects.filter(task=task).order_by("seq").values_list("seq", flat=True)) == list(range(120))


def test_hosts_without_findings_are_flushed_by_count(monkeypatch, tmp_path):
    monkeypatch.setattr(ingest_module, "HOST_BATCH_SIZE", 5)
    flushes = []
    real_flush = ingest_module._Loader.flush

    def counting_flush(self, batch):
        flushes.append(len(batch.new_hosts))
        real_flush(self, batch)

    monkeypatch.setattr(ingest_module._Loader, "flush", counting_flush)
    task = _task()
    outcome = ingest_results(task.id, _export(tmp_path, hosts=12, items_per_host=0))
    assert outcome.hosts == ResultHost.objects.filter(task=task).count() == 12
    assert max(flushes) <= 5  # memory: pending hosts do not pile up when they have no findings


def test_batches_are_cut_by_the_weight_of_their_rows_too(monkeypatch, tmp_path):
    """Memory: a batch's rows are bounded in characters, not only in findings (three batches are alive at once
    with the writer thread, and one finding's output can be megabytes)."""
    monkeypatch.setattr(ingest_module, "BATCH_CHARS", 5000)
    batches = []
    real_flush = ingest_module._Loader.flush

    def weighing_flush(self, batch):
        batches.append((len(batch.pending), batch.chars))
        real_flush(self, batch)

    monkeypatch.setattr(ingest_module._Loader, "flush", weighing_flush)
    blocks = [host(f"192.0.2.{h + 1}", *(item(10000 + i, f"{h}/{i} " + "x" * 1000) for i in range(2)))
              for h in range(12)]
    task = _task()
    outcome = ingest_results(task.id, write(tmp_path, nessus(*blocks)))
    assert outcome.findings == Finding.objects.filter(task=task).count() == 24
    full = [(n, chars) for n, chars in batches if n]
    assert len(full) >= 4 and all(n <= 6 for n, _ in full)  # cut at the first host past 5,000 characters
    assert all(chars >= 1000 * n for n, chars in full)  # output and JSON columns counted


@pytest.mark.parametrize("per_insert", [1, 4, 50])
def test_sqlite_inserts_several_rows_per_statement_and_the_rest(monkeypatch, tmp_path, per_insert):
    """SQLite: 50 rows per INSERT (the GIL is released once per statement, not per row): 200 MB ingest in
    5.2-6.2 s instead of 6.9-7.9 s. Full statements and the rest must write every row once, in order."""
    monkeypatch.setattr(rows, "ROWS_PER_INSERT", per_insert)
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 30)
    task = _task()
    outcome = ingest_results(task.id, _export(tmp_path, hosts=5, items_per_host=11))  # batches of 33 and 22 rows
    assert outcome.findings == 55
    found = list(Finding.objects.filter(task=task).order_by("seq").values_list("seq", "host_name", "port"))
    assert found == [(h * 11 + i, f"192.0.2.{h + 1}", i) for h in range(5) for i in range(11)]


@pytest.mark.parametrize("batch", [1, 2000])
def test_repeated_host_merges_whether_its_row_is_written_or_pending(monkeypatch, tmp_path, batch):
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", batch)
    text = nessus(
        host("192.0.2.1", scan_info("no"), item(22964, "ssh", port=22, severity=1), props={"os": "linux"}),
        host("192.0.2.2", item(10287, "x")),
        host("192.0.2.1", item(11219, "open", port=80, severity=3), props={"mac-address": "aa"}),
    )
    task = _task(ScanType.AUTHENTICATED)
    outcome = ingest_results(task.id, write(tmp_path, text))
    assert outcome.hosts == 2 and outcome.findings == 4
    merged = ResultHost.objects.get(task=task, name="192.0.2.1")
    assert merged.properties["os"] == "linux" and merged.properties["mac-address"] == "aa"
    assert merged.findings_count == 3 and merged.max_severity == 3
    assert merged.severity_counts == {"0": 1, "1": 1, "2": 0, "3": 1, "4": 0}
    assert merged.findings.count() == 3


def test_sqlite_page_cache_is_raised_for_the_ingest_and_restored(monkeypatch, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's page cache")

    def cache_size():
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size")
            return cursor.fetchone()[0]

    before = cache_size()
    during = []
    real_flush = ingest_module._Loader.flush

    def looking_flush(self, batch):
        during.append(cache_size())  # the writing connection's (the writer thread's, or this one)
        real_flush(self, batch)

    monkeypatch.setattr(ingest_module._Loader, "flush", looking_flush)
    ingest_results(_task().id, _export(tmp_path, hosts=2, items_per_host=2))
    assert during and set(during) == {-rows.INGEST_SQLITE_CACHE_KIB} != {before}
    assert cache_size() == before  # the worker's connection outlives the job

    # restored on failure too
    broken = tmp_path / "broken.nessus"
    broken.write_text(nessus(host("192.0.2.1", item(1, "x")))[:-40])
    with pytest.raises(ingest_module.NessusParseError):
        ingest_results(_task().id, broken)
    assert cache_size() == before


@pytest.mark.django_db(transaction=True)  # real batch transactions: SET LOCAL ends with each of them
@pytest.mark.django_db(transaction=True)  # each batch its own transaction, as in a worker (SET LOCAL ends with it)
def test_postgresql_batches_compress_long_values_with_lz4(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's TOAST compression")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        if not cursor.fetchone()[0]:
            pytest.skip("this PostgreSQL was built without lz4")
    with connection.cursor() as cursor:  # the server's own setting (the test cluster runs with it off)
        cursor.execute("SHOW synchronous_commit")
        synchronous_commit = cursor.fetchone()[0]
    task = _task()
    long_output = "package openssl-1.1.1 is out of date\n" * 400  # ~15 KB, compressible
    ingest_results(task.id, write(tmp_path, nessus(host("192.0.2.1", item(22869, long_output)))))
    finding = Finding.objects.get(task=task)
    assert finding.plugin_output == long_output
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_column_compression(plugin_output) FROM tasks_finding WHERE id = %s", [finding.pk])
        assert cursor.fetchone()[0] == "lz4"
        cursor.execute("SHOW default_toast_compression")  # SET LOCAL: nothing leaks into the connection
        assert cursor.fetchone()[0] == "pglz"
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == synchronous_commit


def test_row_values_serializes_json_as_text_and_refuses_unknown_columns():
    row = dict(zip(rows.COLUMNS, rows.row_values({"attributes": {"pluginName": "é ü"}, "data": {"cve": ["CVE-1"]}}),
                   strict=True))
    assert isinstance(row["attributes"], str) and "é ü" in row["attributes"]  # UTF-8 text, not \u escapes
    assert json.loads(row["attributes"]) == {"pluginName": "é ü"} and json.loads(row["data"]) == {"cve": ["CVE-1"]}
    assert row["seq"] is None or isinstance(row["seq"], int)
    with pytest.raises(ValueError, match="not columns of tasks_finding: \\['nope'\\]"):
        rows.row_values({"nope": 1})
