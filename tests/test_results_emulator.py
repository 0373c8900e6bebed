"""Exports of the Nessus emulator, fetched over real HTTP by the Nessus adapter, ingested and judged:
each authentication scenario of DESIGN §9 gets the right task verdict, cause and should_fail."""

from __future__ import annotations

import time

import pytest

from scanners.adapters.base import ScanSpec
from scanners.adapters.nessus import NessusAdapter
from tasks.models import Finding, ResultHost, ScanType
from tasks.results.analysis import analyze_file
from tasks.results.ingest import ingest_results
from tasks.results.query import get_page
from tests.factories import ScanTaskFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

# name: (scan type, credentials, targets, expected task verdict, expected host cause, should_fail)
SCENARIOS = {
    "good": ("authenticated", {"username": "scan", "password": "good"}, ["192.0.2.10", "192.0.2.11"],
             "success", "", False),
    "bad": ("authenticated", {"username": "scan", "password": "bad"}, ["192.0.2.12"],
            "failed", "credentials_rejected", True),
    "noprivs": ("authenticated_privileged", {"username": "scan", "password": "good",
                                             "elevate_privileges_with": "sudo", "escalation_password": "noprivs"},
                ["192.0.2.13"], "partial", "insufficient_privilege", False),
    "no-credentials": ("authenticated", None, ["192.0.2.14"], "failed", "no_credentials", True),
    "untrusted": ("untrusted", None, ["192.0.2.15"], "not_applicable", "untrusted_scan", False),
    "unreachable": ("untrusted", None, ["192.0.2.250"], "not_applicable", None, True),
}


def _wait(adapter: NessusAdapter, scan_ids: dict[str, int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(scan_ids)
    while pending and time.monotonic() < deadline:
        for name, scan_id in list(pending.items()):
            state = adapter.scan_state(scan_id)
            if state.terminal:
                assert state.status == "completed", (name, state)
                del pending[name]
        time.sleep(0.2)
    assert not pending, f"scans not finished: {pending}"


def test_emulator_scenarios_get_the_right_verdicts(emulator, tmp_path):
    adapter = NessusAdapter(emulator.urls[0], username=emulator.username, password=emulator.password,
                            backoff=0.05, export_poll_interval=0.1)
    tasks = {name: ScanTaskFactory(scan_type=scan_type, targets=targets)
             for name, (scan_type, _, targets, *_rest) in SCENARIOS.items()}
    scan_ids = {}
    for name, (scan_type, credentials, targets, *_rest) in SCENARIOS.items():
        spec = ScanSpec(task_id=tasks[name].id, name=f"results {name}", targets=targets, scan_type=scan_type,
                        credentials=credentials)
        scan_ids[name] = adapter.create_scan(spec)
        adapter.launch_scan(scan_ids[name])
    _wait(adapter, scan_ids)
    for name, (_scan_type, _, targets, verdict, cause, should_fail) in SCENARIOS.items():
        download = adapter.export_results(scan_ids[name], tmp_path / f"{name}.nessus")
        if SCENARIOS[name][1]:  # validate_nessus's view: the scan type is inferred from the export's policy
            analysis, _ = analyze_file(download)
            assert (analysis.scan_type, analysis.verdict) == (SCENARIOS[name][0], verdict), name
        outcome = ingest_results(tasks[name].id, download, move=True)
        assert (outcome.auth_status, outcome.should_fail) == (verdict, should_fail), (name, outcome)
        task = tasks[name]
        task.refresh_from_db()
        assert task.auth_status == verdict and task.results_sha256 == outcome.results_sha256
        if cause is None:  # unreachable: no host in the export
            assert outcome.hosts == 0 and "No host answered" in outcome.failure_message
            continue
        hosts = list(ResultHost.objects.filter(task=task))
        assert sorted(h.name for h in hosts) == sorted(targets)
        assert {h.auth_cause for h in hosts} == {cause}, name
        assert Finding.objects.filter(task=task).count() == outcome.findings > 0
        assert sum(task.results_summary["severity_counts"].values()) == outcome.findings
        if should_fail:
            assert task.troubleshooting and task.troubleshooting[0]["cause"] == cause
            assert outcome.failure_message.startswith("Authenticated scan failed")
    good = tasks["good"]
    evidence = {e["plugin_id"] for h in ResultHost.objects.filter(task=good) for e in h.auth_evidence}
    assert {19506, 141118, 117887, 110095} <= evidence
    page = get_page(good.id, filters={"severity": ">=3"}, profile="brief")
    assert page.total == Finding.objects.filter(task=good, severity__gte=3).count() > 0
    assert ScanType.AUTHENTICATED == good.scan_type
    adapter.close()

