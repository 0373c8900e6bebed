"""Shared helpers of the tests/test_results_*.py modules: the fixture corpus and small hand-made exports."""

from __future__ import annotations

import os
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest

# The real exports are vendored in tests/fixtures/nessus/ (copied from ../shared/fixtures/nessus/, with
# their SOURCES.md), so a clean checkout tests the same files.
FIXTURES = Path(os.environ.get("SCANPOOL_NESSUS_FIXTURES", Path(__file__).resolve().parent / "fixtures" / "nessus"))

# From tests/fixtures/nessus/SOURCES.md: hosts, ReportItems, severity 0..4.
EXPECTED = {
    "mitre-saf-home-network-3hosts-mixed-auth.nessus": (3, 149, (140, 2, 5, 1, 1)),
    "mitre-saf-cis-ubuntu-agent-compliance.nessus": (3, 420, (39, 42, 6, 333, 0)),
    "pytenable-windows-agent-credentialed.nessus": (1, 230, (135, 2, 9, 77, 7)),
    "defectdojo-untrusted-basic-network.nessus": (1, 49, (23, 1, 13, 10, 2)),
    "msf-autoshell-11hosts.nessus": (11, 268, (237, 5, 15, 4, 7)),
    "mulval-untrusted-no-credentials.nessus": (1, 102, (100, 0, 2, 0, 0)),
    "libnessus-3hosts-ssh-auth-failure.nessus": (3, 106, (71, 10, 20, 3, 2)),
    "libnessus-localhost-credentialed.nessus": (1, 167, (94, 5, 44, 21, 3)),
    "ruby-nessus-metasploitable-anonymized.nessus": (1, 155, (118, 8, 16, 5, 8)),
    "ruby-nessus-nessus4-2hosts.nessus": (2, 69, (19, 47, 3, 0, 0)),
}


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(
            f"fixture {path} is missing: the corpus lives in tests/fixtures/nessus/ (or set SCANPOOL_NESSUS_FIXTURES)"
        )
    return path


def item(
    plugin_id: int,
    output: str = "",
    *,
    severity: int = 0,
    port: int = 0,
    name: str = "",
    family: str = "Settings",
    children: dict[str, str | list[str]] | None = None,
    protocol: str = "tcp",
) -> str:
    parts = [
        f'<ReportItem port="{port}" svc_name="general" protocol="{protocol}" severity="{severity}" '
        f'pluginID="{plugin_id}" pluginName={quoteattr(name or f"plugin {plugin_id}")} '
        f"pluginFamily={quoteattr(family)}>"
    ]
    for key, value in (children or {}).items():
        for v in value if isinstance(value, list) else [value]:
            parts.append(f"<{key}>{escape(v)}</{key}>")
    if output:
        parts.append(f"<plugin_output>{escape(output)}</plugin_output>")
    parts.append("</ReportItem>")
    return "".join(parts)


def scan_info(credentialed: str = "yes", feed: str = "202401010000") -> str:
    return item(
        19506,
        f"Information about this scan : \n\nNessus version : 10.7.1\nPlugin feed version : {feed}\n"
        f"Scan type : Normal\nCredentialed checks : {credentialed}\n",
        name="Nessus Scan Information",
    )


def host(name: str, *items: str, props: dict[str, str] | None = None) -> str:
    props = {"host-ip": name, "HOST_START_TIMESTAMP": "1704153600", **(props or {})}
    tags = "".join(f"<tag name={quoteattr(k)}>{escape(v)}</tag>" for k, v in props.items())
    return f"<ReportHost name={quoteattr(name)}><HostProperties>{tags}</HostProperties>{''.join(items)}</ReportHost>"


def nessus(*hosts: str, ssh_password: bool = True, targets: str = "") -> str:
    cred = (
        "<item><pluginName>SSH settings</pluginName><pluginId>14273</pluginId>"
        "<fullName>SSH settings[password]:SSH password (unsafe!) :</fullName>"
        "<preferenceName>SSH password</preferenceName>"
        "<preferenceType>password</preferenceType><preferenceValues>*********</preferenceValues>"
        "<selectedValue>*********</selectedValue></item>"
        if ssh_password
        else ""
    )
    return (
        '<?xml version="1.0" ?>\n<NessusClientData_v2><Policy><policyName>test policy</policyName><Preferences>'
        f"<ServerPreferences><preference><name>TARGET</name><value>{escape(targets)}</value></preference>"
        f"</ServerPreferences><PluginsPreferences>{cred}</PluginsPreferences></Preferences></Policy>"
        '<Report name="hand made" xmlns:cm="http://www.nessus.org/cm">'
        + "".join(hosts)
        + "</Report></NessusClientData_v2>"
    )


def write(tmp_path: Path, text: str, name: str = "scan.nessus") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
