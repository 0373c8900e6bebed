"""``manage.py validate_nessus --json`` as DESIGN §9 states it.

Every real export in tests/fixtures/nessus/ is judged as a security engineer reads it (SOURCES.md): the
verdict without ``--scan-type`` (inferred from the file) and with the scan type a user would give — through
``call_command`` (the command's own parser and output; a process per file added only start-up time).
Exit 2 for everything that is not a readable .nessus export: missing, a directory, empty, gzip, hostile —
from the outside, a real process each, since the exit code is the contract there.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.results_support import EXPECTED, fixture

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"hosts", "findings", "severity_counts", "host_verdicts", "verdict", "warnings"}

# file → (inferred scan type, task verdict, {host: (verdict, cause)} for the hosts that matter)
INFERRED = {
    "defectdojo-untrusted-basic-network.nessus": (
        "untrusted", "not_applicable", {"testphp.vulnweb.com": ("not_applicable", "untrusted_scan")}),
    "ruby-nessus-metasploitable-anonymized.nessus": (
        "untrusted", "not_applicable", {"10.0.0.1": ("not_applicable", "untrusted_scan")}),
    "mulval-untrusted-no-credentials.nessus": (
        "untrusted", "not_applicable", {"192.168.1.206": ("not_applicable", "no_credentials")}),
    "ruby-nessus-nessus4-2hosts.nessus": (
        "untrusted", "not_applicable", {"snorby.org": ("not_applicable", "untrusted_scan")}),
    # the scanner scanning itself (netstat) is local_only; the other 10 hosts are untrusted
    "msf-autoshell-11hosts.nessus": (
        "untrusted", "not_applicable", {"192.168.1.43": ("local_only", "scanner_itself"),
                                        "192.168.1.1": ("not_applicable", "untrusted_scan")}),
    "pytenable-windows-agent-credentialed.nessus": ("authenticated", "success", {"adam": ("success", "")}),
    "mitre-saf-cis-ubuntu-agent-compliance.nessus": (
        "authenticated", "success", {"ip-10-10-23-102": ("success", "")}),
    # a scan of only the scanner itself proves nothing about credentials: local_only, never success
    "libnessus-localhost-credentialed.nessus": (
        "authenticated", "local_only", {"127.0.0.1": ("local_only", "scanner_itself")}),
    "libnessus-3hosts-ssh-auth-failure.nessus": (
        "authenticated", "failed", {"192.168.2.100": ("failed", "credentials_rejected"),
                                    "192.168.2.104": ("failed", "local_checks_not_run")}),
    "mitre-saf-home-network-3hosts-mixed-auth.nessus": (
        "authenticated", "failed", {"10.0.0.1": ("failed", "credentials_rejected"),
                                    "10.0.0.3": ("local_only", "scanner_itself")}),
}

# judged as an authenticated scan (what a user who meant to log in would ask)
AUTHENTICATED = {
    "msf-autoshell-11hosts.nessus": ("failed", {"192.168.1.43": "local_only", "192.168.1.57": "failed"}),
    "mulval-untrusted-no-credentials.nessus": ("failed", {"192.168.1.206": "failed"}),
    # no credential line in Nessus 4, but its policy's password fields are empty: no credentials
    "ruby-nessus-nessus4-2hosts.nessus": ("failed", {"snorby.org": "failed", "scanme.insecure.org": "failed"}),
    "defectdojo-untrusted-basic-network.nessus": ("failed", {"testphp.vulnweb.com": "failed"}),
}


def run(*args: str) -> subprocess.CompletedProcess:
    """A real ``manage.py validate_nessus`` process: its exit code and both streams."""
    return subprocess.run([sys.executable, "manage.py", "validate_nessus", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """The same command through ``call_command``: the exit code a process would have (CommandError's), the output."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("validate_nessus", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        code = exc.returncode
        err.write(str(exc))
    return subprocess.CompletedProcess(["validate_nessus", *args], code, out.getvalue(), err.getvalue())


def test_every_fixture_judged_from_the_outside():
    assert set(INFERRED) == set(EXPECTED)
    for name, (scan_type, verdict, hosts) in INFERRED.items():
        result = run_in_process(str(fixture(name)), "--json")
        assert result.returncode == 0, (name, result.stderr)
        doc = json.loads(result.stdout)
        assert CONTRACT_KEYS <= set(doc), name
        n_hosts, n_items, severities = EXPECTED[name]
        assert (doc["hosts"], doc["findings"]) == (n_hosts, n_items), name
        assert doc["severity_counts"] == {str(i): c for i, c in enumerate(severities)}, name
        assert (doc["scan_type"], doc["verdict"]) == (scan_type, verdict), name
        assert doc["scan_type_source"], name  # the reason for the inferred scan type is stated
        for host, (host_verdict, cause) in hosts.items():
            got = doc["host_verdicts"][host]
            assert (got["verdict"], got["cause"]) == (host_verdict, cause), (name, host, got)
            assert isinstance(got["evidence"], list)
        assert all(isinstance(w, str) for w in doc["warnings"]), name


@pytest.mark.parametrize("name", sorted(AUTHENTICATED))
def test_judged_as_authenticated(name):
    verdict, hosts = AUTHENTICATED[name]
    result = run_in_process(str(fixture(name)), "--json", "--scan-type", "authenticated")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == verdict
    assert {h: doc["host_verdicts"][h]["verdict"] for h in hosts} == hosts


def test_unreadable_inputs_exit_2(tmp_path):
    real = fixture("ruby-nessus-nessus4-2hosts.nessus").read_bytes()
    (tmp_path / "dir.nessus").mkdir()
    (tmp_path / "empty.nessus").write_bytes(b"")
    (tmp_path / "gz.nessus").write_bytes(gzip.compress(real))
    (tmp_path / "bomb.nessus").write_bytes(
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<NessusClientData_v2>&b;</NessusClientData_v2>")
    (tmp_path / "other.xml").write_bytes(b"<?xml version='1.0'?><html/>")
    (tmp_path / "cut.nessus").write_bytes(real[: len(real) // 2])
    names = ("missing.nessus", "dir.nessus", "empty.nessus", "gz.nessus", "bomb.nessus", "other.xml", "cut.nessus")
    with ThreadPoolExecutor(2) as executor:  # independent processes, one per core: start-up overlaps
        results = list(executor.map(lambda name: run(str(tmp_path / name), "--json"), names))
    for name, result in zip(names, results, strict=True):
        assert result.returncode == 2, (name, result.returncode, result.stderr)
        assert result.stdout == "" and str(tmp_path / name) in result.stderr, name
