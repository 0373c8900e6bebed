"""Nessus editions in the emulator, and the transient/terminal statuses it can emit, driven over real HTTP
through the adapter (issue #14).

Since Nessus 7 only Nessus Manager (of the on-premise editions) allows scans through the API:
Professional, Expert and Essentials report ``scan_api: false`` and answer 412 to scan creation and launch,
while exports still work. The emulator defaults to Manager.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from django.core.management import execute_from_command_line

from scanners.adapters.base import ScannerUnlicensedError, ScanSpec
from scanners.adapters.nessus import NessusAdapter
from scanners.health import check_health
from scanners.models import Health
from tests.emulator import EmulatorProcess, EmulatorThread
from tests.factories import ScannerFactory

pytestmark = pytest.mark.integration


def adapter_for(emu: EmulatorProcess, index: int = 0) -> NessusAdapter:
    return NessusAdapter(emu.urls[index], access_key=emu.access_key, secret_key=emu.secret_key, backoff=0.05,
                         export_poll_interval=0.1)


def new_scan(adapter: NessusAdapter) -> int:
    spec = ScanSpec(task_id=uuid.uuid4(), name="edition test", targets=["192.0.2.71"], scan_type="untrusted")
    return adapter.create_scan(spec)


def properties(emu: EmulatorProcess, index: int = 0) -> dict:
    headers = {"X-ApiKeys": f"accessKey={emu.access_key}; secretKey={emu.secret_key}"}
    return requests.get(f"{emu.urls[index]}/server/properties", headers=headers, timeout=10).json()


def statuses(adapter: NessusAdapter, scan_id: int, until: set[str], timeout: float = 15.0) -> list[str]:
    """Every distinct status seen while polling, until one in ``until``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = adapter.scan_state(scan_id)
        if not seen or seen[-1] != state.status:
            seen.append(state.status)
        if state.status in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"no status in {until} after {timeout}s: {seen}")


def test_default_edition_is_nessus_manager_with_the_scan_api(emulator):
    props = properties(emulator)
    assert props["nessus_type"] == "Nessus Manager"
    assert props["license"]["type"] == "manager" and props["license"]["name"] == "Nessus Manager"
    assert props["license"]["features"]["scan_api"] is True
    adapter = adapter_for(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("edition", "name", "license_type"),
    [("professional", "Nessus Professional", "pro"), ("expert", "Nessus Expert", "expert"),
     ("essentials", "Nessus Essentials", "home")],
)
def test_editions_without_scan_api_refuse_scan_writes_but_export(emulator, tmp_path, edition, name, license_type):
    adapter = adapter_for(emulator)
    done = new_scan(adapter)  # a scan run while the scanner still had the API: its results stay exportable
    adapter.launch_scan(done)
    statuses(adapter, done, {"completed"})
    emulator.control(0).set_faults(edition=edition)

    props = properties(emulator)
    assert props["nessus_type"] == "Nessus" and props["license"]["name"] == name
    assert props["license"]["type"] == license_type and props["license"]["features"]["scan_api"] is False
    with pytest.raises(ScannerUnlicensedError, match="API is not available"):
        new_scan(adapter)
    with pytest.raises(ScannerUnlicensedError, match="API is not available"):
        adapter.launch_scan(done)
    exported = adapter.export_results(done, tmp_path / "out.nessus")
    assert exported.read_bytes().count(b"<ReportHost ") == 1

    # The control room: the edition is recorded and the reason for refusing it is readable.
    scanner = ScannerFactory(url=emulator.urls[0], username="admin", password="admin")
    assert check_health(scanner.pk).status == Health.UNLICENSED
    scanner.refresh_from_db()
    assert scanner.license_info["name"] == name and scanner.license_info["scan_api"] is False
    assert scanner.health_detail.startswith(f"{name} has no scan API")
    assert "Nessus Manager" in scanner.health_detail and "412" in scanner.health_detail


def test_unknown_edition_is_refused_naming_the_knob(emulator):
    resp = requests.post(f"{emulator.urls[0]}/_emulator/faults", json={"edition": "pro"}, timeout=10)
    assert resp.status_code == 400
    assert "edition" in resp.text and "manager, professional, expert, essentials" in resp.text
    assert properties(emulator)["nessus_type"] == "Nessus Manager"  # nothing changed


def test_pausing_then_paused_and_the_adapter_keeps_polling(emulator):
    emulator.control(0).set_faults(pausing_seconds=0.6)
    adapter = adapter_for(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    statuses(adapter, scan_id, {"running"})
    adapter.client.request("POST", f"/scans/{scan_id}/pause", what="pause", safe=False)
    state = adapter.scan_state(scan_id)
    assert state.status == "pausing" and not state.terminal and state.launched
    assert statuses(adapter, scan_id, {"paused"})[-2:] == ["pausing", "paused"]
    resp = requests.post(f"{emulator.urls[0]}/scans/{scan_id}/pause", timeout=10,
                         headers={"X-ApiKeys": f"accessKey={emulator.access_key}; secretKey={emulator.secret_key}"})
    assert resp.status_code == 409 and resp.json()["error"] == "Scan is already paused"


def test_canceling_then_canceled(emulator):
    emulator.control(0).set_faults(stop_status="canceling")
    adapter = adapter_for(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    statuses(adapter, scan_id, {"running"})
    adapter.stop_scan(scan_id)
    state = adapter.scan_state(scan_id)
    assert state.status == "canceling" and not state.terminal
    seen = statuses(adapter, scan_id, {"canceled"})
    assert seen[-2:] == ["canceling", "canceled"] and adapter.scan_state(scan_id).terminal


@pytest.mark.parametrize(("end", "progress"), [("aborted", 99), ("imported", 100)])
def test_aborted_and_imported_are_terminal(emulator, end, progress):
    emulator.control(0).set_faults(end_status=end)
    adapter = adapter_for(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    statuses(adapter, scan_id, {end})
    state = adapter.scan_state(scan_id)
    assert state.terminal and state.status == end and state.progress == progress


def test_409_messages_say_what_could_not_be_done(emulator):
    adapter = adapter_for(emulator)
    scan_id = new_scan(adapter)
    headers = {"X-ApiKeys": f"accessKey={emulator.access_key}; secretKey={emulator.secret_key}"}
    for action, past in (("stop", "stopped"), ("pause", "paused"), ("resume", "resumed")):
        resp = requests.post(f"{emulator.urls[0]}/scans/{scan_id}/{action}", headers=headers, timeout=10)
        assert resp.status_code == 409
        assert resp.json()["error"] == f"Scan cannot be {past}: its status is empty"


def test_edition_flag_on_the_command_line(capsys):
    # manage.py's own entry point in this process: the help text is all that is checked (no process needed).
    with pytest.raises(SystemExit) as exit_:
        execute_from_command_line(["manage.py", "nessus_emulator", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--edition" in out and "--stop-status" in out and "--end-status" in out
    with EmulatorThread(instances=1, scan_seconds=1, extra_args=["--edition", "professional"]) as emu:
        props = properties(emu)
        assert props["license"]["name"] == "Nessus Professional" and props["license"]["features"]["scan_api"] is False
        with pytest.raises(ScannerUnlicensedError):
            new_scan(adapter_for(emu))


@pytest.mark.django_db
def test_admin_shows_each_scanners_edition_and_why_professional_is_refused(emulator, admin_client):
    from django.urls import reverse

    manager = ScannerFactory(name="mgr-1", url=emulator.urls[0], username="admin", password="admin")
    pro = ScannerFactory(name="pro-1", url=emulator.urls[1], username="admin", password="admin")
    emulator.control(1).set_faults(edition="professional")
    assert check_health(manager.pk).status == Health.READY
    assert check_health(pro.pk).status == Health.UNLICENSED
    body = admin_client.get(reverse("admin:scanners_scanner_changelist")).content.decode()
    assert "Nessus Manager" in body and "Nessus Professional" in body
    assert body.count("no scan API: never chosen") == 1
    page = admin_client.get(reverse("admin:scanners_scanner_change", args=[pro.pk])).content.decode()
    assert "Nessus Professional has no scan API" in page and "Use Nessus Manager" in page
