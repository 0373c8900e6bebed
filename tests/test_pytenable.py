"""Tenable's own SDK (pyTenable's ``tenable.nessus.Nessus``) works unchanged against the emulator."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
from tenable.nessus import Nessus

pytestmark = pytest.mark.integration


def _run_scan(nessus: Nessus, template: str, targets: str, credentials: dict | None = None) -> ET.Element:
    templates = {t["name"]: t["uuid"] for t in nessus.editor.template_list("scan")}
    assert {"basic", "advanced"} <= set(templates)
    kwargs = {"credentials": credentials} if credentials else {}
    created = nessus.scans.create(
        uuid=templates[template],
        settings={"name": "pytenable check", "text_targets": targets, "enabled": False, "launch_now": False},
        **kwargs,
    )
    scan_id = created["scan"]["id"]
    assert nessus.scans.details(scan_id)["info"]["status"] == "empty"
    scan_uuid = nessus.scans.launch(scan_id)
    assert scan_uuid
    statuses = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        details = nessus.scans.details(scan_id)
        statuses.append(details["info"]["status"])
        if statuses[-1] == "completed":
            break
        time.sleep(0.2)
    assert statuses[-1] == "completed" and "running" in statuses
    assert details["history"][-1]["uuid"] == scan_uuid
    assert any(s["id"] == scan_id for s in nessus.scans.list()["scans"])
    data = nessus.scans.export_scan(scan_id).read()  # POST export → tokens/status → tokens/download
    return ET.fromstring(data)


def test_pytenable_session_login_full_scan_cycle(emulator):
    nessus = Nessus(url=emulator.urls[0], username=emulator.username, password=emulator.password)
    assert nessus.server.status()["status"] == "ready"
    assert nessus.server.properties()["license"]["features"]["scan_api"] is True
    root = _run_scan(
        nessus, "advanced", "192.0.2.80, 192.0.2.253",
        credentials={"add": {"Host": {"SSH": [{"auth_method": "password", "username": "root", "password": "good",
                                              "elevate_privileges_with": "Nothing"}]}}},
    )
    assert root.tag == "NessusClientData_v2"
    hosts = root.findall("Report/ReportHost")
    assert [h.get("name") for h in hosts] == ["192.0.2.80"]  # .253 is unreachable: not reported
    items = {i.get("pluginID"): i for i in hosts[0].iter("ReportItem")}
    assert "Credentialed checks : yes" in items["19506"].findtext("plugin_output")
    assert {"141118", "117887", "110095"} <= set(items)
    nessus._deauthenticate()
    assert emulator.control(0).stats()["logins"] == 1


def test_pytenable_api_keys_untrusted_scan(emulator):
    nessus = Nessus(url=emulator.urls[1], access_key=emulator.access_key, secret_key=emulator.secret_key)
    root = _run_scan(nessus, "basic", "192.0.2.81")
    host = root.find("Report/ReportHost")
    plugin_output = next(i for i in host.iter("ReportItem") if i.get("pluginID") == "19506").findtext("plugin_output")
    assert "Credentialed checks : no" in plugin_output
    severities = {int(i.get("severity")) for i in host.iter("ReportItem")}
    assert {0, 3, 4} <= severities
