"""The streaming .nessus parser over every real fixture, plus hostile and broken input."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tasks.results.parser import NessusParseError, NessusReader
from tests.results_support import EXPECTED, fixture, host, item, nessus, scan_info, write


def _read(path):
    reader = NessusReader(path)
    blocks = list(reader)
    return reader, blocks


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_match_sources_md(name):
    hosts, items, severities = EXPECTED[name]
    reader, blocks = _read(fixture(name))
    assert len({b.name for b in blocks}) == hosts
    assert sum(len(b.findings) for b in blocks) == items
    counts = Counter(f.severity for b in blocks for f in b.findings)
    assert tuple(counts[i] for i in range(5)) == severities
    assert reader.hosts_seen == hosts and reader.findings_seen == items
    for block in blocks:
        assert block.properties, f"{block.name} has no HostProperties"
        for finding in block.findings:
            assert isinstance(finding.plugin_id, int) and isinstance(finding.port, int)
            assert finding.attributes["pluginID"] == str(finding.plugin_id)


def test_every_attribute_and_child_is_kept_with_lists_and_scores():
    _, blocks = _read(fixture("defectdojo-untrusted-basic-network.nessus"))
    findings = [f for b in blocks for f in b.findings]
    with_cves = [f for f in findings if f.cves]
    assert with_cves, "defectdojo fixture has CVE findings"
    assert all(isinstance(f.data["cve"], list) for f in with_cves)
    assert all(c.startswith("CVE-") for f in with_cves for c in f.cves)
    assert any(len(f.data.get("xref", [])) > 1 for f in findings)
    see_also = [f for f in findings if f.data.get("see_also")]
    assert see_also and all(isinstance(f.data["see_also"], list) for f in see_also)
    assert all(not u.startswith(" ") and "\n" not in u for f in see_also for u in f.data["see_also"])
    v3 = [f for f in findings if f.cvss3 is not None]
    assert v3 and all(isinstance(f.cvss3, float) and 0 <= f.cvss3 <= 10 for f in v3)
    assert all(f.cvss == f.cvss3 for f in v3)
    v2_only = [f for f in findings if f.cvss3 is None and f.cvss2 is not None]
    assert all(f.cvss == f.cvss2 for f in v2_only)
    critical = [f for f in findings if f.severity == 4]
    assert {f.text("risk_factor") for f in critical} <= {"Critical", "High"}
    assert any(f.exploit_available is True for f in findings)
    assert all(set(f.attributes) >= {"port", "severity", "pluginID", "pluginName", "pluginFamily"} for f in findings)
    assert all(f.text("description") for f in findings)
    props = blocks[0].properties
    assert props["host-ip"] == "44.228.249.3" and props["Credentialed_Scan"] == "false"


def test_compliance_namespace_under_readable_keys():
    _, blocks = _read(fixture("mitre-saf-cis-ubuntu-agent-compliance.nessus"))
    compliance = [f for b in blocks for f in b.findings if "compliance_check_name" in f.data]
    assert compliance
    first = compliance[0]
    assert first.data["compliance_result"] in {"PASSED", "FAILED", "WARNING", "ERROR"}
    assert first.data["compliance_audit_file"].endswith(".audit")
    assert not any(k.startswith("{") for f in compliance for k in f.data)


def test_policy_credentials_and_targets():
    reader, _ = _read(fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus"))
    assert reader.policy.credentials.supplied and reader.policy.credentials.kinds == ["ssh_key"]
    assert reader.policy.targets == ["10.0.0.1", "10.0.0.4", "10.0.0.3", "10.0.0.2"]
    assert reader.policy.plugin_set_size > 1000 and "plugin_set" not in reader.policy.server_preferences
    reader, _ = _read(fixture("libnessus-3hosts-ssh-auth-failure.nessus"))
    assert reader.policy.credentials.kinds == ["ssh_password"]
    reader, _ = _read(fixture("defectdojo-untrusted-basic-network.nessus"))
    assert not reader.policy.credentials.supplied  # FTP "anonymous" and empty password fields are not credentials
    reader, _ = _read(fixture("pytenable-windows-agent-credentialed.nessus"))
    assert reader.policy.agent_scan


def test_repeated_host_comes_as_blocks_with_the_same_name(tmp_path):
    text = nessus(
        host("10.1.1.1", item(22964, "ssh", port=22), props={"os": "linux"}),
        host("10.1.1.2", item(10287, "x")),
        host("10.1.1.1", item(11219, "open", port=80), props={"mac-address": "aa"}),
    )
    _, blocks = _read(write(tmp_path, text))
    assert [b.name for b in blocks] == ["10.1.1.1", "10.1.1.2", "10.1.1.1"]
    assert blocks[2].properties["mac-address"] == "aa"


def test_bad_numbers_name_the_attribute_and_line(tmp_path):
    text = nessus(host("h", item(19506, "x").replace('severity="0"', 'severity="high"')))
    with pytest.raises(NessusParseError, match=r"severity='high' is not an integer") as exc:
        _read(write(tmp_path, text))
    assert exc.value.line == 2


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE NessusClientData_v2 [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<NessusClientData_v2><Report name="x"><ReportHost name="h"><HostProperties><tag name="a">&g;</tag>
</HostProperties></ReportHost></Report></NessusClientData_v2>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE NessusClientData_v2 [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<NessusClientData_v2><Report name="x"><ReportHost name="h"><HostProperties><tag name="a">&xxe;</tag>
</HostProperties></ReportHost></Report></NessusClientData_v2>
"""
PARAMETER_ENTITY = """<?xml version="1.0"?>
<!-- a comment first -->
<!DOCTYPE r [ <!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote; ]>
<NessusClientData_v2/>
"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY, PARAMETER_ENTITY],
                         ids=["billion-laughs", "external-entity", "parameter-entity"])
def test_hostile_xml_is_refused_fast(tmp_path, text):
    path = write(tmp_path, text)
    started = time.monotonic()
    with pytest.raises(NessusParseError, match="declares a DTD") as exc:
        _read(path)
    assert time.monotonic() - started < 1
    assert "passwd" not in str(exc.value) and "root:" not in str(exc.value)
    assert exc.value.line is not None


def test_dtd_after_a_long_prolog_is_still_refused(tmp_path):
    # A prolog longer than the pre-check window: the DTD check at the root element catches it.
    text = '<?xml version="1.0"?>\n<!--' + "x" * 70000 + "-->\n" + EXTERNAL_ENTITY.split("\n", 1)[1]
    with pytest.raises(NessusParseError, match="declares a DTD"):
        _read(write(tmp_path, text))


def test_truncated_file_fails_cleanly_after_yielding_earlier_hosts(tmp_path):
    data = fixture("msf-autoshell-11hosts.nessus").read_bytes()
    path = tmp_path / "cut.nessus"
    path.write_bytes(data[: len(data) // 2])
    reader = NessusReader(path)
    seen = []
    with pytest.raises(NessusParseError, match="truncated") as exc:
        for block in reader:
            seen.append(block.name)
    assert 0 < len(seen) < 11
    assert exc.value.line and exc.value.line > 1000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"this is not xml at all\n", "malformed XML"),
        (b"\x1f\x8b\x08\x00binary", "gzip"),
        (b"PK\x03\x04zip", "zip archive"),
        (b"<scan><host/></scan>", "not a Nessus v2 export: the root element is <scan>"),
        (b"<NessusClientData_v2><Report><ReportHost name='a'></Report></NessusClientData_v2>", "malformed XML"),
        (b"<NessusClientData_v2><Report><ReportHost name='a'>&undefined;</ReportHost></Report>"
         b"</NessusClientData_v2>", "undefined entity"),
        (b"<NessusClientData_v2><Report><ReportHost><HostProperties/></ReportHost></Report></NessusClientData_v2>",
         "ReportHost without a name"),
    ],
    ids=["empty", "not-xml", "gzip", "zip", "wrong-root", "mismatched-tags", "undefined-entity", "unnamed-host"],
)
def test_malformed_input_names_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.nessus"
    path.write_bytes(content)
    with pytest.raises(NessusParseError, match=message):
        _read(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(NessusParseError, match="cannot read the file"):
        _read(tmp_path / "missing.nessus")


def test_scan_info_plugin_parses(tmp_path):
    _, blocks = _read(write(tmp_path, nessus(host("h", scan_info("yes")))))
    assert blocks[0].findings[0].plugin_id == 19506
    assert "Credentialed checks : yes" in blocks[0].findings[0].plugin_output


def test_oversized_text_node_is_cut_not_refused(tmp_path):
    big = item(1, "A" * 10_500_000)
    _, blocks = _read(write(tmp_path, nessus(host("h", big))))
    assert blocks[0].findings[0].plugin_output.endswith("[scanpool: value truncated at 10 MB]")


def test_oversized_text_value_is_truncated_and_the_rest_kept(tmp_path):
    """Issue #14: one value over 10 MB refused the whole export. It is cut, marked, warned about."""
    from tasks.results.analysis import analyze_file
    from tasks.results.parser import TRUNCATION_MARK

    real = fixture("libnessus-3hosts-ssh-auth-failure.nessus").read_text(encoding="utf-8")
    # A real plugin_output made huge (with entities and multi-byte characters around the cut).
    huge = "é&amp;x" * 1_600_000  # 11.2 MB of escaped text
    text = real.replace("- Failed to authenticate using the supplied password.",
                        "- Failed to authenticate using the supplied password." + huge, 1)
    reader = NessusReader(write(tmp_path, text))
    blocks = list(reader)
    findings = [f for b in blocks for f in b.findings]
    assert len(blocks) == 3 and len(findings) == 106  # nothing else lost
    [cut] = [f for f in findings if TRUNCATION_MARK in f.plugin_output]
    assert cut.plugin_id == 21745 and cut.plugin_output.endswith(TRUNCATION_MARK)
    assert 4_990_000 < len(cut.plugin_output.encode()) < 5_000_100  # 9,999,000 escaped bytes kept
    assert cut.plugin_output.startswith("- Failed to authenticate using the supplied password.é&x")
    [warning] = reader.warnings
    assert "1 text value(s) over 10 MB truncated" in warning and "plugin_output of plugin 21745" in warning
    analysis, _ = analyze_file(write(tmp_path, text, "again.nessus"))
    assert warning in analysis.warnings and analysis.findings == 106


def test_severity_outside_0_to_4_is_clamped_once_with_a_warning(tmp_path):
    real = fixture("ruby-nessus-metasploitable-anonymized.nessus").read_text(encoding="utf-8")
    first = real.index('severity="3"')
    second = real.index('severity="0"')
    text = real[:first] + 'severity="5"' + real[first + 12:]
    text = text[:second] + 'severity="-1"' + text[second + 12:]
    reader = NessusReader(write(tmp_path, text))
    findings = [f for b in reader for f in b.findings]
    assert all(0 <= f.severity <= 4 for f in findings)
    raw = [f.attributes["severity"] for f in findings if f.attributes["severity"] in ("5", "-1")]
    assert sorted(raw) == ["-1", "5"]  # the raw value stays in the attributes
    [warning] = reader.warnings
    assert "Severity outside 0-4 in 2 finding(s)" in warning and "raw 5 → 4" in warning and "raw -1 → 0" in warning
