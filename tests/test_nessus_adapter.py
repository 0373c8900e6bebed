"""NessusAdapter against the emulator over real HTTP: scan types, auth modes, export flows, errors, TLS."""

from __future__ import annotations

import logging
import re
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanners.adapters.base import (
    InvalidScanRequestError,
    PermanentScannerError,
    ScanConflictError,
    ScannerAuthError,
    ScanNotFoundError,
    ScanSpec,
    TemplateNotFoundError,
    TransientScannerError,
    task_id_from_scan_name,
)
from scanners.adapters.nessus import NessusAdapter
from scanners.adapters.nessus import adapter as adapter_module
from scanners.adapters.nessus import client as client_module
from scanners.models import Health
from tests.emulator import EmulatorProcess

pytestmark = pytest.mark.integration

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"


def make_adapter(emu: EmulatorProcess, index: int = 0, mode: str = "session", **kw) -> NessusAdapter:
    creds = (
        {"username": emu.username, "password": emu.password}
        if mode == "session"
        else {"access_key": emu.access_key, "secret_key": emu.secret_key}
    )
    kw.setdefault("backoff", 0.05)
    kw.setdefault("export_poll_interval", 0.1)
    return NessusAdapter(emu.urls[index], name=f"emu{index}", **creds, **kw)


def spec(scan_type: str = "untrusted", credentials: dict | None = None, targets=("192.0.2.10",)) -> ScanSpec:
    return ScanSpec(task_id=uuid.uuid4(), name="adapter test", targets=list(targets), scan_type=scan_type,
                    credentials=credentials)


def wait_terminal(adapter: NessusAdapter, scan_id: int, timeout: float = 15.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = adapter.scan_state(scan_id)
        if not seen or seen[-1] != state.status:
            seen.append(state.status)
        if state.terminal:
            assert state.progress == 100 or state.status != "completed"
            return seen
        time.sleep(0.2)
    raise AssertionError(f"scan {scan_id} not terminal after {timeout}s: {seen}")


def report_hosts(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("ReportHost"))


def ids(host: ET.Element) -> set[str]:
    return {i.get("pluginID") for i in host.iter("ReportItem")}


@pytest.mark.parametrize("mode", ["session", "api_keys"])
def test_every_scan_type_end_to_end(emulator, tmp_path, mode):
    adapter = make_adapter(emulator, mode=mode)
    cases = {
        "untrusted": spec("untrusted"),
        "password": spec("authenticated", {"username": "scan", "password": "good"}),
        "key": spec("authenticated", {"username": "scan", "private_key": KEY}),
        "sudo": spec("authenticated_privileged", {"username": "scan", "password": "good",
                                                  "elevate_privileges_with": "sudo", "escalation_password": "x"}),
        "su+sudo-fails": spec("authenticated_privileged", {
            "username": "scan", "password": "good", "elevate_privileges_with": "su+sudo",
            "escalation_account": "admin", "escalation_password": "noprivs"}),
    }
    scan_ids = {name: adapter.create_scan(s) for name, s in cases.items()}
    for scan_id in scan_ids.values():
        assert adapter.scan_state(scan_id).status == "empty" and not adapter.scan_state(scan_id).launched
        launched = adapter.launch_scan(scan_id)
        assert launched.scan_id == scan_id and launched.scan_uuid
    first = adapter.scan_state(scan_ids["untrusted"])
    assert first.status in {"pending", "running"} and not first.terminal and first.launched
    statuses = wait_terminal(adapter, scan_ids["untrusted"])
    assert statuses[-1] == "completed" and "running" in statuses
    for scan_id in scan_ids.values():
        assert wait_terminal(adapter, scan_id)[-1] == "completed"

    hosts = {name: report_hosts(adapter.export_results(sid, tmp_path / f"{name}.nessus"))[0]
             for name, sid in scan_ids.items()}
    assert not ids(hosts["untrusted"]) & {"141118", "104410", "110723"}
    assert {"141118", "117887", "110095"} <= ids(hosts["password"])
    assert {"141118", "117887", "110095"} <= ids(hosts["key"])
    assert {"141118", "117887"} <= ids(hosts["sudo"])
    assert {"110385", "102094"} <= ids(hosts["su+sudo-fails"])
    su_sudo = next(i for i in hosts["su+sudo-fails"].iter("ReportItem") if i.get("pluginID") == "102094")
    assert "su+sudo" in su_sudo.findtext("plugin_output")

    remote = {r.scan_id: r for r in adapter.list_scans()}
    for name, scan_id in scan_ids.items():
        assert remote[scan_id].task_id == cases[name].task_id  # scan names carry the task id
        assert task_id_from_scan_name(remote[scan_id].name) == cases[name].task_id
        assert adapter.find_scan_for_task(cases[name].task_id).scan_id == scan_id
        assert emulator.control(0).state()["stats"]["launches"][str(scan_id)] == 1
    for scan_id in scan_ids.values():
        adapter.delete_scan(scan_id)
        adapter.delete_scan(scan_id)  # already gone: no error
    assert adapter.list_scans() == []
    adapter.close()


def test_bad_ssh_credentials_and_missing_credentials_scenarios(emulator, tmp_path):
    adapter = make_adapter(emulator, mode="api_keys")
    bad = adapter.create_scan(spec("authenticated", {"username": "scan", "password": "bad"}))
    none = adapter.create_scan(spec("authenticated", None))
    for scan_id in (bad, none):
        adapter.launch_scan(scan_id)
    for scan_id in (bad, none):
        wait_terminal(adapter, scan_id)
    assert {"104410", "21745"} <= ids(report_hosts(adapter.export_results(bad, tmp_path / "bad.nessus"))[0])
    assert "110723" in ids(report_hosts(adapter.export_results(none, tmp_path / "none.nessus"))[0])


@pytest.mark.parametrize("flow", ["token", "file"])
def test_both_export_flows_stream_to_disk(emulator, tmp_path, flow, caplog):
    caplog.set_level(logging.DEBUG, logger="scanpool.adapters.nessus")
    adapter = make_adapter(emulator, export_flow=flow)
    scan_id = adapter.create_scan(spec(targets=("192.0.2.11", "192.0.2.12", "192.0.2.252")))
    adapter.launch_scan(scan_id)
    wait_terminal(adapter, scan_id)
    target = tmp_path / "deep" / "dir" / "result.nessus"
    assert adapter.export_results(scan_id, target) == target
    assert [h.get("name") for h in report_hosts(target)] == ["192.0.2.11", "192.0.2.12"]  # .252 is dead
    assert [p.name for p in target.parent.iterdir()] == ["result.nessus"]  # no partial files left
    states = emulator.control(0).state()["stats"]["by_status"]
    assert "404" not in states
    assert "/tokens/…" in caplog.text if flow == "token" else "/export/" in caplog.text
    assert not re.search(r"/tokens/[0-9a-f]{16,}", caplog.text)  # export tokens are masked in logs
    assert emulator.password not in caplog.text.replace("/scans", "")


def test_auto_export_falls_back_to_the_file_flow_on_an_older_scanner(emulator, tmp_path):
    adapter = make_adapter(emulator)
    scan_id = adapter.create_scan(spec())
    adapter.launch_scan(scan_id)
    wait_terminal(adapter, scan_id)
    emulator.control(0).set_faults(token_flow=False)
    path = adapter.export_results(scan_id, tmp_path / "old.nessus")
    assert report_hosts(path)[0].get("name") == "192.0.2.10"
    with pytest.raises(PermanentScannerError, match="no export token"):
        make_adapter(emulator, export_flow="token").export_results(scan_id, tmp_path / "x.nessus")


def test_permanent_errors_are_typed_and_actionable(emulator):
    adapter = make_adapter(emulator)
    with pytest.raises(ScanNotFoundError, match="scan 424242 does not exist"):
        adapter.scan_state(424242)
    with pytest.raises(TemplateNotFoundError, match="no scan template named 'pci'"):
        adapter.template_uuid("pci")
    with pytest.raises(InvalidScanRequestError, match=r"credentials\.username"):
        adapter.create_scan(spec("authenticated", {"password": "good"}))
    with pytest.raises(InvalidScanRequestError, match="exactly one of 'password' or 'private_key'"):
        adapter.create_scan(spec("authenticated", {"username": "u", "password": "p", "private_key": KEY}))
    with pytest.raises(InvalidScanRequestError, match="elevate_privileges_with must be one of"):
        adapter.create_scan(spec("authenticated_privileged", {"username": "u", "password": "good"}))
    with pytest.raises(InvalidScanRequestError, match="unknown credentials key"):
        adapter.create_scan(spec("authenticated", {"username": "u", "password": "good", "token": "x"}))
    with pytest.raises(InvalidScanRequestError, match="unknown scan_type"):
        adapter.create_scan(spec("agent"))
    assert emulator.control(0).stats()["scans"] == 0  # nothing half-created

    scan_id = adapter.create_scan(spec())
    adapter.launch_scan(scan_id)
    with pytest.raises(ScanConflictError, match="HTTP 409"):
        adapter.launch_scan(scan_id)
    assert emulator.control(0).state()["scans"][0]["launches"] == 1

    wrong_keys = NessusAdapter(emulator.urls[0], access_key="x" * 64, secret_key="y" * 64)
    with pytest.raises(ScannerAuthError, match="rejected scanpool's API keys") as err:
        wrong_keys.list_scans()
    assert "y" * 64 not in str(err.value) and "x" * 64 not in str(err.value)
    assert wrong_keys.health().status == Health.AUTH_FAILED
    wrong_password = NessusAdapter(emulator.urls[0], username="admin", password="s3cret-wrong")
    with pytest.raises(ScannerAuthError, match="rejected the login of user 'admin'") as err:
        wrong_password.list_scans()
    assert "s3cret-wrong" not in str(err.value) and "s3cret-wrong" not in repr(wrong_password.client)


def test_templates_are_cached_per_scanner(emulator):
    adapter_module._template_cache.clear()
    first = make_adapter(emulator)
    assert set(first.templates()) >= {"basic", "advanced"}
    before = emulator.control(0).stats()["requests"]
    second = make_adapter(emulator)  # another adapter for the same scanner: module cache, no request
    assert second.templates() == first.templates()
    assert emulator.control(0).stats()["requests"] == before


def test_one_login_is_shared_by_the_adapters_of_a_process(emulator):
    client_module._session_tokens.clear()
    for _ in range(3):  # workers build an adapter per step: they must not log in per step
        adapter = make_adapter(emulator)
        assert adapter.list_scans() == []
        adapter.close()
    assert emulator.control(0).stats()["logins"] == 1
    adapter = make_adapter(emulator)
    adapter.client.logout()  # DELETE /session and forget the shared token
    assert make_adapter(emulator).list_scans() == []
    assert emulator.control(0).stats()["logins"] == 2


def test_stop_and_hard_delete_of_a_running_scan(emulator):
    adapter = make_adapter(emulator)
    scan_id = adapter.create_scan(spec())
    adapter.stop_scan(scan_id)  # never launched: nothing to stop, no error
    adapter.launch_scan(scan_id)
    adapter.stop_scan(scan_id)
    assert wait_terminal(adapter, scan_id)[-1] == "canceled"
    other = adapter.create_scan(spec())
    adapter.launch_scan(other)
    adapter.delete_scan(other)  # running: stopped, then deleted
    assert other not in {s.scan_id for s in adapter.list_scans()}


@pytest.mark.filterwarnings("error::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification_on_by_default_with_ca_bundle_or_off(emulator_factory, tmp_path):
    emu = emulator_factory(instances=1, scan_seconds=1, https=True, extra_args=["--cert-dir", str(tmp_path)])
    strict = NessusAdapter(emu.urls[0], username="admin", password="admin", backoff=0.01)
    with pytest.raises(PermanentScannerError, match="TLS verification"):
        strict.list_scans()
    bundle = NessusAdapter(emu.urls[0], username="admin", password="admin",
                           ca_bundle=str(tmp_path / "nessus-emulator-cert.pem"))
    assert bundle.health().status == Health.READY
    off = NessusAdapter(emu.urls[0], access_key=emu.access_key, secret_key=emu.secret_key, verify_tls=False)
    assert off.list_scans() == []


def test_credentials_in_the_url_are_refused():
    with pytest.raises(PermanentScannerError, match="must not contain a user or password") as err:
        NessusAdapter("https://admin:hunter2@127.0.0.1:8834", username="admin", password="x")
    assert "hunter2" not in str(err.value)


def test_unreachable_scanner_is_a_transient_error(tmp_path):
    from tests.emulator import free_port_block

    port = free_port_block(1)
    adapter = NessusAdapter(f"http://127.0.0.1:{port}", username="admin", password="admin", backoff=0.01)
    with pytest.raises(TransientScannerError, match="connection refused"):
        adapter.scan_state(1)
    with pytest.raises(TransientScannerError, match=r"connection refused\); it will be retried later"):
        NessusAdapter(f"http://127.0.0.1:{port}", access_key="a", secret_key="b").launch_scan(1)  # never sent
    report = adapter.health()
    assert report.status == Health.UNREACHABLE and str(port) in report.detail


@pytest.mark.parametrize("method", ["sudo", "su", "su+sudo", "pbrun", "dzdo"])
def test_every_escalation_method_reaches_the_scanner(emulator, tmp_path, method):
    """Each method goes to Nessus as given: the emulator names it back when the escalation fails."""
    adapter = make_adapter(emulator)
    scan_id = adapter.create_scan(spec("authenticated_privileged", {
        "username": "scan", "password": "good", "elevate_privileges_with": method,
        "escalation_account": "root", "escalation_password": "noprivs"}))
    adapter.launch_scan(scan_id)
    assert wait_terminal(adapter, scan_id)[-1] == "completed"
    path = adapter.export_results(scan_id, tmp_path / "escalation.nessus")
    items = {i.get("pluginID"): i for i in ET.parse(path).getroot().iter("ReportItem")}
    assert "102094" in items, "escalation failure plugin missing"
    assert f"Escalation method  : {method}\n" in items["102094"].findtext("plugin_output")


def test_a_template_uuid_in_a_scans_details_is_no_run_to_compare():
    """Nessus gives a scan that has not run yet the uuid "template-…" (its list and details show it): that is not a
    run, so the poll must not take it for another scan replacing ours (the engine fails a task whose run uuid
    changed). A run's uuid is passed on as it is."""
    adapter = NessusAdapter("https://scanner.example:8834", access_key="a" * 64, secret_key="b" * 64)
    details = {"info": {"status": "pending", "uuid": "template-9f1c2e7a-0000-4000-8000-000000000000"}, "hosts": []}
    adapter.scan_details = lambda scan_id: details
    assert adapter.scan_state(7).uuid == ""
    details["info"] = {"status": "running", "uuid": "5c3a7b8e-1111-4222-8333-444455556666"}
    assert adapter.scan_state(7).uuid == "5c3a7b8e-1111-4222-8333-444455556666"
