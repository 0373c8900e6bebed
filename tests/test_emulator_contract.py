"""The emulator against Tenable's documented Nessus REST API, from the outside.

The client here is written only from Tenable's API documentation (and the request/response shapes
pyTenable's own tests pin down): raw ``requests`` calls, no scanpool adapter, no pyTenable. Each test
drives ``manage.py nessus_emulator`` as a real process over real HTTP(S) and asserts the documented
shapes and status codes:

* ``POST /session`` → ``{"token"}``, 401 ``{"error"}`` on a bad login; ``X-Cookie: token=…``;
  ``DELETE /session`` ends the session; ``X-ApiKeys: accessKey=…; secretKey=…``;
* ``GET /server/status`` and ``/server/properties``; ``GET /editor/scan/templates``;
* ``GET /scans`` (``folders``, ``scans``, ``timestamp``), ``POST /scans`` → ``{"scan": {…}}``,
  ``GET /scans/{id}`` (``info``, ``hosts``, ``history``), launch → ``{"scan_uuid"}``, 409 on a running
  scan, stop / pause / resume, ``DELETE /scans/{id}``, 404 ``{"error"}`` for a scan that does not exist;
* exports: ``POST /scans/{id}/export`` → ``{"file", "token"}``, ``/tokens/{token}/status|download``
  and the older ``/scans/{id}/export/{file}/status|download``;
* 412 ``{"error": "API is not available"}`` when the licence has no scan API;
* the CLI contract of DESIGN §9 (ports, instances, HTTPS by default with a certificate under ``var/``,
  login and keys printed and overridable) and its scenario conventions: tests/test_emulator_contract_cli.py.
"""


from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from tests.nessus_doc_client import DocClient, error_of, logged_in, ssh

pytestmark = pytest.mark.integration


@pytest.fixture
def client(emulator) -> DocClient:
    """Overrides pytest-django's ``client`` in this module: the documented Nessus client, logged in."""
    return logged_in(emulator)


def test_session_login_use_and_logout(emulator):
    c = DocClient(emulator.urls[0])
    bad = c.login("admin", "wrong")
    assert bad.status_code == 401 and error_of(bad) == "Invalid Credentials"

    assert c.call("GET", "/scans").status_code == 401  # no credentials at all
    assert error_of(c.call("GET", "/scans"))

    good = c.login(emulator.username, emulator.password)
    assert good.status_code == 200 and set(good.json()) >= {"token"} and good.json()["token"]
    assert c.call("GET", "/scans").status_code == 200
    me = c.call("GET", "/session").json()
    assert me["username"] == emulator.username

    assert c.call("DELETE", "/session").status_code == 200
    after = c.call("GET", "/scans")  # the cookie still sent, the session gone
    assert after.status_code == 401 and error_of(after)

    form = requests.post(emulator.urls[0] + "/session", timeout=10,  # older clients post a form
                         data={"username": emulator.username, "password": emulator.password})
    assert form.status_code == 200 and form.json()["token"]
    curl_style = requests.post(emulator.urls[0] + "/session", timeout=10,  # curl -d '{...}' labels JSON as a form
                               data=f'{{"username": "{emulator.username}", "password": "{emulator.password}"}}',
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert curl_style.status_code == 200 and curl_style.json()["token"]

    forged = DocClient(emulator.urls[0])
    forged.http.headers["X-Cookie"] = "token=0123456789abcdef"
    assert forged.call("GET", "/scans").status_code == 401


def test_api_keys(emulator):
    c = DocClient(emulator.urls[0])
    c.use_keys(emulator.access_key, emulator.secret_key)
    assert c.call("GET", "/scans").status_code == 200
    wrong = DocClient(emulator.urls[0])
    wrong.use_keys(emulator.access_key, "0" * 64)
    resp = wrong.call("GET", "/scans")
    assert resp.status_code == 401 and error_of(resp)


# ----------------------------------------------------------------------------------------------- server


def test_server_status_properties_and_templates(emulator, client):
    anonymous = DocClient(emulator.urls[0])
    status = anonymous.call("GET", "/server/status")  # no auth needed
    assert status.status_code == 200 and status.json()["status"] == "ready"

    props = client.call("GET", "/server/properties").json()
    assert re.match(r"^\d+\.\d+\.\d+", props["server_version"])
    assert props["nessus_type"].startswith("Nessus")
    assert props["license"]["features"]["scan_api"] is True

    templates = client.call("GET", "/editor/scan/templates").json()["templates"]
    by_name = {t["name"]: t for t in templates}
    assert {"basic", "advanced"} <= set(by_name)
    for t in templates:
        assert set(t) >= {"uuid", "name", "title", "desc"}
        assert re.fullmatch(r"[0-9a-f-]{36,}", t["uuid"])


def test_folders_and_scanners(client):
    folders = client.call("GET", "/folders").json()["folders"]
    main = next(f for f in folders if f["type"] == "main")
    assert {"id", "name", "type", "unread_count"} <= set(main)
    [scanner] = client.call("GET", "/scanners").json()["scanners"]
    assert {"id", "name", "status", "engine_version"} <= set(scanner)
    scan = client.create("in a folder", "10.9.0.1", folder_id=main["id"], scanner_id=scanner["id"])
    assert [s["id"] for s in client.call("GET", "/scans", params={"folder_id": main["id"]}).json()["scans"]] == [
        scan["id"]]
    assert client.details(scan["id"])["info"]["folder_id"] == main["id"]
    later = client.call("GET", "/scans", params={"last_modification_date": int(time.time()) + 60}).json()
    assert not later["scans"]
    policies = client.call("GET", "/policies")  # user policies only (a scan's own is hidden): none, as null
    assert policies.status_code == 200 and policies.json() == {"policies": None}


def test_not_ready_and_unlicensed(emulator, client):
    control = emulator.control(0)
    control.set_faults(not_ready=True)
    status = client.call("GET", "/server/status")
    assert status.status_code == 503 and status.json()["status"] == "loading"
    control.set_faults(not_ready=False, unlicensed=True)
    props = client.call("GET", "/server/properties").json()
    assert props["license"]["features"]["scan_api"] is False
    resp = client.call("POST", "/scans", json={"uuid": client.template_uuid("basic"),
                                               "settings": {"name": "x", "text_targets": "10.0.0.1"}})
    assert resp.status_code == 412 and error_of(resp) == "API is not available"
    assert client.call("GET", "/scans").status_code == 200  # reading still works


# ------------------------------------------------------------------------------------------------ scans


def test_scan_lifecycle_as_documented(emulator, client):
    empty = client.call("GET", "/scans").json()
    assert set(empty) >= {"folders", "scans", "timestamp"}
    assert isinstance(empty["folders"], list) and isinstance(empty["timestamp"], int)
    assert not empty["scans"]  # null (like Nessus) or []

    scan = client.create("contract scan", "10.1.2.3, 10.1.2.4", template="advanced", credentials=ssh("good"))
    assert isinstance(scan["id"], int) and scan["name"] == "contract scan" and scan["uuid"]
    listed = client.call("GET", "/scans").json()["scans"]
    row = next(s for s in listed if s["id"] == scan["id"])
    assert row["name"] == "contract scan" and row["status"] == "empty"
    assert {"folder_id", "creation_date", "last_modification_date", "uuid"} <= set(row)

    details = client.details(scan["id"])
    assert {"info", "hosts", "history"} <= set(details)
    assert details["info"]["status"] == "empty" and not details["history"]

    launched = client.call("POST", f"/scans/{scan['id']}/launch")
    assert launched.status_code == 200 and set(launched.json()) == {"scan_uuid"}
    scan_uuid = launched.json()["scan_uuid"]

    again = client.call("POST", f"/scans/{scan['id']}/launch")
    assert again.status_code == 409 and error_of(again)
    busy_delete = client.call("DELETE", f"/scans/{scan['id']}")
    assert busy_delete.status_code == 409 and error_of(busy_delete)

    seen = client.wait(scan["id"], until={"running"})
    assert seen[0] in {"pending", "running"}
    seen += client.wait(scan["id"])
    assert seen[-1] == "completed" and "running" in seen
    assert set(seen) <= {"pending", "running", "processing", "completed"}

    details = client.details(scan["id"])
    info = details["info"]
    for key in ("status", "name", "uuid", "scan_start", "scan_end", "targets", "hostcount", "policy",
                "scanner_name"):
        assert key in info, key
    assert info["name"] == "contract scan" and info["uuid"] == scan_uuid
    assert isinstance(info["scan_start"], int) and isinstance(info["scan_end"], int)
    assert info["scan_start"] <= info["scan_end"] and info["hostcount"] == 2
    assert "10.1.2.3" in info["targets"]
    hosts = {h["hostname"]: h for h in details["hosts"]}
    assert set(hosts) == {"10.1.2.3", "10.1.2.4"}
    for h in hosts.values():
        assert isinstance(h["host_id"], int)
        assert {"critical", "high", "medium", "low", "info", "progress"} <= set(h)
        assert all(isinstance(h[k], int) for k in ("critical", "high", "medium", "low", "info"))
    [run] = details["history"]
    assert {"history_id", "uuid", "status", "creation_date", "last_modification_date"} <= set(run)
    assert run["uuid"] == scan_uuid and run["status"] == "completed"
    assert client.call("GET", f"/scans/{scan['id']}", params={"history_id": run["history_id"]}).status_code == 200

    report = ET.fromstring(client.export_tokens(scan["id"]))
    assert report.tag == "NessusClientData_v2"
    assert {h.get("name") for h in report.iter("ReportHost")} == {"10.1.2.3", "10.1.2.4"}
    severities = {int(i.get("severity")) for i in report.iter("ReportItem")}
    assert severities <= {0, 1, 2, 3, 4} and max(severities) >= 3
    for host in report.iter("ReportHost"):  # findings agree with the severity counts of GET /scans/{id}
        counts = [0] * 5
        for item in host.iter("ReportItem"):
            counts[int(item.get("severity"))] += 1
        h = hosts[host.get("name")]
        assert counts == [h["info"], h["low"], h["medium"], h["high"], h["critical"]]

    # scan-level vulnerabilities and GET /scans/{id}/hosts/{host_id} agree with the export
    vulns = {v["plugin_id"]: v for v in details["vulnerabilities"]}
    items = [(int(i.get("pluginID")), int(i.get("severity"))) for i in report.iter("ReportItem")]
    assert {pid for pid, _ in items} == set(vulns)
    assert all(vulns[pid]["count"] == sum(1 for p, _ in items if p == pid) for pid in vulns)
    assert all({"plugin_name", "plugin_family", "severity", "vuln_index"} <= set(v) for v in vulns.values())
    for name, h in hosts.items():
        host = client.call("GET", f"/scans/{scan['id']}/hosts/{h['host_id']}")
        assert host.status_code == 200, host.text
        body = host.json()
        assert body["info"]["host-ip"] == name and body["info"]["host_start"]
        assert {v["hostname"] for v in body["vulnerabilities"]} == {name}
        per_severity = [sum(v["count"] for v in body["vulnerabilities"] if v["severity"] == s) for s in range(5)]
        assert per_severity == [h["info"], h["low"], h["medium"], h["high"], h["critical"]]
    assert client.call("GET", f"/scans/{scan['id']}/hosts/999").status_code == 404

    relaunch = client.call("POST", f"/scans/{scan['id']}/launch")  # a finished scan runs again
    assert relaunch.status_code == 200 and relaunch.json()["scan_uuid"] != scan_uuid
    client.wait(scan["id"])
    assert len(client.details(scan["id"])["history"]) == 2

    assert client.call("DELETE", f"/scans/{scan['id']}").status_code == 200
    gone = client.call("GET", f"/scans/{scan['id']}")
    assert gone.status_code == 404 and error_of(gone)


def test_missing_scans_and_bad_requests(client):
    for method, path in [("GET", "/scans/999999"), ("POST", "/scans/999999/launch"), ("DELETE", "/scans/999999"),
                         ("POST", "/scans/999999/stop"), ("POST", "/scans/999999/export")]:
        resp = client.call(method, path, json={} if method == "POST" else None)
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert error_of(resp)
    bad_template = client.call("POST", "/scans", json={"uuid": "no-such-template",
                                                       "settings": {"name": "x", "text_targets": "10.0.0.1"}})
    assert bad_template.status_code == 400 and error_of(bad_template)
    no_targets = client.call("POST", "/scans", json={"uuid": client.template_uuid("basic"),
                                                     "settings": {"name": "x", "text_targets": ""}})
    assert no_targets.status_code == 400 and "text_targets" in error_of(no_targets)
    never_launched = client.create("never launched", "10.0.0.9")
    for action in ("stop", "pause", "resume"):
        resp = client.call("POST", f"/scans/{never_launched['id']}/{action}")
        assert resp.status_code == 409 and error_of(resp)
    assert client.call("GET", "/tokens/notatoken/status").status_code == 404


def test_stop_pause_resume(client):
    scan = client.create("controlled", "10.3.0.1")
    client.call("POST", f"/scans/{scan['id']}/launch")
    client.wait(scan["id"], until={"running"})
    assert client.call("POST", f"/scans/{scan['id']}/pause").status_code == 200
    assert client.wait(scan["id"], until={"paused"})[-1] == "paused"
    assert client.call("POST", f"/scans/{scan['id']}/resume").status_code == 200
    assert client.wait(scan["id"], until={"running"})[-1] == "running"
    assert client.call("POST", f"/scans/{scan['id']}/stop").status_code == 200
    seen = client.wait(scan["id"])
    assert seen[-1] == "canceled" and set(seen) <= {"running", "stopping", "canceled"}
    assert client.details(scan["id"])["history"][-1]["status"] == "canceled"


def test_create_with_launch_now_starts_the_scan(client):
    scan = client.create("launched at once", "10.7.0.1", launch_now=True)
    details = client.details(scan["id"])
    assert details["info"]["status"] in {"pending", "running"} and len(details["history"]) == 1
    assert client.call("POST", f"/scans/{scan['id']}/launch").status_code == 409  # already running
    assert client.wait(scan["id"])[-1] == "completed"


def test_launch_with_alt_targets_scans_those_for_that_run(client):
    scan = client.create("alt targets", "10.8.0.1")
    launched = client.call("POST", f"/scans/{scan['id']}/launch", json={"alt_targets": ["10.8.0.7", "10.8.0.8"]})
    assert launched.status_code == 200
    client.wait(scan["id"])
    details = client.details(scan["id"])
    assert {h["hostname"] for h in details["hosts"]} == {"10.8.0.7", "10.8.0.8"}
    assert details["history"][-1]["alt_targets_used"] is True
    report = ET.fromstring(client.export_tokens(scan["id"]))
    assert {h.get("name") for h in report.iter("ReportHost")} == {"10.8.0.7", "10.8.0.8"}
    client.call("POST", f"/scans/{scan['id']}/launch")  # the next plain launch scans the configured targets
    client.wait(scan["id"])
    assert {h["hostname"] for h in client.details(scan["id"])["hosts"]} == {"10.8.0.1"}
    first = client.details(scan["id"])["history"][0]["history_id"]  # export an earlier run by its history id
    earlier_run = client.call("GET", f"/scans/{scan['id']}", params={"history_id": first}).json()
    assert {h["hostname"] for h in earlier_run["hosts"]} == {"10.8.0.7", "10.8.0.8"}  # that run's hosts
    host_id = earlier_run["hosts"][0]["host_id"]
    host = client.call("GET", f"/scans/{scan['id']}/hosts/{host_id}", params={"history_id": first}).json()
    assert host["info"]["host-ip"] == earlier_run["hosts"][0]["hostname"]
    token = client.call("POST", f"/scans/{scan['id']}/export", params={"history_id": first},
                        json={"format": "nessus"}).json()["token"]
    while client.call("GET", f"/tokens/{token}/status").json()["status"] != "ready":
        time.sleep(0.05)
    earlier = ET.fromstring(client.call("GET", f"/tokens/{token}/download").content)
    assert {h.get("name") for h in earlier.iter("ReportHost")} == {"10.8.0.7", "10.8.0.8"}
    missing = client.call("POST", f"/scans/{scan['id']}/export", params={"history_id": 999999},
                          json={"format": "nessus"})
    assert missing.status_code == 404
    bad = client.call("POST", f"/scans/{scan['id']}/launch", json={"alt_targets": "10.8.0.9"})
    assert bad.status_code == 400 and "alt_targets" in error_of(bad)


def test_older_file_export_flow(client):
    scan = client.create("file flow", "10.4.0.1")
    client.call("POST", f"/scans/{scan['id']}/launch")
    client.wait(scan["id"])
    file_id = client.call("POST", f"/scans/{scan['id']}/export", json={"format": "nessus"}).json()["file"]
    for _ in range(100):
        status = client.call("GET", f"/scans/{scan['id']}/export/{file_id}/status")
        assert status.status_code == 200
        if status.json()["status"] == "ready":
            break
        time.sleep(0.05)
    data = client.call("GET", f"/scans/{scan['id']}/export/{file_id}/download")
    assert data.status_code == 200
    assert ET.fromstring(data.content).find("Report/ReportHost").get("name") == "10.4.0.1"


# -------------------------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("name", ["Wöchentlich — DMZ", "扫描 weekly", 'say "hi"\r\nX-Injected: 1'])
def test_export_of_any_scan_name_downloads_with_a_plain_file_name(client, name):
    scan = client.create(name, "10.4.0.2", launch_now=True)
    client.wait(scan["id"])
    file_id = client.call("POST", f"/scans/{scan['id']}/export", json={"format": "nessus"}).json()["file"]
    while client.call("GET", f"/scans/{scan['id']}/export/{file_id}/status").json()["status"] != "ready":
        time.sleep(0.05)
    data = client.call("GET", f"/scans/{scan['id']}/export/{file_id}/download")
    assert data.status_code == 200 and "X-Injected" not in data.headers
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9_.-]+\.nessus"', data.headers["Content-Disposition"])
    assert ET.fromstring(data.content).find("Report/ReportHost").get("name") == "10.4.0.2"
