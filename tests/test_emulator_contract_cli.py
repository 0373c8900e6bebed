"""The emulator's scenario conventions and its command-line contract (DESIGN §9), from the outside,
with the client written from Tenable's documentation (tests/nessus_doc_client.py)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.nessus_doc_client import DocClient, logged_in, ssh

pytestmark = pytest.mark.integration


@pytest.fixture
def client(emulator) -> DocClient:
    """Overrides pytest-django's ``client`` in this module: the documented Nessus client, logged in."""
    return logged_in(emulator)



def _plugins(report: ET.Element) -> dict[str, dict[int, str]]:
    return {host.get("name"): {int(i.get("pluginID")): (i.findtext("plugin_output") or "")
                               for i in host.iter("ReportItem")}
            for host in report.iter("ReportHost")}


def test_scenario_conventions(client):
    cases = {
        "good": (client.create("good", "10.5.0.1", "advanced", ssh("good")), {19506, 141118, 117887}),
        "bad": (client.create("bad", "10.5.0.2", "advanced", ssh("bad")), {19506, 104410}),
        "noprivs": (client.create("noprivs", "10.5.0.3", "advanced", ssh("noprivs")), {19506, 110385}),
        "none": (client.create("none", "10.5.0.4", "advanced"), {19506, 110723}),
        "untrusted": (client.create("untrusted", "10.5.0.5", "basic"), {19506}),
        "unreachable": (client.create("unreachable", "10.5.0.6, 192.0.2.250, 192.0.2.254", "basic"), {19506}),
    }
    for scan, _ in cases.values():
        assert client.call("POST", f"/scans/{scan['id']}/launch").status_code == 200
    for case, (scan, expected) in cases.items():
        assert client.wait(scan["id"])[-1] == "completed", case
        plugins = _plugins(ET.fromstring(client.export_tokens(scan["id"])))
        [(host, found)] = plugins.items()
        assert expected <= set(found), (case, sorted(found))
        line = re.search(r"Credentialed checks : (\w+)", found[19506]).group(1)
        assert line == ("yes" if case in {"good", "noprivs"} else "no"), case
        if case in {"bad", "none", "untrusted", "unreachable"}:
            assert not {141118, 117887} & set(found), case
        if case == "unreachable":
            assert host == "10.5.0.6"  # 192.0.2.250-254 never answer: left out, like Nessus by default
            assert {h["hostname"] for h in client.details(scan["id"])["hosts"]} == {"10.5.0.6"}


def test_target_ranges_and_cidrs_expand_like_nessus(client):
    scan = client.create("ranges", "10.10.0.1-3, 10.10.0.2-10.10.0.4, 192.0.2.250-254, 10.10.1.0/30")
    client.call("POST", f"/scans/{scan['id']}/launch")
    client.wait(scan["id"])
    expected = {"10.10.0.1", "10.10.0.2", "10.10.0.3", "10.10.0.4", "10.10.1.1", "10.10.1.2"}  # dead ones left out
    assert {h["hostname"] for h in client.details(scan["id"])["hosts"]} == expected
    report = ET.fromstring(client.export_tokens(scan["id"]))
    names = [h.get("name") for h in report.iter("ReportHost")]
    assert sorted(names) == sorted(expected)  # each host once


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_ports_instances_https_and_overridden_login(emulator_factory):
    emu = emulator_factory(instances=3, scan_seconds=1, https=True, process=True, extra_args=[
        "--username", "scanner", "--password", "s3cret", "--access-key", "a" * 64, "--secret-key", "b" * 64])
    log = emu.log()
    assert "scanner / s3cret" in log and f"accessKey={'a' * 64}; secretKey={'b' * 64}" in log
    cert = Path(re.search(r"TLS certificate \(self-signed\): (\S+)", log).group(1))
    assert cert.is_file() and cert.resolve().is_relative_to(Path(settings.VAR_DIR).resolve())
    for i in range(3):
        url = f"https://127.0.0.1:{emu.port + i}"
        assert f"instance {i}: {url}/" in log
        with pytest.raises(requests.exceptions.SSLError):  # self-signed: not trusted by default
            requests.get(url + "/server/status", timeout=5)
        c = DocClient(url, verify=str(cert))  # trusted as a CA bundle
        assert c.call("GET", "/server/status").json()["status"] == "ready"
        assert c.login("admin", "admin").status_code == 401
        assert c.login("scanner", "s3cret").status_code == 200
        k = DocClient(url, verify=str(cert))
        k.use_keys("a" * 64, "b" * 64)
        assert k.call("GET", "/scans").status_code == 200
    # instances are independent scanners: a scan on one is not on the other
    c0, c1 = DocClient(f"https://127.0.0.1:{emu.port}", str(cert)), DocClient(f"https://127.0.0.1:{emu.port + 1}",
                                                                                  str(cert))
    for c in (c0, c1):
        c.use_keys("a" * 64, "b" * 64)
    c0.create("only on 0", "10.6.0.1")
    assert not c1.call("GET", "/scans").json()["scans"]


def test_cli_defaults_are_printed(emulator_factory):
    emulator = emulator_factory(instances=2, scan_seconds=2, process=True)
    log = emulator.log()
    assert "login: admin / admin" in log
    assert f"API keys: accessKey={emulator.access_key}; secretKey={emulator.secret_key}" in log
    assert "ready" in log

