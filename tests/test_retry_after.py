"""A scanner's ``Retry-After`` (RFC 9110 §10.2.3) on 429/503: parsed in both forms, garbage ignored, capped, and
obeyed by the Nessus client over real HTTP against the emulator (``retry_after`` / ``error_match`` knobs)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from email.utils import formatdate

import pytest
from django.core.management import CommandError, call_command

from scanners.adapters.base import ScanSpec, TransientScannerError
from scanners.adapters.nessus import NessusAdapter
from scanners.adapters.retry_after import parse_retry_after, retry_after_of
from tests.factories import ScannerFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 11, 0, 0, tzinfo=UTC)
READ = r"^GET /scans/\d+$"


def adapter_for(emu, **kw) -> NessusAdapter:
    kw.setdefault("backoff", 0.05)
    return NessusAdapter(emu.urls[0], access_key=emu.access_key, secret_key=emu.secret_key, **kw)


def new_scan(adapter: NessusAdapter) -> int:
    return adapter.create_scan(ScanSpec(task_id=uuid.uuid4(), name="retry-after", targets=["192.0.2.70"],
                                        scan_type="untrusted"))


def requests_to(emu, pattern_path: str, method: str = "GET") -> list[list]:
    """The emulator's log of ``method path`` requests: [[time, method, path, status], …], oldest first."""
    return [r for r in emu.control(0).stats()["recent"] if r[1] == method and r[2] == pattern_path]


# ------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("value", "expected"), [
    ("2", 2.0), ("0", 0.0), (" 7 ", 7.0),
    ("Thu, 03 Dec 2026 11:00:05 GMT", 5.0),  # IMF-fixdate
    ("Thursday, 03-Dec-26 11:00:05 GMT", 5.0),  # obsolete RFC 850 form
    ("Thu Dec  3 11:00:05 2026", 5.0),  # obsolete asctime form
    ("Thu, 03 Dec 2026 10:00:00 GMT", 0.0),  # in the past: now
])
def test_both_forms_are_parsed(value, expected):
    assert parse_retry_after(value, cap=300, now=NOW) == expected


@pytest.mark.parametrize("value", [None, "", "-3", "+3", "1.5", "soon", "12:00", "Thu, 31 Feb 2026 11:00:05 GMT",
                                   "9" * 100, "Dec"])
def test_garbage_and_negative_values_are_ignored(value):
    assert parse_retry_after(value, cap=300, now=NOW) is None


def test_the_wait_is_capped_and_a_date_is_measured_against_the_answers_own_date():
    assert parse_retry_after("99999999999999999999", cap=300, now=NOW) == 300
    assert parse_retry_after("Fri, 04 Dec 2026 11:00:00 GMT", cap=300, now=NOW) == 300
    # The scanner's clock is 3 s behind ours: its Date and its Retry-After agree on a 5 s wait.
    assert parse_retry_after("Thu, 03 Dec 2026 11:00:02 GMT", cap=300, date="Thu, 03 Dec 2026 10:59:57 GMT",
                             now=NOW) == 5
    assert retry_after_of(429, {"Retry-After": "4"}, cap=300) == 4
    assert retry_after_of(500, {"Retry-After": "4"}, cap=300) is None  # only 429 and 503 ask for a wait


# --------------------------------------------------------------------------------------- client over HTTP


def test_in_line_retry_waits_for_the_retry_after_in_seconds(emulator):
    adapter = adapter_for(emulator, retries=2)
    scan_id = new_scan(adapter)
    emulator.control(0).set_faults(error_match=READ, error_burst=1, error_status=429, retry_after="1")
    assert adapter.scan_state(scan_id).status == "empty"  # 429, then (after the wait) the answer
    (t0, *_, first), (t1, *_, second) = requests_to(emulator, f"/scans/{scan_id}")
    assert (first, second) == (429, 200)
    assert t1 - t0 >= 1.0  # not after the client's own 0.05 s backoff


def test_in_line_retry_waits_until_an_http_date(emulator):
    adapter = adapter_for(emulator, retries=2)
    scan_id = new_scan(adapter)
    until = int(time.time()) + 2
    emulator.control(0).set_faults(error_match=READ, error_burst=1, error_status=503,
                                   retry_after=formatdate(until, usegmt=True))
    assert adapter.scan_state(scan_id).status == "empty"
    (_, *_, first), (t1, *_, second) = requests_to(emulator, f"/scans/{scan_id}")
    assert (first, second) == (503, 200)
    assert t1 >= until - 0.01  # no second request before the date the scanner named


def test_garbage_retry_after_falls_back_to_the_clients_backoff(emulator):
    adapter = adapter_for(emulator, retries=2)
    scan_id = new_scan(adapter)
    emulator.control(0).set_faults(error_match=READ, error_burst=1, error_status=429, retry_after="in a while")
    assert adapter.scan_state(scan_id).status == "empty"
    (t0, *_), (t1, *_) = requests_to(emulator, f"/scans/{scan_id}")
    assert t1 - t0 < 1.0
    emulator.control(0).set_faults(error_burst=1, retry_after="-5")
    with pytest.raises(TransientScannerError, match="HTTP 429") as err:
        adapter_for(emulator, retries=0).scan_state(scan_id)
    assert err.value.retry_after is None and "Retry-After" not in str(err.value)


def test_a_longer_wait_is_not_waited_in_line_but_surfaced_capped(emulator):
    adapter = adapter_for(emulator, retries=2, max_retry_wait=5, retry_after_cap=30)
    scan_id = new_scan(adapter)
    control = emulator.control(0)
    control.set_faults(error_match=READ, error_burst=3, error_status=429, retry_after="3600")
    started = time.monotonic()
    with pytest.raises(TransientScannerError, match="HTTP 429") as err:
        adapter.scan_state(scan_id)
    assert time.monotonic() - started < 2  # gave up at once: no sleeping in the caller
    assert err.value.retry_after == 30 and err.value.status_code == 429  # capped
    assert "asked to wait 30s (Retry-After)" in str(err.value)
    assert len(requests_to(emulator, f"/scans/{scan_id}")) == 1  # one request: no in-line retry before the wait


def test_launch_answered_429_is_sent_once_and_carries_the_wait(emulator):
    adapter = adapter_for(emulator, retries=2)
    scan_id = new_scan(adapter)
    emulator.control(0).set_faults(error_match=r"^POST /scans/\d+/launch$", error_burst=1, error_status=429,
                                   retry_after="2")
    with pytest.raises(TransientScannerError) as err:
        adapter.launch_scan(scan_id)
    assert err.value.retry_after == 2
    assert emulator.control(0).stats()["launches"] == {str(scan_id): 0}
    assert len(requests_to(emulator, f"/scans/{scan_id}/launch", "POST")) == 1


@pytest.mark.django_db
def test_adapters_of_scanner_rows_cap_the_wait_at_the_breaker_cooldown(emulator, settings):
    settings.SCANPOOL_BREAKER_COOLDOWN = 9
    scanner = ScannerFactory(url=emulator.urls[0], access_key=emulator.access_key, secret_key=emulator.secret_key)
    adapter = NessusAdapter.from_scanner(scanner, retries=0)
    scan_id = new_scan(adapter)
    emulator.control(0).set_faults(error_match=READ, error_burst=1, error_status=429, retry_after="86400")
    with pytest.raises(TransientScannerError) as err:
        adapter.scan_state(scan_id)
    assert err.value.retry_after == 9


# ------------------------------------------------------------------------------------------ emulator knobs


@pytest.mark.parametrize(("knobs", "named"), [
    ({"error_match": "(unclosed"}, "error_match"),
    ({"retry_after": "2\r\nX-Injected: 1"}, "retry_after"),
])
def test_the_emulators_new_knobs_are_validated(emulator, knobs, named):
    req = urllib.request.Request(f"{emulator.urls[0]}/_emulator/faults", data=json.dumps(knobs).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400 and named in err.value.read().decode()
    faults = emulator.control(0).state()["faults"]
    assert faults["error_match"] == "" and faults["retry_after"] == ""  # nothing changed


def test_the_emulator_command_takes_the_knobs_as_flags(emulator_factory):
    emu = emulator_factory(instances=1, extra_args=["--error-status", "429", "--error-burst", "1", "--retry-after",
                                                    "1", "--error-match", "^GET /scans"])
    faults = emu.control(0).state()["faults"]
    assert (faults["retry_after"], faults["error_match"]) == ("1", "^GET /scans")
    with pytest.raises(CommandError, match="--error-match is not a regular expression"):
        call_command("nessus_emulator", "--http", "--error-match", "(unclosed")
