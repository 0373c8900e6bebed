"""Verdict rules of issue #14 on crafted variants of the real exports: each variant is a real fixture with
one piece of its text edited, so everything around the edit is what a real scanner wrote.

- the scanner scanning itself (19506 "yes (on the localhost)", local-protocol logins, "Scanner IP") is
  ``local_only`` and never makes a task ``partial`` or ``success`` while no remote host logged in;
- agent scans are real local coverage;
- 117886's reason is read (unsupported OS → not applicable; not provided / no SSH answer / failed login →
  failed with that cause);
- 21745 naming both a socket error and "Failed to authenticate using the supplied password" is rejected
  credentials.
"""

from __future__ import annotations

import re

import pytest

from tasks.results.analysis import analyze_file
from tests.results_support import fixture, write


def verdicts(analysis):
    return {name: (v.verdict, v.cause) for name, v in analysis.host_verdicts.items()}


def text_of(name: str) -> str:
    return fixture(name).read_text(encoding="utf-8")


def drop_hosts(text: str, *names: str) -> str:
    """The export without the ReportHost blocks of ``names``."""
    for name in names:
        text, count = re.subn(rf'<ReportHost name="{re.escape(name)}">.*?</ReportHost>\s*', "", text, flags=re.S)
        assert count == 1, name
    return text


def replace_output(text: str, plugin_id: int, output: str, *, occurrence: int | None = None) -> str:
    """Replace the plugin_output of plugin ``plugin_id`` (every occurrence, or only the given one)."""
    pattern = re.compile(rf'(<ReportItem[^>]*pluginID="{plugin_id}"[^>]*>.*?<plugin_output>)(.*?)(</plugin_output>)',
                         re.S)
    seen = 0

    def sub(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        if occurrence is not None and seen - 1 != occurrence:
            return match.group(0)
        return match.group(1) + output + match.group(3)

    edited = pattern.sub(sub, text)
    assert seen, f"plugin {plugin_id} not in the export"
    return edited


MITRE = "mitre-saf-home-network-3hosts-mixed-auth.nessus"
LIBNESSUS_FAIL = "libnessus-3hosts-ssh-auth-failure.nessus"
LOCALHOST = "libnessus-localhost-credentialed.nessus"
MULVAL = "mulval-untrusted-no-credentials.nessus"
AGENTS = "mitre-saf-cis-ubuntu-agent-compliance.nessus"


# --- the scanner scanning itself ---------------------------------------------------------------------------------

def test_self_scan_only_is_local_only_not_success(tmp_path):
    text = drop_hosts(text_of(MITRE), "10.0.0.1", "10.0.0.2")
    analysis, _ = analyze_file(write(tmp_path, text))
    assert verdicts(analysis) == {"10.0.0.3": ("local_only", "scanner_itself")}
    # the supplied SSH key was tried on no remote host: no proof it works, and no failure either
    assert analysis.verdict == "local_only" and not analysis.should_fail
    evidence = [(e["plugin_id"], e["line"]) for e in analysis.host_verdicts["10.0.0.3"].evidence]
    assert (19506, "Credentialed checks : yes (on the localhost)") in evidence
    assert (117887, "Protocol : LOCAL") in evidence


def test_self_scan_plus_failed_remote_host_fails(tmp_path):
    text = drop_hosts(text_of(MITRE), "10.0.0.1")  # the scanner and one remote host whose key was rejected
    analysis, _ = analyze_file(write(tmp_path, text))
    assert verdicts(analysis) == {"10.0.0.3": ("local_only", "scanner_itself"),
                                  "10.0.0.2": ("failed", "credentials_rejected")}
    assert analysis.verdict == "failed" and analysis.should_fail  # was "partial" before issue #14


def test_self_scan_plus_remote_success_is_success_and_remote_failure_partial(tmp_path):
    # 10.0.0.2 really logged in: its 19506 says "yes" and its failure plugins are gone.
    text = text_of(MITRE)
    blocks = dict(re.findall(r'(<ReportHost name="([^"]+)">.*?</ReportHost>)', text, re.S)[i][::-1] for i in range(3))
    good = blocks["10.0.0.2"].replace("Credentialed checks : no", "Credentialed checks : yes")
    good = re.sub(r'<ReportItem[^>]*pluginID="(?:104410|21745)"[^>]*>.*?</ReportItem>', "", good, flags=re.S)
    analysis, _ = analyze_file(write(tmp_path, text.replace(blocks["10.0.0.2"], good)))
    assert verdicts(analysis)["10.0.0.2"] == ("success", "")
    assert verdicts(analysis)["10.0.0.3"] == ("local_only", "scanner_itself")
    assert analysis.verdict == "partial" and not analysis.should_fail  # 10.0.0.1 still failed
    # the scanner itself is not one of the hosts the credentials are judged on: 1 of 2, not 1 of 3
    assert any(w.startswith("Authentication failed or was incomplete on 1 of 2 hosts") for w in analysis.warnings)
    analysis, _ = analyze_file(write(tmp_path, drop_hosts(text.replace(blocks["10.0.0.2"], good), "10.0.0.1"),
                                     "two.nessus"))
    assert analysis.verdict == "success"


def test_scanner_ip_alone_marks_the_scanner(tmp_path):
    """libnessus' 127.0.0.1 says a plain "yes": only 19506's Scanner IP tells it is the scanner itself."""
    text = text_of(LOCALHOST)
    assert "Credentialed checks : yes\n" in text and "Scanner IP : 127.0.0.1" in text
    analysis, _ = analyze_file(write(tmp_path, text.replace("Scanner IP : 127.0.0.1", "Scanner IP : 10.1.1.1")))
    assert verdicts(analysis) == {"127.0.0.1": ("success", "")}  # another machine scanned it: real proof
    # The same export with a failed remote host added: the scanner's own "yes" does not rescue the task.
    remote = re.search(r'<ReportHost name="192.168.2.100">.*?</ReportHost>', text_of(LIBNESSUS_FAIL), re.S).group(0)
    combined = text.replace("</Report>", remote + "</Report>")
    analysis, _ = analyze_file(write(tmp_path, combined, "combined.nessus"), scan_type="authenticated")
    assert verdicts(analysis) == {"127.0.0.1": ("local_only", "scanner_itself"),
                                  "192.168.2.100": ("failed", "credentials_rejected")}
    assert analysis.verdict == "failed" and analysis.should_fail


# --- agent scans -------------------------------------------------------------------------------------------------

def test_agent_scans_are_real_coverage():
    analysis, _ = analyze_file(fixture(AGENTS))
    assert set(verdicts(analysis).values()) == {("success", "")}  # "yes (on the localhost)" on agents
    assert analysis.verdict == "success" and not analysis.validation["hosts_local_only"]


def test_the_same_local_checks_without_agents_are_local_only(tmp_path):
    text = text_of(AGENTS).replace("Scan type : Unix Agent", "Scan type : Normal")
    text = re.sub(r"<name>agent_targets</name>\s*<value>[^<]*</value>", "<name>agent_targets</name><value></value>",
                  text)
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated")
    assert set(verdicts(analysis).values()) == {("local_only", "scanner_itself")}
    assert analysis.verdict == "local_only"  # only the scanner(s) themselves: no proof of credentials, warned
    assert any("scanner itself" in w for w in analysis.warnings)


# --- 117886: patch assessment not available, for a reason ----------------------------------------------------------

ISSUES = "\nThe following issues were reported :\n\n  - Plugin      : ssh_get_info2.nasl\n    Plugin ID   : 97993\n" \
         "    Plugin Name : OS Identification and Installed Software Enumeration over SSH v2\n" \
         "    Protocol    : SSH\n    Message     : \n{}\n"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Credentialed checks of Windows are not supported using SSH.", ("not_applicable", "not_supported")),
        ("The remote host did not respond to SSH.", ("failed", "connectivity")),
        ("Failed to authenticate using the supplied password.", ("failed", "credentials_rejected")),
        ("Credentials were not provided for detected SSH service.", ("failed", "no_credentials")),
        # no known reason: not run, and this export's policy shows that no credentials were supplied
        ("Something the scanner never said before.", ("failed", "no_credentials")),
    ],
)
def test_117886_reason_is_read(tmp_path, reason, expected):
    text = replace_output(text_of(MULVAL), 117886, ISSUES.format(reason))
    text = re.sub(r'<ReportItem[^>]*pluginID="110723"[^>]*>.*?</ReportItem>', "", text, flags=re.S)
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated")
    assert verdicts(analysis) == {"192.168.1.206": expected}
    evidence = analysis.host_verdicts["192.168.1.206"].evidence[0]
    if reason.startswith("Something"):
        assert evidence["plugin_id"] is None and "no host credentials" in evidence["line"]
    else:
        assert evidence == {"plugin_id": 117886, "port": 0, "line": reason}


def test_117886_no_credentials_beside_a_success_makes_the_task_partial(tmp_path):
    """Issue #14: 19506 "no" + 117886 on one host of two dropped out and the task said success, silently."""
    fail_text = text_of(LIBNESSUS_FAIL)
    success = drop_hosts(fail_text, "192.168.2.100", "192.168.2.101")  # 192.168.2.104: 19506 "no"
    item_117886 = re.search(r'<ReportItem[^>]*pluginID="117886"[^>]*>.*?</ReportItem>', text_of(MULVAL), re.S).group(0)
    item_117886 = replace_output(item_117886, 117886, ISSUES.format(
        "Credentials were not provided for detected SSH service."))
    success = re.sub(r'(<ReportHost name="192.168.2.104">.*?)(</ReportHost>)', rf"\g<1>{item_117886}\g<2>", success,
                     count=1, flags=re.S)
    good = re.search(r'<ReportHost name="127.0.0.1">.*?</ReportHost>', text_of(LOCALHOST), re.S).group(0)
    good = good.replace('name="127.0.0.1"', 'name="192.168.2.50"').replace(
        '<tag name="host-ip">127.0.0.1</tag>', '<tag name="host-ip">192.168.2.50</tag>')
    text = success.replace("</Report>", good + "</Report>")
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated")
    assert verdicts(analysis) == {"192.168.2.104": ("failed", "no_credentials"), "192.168.2.50": ("success", "")}
    assert analysis.verdict == "partial"
    assert any("1 of 2 hosts" in w and "no credentials provided on 192.168.2.104" in w for w in analysis.warnings)


# --- 21745 with mixed causes -------------------------------------------------------------------------------------

def test_21745_socket_error_and_failed_password_is_rejected_credentials(tmp_path):
    mixed = ("The following service errors were logged :\n  - Plugin : ssh_get_info2.nasl\n    Message : \n"
             "Failed to open a socket on port 22: Connection reset by peer\n"
             "- Failed to authenticate using the supplied password.\n")
    text = replace_output(text_of(LIBNESSUS_FAIL), 21745, mixed)
    analysis, _ = analyze_file(write(tmp_path, text))
    assert verdicts(analysis)["192.168.2.100"] == ("failed", "credentials_rejected")
    assert analysis.host_verdicts["192.168.2.100"].evidence[0]["line"] == (
        "- Failed to authenticate using the supplied password.")
    # Socket error alone: connectivity, the credentials were never tried.
    text = replace_output(text_of(LIBNESSUS_FAIL), 21745, mixed.replace(
        "- Failed to authenticate using the supplied password.\n", ""))
    analysis, _ = analyze_file(write(tmp_path, text, "socket.nessus"))
    assert verdicts(analysis)["192.168.2.100"] == ("failed", "connectivity")


# --- odd whitespace in 19506 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["Credentialed  checks : yes", "Credentialed\u00a0checks\u00a0:\u00a0yes",
                                  "\tCredentialed\tchecks\t:\tYES\r", "Credentialed checks: yes, as 'root' via ssh"])
def test_19506_line_with_odd_whitespace_is_read(tmp_path, line):
    text = replace_output(text_of(LIBNESSUS_FAIL), 19506, f"Scanner IP : 10.0.2.15\n{line}\n", occurrence=0)
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated")
    assert verdicts(analysis)["192.168.2.104"] == ("success", "")
    assert analysis.host_verdicts["192.168.2.104"].evidence[0]["plugin_id"] == 19506


def test_failure_message_counts_only_the_hosts_it_could_judge(tmp_path):
    # 192.168.2.104 without its 19506: no evidence at all, so nobody knows whether the password worked there
    text = re.sub(r'(<ReportHost name="192.168.2.104">.*?)<ReportItem[^>]*pluginID="19506".*?</ReportItem>', r"\1",
                  text_of(LIBNESSUS_FAIL), count=1, flags=re.S)
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated")
    assert verdicts(analysis)["192.168.2.104"] == ("unknown", "no_evidence")
    assert analysis.verdict == "failed" and analysis.should_fail
    assert "did not work on any of the 2 host(s)" in analysis.failure_message
    assert "1 other host(s) could not be judged (192.168.2.104)" in analysis.failure_message


# --- targets that did not answer ----------------------------------------------------------------------------------

DEAD_HOST = ('<ReportHost name="192.168.2.250"><HostProperties><tag name="host-ip">192.168.2.250</tag>'
             '</HostProperties><ReportItem port="0" svc_name="general" protocol="tcp" severity="0" pluginID="10180" '
             'pluginName="Ping the remote host" pluginFamily="Port scanners"><plugin_output>The remote host '
             '(192.168.2.250) is considered as dead - not scanning</plugin_output></ReportItem></ReportHost>')


def test_a_target_reported_dead_is_counted_with_the_missing_ones(tmp_path):
    text = text_of(LIBNESSUS_FAIL).replace("192.168.2.101,192.168.2.104</value>",
                                           "192.168.2.101,192.168.2.104,192.168.2.250,192.168.2.251</value>")
    analysis, _ = analyze_file(write(tmp_path, text.replace("</Report>", DEAD_HOST + "</Report>")))
    assert verdicts(analysis)["192.168.2.250"] == ("not_applicable", "host_unreachable")
    assert analysis.validation["targets_without_results"] == ["192.168.2.251"]
    assert analysis.validation["hosts_answered"] == 3
    assert "2 target(s) did not answer: 192.168.2.251 (not in the results), 192.168.2.250 (reported dead)." \
        in analysis.warnings


# --- insufficient privilege: the advice depends on whether escalation was already asked for ------------------------

def _noprivs(tmp_path):
    """mitre's 10.0.0.3 as a remote SSH host that logged in without enough privilege (110385)."""
    text = drop_hosts(text_of(MITRE), "10.0.0.1", "10.0.0.2").replace("Scanner IP : 10.0.0.3", "Scanner IP : 10.0.0.9")
    text = text.replace("yes (on the localhost)", "yes, as 'scan' via ssh")
    text = re.sub(r'<ReportItem[^>]*pluginID="(?:141118|117887|110095|97993)".*?</ReportItem>', "", text, flags=re.S)
    privilege = ('<ReportItem port="22" svc_name="ssh" protocol="tcp" severity="0" pluginID="110385" '
                 'pluginName="Target Credential Issues by Authentication Protocol - Insufficient Privilege" '
                 'pluginFamily="Settings">'
                 "<plugin_output>Nessus was able to log into the remote host, however this credential did not have "
                 "sufficient privileges for all planned checks :\n\n  Protocol : SSH\n  Port : 22\n  User : 'scan'"
                 "</plugin_output></ReportItem>")
    return write(tmp_path, text.replace("</HostProperties>", "</HostProperties>" + privilege, 1))


@pytest.mark.parametrize("scan_type", ["authenticated", "authenticated_privileged"])
def test_insufficient_privilege_advice_knows_the_scan_type(tmp_path, scan_type):
    analysis, _ = analyze_file(_noprivs(tmp_path), scan_type=scan_type)
    assert verdicts(analysis) == {"10.0.0.3": ("partial", "insufficient_privilege")}
    (entry,) = analysis.troubleshooting
    steps = " ".join(entry["next_steps"])
    if scan_type == "authenticated":
        assert "Use the authenticated_privileged scan type" in steps
    else:  # escalation was asked for and did not give enough privilege: do not tell the user to ask for it
        assert "Use the authenticated_privileged scan type" not in steps
        assert "already" in entry["likely_cause"] and "escalation" in entry["likely_cause"]
