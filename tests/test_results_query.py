"""The results query layer: profiles, filters (numbers compare as numbers), ordering, pagination, JSON lines.

Expected values are computed from the parser's view of the same fixture, an independent path from the
database rows the query layer reads.
"""

from __future__ import annotations

import json

import pytest

from tasks.errors import SubmissionError
from tasks.models import ScanType
from tasks.results.ingest import ingest_results
from tasks.results.parser import NessusReader
from tasks.results.query import (
    get_hosts_page,
    get_page,
    iter_jsonl,
    list_hosts,
    results_overview,
    serialize_finding,
)
from tests.factories import ScanTaskFactory
from tests.results_support import fixture

pytestmark = pytest.mark.django_db

MIXED = "mitre-saf-home-network-3hosts-mixed-auth.nessus"
DOJO = "defectdojo-untrusted-basic-network.nessus"


def _parsed(name):
    return [(b.name, f) for b in NessusReader(fixture(name)) for f in b.findings]


@pytest.fixture
def mixed_task():
    task = ScanTaskFactory(scan_type=ScanType.AUTHENTICATED)
    ingest_results(task.id, fixture(MIXED))
    return task


@pytest.fixture
def dojo_task():
    task = ScanTaskFactory(scan_type=ScanType.UNTRUSTED)
    ingest_results(task.id, fixture(DOJO))
    return task


def _all(task, **filters):
    page = get_page(task.id, filters=filters, page_size=1000, profile="minimal")
    assert page.total == len(page.results)
    return page.results


def test_profiles_are_supersets_with_documented_fields(mixed_task):
    minimal = get_page(mixed_task.id, profile="minimal", page_size=1).results[0]
    summary = get_page(mixed_task.id, profile="summary", page_size=1).results[0]
    brief = get_page(mixed_task.id, profile="brief", page_size=1).results[0]
    full = get_page(mixed_task.id, profile="full", page_size=1).results[0]
    assert set(minimal) == {"id", "host", "port", "protocol", "plugin_id", "plugin_name", "severity"}
    assert set(summary) - set(minimal) == {"severity_name", "plugin_family", "svc_name", "risk_factor", "cvss",
                                           "cvss3", "cvss2", "cves", "exploit_available"}
    assert set(brief) - set(summary) == {"synopsis", "solution", "cvss3_vector", "cvss_vector", "see_also", "bid",
                                         "cwe", "xref", "plugin_output", "plugin_output_truncated"}
    assert set(full) - set(brief) == {"host_ip", "description", "attributes", "data"}
    assert full["severity"] == 4 and full["severity_name"] == "critical"  # default ordering: most severe first
    assert full["attributes"]["pluginID"] == str(full["plugin_id"])
    assert full["description"] and full["data"]["description"] and full["host_ip"] == full["host"]
    assert get_page(mixed_task.id).profile == "summary"


def test_brief_truncates_long_output_full_does_not(mixed_task):
    long_plugin = max(_parsed(MIXED), key=lambda pair: len(pair[1].plugin_output))[1]
    assert len(long_plugin.plugin_output) > 2000
    brief = get_page(mixed_task.id, profile="brief", filters={"plugin_id": str(long_plugin.plugin_id)}).results[0]
    full = get_page(mixed_task.id, profile="full", filters={"plugin_id": str(long_plugin.plugin_id)}).results[0]
    assert brief["plugin_output_truncated"] and len(brief["plugin_output"]) == 2000
    assert full["plugin_output"] == long_plugin.plugin_output


@pytest.mark.parametrize(
    ("value", "allowed"),
    [(">=3", {3, 4}), ("3,4", {3, 4}), ("high", {3}), ("<2", {0, 1}), ("2", {2}), (">0", {1, 2, 3, 4}),
     ("critical,low", {1, 4}), (" <= 1 ", {0, 1})],
)
def test_severity_filters(mixed_task, value, allowed):
    expected = sum(1 for _, f in _parsed(MIXED) if f.severity in allowed)
    rows = _all(mixed_task, severity=value)
    assert len(rows) == expected and {r["severity"] for r in rows} <= allowed


def test_port_compares_as_a_number(mixed_task):
    parsed = _parsed(MIXED)
    below = [f for _, f in parsed if f.port < 443]
    assert any(f.port == 80 for _, f in parsed) or any(f.port >= 1000 for _, f in parsed)
    rows = _all(mixed_task, port="<443")
    assert len(rows) == len(below) and all(r["port"] < 443 for r in rows)
    rows = _all(mixed_task, port=">=1024")
    assert len(rows) == sum(1 for _, f in parsed if f.port >= 1024)
    assert len(_all(mixed_task, port="22,443")) == sum(1 for _, f in parsed if f.port in (22, 443))


def test_host_plugin_family_and_plugin_id_filters(mixed_task):
    parsed = _parsed(MIXED)
    assert len(_all(mixed_task, host="10.0.0.3")) == sum(1 for h, _ in parsed if h == "10.0.0.3")
    assert len(_all(mixed_task, host="10.0.0.1,10.0.0.2")) == sum(1 for h, _ in parsed if h != "10.0.0.3")
    assert _all(mixed_task, host="splunk.cmoo.rs") == _all(mixed_task, host="10.0.0.2")  # by FQDN too
    rows = _all(mixed_task, plugin_id="104410,21745")
    assert {(r["host"], r["plugin_id"]) for r in rows} == {(h, p) for h in ("10.0.0.1", "10.0.0.2")
                                                            for p in (104410, 21745)}
    assert len(_all(mixed_task, plugin_family="settings")) == sum(1 for _, f in parsed if f.plugin_family == "Settings")
    assert _all(mixed_task, plugin_id=">=1000000") == []


def test_cve_cvss_text_and_exploit_filters(dojo_task):
    parsed = [f for _, f in _parsed(DOJO)]
    cve = next(c for f in parsed for c in f.cves)
    rows = get_page(dojo_task.id, filters={"cve": cve.lower()}, profile="summary", page_size=1000).results
    assert rows and len(rows) == sum(1 for f in parsed if cve in f.cves)
    assert all(cve in r["cves"] for r in rows)
    rows = get_page(dojo_task.id, filters={"cvss": ">=7.5"}, profile="summary", page_size=1000).results
    expected = [f for f in parsed if f.cvss is not None and f.cvss >= 7.5]
    assert len(rows) == len(expected) and all(r["cvss"] >= 7.5 for r in rows)
    # The filter uses the v3 score when there is one, even when v2 says otherwise.
    assert any(f.cvss3 is not None and f.cvss2 is not None and (f.cvss3 >= 7.5) != (f.cvss2 >= 7.5) for f in parsed)
    assert len(_all(dojo_task, q="PHP")) == sum(
        1 for f in parsed if "php" in f.plugin_name.lower() or "php" in f.plugin_output.lower())
    assert len(_all(dojo_task, exploit_available="true")) == sum(1 for f in parsed if f.exploit_available)
    combined = _all(dojo_task, severity=">=3", cvss=">=9")
    assert len(combined) == sum(1 for f in parsed if f.severity >= 3 and f.cvss is not None and f.cvss >= 9)


def test_pagination_totals_and_stable_order(mixed_task):
    pages = [get_page(mixed_task.id, profile="minimal", page=n, page_size=50) for n in (1, 2, 3, 4)]
    assert [p.total for p in pages] == [149] * 4 and [p.pages for p in pages] == [3] * 4
    assert [len(p.results) for p in pages] == [50, 50, 49, 0]
    ids = [r["id"] for p in pages for r in p.results]
    assert len(set(ids)) == 149
    assert ids == [r["id"] for r in get_page(mixed_task.id, profile="minimal", page_size=1000).results]
    severities = [r["severity"] for p in pages for r in p.results]
    assert severities == sorted(severities, reverse=True)
    by_port = get_page(mixed_task.id, profile="minimal", ordering="port", page_size=1000).results
    assert [r["port"] for r in by_port] == sorted(r["port"] for r in by_port)
    filtered = get_page(mixed_task.id, filters={"severity": "0"}, page=3, page_size=60)
    assert (filtered.total, filtered.pages, len(filtered.results)) == (140, 3, 20)
    assert get_page(mixed_task.id, page="2", page_size="10").as_dict()["page"] == 2


def test_jsonl_streams_every_match_in_page_order(mixed_task):
    lines = list(iter_jsonl(mixed_task.id, filters={"severity": ">=1"}, profile="brief", chunk_size=3))
    docs = [json.loads(line) for line in lines]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    page = get_page(mixed_task.id, filters={"severity": ">=1"}, profile="brief", page_size=1000)
    assert docs == json.loads(json.dumps(page.results)) and len(docs) == 9


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"filters": {"severity": "5"}}, "severity"),
        ({"filters": {"severity": "urgent"}}, "severity"),
        ({"filters": {"severity": "3,>=4"}}, "severity"),
        ({"filters": {"port": "https"}}, "port"),
        ({"filters": {"port": "70000"}}, "port"),
        ({"filters": {"plugin_id": "19506.5"}}, "plugin_id"),
        ({"filters": {"cvss": "high"}}, "cvss"),
        ({"filters": {"cvss": ">=11"}}, "cvss"),
        ({"filters": {"cve": "2014-0160"}}, "cve"),
        ({"filters": {"exploit_available": "maybe"}}, "exploit_available"),
        ({"filters": {"sevrity": "3"}}, "sevrity"),
        ({"filters": {"q": "x" * 201}}, "q"),
        ({"profile": "everything"}, "profile"),
        ({"ordering": "name"}, "ordering"),
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"page_size": "5000"}, "page_size"),
    ],
)
def test_bad_parameters_name_the_field_and_the_fix(mixed_task, kwargs, field):
    with pytest.raises(SubmissionError) as exc:
        get_page(mixed_task.id, **kwargs)
    assert exc.value.field == field and exc.value.status_code == 400
    assert "use" in exc.value.message or "must" in exc.value.message


def test_jsonl_validates_before_streaming(mixed_task):
    with pytest.raises(SubmissionError):
        iter_jsonl(mixed_task.id, filters={"severity": "x"})


def test_hosts_and_overview(mixed_task):
    hosts = list_hosts(mixed_task.id)
    assert [h["name"] for h in hosts] == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    assert hosts[1]["auth"]["verdict"] == "failed" and hosts[1]["auth"]["cause"] == "credentials_rejected"
    assert "properties" not in hosts[0] and "properties" in list_hosts(mixed_task.id, with_properties=True)[0]
    failed = list_hosts(mixed_task.id, verdict="failed")
    assert [h["name"] for h in failed] == ["10.0.0.2", "10.0.0.1"]
    page = get_hosts_page(mixed_task.id, verdict="failed,local_only", page=2, page_size=2)
    assert (page.total, page.pages, [h["name"] for h in page.results]) == (3, 2, ["10.0.0.1"])
    with pytest.raises(SubmissionError) as exc:
        list_hosts(mixed_task.id, verdict="ok")
    assert exc.value.field == "verdict"
    mixed_task.refresh_from_db()
    overview = results_overview(mixed_task)
    assert overview["auth_status"] == "failed" and overview["results_file"]["size"] == 1_770_864
    assert overview["summary"]["findings"] == 149


def test_serialize_finding_rejects_unknown_profile(mixed_task):
    from tasks.models import Finding

    with pytest.raises(SubmissionError):
        serialize_finding(Finding.objects.filter(task=mixed_task).first(), "huge")


def test_text_filters_fold_every_letter_alike_on_sqlite_and_postgresql(tmp_path):
    # SQLite's LIKE folds ASCII letters only: q=échec found "Échec…" on PostgreSQL and nothing on SQLite.
    from tests.results_support import host, item, nessus, write

    text = nessus(host("h1", item(1, "Échec de connexion", name="Überprüfung", family="Famille É")),
                  host("h2", item(1, "ÉCHEC", name="überprüfung", family="famille é"), item(2, "a*b?[c] é")))
    task = ScanTaskFactory(scan_type=ScanType.AUTHENTICATED)
    ingest_results(task.id, write(tmp_path, text))
    assert get_page(task.id, filters={"q": "CONNEXION"}).total == 1
    for q in ("échec", "ÉCHEC", "ÜBERPRÜFUNG", "überprüfung"):
        assert get_page(task.id, filters={"q": q}).total == 2, q
    assert get_page(task.id, filters={"q": "a*b?[c] É"}).total == 1  # glob characters are text
    assert get_page(task.id, filters={"q": "a*c É"}).total == 0
    for family in ("famille é", "FAMILLE É"):
        assert get_page(task.id, filters={"plugin_family": family}).total == 2, family
    assert get_page(task.id, filters={"plugin_family": "famille"}).total == 0  # exact, not contains
