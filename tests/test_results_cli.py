"""manage.py validate_nessus: DESIGN §9 contract (keys, exit codes), with call_command and a real process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.results_support import EXPECTED, fixture, host, nessus, scan_info, write

ROOT = Path(__file__).resolve().parents[1]


def _json(*args):
    out = io.StringIO()
    call_command("validate_nessus", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_document_has_the_contract_keys(name):
    hosts, items, severities = EXPECTED[name]
    doc = _json(str(fixture(name)))
    assert {"hosts", "findings", "severity_counts", "host_verdicts", "verdict", "warnings"} <= set(doc)
    assert doc["hosts"] == hosts and doc["findings"] == items
    assert doc["severity_counts"] == {str(i): n for i, n in enumerate(severities)}
    assert len(doc["host_verdicts"]) == hosts
    for verdict in doc["host_verdicts"].values():
        assert set(verdict) == {"verdict", "cause", "evidence"}
        assert verdict["verdict"] in {"success", "partial", "failed", "not_applicable", "unknown",
                                      "local_only"}
    assert isinstance(doc["warnings"], list)


def test_json_verdicts_for_the_mixed_auth_export():
    doc = _json(str(fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus")))
    assert doc["verdict"] == "failed"  # the only success is the scanner scanning itself (issue #14)
    assert doc["host_verdicts"]["10.0.0.1"]["verdict"] == "failed"
    assert doc["host_verdicts"]["10.0.0.1"]["cause"] == "credentials_rejected"
    assert doc["host_verdicts"]["10.0.0.1"]["evidence"][0]["plugin_id"] == 104410
    assert doc["host_verdicts"]["10.0.0.3"]["verdict"] == "local_only"
    assert doc["host_verdicts"]["10.0.0.3"]["cause"] == "scanner_itself"
    assert doc["troubleshooting"][0]["cause"] == "credentials_rejected"


def test_scan_type_option_changes_the_verdict():
    name = str(fixture("mulval-untrusted-no-credentials.nessus"))
    assert _json(name)["verdict"] == "not_applicable"
    doc = _json(name, "--scan-type", "authenticated")
    assert doc["verdict"] == "failed" and doc["scan_type"] == "authenticated" and doc["should_fail"]
    with pytest.raises(CommandError):
        call_command("validate_nessus", name, "--scan-type", "sideways")


def test_text_output_lists_hosts_evidence_warnings_and_troubleshooting():
    out = io.StringIO()
    call_command("validate_nessus", str(fixture("libnessus-3hosts-ssh-auth-failure.nessus")), stdout=out)
    text = out.getvalue()
    assert "Hosts:      3" in text and "Findings:   106" in text
    assert "critical 2  high 3  medium 20  low 10  info 71" in text
    assert "Auth:       failed" in text and "FAIL: Authenticated scan failed" in text
    assert "192.168.2.100" in text and "[21745] - Failed to authenticate using the supplied password." in text
    assert "Troubleshooting:" in text and "Credentials rejected" in text


@pytest.mark.parametrize(
    "content",
    [b"", b"not xml", b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n<x>&e;</x>',
     b"<NessusClientData_v2><Report><ReportHost name='a'>"],
    ids=["empty", "not-xml", "hostile", "truncated"],
)
def test_bad_files_exit_2(tmp_path, content):
    path = tmp_path / "bad.nessus"
    path.write_bytes(content)
    with pytest.raises(CommandError) as exc:
        call_command("validate_nessus", str(path), "--json")
    assert exc.value.returncode == 2 and str(path) in str(exc.value)


def test_missing_file_exits_2():
    with pytest.raises(CommandError) as exc:
        call_command("validate_nessus", "/nonexistent/scan.nessus")
    assert exc.value.returncode == 2 and "cannot read" in str(exc.value)


def test_real_process_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "manage.py", "validate_nessus", "--json",
                         str(fixture("ruby-nessus-nessus4-2hosts.nessus"))], cwd=ROOT, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["findings"] == 69
    bad = subprocess.run([sys.executable, "manage.py", "validate_nessus", str(write(tmp_path, "<oops"))], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "malformed XML" in bad.stderr and bad.stdout == ""


@pytest.mark.parametrize(("name", "code"), [
    ("libnessus-3hosts-ssh-auth-failure.nessus", 1),  # failed
    ("mitre-saf-home-network-3hosts-mixed-auth.nessus", 1),  # partial
    ("pytenable-windows-agent-credentialed.nessus", 0),  # success
    ("defectdojo-untrusted-basic-network.nessus", 0),  # not_applicable
])
def test_fail_on_auth_exit_code_for_ci(name, code):
    args = [sys.executable, "manage.py", "validate_nessus", str(fixture(name))]
    with ThreadPoolExecutor(2) as executor:  # two independent processes: start-up overlaps
        strict_run = executor.submit(subprocess.run, [*args, "--fail-on-auth", "--json"], cwd=ROOT,
                                     capture_output=True, text=True, timeout=60)
        plain_run = executor.submit(subprocess.run, args, cwd=ROOT, capture_output=True, text=True, timeout=60)
        strict, plain = strict_run.result(), plain_run.result()
    assert strict.returncode == code, strict.stderr
    assert json.loads(strict.stdout)["verdict"]  # the report is printed either way
    if code:
        assert "--fail-on-auth: authentication verdict is" in strict.stderr
    assert plain.returncode == 0  # without the flag, a parsed file exits 0 whatever the verdict


def test_text_output_keeps_scanner_control_characters_off_the_terminal(tmp_path):
    # A scanned host picks its name and banners: a CR (allowed in XML as &#13;) returns the cursor and
    # overwrites the line, a newline forges report lines, C1 controls (U+009B is CSI) and bidi overrides
    # rewrite what the terminal shows. The text output shows them as escapes.
    hostile = "10.0.0.9\r\nFAIL: none\x9b31m\x85\u202e"
    text = nessus(host(hostile, scan_info(), props={"host-ip": "10.0.0.9"}))  # quoteattr: &#13;&#10;
    out = io.StringIO()
    call_command("validate_nessus", str(write(tmp_path, text)), stdout=out)
    shown = out.getvalue()
    assert not any(c in shown for c in "\r\x9b\x85\u202e")
    assert "\nFAIL: none" not in shown
    assert "10.0.0.9\\r\\nFAIL: none\\x9b31m\\x85\\u202e" in shown
