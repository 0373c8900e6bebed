"""The Nessus emulator over real HTTP: protocol shapes, scan life, exports per scenario, control API."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
import requests

from tests.emulator import EmulatorProcess
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

BASIC = "731a8e52-3ea6-a291-ec0a-d2ff0619c19d7bd788d6be818b65"
ADVANCED = "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66"


def api(emu: EmulatorProcess, index: int = 0) -> requests.Session:
    s = requests.Session()
    s.headers["X-ApiKeys"] = f"accessKey={emu.access_key}; secretKey={emu.secret_key}"
    s.base = emu.urls[index]  # type: ignore[attr-defined]
    return s


def call(s: requests.Session, method: str, path: str, **kw) -> requests.Response:
    return s.request(method, s.base + path, timeout=5, **kw)  # type: ignore[attr-defined]


def create(s: requests.Session, targets: str, *, template: str = BASIC, ssh: dict | None = None, **settings) -> int:
    body: dict = {"uuid": template, "settings": {"name": f"t {targets}", "text_targets": targets, **settings}}
    if ssh:
        body["credentials"] = {"add": {"Host": {"SSH": [ssh]}}}
    resp = call(s, "POST", "/scans", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["scan"]["id"]


def run_to_end(s: requests.Session, scan_ids: list[int], timeout: float = 15) -> list[str]:
    for sid in scan_ids:
        assert call(s, "POST", f"/scans/{sid}/launch").status_code == 200
    deadline = time.monotonic() + timeout
    seen: dict[int, list[str]] = {sid: [] for sid in scan_ids}
    while time.monotonic() < deadline:
        done = True
        for sid in scan_ids:
            status = call(s, "GET", f"/scans/{sid}").json()["info"]["status"]
            if not seen[sid] or seen[sid][-1] != status:
                seen[sid].append(status)
            done = done and status == "completed"
        if done:
            return seen[scan_ids[0]] if scan_ids else []
        time.sleep(0.1)
    raise AssertionError(f"scans did not complete: {seen}")


def export(s: requests.Session, sid: int) -> ET.Element:
    token = call(s, "POST", f"/scans/{sid}/export", json={"format": "nessus"}).json()["token"]
    for _ in range(50):
        if call(s, "GET", f"/tokens/{token}/status").json()["status"] == "ready":
            break
        time.sleep(0.05)
    resp = call(s, "GET", f"/tokens/{token}/download")
    assert resp.status_code == 200
    return ET.fromstring(resp.content)


def _answers(s: requests.Session) -> int | None:
    """The status of GET /server/status, or None while the instance refuses connections."""
    try:
        return call(s, "GET", "/server/status").status_code
    except requests.ConnectionError:
        return None


def plugin_ids(host: ET.Element) -> set[str]:
    return {item.get("pluginID") for item in host.iter("ReportItem")}


def credentialed_line(host: ET.Element) -> str:
    item = next(i for i in host.iter("ReportItem") if i.get("pluginID") == "19506")
    return item.findtext("plugin_output").split("Credentialed checks : ")[1].split("\n")[0]


def test_auth_modes_and_unauthenticated_requests(emulator):
    base = emulator.urls[0]
    assert requests.get(f"{base}/scans", timeout=5).status_code == 401
    bad = requests.post(f"{base}/session", json={"username": "admin", "password": "nope"}, timeout=5)
    assert bad.status_code == 401 and bad.json() == {"error": "Invalid Credentials"}
    token = requests.post(f"{base}/session", json={"username": "admin", "password": "admin"}, timeout=5).json()["token"]
    cookie = {"X-Cookie": f"token={token}"}
    assert requests.get(f"{base}/scans", headers=cookie, timeout=5).json()["scans"] is None  # Nessus: null
    assert requests.delete(f"{base}/session", headers=cookie, timeout=5).status_code == 200
    assert requests.get(f"{base}/scans", headers=cookie, timeout=5).status_code == 401
    wrong_keys = {"X-ApiKeys": "accessKey=x; secretKey=y"}
    assert requests.get(f"{base}/scans", headers=wrong_keys, timeout=5).status_code == 401
    s = api(emulator)
    assert call(s, "GET", "/scans").status_code == 200
    names = {t["name"] for t in call(s, "GET", "/editor/scan/templates").json()["templates"]}
    assert {"basic", "advanced"} <= names


def test_server_status_and_properties(emulator):
    s = api(emulator)
    assert call(s, "GET", "/server/status").json()["status"] == "ready"
    props = call(s, "GET", "/server/properties").json()
    assert props["server_version"] and props["license"]["features"]["scan_api"] is True
    anonymous = requests.get(emulator.urls[0] + "/server/properties", timeout=5).json()
    assert "license" not in anonymous and anonymous["nessus_ui_version"]


def test_scan_goes_pending_running_processing_completed(emulator):
    s = api(emulator)
    sid = create(s, "192.0.2.10")
    assert call(s, "GET", f"/scans/{sid}").json()["info"]["status"] == "empty"
    statuses = run_to_end(s, [sid])
    assert statuses[0] == "pending" and "running" in statuses and statuses[-1] == "completed"
    details = call(s, "GET", f"/scans/{sid}").json()
    assert details["hosts"][0]["hostname"] == "192.0.2.10"
    assert details["history"][0]["status"] == "completed"
    listed = call(s, "GET", "/scans").json()["scans"]
    assert [r["id"] for r in listed] == [sid] and listed[0]["status"] == "completed"
    first_run = details["history"][0]["history_id"]
    assert call(s, "POST", f"/scans/{sid}/launch").status_code == 200  # a finished scan may run again
    again = call(s, "GET", f"/scans/{sid}").json()
    assert len(again["history"]) == 2 and again["info"]["status"] in {"pending", "running"}
    earlier = call(s, "GET", f"/scans/{sid}", params={"history_id": first_run}).json()
    assert earlier["info"]["status"] == "completed"
    assert call(s, "POST", f"/scans/{sid}/kill").status_code == 200
    assert emulator.control(0).stats()["launches"] == {str(sid): 2}


def test_exports_carry_credential_plugins_per_scenario(emulator):
    s = api(emulator)
    ssh = {"auth_method": "password", "username": "scan", "elevate_privileges_with": "Nothing"}
    scans = {
        "untrusted": create(s, "192.0.2.20"),
        "success": create(s, "192.0.2.21", template=ADVANCED, ssh={**ssh, "password": "good"}),
        "rejected": create(s, "192.0.2.22", template=ADVANCED, ssh={**ssh, "password": "bad"}),
        "noprivs": create(s, "192.0.2.23", template=ADVANCED, ssh={**ssh, "password": "noprivs"}),
        "none": create(s, "192.0.2.24", template=ADVANCED),
        "escalation_fails": create(s, "192.0.2.25", template=ADVANCED, ssh={
            **ssh, "password": "good", "elevate_privileges_with": "sudo", "escalation_account": "root",
            "escalation_password": "bad"}),
    }
    run_to_end(s, list(scans.values()))
    hosts = {name: export(s, sid).find("Report/ReportHost") for name, sid in scans.items()}

    auth_family = {"141118", "117887", "110095", "97993", "104410", "21745", "110385", "102094", "110723"}
    assert plugin_ids(hosts["untrusted"]) & auth_family == set()
    assert credentialed_line(hosts["untrusted"]) == "no"
    assert {"141118", "117887", "110095", "97993"} <= plugin_ids(hosts["success"])
    assert credentialed_line(hosts["success"]).startswith("yes")
    assert {"104410", "21745"} <= plugin_ids(hosts["rejected"])
    assert credentialed_line(hosts["rejected"]) == "no"
    failed = next(i for i in hosts["rejected"].iter("ReportItem") if i.get("pluginID") == "21745")
    assert "Failed to authenticate" in failed.findtext("plugin_output")
    for name in ("noprivs", "escalation_fails"):
        assert {"110385", "102094"} <= plugin_ids(hosts[name]) and "117887" not in plugin_ids(hosts[name])
    assert "110723" in plugin_ids(hosts["none"]) and credentialed_line(hosts["none"]) == "no"

    for host in hosts.values():  # realistic host blocks and findings of several severities
        props = {t.get("name"): t.text for t in host.find("HostProperties")}
        assert {"HOST_START", "HOST_END", "host-ip", "operating-system"} <= set(props)
        severities = {int(i.get("severity")) for i in host.iter("ReportItem")}
        assert severities == {0, 1, 2, 3, 4} or severities >= {0, 2, 3, 4}
        finding = next(i for i in host.iter("ReportItem") if i.get("severity") == "3")
        for child in ("description", "solution", "synopsis", "risk_factor", "cvss3_base_score", "plugin_output"):
            assert finding.findtext(child), child
    assert "good" not in ET.tostring(export(s, scans["success"])).decode()  # secrets are never echoed


def test_unreachable_targets_are_left_out_unless_asked_for(emulator):
    s = api(emulator)
    default = create(s, "192.0.2.30,192.0.2.250,192.0.2.254")
    shown = create(s, "192.0.2.31,192.0.2.251", display_unreachable_hosts="yes")
    run_to_end(s, [default, shown])
    assert [h.get("name") for h in export(s, default).iter("ReportHost")] == ["192.0.2.30"]
    dead = {h.get("name"): plugin_ids(h) for h in export(s, shown).iter("ReportHost")}
    assert dead["192.0.2.251"] == {"10180"} and "19506" in dead["192.0.2.31"]
    assert [h["hostname"] for h in call(s, "GET", f"/scans/{default}").json()["hosts"]] == ["192.0.2.30"]


def test_file_export_flow_and_bad_requests(emulator):
    s = api(emulator)
    sid = create(s, "192.0.2.40")
    assert call(s, "POST", f"/scans/{sid}/export", json={"format": "nessus"}).status_code == 409  # never ran
    run_to_end(s, [sid])
    file_id = call(s, "POST", f"/scans/{sid}/export", json={"format": "nessus"}).json()["file"]
    wait_for(lambda: call(s, "GET", f"/scans/{sid}/export/{file_id}/status").json() == {"status": "ready"},
             what="the export to be ready")
    resp = call(s, "GET", f"/scans/{sid}/export/{file_id}/download")
    assert ET.fromstring(resp.content).tag == "NessusClientData_v2"
    assert call(s, "GET", f"/scans/{sid}/export/12345/status").status_code == 404
    assert call(s, "POST", "/scans", json={"uuid": "nope", "settings": {"name": "x"}}).status_code == 400
    no_targets = call(s, "POST", "/scans", json={"uuid": BASIC, "settings": {"name": "x", "text_targets": ""}})
    assert no_targets.status_code == 400 and "text_targets" in no_targets.json()["error"]
    assert call(s, "GET", "/scans/99999").status_code == 404


def test_concurrency_and_launch_counts_are_recorded(emulator):
    s = api(emulator, 1)
    ids = [create(s, f"192.0.2.{50 + i}") for i in range(3)]
    for sid in ids:
        assert call(s, "POST", f"/scans/{sid}/launch").status_code == 200
    assert call(s, "POST", f"/scans/{ids[0]}/launch").status_code == 409  # already running
    stats = emulator.control(1).stats()
    assert stats["current_running"] == 3 and stats["max_concurrent"] == 3
    assert stats["launches"] == {str(i): 1 for i in ids}
    assert emulator.control(0).stats()["max_concurrent"] == 0  # instances are independent
    stats = wait_for(lambda: (st := emulator.control(1).stats())["current_running"] == 0 and st, timeout=10,
                     what="the scans to end")
    assert stats["current_running"] == 0 and stats["max_concurrent"] == 3


def test_stop_pause_resume(emulator):
    s = api(emulator)
    sid = create(s, "192.0.2.60")
    call(s, "POST", f"/scans/{sid}/launch")
    wait_for(lambda: call(s, "GET", f"/scans/{sid}").json()["info"]["status"] == "running", what="the scan to run")
    assert call(s, "POST", f"/scans/{sid}/pause").status_code == 200
    assert call(s, "GET", f"/scans/{sid}").json()["info"]["status"] == "paused"
    assert call(s, "POST", f"/scans/{sid}/resume").status_code == 200
    assert call(s, "GET", f"/scans/{sid}").json()["info"]["status"] in {"resuming", "running"}
    assert call(s, "POST", f"/scans/{sid}/stop").status_code == 200
    assert call(s, "GET", f"/scans/{sid}").json()["info"]["status"] == "stopping"
    assert call(s, "DELETE", f"/scans/{sid}").status_code == 409
    wait_for(lambda: call(s, "GET", f"/scans/{sid}").json()["info"]["status"] != "stopping", what="the stop to end")
    assert call(s, "GET", f"/scans/{sid}").json()["info"]["status"] == "canceled"
    assert call(s, "POST", f"/scans/{sid}/stop").status_code == 409
    assert call(s, "DELETE", f"/scans/{sid}").status_code == 200
    assert call(s, "GET", f"/scans/{sid}").status_code == 404


def test_control_api_faults_at_protocol_level(emulator):
    s = api(emulator)
    c = emulator.control(0)
    r = requests.post(emulator.urls[0] + "/_emulator/faults", json={"bogus": 1}, timeout=5)
    assert r.status_code == 400 and "unknown fault knob 'bogus'" in r.json()["error"]
    c.set_faults(unlicensed=True)
    assert call(s, "POST", "/scans", json={"uuid": BASIC, "settings": {"name": "x", "text_targets": "h"}}).json() == {
        "error": "API is not available"}
    assert call(s, "GET", "/server/properties").json()["license"]["features"]["scan_api"] is False
    c.set_faults(unlicensed=False, not_ready=True)
    assert call(s, "GET", "/server/status").json()["status"] == "loading"
    assert call(s, "GET", "/scans").status_code == 503
    c.set_faults(not_ready=False, error_burst=2)
    assert [call(s, "GET", "/scans").status_code for _ in range(3)] == [503, 503, 200]
    c.set_faults(latency=0.3)
    started = time.monotonic()
    call(s, "GET", "/scans")
    assert time.monotonic() - started >= 0.3
    c.set_faults(latency=0)
    c.down()
    with pytest.raises(requests.ConnectionError):
        call(s, "GET", "/server/status")
    assert c.state()["faults"]["down"] is True  # answered through instance 1
    c.up()
    assert call(s, "GET", "/server/status").status_code == 200
    c.down(seconds=0.5)
    with pytest.raises(requests.ConnectionError):
        call(s, "GET", "/server/status")
    assert wait_for(lambda: _answers(s), timeout=5, what="the instance to come back by itself") == 200


def test_https_with_self_signed_certificate_and_cli_errors(emulator_factory, tmp_path):
    emu = emulator_factory(instances=1, scan_seconds=1, https=True, extra_args=["--cert-dir", str(tmp_path)],
                           process=True)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(emu.urls[0] + "/server/status", timeout=5)
    cert = tmp_path / "nessus-emulator-cert.pem"
    assert requests.get(emu.urls[0] + "/server/status", timeout=5, verify=str(cert)).json()["status"] == "ready"
    assert "login: admin / admin" in emu.log() and "accessKey=" in emu.log()
    with pytest.raises(RuntimeError, match="--instances must be at least 1"):
        EmulatorProcess(instances=1, extra_args=["--instances", "0"]).start(timeout=15)


def test_an_emulator_started_down_comes_up_by_itself(emulator_factory):
    emu = emulator_factory(instances=1, scan_seconds=1, extra_args=["--down", "--down-seconds", "1.5"])
    with pytest.raises(requests.ConnectionError):
        requests.get(emu.urls[0] + "/server/status", timeout=2)
    session = api(emu)
    assert wait_for(lambda: _answers(session), timeout=10, what="the instance to come up") == 200
    assert call(session, "GET", "/server/status").json()["status"] == "ready"


def test_follows_250_concurrent_scans(emulator):
    import concurrent.futures
    import threading

    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = api(emulator, 1)
        return local.s

    def start(i: int) -> int:
        sid = create(session(), f"10.1.{i // 200}.{i % 200 + 1}")
        assert call(session(), "POST", f"/scans/{sid}/launch").status_code == 200
        return sid

    emulator.control(1).set_faults(pending_stall=60)  # every scan stays active for the whole test
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(start, range(250)))
        statuses = list(pool.map(lambda sid: call(session(), "GET", f"/scans/{sid}").json()["info"]["status"], ids))
    assert len(set(ids)) == 250 and set(statuses) == {"pending"}
    stats = emulator.control(1).stats()
    assert stats["max_concurrent"] == stats["current_running"] == stats["scans"] == 250
    assert set(stats["launches"].values()) == {1}
