"""Results over the API: JSON pages, NDJSON and CSV streams, group=plugin, hosts, the raw export, 409
before results exist; POST /api/v1/validate/ (same document as validate_nessus --json, stores nothing)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import tempfile

import pytest
from django.core.management import call_command

from tasks.models import ScanTask, ScanType
from tasks.results.ingest import ingest_results
from tasks.results.parser import NessusReader
from tests.api_support import assert_error
from tests.factories import ScanTaskFactory
from tests.results_support import fixture

pytestmark = pytest.mark.django_db

MIXED = "mitre-saf-home-network-3hosts-mixed-auth.nessus"


@pytest.fixture
def done(pool):
    task = ScanTaskFactory(pool=pool, scan_type=ScanType.AUTHENTICATED, status="completed")
    ingest_results(task.id, fixture(MIXED))
    return task


def parsed():
    return [(b.name, f) for b in NessusReader(fixture(MIXED)) for f in b.findings]


def test_results_page_filters_and_profiles(api, done):
    url = f"/api/v1/scans/{done.pk}/results/"
    page = api.get(url).json()
    assert page["total"] == len(parsed()) and page["profile"] == "summary" and page["page"] == 1
    high = api.get(url, {"severity": ">=3", "profile": "minimal", "page_size": 1000}).json()
    expected = sum(1 for _, f in parsed() if f.severity >= 3)
    assert high["total"] == expected and all(r["severity"] >= 3 for r in high["results"])
    assert set(high["results"][0]) == {"id", "host", "port", "protocol", "plugin_id", "plugin_name", "severity"}
    second = api.get(url, {"page": 2, "page_size": 10}).json()
    assert second["page"] == 2 and len(second["results"]) == 10
    assert_error(api.get(url, {"severity": "extreme"}), 400, code="invalid_filter", field="severity")
    assert_error(api.get(url, {"bogus": "1"}), 400, field="bogus")
    assert_error(api.get(url, {"profile": "everything"}), 400, field="profile")
    assert_error(api.get(url, {"page_size": "100000"}), 400, field="page_size")


def test_ndjson_streams_every_matching_finding(api, done):
    response = api.get(f"/api/v1/scans/{done.pk}/results/", {"severity": ">=2"},
                       HTTP_ACCEPT="application/x-ndjson")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/x-ndjson")
    assert response.streaming
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert len(lines) == sum(1 for _, f in parsed() if f.severity >= 2) and all(r["severity"] >= 2 for r in lines)


def test_csv_streams_with_a_header(api, done):
    response = api.get(f"/api/v1/scans/{done.pk}/results/?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv") and response.streaming
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["host", "port", "protocol", "plugin_id"] and len(rows) == len(parsed()) + 1


def test_csv_cells_never_run_as_spreadsheet_formulas(api, pool, tmp_path):
    """Host and plugin names come from the export (a hostile host names itself; a tampered export says anything):
    a cell a spreadsheet would run as a formula is written as text."""
    hostile = {
        'pluginName="Common Platform Enumeration (CPE)"': 'pluginName="=HYPERLINK(&quot;http://evil.example/&quot;)"',
        'pluginName="Patch Report"': 'pluginName="@SUM(1+1)*cmd|\' /C calc\'!A0"',
        'pluginName="Nessus Scan Information"': 'pluginName="+1-1"',
        '<ReportHost name="10.0.0.3"': '<ReportHost name="-2+3"',
    }
    text = fixture(MIXED).read_text()
    for old, new in hostile.items():
        assert old in text
        text = text.replace(old, new)
    export = tmp_path / "hostile.nessus"
    export.write_text(text)
    task = ScanTaskFactory(pool=pool, scan_type=ScanType.AUTHENTICATED, status="completed")
    ingest_results(task.id, export)
    response = api.get(f"/api/v1/scans/{task.pk}/results/?format=csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    cells = [cell for row in rows[1:] for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    names = {row[4] for row in rows[1:]}
    assert {"'=HYPERLINK(\"http://evil.example/\")", "'@SUM(1+1)*cmd|' /C calc'!A0", "'+1-1"} <= names
    assert "'-2+3" in {row[0] for row in rows[1:]}
    assert {row[0] for row in rows[1:]} >= {"10.0.0.1", "10.0.0.2"}  # ordinary cells unchanged


def test_group_by_plugin(api, done):
    data = api.get(f"/api/v1/scans/{done.pk}/results/", {"group": "plugin", "page_size": 1000}).json()
    by_plugin: dict[int, set[str]] = {}
    for host, f in parsed():
        by_plugin.setdefault(f.plugin_id, set()).add(host)
    assert data["total"] == len(by_plugin)
    for row in data["results"]:
        hosts = by_plugin[row["plugin_id"]]
        assert row["host_count"] == len(hosts) and set(row["hosts"]) == hosts
    severities = [r["severity"] for r in data["results"]]
    assert severities == sorted(severities, reverse=True)
    assert_error(api.get(f"/api/v1/scans/{done.pk}/results/", {"group": "host"}), 400, field="group")


def test_hosts_and_raw_export(api, done):
    hosts = api.get(f"/api/v1/scans/{done.pk}/hosts/").json()
    assert hosts["total"] == 3 and all("verdict" in h["auth"] and "evidence" in h["auth"] for h in hosts["results"])
    failed = api.get(f"/api/v1/scans/{done.pk}/hosts/", {"verdict": "failed"}).json()
    assert all(h["auth"]["verdict"] == "failed" for h in failed["results"])
    assert_error(api.get(f"/api/v1/scans/{done.pk}/hosts/", {"verdict": "maybe"}), 400, field="verdict")
    raw = api.get(f"/api/v1/scans/{done.pk}/results.nessus")
    assert raw.status_code == 200 and raw.streaming
    assert b"".join(raw.streaming_content) == fixture(MIXED).read_bytes()
    assert "attachment" in raw["Content-Disposition"]


def test_raw_export_answers_a_client_that_accepts_its_media_type(api, done, pool):
    # Accept: application/xml (the export's Content-Type) was answered 406 not_acceptable.
    raw = api.get(f"/api/v1/scans/{done.pk}/results.nessus", HTTP_ACCEPT="application/xml")
    assert raw.status_code == 200 and raw["Content-Type"] == "application/xml"
    assert b"".join(raw.streaming_content) == fixture(MIXED).read_bytes()
    waiting = ScanTaskFactory(pool=pool)
    response = api.get(f"/api/v1/scans/{waiting.pk}/results.nessus", HTTP_ACCEPT="application/xml")
    assert_error(response, 409, code="no_results", field="task_id")
    assert response["Content-Type"] == "application/json"  # an error is JSON, not labelled XML
    error = assert_error(api.get(f"/api/v1/scans/{done.pk}/results.nessus", HTTP_ACCEPT="text/csv"), 406,
                         code="not_acceptable")
    assert "this endpoint answers" in error["message"] and "application/xml" in error["message"]  # what to ask


def test_no_results_yet_is_409(api, pool):
    task = ScanTaskFactory(pool=pool)
    for suffix in ("results/", "hosts/", "results.nessus"):
        error = assert_error(api.get(f"/api/v1/scans/{task.pk}/{suffix}"), 409, code="no_results", field="task_id")
        assert "queued" in error["message"]
    assert_error(api.get("/api/v1/scans/00000000-0000-0000-0000-000000000000/results/"), 404, code="not_found")


def _temp_uploads() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "scanpool-validate-*")))


def test_validate_answers_the_cli_document_and_stores_nothing(api, pool, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own: parallel tests upload too
    before = _temp_uploads()
    with fixture(MIXED).open("rb") as handle:
        response = api.post("/api/v1/validate/", {"file": handle, "scan_type": "authenticated"}, format="multipart")
    assert response.status_code == 200, response.content
    out = io.StringIO()
    call_command("validate_nessus", str(fixture(MIXED)), "--scan-type", "authenticated", "--json", stdout=out)
    assert response.json() == json.loads(out.getvalue())
    assert ScanTask.objects.count() == 0 and _temp_uploads() == before


def test_validate_errors(api, pool, settings):
    assert_error(api.post("/api/v1/validate/", {}, format="multipart"), 400, code="required", field="file")
    bad = io.BytesIO(b"<NessusClientData_v2><Report><ReportHost")
    bad.name = "broken.nessus"
    assert_error(api.post("/api/v1/validate/", {"file": bad}, format="multipart"), 400, code="unusable_file",
                 field="file")
    hostile = io.BytesIO(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                         b"<NessusClientData_v2>&e;</NessusClientData_v2>")
    hostile.name = "xxe.nessus"
    error = assert_error(api.post("/api/v1/validate/", {"file": hostile}, format="multipart"), 400, field="file")
    assert "root:" not in error["message"]
    with fixture(MIXED).open("rb") as handle:
        assert_error(api.post("/api/v1/validate/", {"file": handle, "scan_type": "x"}, format="multipart"), 400,
                     field="scan_type")
    with fixture(MIXED).open("rb") as handle:
        assert_error(api.post("/api/v1/validate/", {"file": handle, "store": "yes"}, format="multipart"), 400,
                     code="unknown_field", field="store")
    settings.SCANPOOL_API_MAX_UPLOAD_BYTES = 1000
    with fixture(MIXED).open("rb") as handle:
        assert_error(api.post("/api/v1/validate/", {"file": handle}, format="multipart"), 413, code="too_large",
                     field="file")
    error = assert_error(api.post("/api/v1/validate/", {"file": "x"}, format="json"), 415)
    assert "-F file=@scan.nessus" in error["message"]


@pytest.mark.parametrize("status", ["cancelled", "failed", "timeout"])
def test_no_results_of_an_ended_scan_says_it_will_never_have_any(api, pool, status):
    task = ScanTaskFactory(pool=pool, status=status)
    error = assert_error(api.get(f"/api/v1/scans/{task.pk}/results/"), 409, code="no_results")
    assert f"ended {status} without results and will never have any" in error["message"]
    # The advice fits the status: only failed and timed-out scans can be retried.
    assert ("retry it" in error["message"]) is (status != "cancelled"), error["message"]


def test_a_retried_task_does_not_show_the_previous_attempts_results_as_its_own(
        api, pool, django_capture_on_commit_callbacks):
    """A failed authenticated scan with results (its credentials were rejected) is retried: the new attempt has no
    results until it stores its own — status, results, hosts and the raw export say so, and the old export is gone
    (its rows too). Cancelling the new attempt brings nothing back."""
    from tasks.models import Finding, ResultHost
    from tasks.results.storage import results_path

    task = ScanTaskFactory(pool=pool, scan_type=ScanType.AUTHENTICATED, status="completed")
    ingest_results(task.id, fixture(MIXED))
    ScanTask.objects.filter(pk=task.pk).update(status="failed", error_message="credentials rejected")
    before = api.get(f"/api/v1/scans/{task.pk}/").json()
    assert before["authentication_status"] == "failed" and before["results_summary"]
    assert results_path(task.pk).exists() and Finding.objects.filter(task=task).exists()

    with django_capture_on_commit_callbacks(execute=True):
        retried = api.post(f"/api/v1/scans/{task.pk}/retry/", format="json")
    assert retried.status_code == 200, retried.content
    for body in (retried.json(), api.get(f"/api/v1/scans/{task.pk}/").json()):
        assert body["status"] == "queued" and body["attempts"] == 2
        assert body["authentication_status"] == "unknown" and body["results_summary"] == {}
        assert body["results_file"] is None and body["warnings"] == [] and body["troubleshooting"] == []
    for suffix in ("results/", "hosts/", "results.nessus"):
        assert_error(api.get(f"/api/v1/scans/{task.pk}/{suffix}"), 409, code="no_results")
    assert not results_path(task.pk).exists()
    assert not Finding.objects.filter(task=task).exists() and not ResultHost.objects.filter(task=task).exists()
    assert api.post(f"/api/v1/scans/{task.pk}/cancel/", format="json").status_code == 200
    assert_error(api.get(f"/api/v1/scans/{task.pk}/results/"), 409, code="no_results")


def test_csv_has_every_summary_field_and_the_filtered_rows(api, done):
    # docs/api.md promises the summary columns; svc_name, risk_factor, cvss3, cvss2 and id were missing (a CSV
    # reader could not tell a v3 score from a v2 one).
    url = f"/api/v1/scans/{done.pk}/results/"
    page = api.get(url, {"severity": ">=2", "ordering": "file", "page_size": 1000}).json()["results"]
    response = api.get(url, {"severity": ">=2", "ordering": "file", "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert set(rows[0]) == set(page[0]) and [int(r["id"]) for r in rows] == [f["id"] for f in page]
    assert [r["cvss3"] for r in rows] == ["" if f["cvss3"] is None else str(f["cvss3"]) for f in page]
