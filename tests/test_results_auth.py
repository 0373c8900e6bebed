"""Authentication verdicts per host and per task, from the real fixtures and from hand-made exports
for the plugins no fixture carries (110385, 102094, 21745 with socket errors, dead hosts)."""

from __future__ import annotations

import pytest

from tasks.results.analysis import analyze_file
from tests.results_support import fixture, host, item, nessus, scan_info, write


def verdicts(analysis):
    return {name: (v.verdict, v.cause) for name, v in analysis.host_verdicts.items()}


def plugin_ids(analysis, name):
    return [e["plugin_id"] for e in analysis.host_verdicts[name].evidence]


def test_mitre_mixed_auth_self_scan_is_no_proof_the_remote_logins_failed():
    analysis, _ = analyze_file(fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus"))
    assert analysis.scan_type == "authenticated" and "ssh_key" in analysis.scan_type_source
    assert verdicts(analysis) == {
        "10.0.0.3": ("local_only", "scanner_itself"),  # the scanner itself: "yes (on the localhost)"
        "10.0.0.2": ("failed", "credentials_rejected"),
        "10.0.0.1": ("failed", "credentials_rejected"),
    }
    # The key could not even be parsed: the task fails, whatever the scanner's own local checks said.
    assert analysis.verdict == "failed" and analysis.should_fail
    assert "did not work on any of the 2 host(s)" in analysis.failure_message
    assert analysis.host_verdicts["10.0.0.3"].evidence[0] == {"plugin_id": 19506, "port": 0,
                                                              "line": "Scanner IP : 10.0.0.3"}
    assert {141118, 117887, 110095, 19506} <= set(plugin_ids(analysis, "10.0.0.3"))
    evidence = analysis.host_verdicts["10.0.0.1"].evidence
    assert evidence[0] == {"plugin_id": 104410, "port": 22, "line": "Failed to parse the given key information."}
    assert {"plugin_id": 21745, "port": 0, "line": "Unable to login to remote host with supplied credential sets."} \
        in evidence
    assert analysis.validation["hosts_credentialed"] == 0
    assert analysis.validation["hosts_local_only"] == ["10.0.0.3"]
    assert analysis.validation["failures_by_cause"] == {"credentials_rejected": 2}
    assert analysis.validation["nessus_version"] == "10.1.1"
    assert analysis.validation["plugin_feed_version"] == "202203221555"
    assert analysis.validation["targets_without_results"] == ["10.0.0.4"]
    assert any("scanner itself (10.0.0.3)" in w and "not counted" in w for w in analysis.warnings)
    assert any("10.0.0.4" in w for w in analysis.warnings)
    [entry] = analysis.troubleshooting
    assert entry["cause"] == "credentials_rejected" and sorted(entry["hosts"]) == ["10.0.0.1", "10.0.0.2"]
    assert entry["evidence"]["plugin_id"] == 104410 and entry["next_steps"]


def test_libnessus_ssh_password_rejected_everywhere_fails_the_task():
    analysis, _ = analyze_file(fixture("libnessus-3hosts-ssh-auth-failure.nessus"))
    assert analysis.scan_type == "authenticated"
    assert verdicts(analysis) == {
        "192.168.2.100": ("failed", "credentials_rejected"),
        "192.168.2.101": ("failed", "credentials_rejected"),
        "192.168.2.104": ("failed", "local_checks_not_run"),  # no SSH service: 19506 "no", nothing tried
    }
    assert analysis.host_verdicts["192.168.2.100"].evidence[0] == {
        "plugin_id": 21745, "port": 0, "line": "- Failed to authenticate using the supplied password."}
    assert analysis.verdict == "failed" and analysis.should_fail
    assert "did not work on any of the 3 host(s)" in analysis.failure_message
    assert "credentials rejected on 192.168.2.101, 192.168.2.100" in analysis.failure_message
    assert [t["cause"] for t in analysis.troubleshooting] == ["credentials_rejected", "local_checks_not_run"]


def test_mulval_no_credentials_provided():
    analysis, _ = analyze_file(fixture("mulval-untrusted-no-credentials.nessus"))
    assert analysis.scan_type == "untrusted"
    assert verdicts(analysis) == {"192.168.1.206": ("not_applicable", "no_credentials")}
    # 117886 lists both reasons (Windows not supported over SSH; no SMB credentials): not provided wins.
    assert set(plugin_ids(analysis, "192.168.1.206")[:2]) == {117886, 110723}
    assert {"plugin_id": 117886, "port": 0, "line": "Credentials were not provided for detected SMB service."} \
        in analysis.host_verdicts["192.168.1.206"].evidence
    assert analysis.verdict == "not_applicable" and not analysis.should_fail
    assert analysis.validation["scanner_credential_counts"]["hostCredsFailedCount"] == "1"
    # The same export judged as an authenticated scan: the credentials never reached the host.
    analysis, _ = analyze_file(fixture("mulval-untrusted-no-credentials.nessus"), scan_type="authenticated")
    assert verdicts(analysis) == {"192.168.1.206": ("failed", "no_credentials")}
    assert analysis.verdict == "failed" and analysis.should_fail
    assert analysis.troubleshooting[0]["cause"] == "no_credentials"


@pytest.mark.parametrize(
    "name", ["defectdojo-untrusted-basic-network.nessus", "ruby-nessus-metasploitable-anonymized.nessus"]
)
def test_untrusted_scans_are_not_applicable(name):
    for scan_type in (None, "untrusted"):
        analysis, _ = analyze_file(fixture(name), scan_type=scan_type)
        assert analysis.scan_type == "untrusted"
        assert {v for v, _ in verdicts(analysis).values()} == {"not_applicable"}
        assert {c for _, c in verdicts(analysis).values()} == {"untrusted_scan"}
        assert analysis.verdict == "not_applicable" and not analysis.should_fail
        assert analysis.troubleshooting == []


def test_untrusted_file_judged_as_authenticated_fails():
    analysis, _ = analyze_file(fixture("defectdojo-untrusted-basic-network.nessus"), scan_type="authenticated")
    # its policy lists the SSH/SMB password fields empty: no credentials, not a host without SSH/SMB
    assert verdicts(analysis) == {"testphp.vulnweb.com": ("failed", "no_credentials")}
    assert analysis.should_fail


@pytest.mark.parametrize(
    ("name", "hosts"),
    [
        ("pytenable-windows-agent-credentialed.nessus", ["adam"]),
        ("mitre-saf-cis-ubuntu-agent-compliance.nessus", ["ip-10-10-23-102", "ip-10-10-37-43", "ip-10-10-24-231"]),
    ],
)
def test_credentialed_exports_succeed(name, hosts):
    analysis, _ = analyze_file(fixture(name))
    assert analysis.scan_type == "authenticated"
    assert verdicts(analysis) == {h: ("success", "") for h in hosts}
    assert analysis.verdict == "success" and not analysis.warnings
    assert all(analysis.host_verdicts[h].evidence[0]["plugin_id"] == 19506 for h in hosts)


def test_libnessus_scan_of_only_the_scanner_is_local_only():
    analysis, _ = analyze_file(fixture("libnessus-localhost-credentialed.nessus"))
    assert analysis.scan_type == "authenticated"
    assert verdicts(analysis) == {"127.0.0.1": ("local_only", "scanner_itself")}
    assert analysis.host_verdicts["127.0.0.1"].self_verdict == "success"
    # DESIGN §6: the scanner's own local checks never make a task success while the credentials worked on
    # no remote host (here no credentials were even supplied: the policy's password fields are empty)
    assert analysis.verdict == "local_only" and not analysis.should_fail
    assert analysis.validation["hosts_credentialed"] == 0
    assert any("scanner itself (127.0.0.1)" in w for w in analysis.warnings)


def test_msf_autoshell_scanner_host_is_local_only_others_not_applicable():
    analysis, _ = analyze_file(fixture("msf-autoshell-11hosts.nessus"))
    assert analysis.scan_type == "untrusted"
    result = verdicts(analysis)
    assert result.pop("192.168.1.43") == ("local_only", "scanner_itself")  # Scanner IP, netstat/local checks
    assert len(result) == 10 and set(result.values()) == {("not_applicable", "untrusted_scan")}
    assert analysis.verdict == "not_applicable"
    # Judged as authenticated: the only "yes" is the scanner itself, the 10 remote hosts never logged in.
    analysis, _ = analyze_file(fixture("msf-autoshell-11hosts.nessus"), scan_type="authenticated")
    assert analysis.verdict == "failed" and analysis.should_fail
    assert "any of the 10 host(s)" in analysis.failure_message


def test_nessus4_export_without_credentialed_line_is_judged_by_its_policy():
    analysis, _ = analyze_file(fixture("ruby-nessus-nessus4-2hosts.nessus"), scan_type="authenticated")
    # no plugin says anything, but the policy lists its SSH/SMB password fields empty: nothing could log in
    assert verdicts(analysis) == {"snorby.org": ("failed", "no_credentials"),
                                  "scanme.insecure.org": ("failed", "no_credentials")}
    assert analysis.verdict == "failed" and analysis.should_fail
    assert analysis.host_verdicts["snorby.org"].evidence[0]["plugin_id"] is None
    # 19506 kept its text in <description> in Nessus 4: version and feed still come through.
    assert analysis.validation["nessus_version"] == "4.2.0"
    assert analysis.validation["plugin_feed_version"] == "200912110134"
    analysis, _ = analyze_file(fixture("ruby-nessus-nessus4-2hosts.nessus"))  # no credentials: untrusted
    assert set(verdicts(analysis).values()) == {("not_applicable", "untrusted_scan")}


def test_insufficient_privilege_is_partial(tmp_path):
    text = nessus(
        host("10.9.0.1", scan_info("yes, as 'scan' via ssh"),
             item(141118, "Nessus was able to log in to the remote host via the following :\n  User: 'scan'"),
             item(110385, "Nessus was able to log into the remote host, however this credential\ndid not have "
                          "sufficient privileges for all planned checks :", port=22),
             item(102094, "Login account : scan\nCommands failed due to privilege escalation failure :", port=22)),
        host("10.9.0.2", scan_info("yes"), item(117887, "OS Security Patch Assessment is available.")),
    )
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated_privileged")
    assert verdicts(analysis) == {"10.9.0.1": ("partial", "insufficient_privilege"), "10.9.0.2": ("success", "")}
    assert plugin_ids(analysis, "10.9.0.1")[:2] == [110385, 102094]
    assert "sufficient privileges" in analysis.host_verdicts["10.9.0.1"].evidence[0]["line"]
    assert analysis.verdict == "partial" and not analysis.should_fail
    assert analysis.troubleshooting[0]["cause"] == "insufficient_privilege"
    # the scan already asked for escalation: the advice is about the escalation, not "use authenticated_privileged"
    steps = analysis.troubleshooting[0]["next_steps"]
    assert any("escalation password" in step for step in steps)
    assert not any("authenticated_privileged" in step for step in steps)


def test_socket_errors_are_connectivity_not_credentials(tmp_path):
    socket_error = (
        "The following service errors were logged :\n\n  - Plugin      : ssh_get_info2.nasl\n"
        "    Protocol    : SSH\n    Message     : \nFailed to open a socket on port 22: Connection refused\n"
    )
    text = nessus(host("10.9.0.3", scan_info("no"), item(21745, socket_error)),
                  host("10.9.0.4", scan_info("no"), item(21745, "Message : Failed to authenticate using the supplied "
                                                                 "password.")))
    analysis, _ = analyze_file(write(tmp_path, text))
    assert analysis.scan_type == "authenticated"  # the policy has an SSH password
    assert verdicts(analysis) == {"10.9.0.3": ("failed", "connectivity"),
                                  "10.9.0.4": ("failed", "credentials_rejected")}
    assert analysis.host_verdicts["10.9.0.3"].evidence[0]["line"] == (
        "Failed to open a socket on port 22: Connection refused")
    assert analysis.verdict == "failed" and analysis.should_fail
    assert analysis.validation["failures_by_cause"] == {"connectivity": 1, "credentials_rejected": 1}


def test_repeated_host_is_merged_before_the_verdict(tmp_path):
    text = nessus(
        host("10.9.0.5", scan_info("no")),
        host("10.9.0.6", scan_info("yes"), item(141118, "ok")),
        host("10.9.0.5", item(104410, "Message : Authentication failed for user scan", port=22)),
    )
    analysis, _ = analyze_file(write(tmp_path, text))
    assert analysis.hosts == 2 and analysis.findings == 4
    assert verdicts(analysis)["10.9.0.5"] == ("failed", "credentials_rejected")


def test_dead_hosts_and_no_hosts_answered(tmp_path):
    dead = host("192.0.2.250", item(10180, "The remote host (192.0.2.250) is considered as dead - not scanning\n"))
    analysis, _ = analyze_file(write(tmp_path, nessus(dead, targets="192.0.2.250")), scan_type="untrusted")
    assert verdicts(analysis) == {"192.0.2.250": ("not_applicable", "host_unreachable")}
    assert analysis.hosts == 1 and analysis.hosts_answered == 0
    assert analysis.should_fail and "No host answered" in analysis.failure_message
    assert any(w.startswith("No hosts answered") for w in analysis.warnings)
    analysis, _ = analyze_file(write(tmp_path, nessus(targets="192.0.2.251"), "empty.nessus"))
    assert analysis.hosts == 0 and analysis.verdict == "unknown" and analysis.should_fail
    assert "192.0.2.251" in analysis.failure_message


def test_old_plugin_feed_warns(tmp_path):
    text = nessus(host("10.9.0.7", scan_info("yes", feed="202311010000"), item(141118, "ok")))
    analysis, _ = analyze_file(write(tmp_path, text))  # host started 2024-01-02 → feed 62 days old
    assert analysis.validation["plugin_feed_age_days"] == 62
    assert any(w.startswith("Plugins older than 30 days") and "62 days" in w for w in analysis.warnings)
