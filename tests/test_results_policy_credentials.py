"""An authenticated verdict must name the right cause when the export's own policy shows that no host
credentials were supplied: its SSH/SMB/Kerberos password and key fields are listed and empty.

"Credentialed checks : no" with no login attempt used to be explained as "the host probably exposes no
SSH/SMB service", even on hosts whose SSH (22) and SMB (445) services are in the same export
(ruby-nessus metasploitable, msf-autoshell's Windows hosts): the truth is that there were no credentials.
"""

from __future__ import annotations

import io
import re

from django.core.management import call_command

from tasks.results.analysis import analyze_file
from tasks.results.policy import convert_policy
from tests.results_support import fixture, write


def verdicts(analysis):
    return {name: (v.verdict, v.cause) for name, v in analysis.host_verdicts.items()}


def policy_of(name: str):
    from lxml import etree

    text = fixture(name).read_bytes()
    start, end = text.index(b"<Policy>"), text.index(b"</Policy>") + len(b"</Policy>")
    return convert_policy(etree.fromstring(text[start:end]))


def test_policy_reports_listed_but_empty_credential_fields():
    empty = policy_of("ruby-nessus-metasploitable-anonymized.nessus").credentials
    assert empty.fields_listed and not empty.supplied
    given = policy_of("libnessus-3hosts-ssh-auth-failure.nessus").credentials
    assert given.fields_listed and given.supplied
    agents = policy_of("pytenable-windows-agent-credentialed.nessus").credentials
    assert not agents.fields_listed and not agents.supplied


def test_no_credentials_in_policy_is_the_cause_not_a_missing_service():
    analysis, _ = analyze_file(fixture("ruby-nessus-metasploitable-anonymized.nessus"), scan_type="authenticated")
    assert verdicts(analysis) == {"10.0.0.1": ("failed", "no_credentials")}
    evidence = analysis.host_verdicts["10.0.0.1"].evidence
    assert evidence[0]["plugin_id"] is None and "no host credentials" in evidence[0]["line"]
    assert (19506, "Credentialed checks : no") in [(e["plugin_id"], e["line"]) for e in evidence]
    assert [t["cause"] for t in analysis.troubleshooting] == ["no_credentials"]
    assert analysis.should_fail and "no credentials provided on 10.0.0.1" in analysis.failure_message


def test_msf_autoshell_windows_hosts_judged_authenticated():
    analysis, _ = analyze_file(fixture("msf-autoshell-11hosts.nessus"), scan_type="authenticated_privileged")
    found = verdicts(analysis)
    assert found["192.168.1.43"] == ("local_only", "scanner_itself")
    assert {c for n, (v, c) in found.items() if n != "192.168.1.43"} == {"no_credentials"}
    assert analysis.verdict == "failed"


def test_credentials_in_policy_keep_local_checks_not_run():
    analysis, _ = analyze_file(fixture("libnessus-3hosts-ssh-auth-failure.nessus"), scan_type="authenticated")
    assert verdicts(analysis)["192.168.2.104"] == ("failed", "local_checks_not_run")


def test_a_policy_without_credential_fields_says_nothing(tmp_path):
    text = fixture("ruby-nessus-metasploitable-anonymized.nessus").read_text(encoding="utf-8")
    text, count = re.subn(r"<item>(?:(?!</item>).)*?<pluginName>SSH settings</pluginName>.*?</item>", "", text,
                          flags=re.S)
    assert count
    text = re.sub(r"<item>(?:(?!</item>).)*?<pluginName>(?:Login configurations|Kerberos configuration)</pluginName>"
                  r".*?</item>", "", text, flags=re.S)
    analysis, _ = analyze_file(write(tmp_path, text), scan_type="authenticated")
    assert verdicts(analysis) == {"10.0.0.1": ("failed", "local_checks_not_run")}


def test_untrusted_and_inferred_verdicts_unchanged():
    analysis, _ = analyze_file(fixture("ruby-nessus-metasploitable-anonymized.nessus"))
    assert verdicts(analysis) == {"10.0.0.1": ("not_applicable", "untrusted_scan")}


def test_text_output_labels_the_policy_evidence():
    out = io.StringIO()
    call_command("validate_nessus", str(fixture("ruby-nessus-metasploitable-anonymized.nessus")), "--scan-type",
                 "authenticated", stdout=out)
    text = out.getvalue()
    assert "[policy] Scan policy:" in text and "[props]" not in text
    assert "no credentials provided on 10.0.0.1" in text
