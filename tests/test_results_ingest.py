"""ingest_results: the file is stored and hashed, parsed once into rows, verdicts and summary saved."""

from __future__ import annotations

import hashlib

import pytest
from django.conf import settings

from tasks.models import Finding, ResultHost, ScanTask, ScanType, TaskStatus
from tasks.results.ingest import IngestOutcome, ingest_results
from tasks.results.parser import NessusParseError
from tasks.results.storage import results_path
from tests.factories import ScanTaskFactory
from tests.results_support import EXPECTED, fixture, host, item, nessus, scan_info, write

pytestmark = pytest.mark.django_db


def _task(scan_type=ScanType.UNTRUSTED, targets=None, status=TaskStatus.RUNNING):
    return ScanTaskFactory(scan_type=scan_type, targets=targets or ["192.0.2.10"], status=status)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_fixture_ingests_with_the_right_counts(name):
    hosts, items, severities = EXPECTED[name]
    task = _task()
    outcome = ingest_results(task.id, fixture(name))
    assert isinstance(outcome, IngestOutcome)
    assert (outcome.hosts, outcome.findings) == (hosts, items)
    assert ResultHost.objects.filter(task=task).count() == hosts
    assert Finding.objects.filter(task=task).count() == items
    for severity, expected in enumerate(severities):
        assert Finding.objects.filter(task=task, severity=severity).count() == expected
    task.refresh_from_db()
    assert task.results_summary["severity_counts"] == {str(i): n for i, n in enumerate(severities)}
    assert task.status == TaskStatus.RUNNING  # the engine owns transitions


def test_mixed_auth_task_rows_file_and_summary():
    task = _task(ScanType.AUTHENTICATED, targets=["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    source = fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus")
    outcome = ingest_results(task.id, source)
    # 10.0.0.3 is the scanner itself (local_only): the supplied key worked on no remote host.
    assert outcome.auth_status == "failed" and outcome.should_fail
    assert "did not work on any of the 2 host(s)" in outcome.failure_message
    task.refresh_from_db()
    stored = results_path(task.id)
    assert stored.parent == settings.SCANPOOL_RESULTS_DIR and stored.is_file() and source.is_file()
    assert task.results_file == str(stored) == outcome.results_file
    assert task.results_size == source.stat().st_size == 1_770_864
    assert task.results_sha256 == hashlib.sha256(source.read_bytes()).hexdigest() == (
        "3a90ea982cdf55da6ce95bdd969cb144d4fc9e52971172ebf6bab279e61b80dd")
    assert task.auth_status == "failed"
    assert task.validation["hosts_scanned"] == 3 and task.validation["hosts_credentialed"] == 0
    assert task.validation["hosts_local_only"] == ["10.0.0.3"]
    assert task.validation["failures_by_cause"] == {"credentials_rejected": 2}
    assert task.validation["scan_type_source"] == "task"
    assert task.validation["targets_without_results"] == ["10.0.0.4"]
    assert task.warnings == outcome.warnings and len(task.warnings) == 2
    assert task.troubleshooting[0]["cause"] == "credentials_rejected"
    summary = task.results_summary
    assert summary["hosts"] == 3 and summary["findings"] == 149 and summary["file_size"] == 1_770_864
    assert summary["by_severity"] == {"critical": 1, "high": 1, "medium": 5, "low": 2, "info": 140}
    top = summary["top_findings"]
    assert top[0]["severity"] == 4 and [t["severity"] for t in top] == sorted((t["severity"] for t in top),
                                                                             reverse=True)
    distinct = Finding.objects.filter(task=task, severity__gte=1).values("plugin_id").distinct().count()
    assert len(top) == distinct == 8 and sum(t["instances"] for t in top) == 9  # 1+1+5+2 findings
    assert max(t["hosts"] for t in top) == 2
    hosts = {h.name: h for h in ResultHost.objects.filter(task=task)}
    assert (hosts["10.0.0.1"].auth_verdict, hosts["10.0.0.1"].auth_cause) == ("failed", "credentials_rejected")
    assert hosts["10.0.0.1"].auth_evidence[0]["plugin_id"] == 104410
    assert (hosts["10.0.0.3"].auth_verdict, hosts["10.0.0.3"].auth_cause) == ("local_only", "scanner_itself")
    assert hosts["10.0.0.2"].ip == "10.0.0.2" and "Ubuntu 18.04" in hosts["10.0.0.2"].operating_system
    assert hosts["10.0.0.2"].properties["ssh-fingerprint"].startswith("SSH-2.0-OpenSSH_7.6p1")
    assert sum(h.findings_count for h in hosts.values()) == 149
    critical = Finding.objects.get(task=task, severity=4)
    assert critical.host_id == hosts[critical.host_name].pk and critical.cvss is not None
    assert critical.data["description"] and critical.attributes["severity"] == "4"


def test_ingest_is_idempotent():
    task = _task()
    first = ingest_results(task.id, fixture("msf-autoshell-11hosts.nessus"))
    rows = list(Finding.objects.filter(task=task).order_by("seq").values_list("host_name", "plugin_id", "port", "seq"))
    second = ingest_results(task.id, fixture("msf-autoshell-11hosts.nessus"))
    assert (first.hosts, first.findings, first.results_sha256) == (second.hosts, second.findings,
                                                                   second.results_sha256)
    assert Finding.objects.filter(task=task).count() == 268 and ResultHost.objects.filter(task=task).count() == 11
    assert list(Finding.objects.filter(task=task).order_by("seq").values_list(
        "host_name", "plugin_id", "port", "seq")) == rows
    # Another export for the same task replaces the rows, other tasks keep theirs.
    other = _task()
    ingest_results(other.id, fixture("mulval-untrusted-no-credentials.nessus"))
    ingest_results(task.id, fixture("ruby-nessus-nessus4-2hosts.nessus"))
    assert Finding.objects.filter(task=task).count() == 69
    assert Finding.objects.filter(task=other).count() == 102


def test_authenticated_scan_failed_everywhere_should_fail():
    task = _task(ScanType.AUTHENTICATED, targets=["192.168.2.100", "192.168.2.101", "192.168.2.104"])
    outcome = ingest_results(task.id, fixture("libnessus-3hosts-ssh-auth-failure.nessus"))
    assert outcome.should_fail and outcome.auth_status == "failed"
    assert outcome.failure_message.startswith("Authenticated scan failed")
    task.refresh_from_db()
    assert task.auth_status == "failed" and task.status == TaskStatus.RUNNING
    assert {t["cause"] for t in task.troubleshooting} == {"credentials_rejected", "local_checks_not_run"}
    assert task.validation["failures_by_cause"] == {"credentials_rejected": 2, "local_checks_not_run": 1}


def test_untrusted_scan_is_not_applicable():
    task = _task(ScanType.UNTRUSTED, targets=["testphp.vulnweb.com"])
    outcome = ingest_results(task.id, fixture("defectdojo-untrusted-basic-network.nessus"))
    assert outcome.auth_status == "not_applicable" and not outcome.should_fail and outcome.warnings == []
    task.refresh_from_db()
    assert task.troubleshooting == [] and task.validation["targets_without_results"] == []


def test_no_hosts_answered_should_fail(tmp_path):
    task = _task(targets=["192.0.2.250"])
    outcome = ingest_results(task.id, write(tmp_path, nessus(ssh_password=False)))
    assert outcome.should_fail and outcome.hosts == 0 and "192.0.2.250" in outcome.failure_message
    task.refresh_from_db()
    assert task.results_summary["hosts"] == 0 and task.warnings[0].startswith("No hosts answered")


def test_repeated_host_is_merged_into_one_row(tmp_path):
    text = nessus(
        host("10.1.1.1", scan_info("no"), item(22964, "ssh", port=22, severity=1), props={"os": "linux"}),
        host("10.1.1.2", item(10287, "x")),
        host("10.1.1.1", item(11219, "open", port=80, severity=3), props={"mac-address": "aa"}),
    )
    task = _task(ScanType.AUTHENTICATED)
    outcome = ingest_results(task.id, write(tmp_path, text))
    assert outcome.hosts == 2 and outcome.findings == 4
    merged = ResultHost.objects.get(task=task, name="10.1.1.1")
    assert merged.properties["os"] == "linux" and merged.properties["mac-address"] == "aa"
    assert merged.findings_count == 3 and merged.max_severity == 3
    assert merged.severity_counts == {"0": 1, "1": 1, "2": 0, "3": 1, "4": 0}
    assert merged.findings.count() == 3 and merged.auth_verdict == "failed"


def test_unparseable_file_raises_and_clears_previous_results(tmp_path):
    task = _task()
    ingest_results(task.id, fixture("mulval-untrusted-no-credentials.nessus"))
    data = fixture("msf-autoshell-11hosts.nessus").read_bytes()
    cut = tmp_path / "cut.nessus"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(NessusParseError, match="truncated"):
        ingest_results(task.id, cut)
    assert not Finding.objects.filter(task=task).exists() and not ResultHost.objects.filter(task=task).exists()
    task.refresh_from_db()
    assert task.results_summary == {} and task.auth_status == "unknown"
    assert task.results_size == cut.stat().st_size  # the bad file stays recorded for inspection
    assert results_path(task.id).read_bytes() == cut.read_bytes()


def test_hostile_file_is_refused_without_rows(tmp_path):
    task = _task()
    path = write(tmp_path, '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
                           '<NessusClientData_v2><Report name="r"><ReportHost name="h"><HostProperties>'
                           '<tag name="a">&e;</tag></HostProperties></ReportHost></Report></NessusClientData_v2>')
    with pytest.raises(NessusParseError, match="DTD"):
        ingest_results(task.id, path)
    assert not ResultHost.objects.filter(task=task).exists()


def test_move_renames_the_source_and_unknown_task_raises(tmp_path):
    task = _task()
    source = tmp_path / "download.nessus"
    source.write_bytes(fixture("ruby-nessus-nessus4-2hosts.nessus").read_bytes())
    outcome = ingest_results(task.id, source, move=True)
    assert not source.exists() and results_path(task.id).is_file() and outcome.findings == 69
    # The file already in place (the engine may download straight there): ingest again from it.
    again = ingest_results(task.id, results_path(task.id))
    assert again.results_sha256 == outcome.results_sha256
    import uuid

    with pytest.raises(ScanTask.DoesNotExist):
        ingest_results(uuid.uuid4(), results_path(task.id))
    with pytest.raises(NessusParseError, match="does not exist"):
        ingest_results(task.id, tmp_path / "never-downloaded.nessus")
    assert Finding.objects.filter(task=task).count() == 69  # nothing touched


def test_severity_outside_0_to_4_is_clamped_for_every_counter_and_filter(tmp_path):
    """Issue #14: -1 crashed ingest (IntegrityError); 5 was counted critical but severity=4 did not find it."""
    from tasks.results.query import get_page

    real = fixture("ruby-nessus-metasploitable-anonymized.nessus").read_text(encoding="utf-8")
    first = real.index('severity="3"')
    text = real[:first] + 'severity="5"' + real[first + 12:]
    second = text.index('severity="0"')
    text = text[:second] + 'severity="-1"' + text[second + 12:]
    task = _task()
    outcome = ingest_results(task.id, write(tmp_path, text))
    assert outcome.findings == 155
    task.refresh_from_db()
    counts = task.results_summary["severity_counts"]
    assert counts == {"0": 118, "1": 8, "2": 16, "3": 4, "4": 9}  # one high became critical
    assert Finding.objects.filter(task=task, severity=4).count() == counts["4"]
    assert get_page(task.id, filters={"severity": "4"}).total == 9
    assert get_page(task.id, filters={"severity": ">=3"}).total == 13
    assert Finding.objects.filter(task=task, attributes__severity="5").get().severity == 4
    assert any("Severity outside 0-4 in 2 finding(s)" in w for w in task.warnings)


@pytest.mark.django_db(transaction=True)
def test_ingest_commits_in_batches_and_shows_results_only_when_complete(monkeypatch, tmp_path):
    """Issue #14: no long write lock on SQLite, and no half-ingested results served to readers."""
    import sqlite3

    from django.db import connection

    from tasks.results import ingest as ingest_module
    from tasks.results.query import get_page, list_hosts
    from tests.benchmarks.synthetic import build

    if connection.vendor != "sqlite":
        pytest.skip("reads the SQLite file from a second connection")
    path = tmp_path / "big.nessus"
    info = build(path, 6_000_000)  # ~1,500 findings: several batches of 200
    monkeypatch.setattr(ingest_module, "BATCH_SIZE", 200)
    task = _task()
    seen: list[tuple[int, int, int]] = []
    real_flush = ingest_module._Loader.flush

    def flush_and_look(self, batch):  # runs on the writer thread: a batch has just been committed
        real_flush(self, batch)
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=1)
        try:  # another process's view: committed rows only, and the write lock must be free now
            other.execute("BEGIN IMMEDIATE")
            committed = other.execute("SELECT count(*) FROM tasks_finding").fetchone()[0]
            other.rollback()
        finally:
            other.close()
        seen.append((committed, get_page(task.id).total, len(list_hosts(task.id))))

    monkeypatch.setattr(ingest_module._Loader, "flush", flush_and_look)
    outcome = ingest_results(task.id, path)
    assert outcome.findings == info["findings"] and len(seen) >= 3
    committed = [c for c, _, _ in seen]
    assert committed == sorted(committed) and committed[0] > 0 and committed[-1] == info["findings"]
    assert {(page, hosts) for _, page, hosts in seen} == {(0, 0)}  # invisible while ingesting
    assert get_page(task.id).total == info["findings"]  # visible once complete

    # A file cut short half-way: the rows written before the cut are removed, nothing is served.
    broken = tmp_path / "cut.nessus"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    seen.clear()
    with pytest.raises(NessusParseError):
        ingest_results(task.id, broken)
    assert seen and max(c for c, _, _ in seen) > 0
    assert Finding.objects.filter(task=task).count() == 0 and ResultHost.objects.filter(task=task).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_bulk_load_on_postgresql_leaves_the_findings_vacuumed_for_index_only_counts(monkeypatch):
    """make bench, 2026-12-02: after a 1 GB ingest a results page (count of 80,000 findings) took 145 to 183 ms on
    PostgreSQL until autovacuum ran (no visibility map: every counted row read from the heap); ~20 ms after."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks.results import ingest

    monkeypatch.setattr(ingest, "ANALYZE_AFTER", 1)
    task = _task()
    outcome = ingest_results(task.id, fixture(sorted(EXPECTED)[0]))
    if connection.vendor != "postgresql":
        assert not outcome.bulk_loaded  # SQLite: nothing to do
        ingest.after_bulk_load(outcome)
        return
    assert outcome.bulk_loaded
    with CaptureQueriesContext(connection) as queries:
        ingest.after_bulk_load(outcome)
    # VACUUM (not only ANALYZE) sets the visibility map that index-only counts need; it runs outside any
    # transaction (the finish step calls it after the task's last commit).
    assert [q["sql"] for q in queries] == ['VACUUM (ANALYZE) "tasks_finding"']
