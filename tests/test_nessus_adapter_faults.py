"""Every emulator fault knob, driven through the adapter (and check_health) over real HTTP."""

from __future__ import annotations

import io
import time
import uuid

import pytest
from django.core.management import CommandError, call_command

from scanners.adapters.base import (
    PermanentScannerError,
    ScanExportError,
    ScannerAuthError,
    ScannerNotReadyError,
    ScannerUnlicensedError,
    ScanSpec,
    TransientScannerError,
)
from scanners.adapters.nessus import NessusAdapter
from scanners.health import check_health
from scanners.models import Health, Scanner
from tests.emulator import EmulatorProcess
from tests.factories import ScannerFactory
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def make_adapter(emu: EmulatorProcess, index: int = 0, mode: str = "session", **kw) -> NessusAdapter:
    creds = (
        {"username": emu.username, "password": emu.password}
        if mode == "session"
        else {"access_key": emu.access_key, "secret_key": emu.secret_key}
    )
    kw.setdefault("backoff", 0.05)
    kw.setdefault("export_poll_interval", 0.1)
    return NessusAdapter(emu.urls[index], **creds, **kw)


def new_scan(adapter: NessusAdapter, **kw) -> int:
    spec = ScanSpec(task_id=uuid.uuid4(), name="fault test", targets=["192.0.2.70"], scan_type="untrusted", **kw)
    return adapter.create_scan(spec)


@pytest.mark.django_db
def test_unlicensed_scanner_is_flagged_and_refuses_scans(emulator):
    scanner = ScannerFactory(url=emulator.urls[0], username="admin", password="admin")
    emulator.control(0).set_faults(unlicensed=True)
    report = check_health(scanner.pk)
    scanner.refresh_from_db()
    assert report.status == scanner.health == Health.UNLICENSED
    assert scanner.license_info["scan_api"] is False and "scan API" in scanner.health_detail
    assert scanner.version == "10.7.1" and scanner.last_seen_at and scanner.health_checked_at
    with pytest.raises(ScannerUnlicensedError, match="API is not available"):
        new_scan(make_adapter(emulator))
    emulator.control(0).set_faults(unlicensed=False)
    assert check_health(scanner.pk).status == Health.READY
    scanner.refresh_from_db()
    assert scanner.health == Health.READY and scanner.license_info["scan_api"] is True


def test_session_expiry_mid_scan_relogs_in_and_the_scan_completes(emulator):
    emulator.control(0).set_faults(session_expiry=0.5)
    adapter = make_adapter(emulator, mode="session")
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    logins_before = emulator.control(0).stats()["logins"]
    time.sleep(0.7)  # the token is now stale: the next call gets 401, logs in again, and goes on
    final = wait_for(lambda: (s := adapter.scan_state(scan_id)).terminal and s, interval=0.6, what="the scan to end")
    assert final.status == "completed"
    stats = emulator.control(0).stats()
    assert stats["logins"] > logins_before and stats["by_status"]["401"] >= 1
    assert stats["launches"] == {str(scan_id): 1}


def test_5xx_burst_is_retried_then_succeeds_but_launch_is_never_retried_blindly(emulator):
    adapter = make_adapter(emulator, mode="api_keys")
    scan_id = new_scan(adapter)
    control = emulator.control(0)
    control.set_faults(error_burst=2)
    assert adapter.scan_state(scan_id).status == "empty"  # 503, 503, then the answer
    assert control.stats()["injected_errors"] == 2

    control.set_faults(error_burst=1)
    with pytest.raises(TransientScannerError, match="HTTP 503"):
        adapter.launch_scan(scan_id)
    assert control.stats()["launches"] == {str(scan_id): 0}  # the failed launch was not repeated
    # The caller resolves the lost launch by looking at the scan's state, then launches once.
    assert not adapter.scan_state(scan_id).launched
    adapter.launch_scan(scan_id)
    assert control.stats()["launches"] == {str(scan_id): 1}

    control.set_faults(error_rate=1.0)
    with pytest.raises(TransientScannerError, match="HTTP 500"):
        adapter.scan_state(scan_id)
    assert control.stats()["injected_errors"] == 2 + 1 + 3  # burst 2, launch 1, then 1 try + 2 retries
    report = adapter.health()  # it answers, with errors only: not ready (not unreachable)
    assert report.status == Health.NOT_READY and "HTTP 500" in report.detail


def test_hang_at_99_never_reaches_a_terminal_status(emulator):
    emulator.control(0).set_faults(hang_at_99=True)
    adapter = make_adapter(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    state = wait_for(lambda: (s := adapter.scan_state(scan_id)).progress == 99 and s, timeout=8, what="99 %")
    time.sleep(1.0)  # a plain sleep: nothing may happen. Reaching 99 % took the whole --scan-seconds already
    state = adapter.scan_state(scan_id)
    assert state.status == "running" and state.progress == 99 and not state.terminal
    adapter.stop_scan(scan_id)  # what the per-task deadline does
    wait_for(lambda: adapter.scan_state(scan_id).terminal, what="the scan to end")
    assert adapter.scan_state(scan_id).status == "canceled"


def test_pending_stall_keeps_a_launched_scan_pending(emulator):
    emulator.control(0).set_faults(pending_stall=-1)
    adapter = make_adapter(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    # A plain sleep: the claim is that nothing happens. Without the stall a scan leaves 'pending' after 0.2 s
    # (the emulator's shortest pending) and is running within the second; 1.2 s is six times that.
    time.sleep(1.2)
    state = adapter.scan_state(scan_id)
    assert state.status == "pending" and state.launched and not state.terminal and state.progress == 0


@pytest.mark.django_db
def test_down_scanner_is_unreachable_and_calls_are_transient(emulator):
    scanner = ScannerFactory(url=emulator.urls[1], username="admin", password="admin")
    adapter = make_adapter(emulator, 1)
    scan_id = new_scan(adapter)
    emulator.control(1).down()
    with pytest.raises(TransientScannerError, match="connection"):
        adapter.scan_state(scan_id)
    report = check_health(scanner.pk)
    scanner.refresh_from_db()
    assert report.status == scanner.health == Health.UNREACHABLE
    assert scanner.last_seen_at is None and scanner.health_checked_at is not None
    emulator.control(1).up()
    assert adapter.scan_state(scan_id).status == "empty"
    assert check_health(scanner.pk).status == Health.READY


@pytest.mark.django_db
def test_not_ready_scanner(emulator):
    scanner = ScannerFactory(url=emulator.urls[0], access_key=emulator.access_key, secret_key=emulator.secret_key,
                             username="", password="")
    emulator.control(0).set_faults(not_ready=True)
    report = check_health(scanner.pk)
    assert report.status == Health.NOT_READY and "loading" in report.detail
    with pytest.raises(ScannerNotReadyError, match="not ready"):
        new_scan(make_adapter(emulator, mode="api_keys"))


def test_export_error_is_a_typed_error(emulator, tmp_path):
    adapter = make_adapter(emulator)
    scan_id = new_scan(adapter)
    adapter.launch_scan(scan_id)
    wait_for(lambda: adapter.scan_state(scan_id).terminal, what="the scan to end")
    emulator.control(0).set_faults(export_error=True)
    with pytest.raises(ScanExportError, match="failed to prepare the export"):
        adapter.export_results(scan_id, tmp_path / "r.nessus")
    assert not list(tmp_path.iterdir())
    emulator.control(0).set_faults(export_error=False)
    assert adapter.export_results(scan_id, tmp_path / "r.nessus").stat().st_size > 1000


def test_latency_within_and_beyond_the_read_timeout(emulator):
    emulator.control(0).set_faults(latency=0.3)
    slow_ok = make_adapter(emulator, read_timeout=2.0)
    scan_id = new_scan(slow_ok)
    assert slow_ok.scan_state(scan_id).status == "empty"
    too_slow = make_adapter(emulator, mode="api_keys", read_timeout=0.1, retries=0)
    with pytest.raises(TransientScannerError, match=r"no answer within 0\.1s"):
        too_slow.scan_state(scan_id)


def test_a_launch_whose_answer_is_lost_is_not_repeated(emulator):
    adapter = make_adapter(emulator, mode="api_keys")
    scan_id = new_scan(adapter)
    emulator.control(0).set_faults(latency=0.5)
    impatient = make_adapter(emulator, mode="api_keys", read_timeout=0.2)
    with pytest.raises(TransientScannerError, match="outcome is unknown"):
        impatient.launch_scan(scan_id)
    emulator.control(0).set_faults(latency=0)
    # The scanner is still working on the request the client gave up on; once it has, the launch did reach
    # it: the caller learns it from the state and does not launch again.
    wait_for(lambda: adapter.scan_state(scan_id).launched, timeout=5, what="the lost launch to land")
    assert emulator.control(0).stats()["launches"] == {str(scan_id): 1}


def test_wrong_login_is_an_auth_error_not_transient(emulator):
    adapter = NessusAdapter(emulator.urls[0], username="admin", password="wrong")
    with pytest.raises(ScannerAuthError):
        adapter.list_scans()
    assert adapter.health().status == Health.AUTH_FAILED


@pytest.mark.django_db
def test_check_scanners_command_prints_a_table(emulator):
    ready = ScannerFactory(url=emulator.urls[0], username="admin", password="admin", name="emu-ready")
    ScannerFactory(pool=ready.pool, url=emulator.urls[1], username="admin", password="admin", name="emu-412")
    emulator.control(1).set_faults(unlicensed=True)
    out = io.StringIO()
    with pytest.raises(CommandError, match="not ready: emu-412"):  # exit status 1: cron mails, monitors alert
        call_command("check_scanners", "--pool", ready.pool.name, stdout=out)
    text = out.getvalue()
    assert "emu-ready" in text and "emu-412" in text and "1/2 scanners ready" in text
    assert Scanner.objects.get(name="emu-412").health == Health.UNLICENSED
    assert "admin" not in text.replace("emu-", "")  # no credentials in the output
    with pytest.raises(Exception, match="does not exist"):
        call_command("check_scanners", "--pool", "no-such-pool", stdout=io.StringIO())
    emulator.control(1).set_faults(unlicensed=False)
    call_command("check_scanners", "--pool", ready.pool.name, stdout=(out := io.StringIO()))  # all ready: exit 0
    assert "2/2 scanners ready" in out.getvalue()


def test_429_rate_limit_is_transient_and_retried_403_is_permanent_and_actionable(emulator):
    adapter = make_adapter(emulator, mode="api_keys")
    scan_id = new_scan(adapter)
    control = emulator.control(0)

    control.set_faults(error_burst=2, error_status=429)
    assert adapter.scan_state(scan_id).status == "empty"  # 429, 429, then the answer
    assert control.stats()["injected_errors"] == 2
    control.set_faults(error_rate=1.0, error_status=429)
    with pytest.raises(TransientScannerError, match="HTTP 429"):
        adapter.scan_state(scan_id)

    control.set_faults(error_rate=1.0, error_status=403)
    before = control.stats()["injected_errors"]
    with pytest.raises(PermanentScannerError, match="HTTP 403") as err:
        adapter.scan_state(scan_id)
    assert not isinstance(err.value, TransientScannerError)
    assert "permission" in str(err.value).lower() or "give scanpool" in str(err.value)
    assert control.stats()["injected_errors"] == before + 1  # a permanent error is not retried


def test_error_status_knob_is_validated(emulator):
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"error_status": 200}).encode()
    req = urllib.request.Request(f"{emulator.urls[0]}/_emulator/faults", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400 and "error_status" in err.value.read().decode()
    assert emulator.control(0).state()["faults"]["error_status"] == 0  # nothing changed
