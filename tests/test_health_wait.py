"""Health checks and a scanner's ``Retry-After``: a routine check (the reconcile's, ``manage.py check_scanners`` as
cron runs it) does not call a scanner waiting out a wait it asked for and reports it as waiting, not unhealthy; a
check an operator asks for (``--include-waiting``, the admin's *Check health now*) calls it; and a 429/503
``Retry-After`` answered to any health check is recorded as the scanner's wait. The emulator over real HTTP (its
request log is the witness), the real database, real Redis for the reconcile."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from scanners import pacing
from scanners.health import check_health
from scanners.models import Health, Scanner
from tasks.engine.recovery import reconcile
from tests.engine_support import emulated_pool

pytestmark = pytest.mark.integration


def requests(emu, index: int = 0) -> list[list]:
    return emu.control(index).stats()["recent"]


@pytest.mark.django_db
def test_check_scanners_from_cron_does_not_call_a_waiting_scanner_and_is_not_alarmed_by_it(emulator):
    _, (waiting, ready) = emulated_pool(emulator, [1, 1])
    for scanner in (waiting, ready):
        Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    until = pacing.record_wait(waiting, 60)

    quiet = io.StringIO()
    call_command("check_scanners", verbosity=0, stdout=quiet)  # exit status 0: a wait is not a failure
    assert quiet.getvalue() == "" and requests(emulator, 0) == []  # nothing to mail, no call to it
    assert requests(emulator, 1)  # the other one was checked

    out = io.StringIO()
    call_command("check_scanners", stdout=out)
    (row,) = [line for line in out.getvalue().splitlines() if f" {waiting.name} " in line]
    assert " waiting " in row and f"wait until {until:%H:%M:%S} UTC" in row
    assert "1/2 scanners ready, 1 not checked" in out.getvalue()
    assert Scanner.objects.get(pk=waiting.pk).health == Health.READY  # not marked unhealthy
    assert requests(emulator, 0) == []

    call_command("check_scanners", "--include-waiting", stdout=io.StringIO())  # an operator wants to know now
    assert [r[2] for r in requests(emulator, 0)][:1] == ["/server/status"]


@pytest.mark.django_db
@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_answered_to_a_health_check_is_recorded_as_the_scanners_wait(emulator, status):
    _, (scanner,) = emulated_pool(emulator, [1])
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.READY)
    emulator.control(0).set_faults(error_match="^GET /server/status$", error_burst=1, error_status=status,
                                   retry_after="30")
    report = check_health(scanner.pk, call_waiting=True)

    row = Scanner.objects.get(pk=scanner.pk)
    assert row.waiting_until is not None and report.waiting_until == row.waiting_until
    assert row.health == Health.READY and report.retry_after == 30  # busy, not down: its health stays
    assert "asked to wait 30s" in row.health_detail
    seen = len(requests(emulator))
    assert check_health(scanner.pk).waiting_until == row.waiting_until  # the next routine check does not call it
    assert len(requests(emulator)) == seen


def test_the_reconcile_lists_no_scans_of_a_scanner_that_answered_its_health_check_with_retry_after(
        transactional_db, redis_conn, emulator):
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(error_match="^GET /server/status$", error_burst=1, error_status=429,
                                   retry_after="30")
    report = reconcile([pool.pk])
    assert [name for name, _ in report.waiting] == [scanner.name] and not report.errors
    assert [r[2] for r in requests(emulator)] == ["/server/status"]  # not the orphan listing (GET /scans) after it
    assert Scanner.objects.get(pk=scanner.pk).waiting_until is not None


@pytest.mark.django_db
def test_check_health_now_in_the_admin_calls_a_waiting_scanner_and_says_it_waits(admin_client, emulator):
    _, (scanner,) = emulated_pool(emulator, [1])
    pacing.record_wait(scanner, 60)
    emulator.control(0).set_faults(error_match="^GET /server/status$", error_burst=1, error_status=429,
                                   retry_after="120")
    response = admin_client.post(reverse("admin:scanners_scanner_changelist"),
                                 {"action": "check_health_action", "_selected_action": [str(scanner.pk)]}, follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert [r[2] for r in requests(emulator)] == ["/server/status"]  # asked for by a person: called
    until = Scanner.objects.get(pk=scanner.pk).waiting_until
    assert f"asked scanpool to wait until {until:%H:%M:%S} UTC" in text  # its answer moved the wait later


@pytest.mark.django_db
def test_a_scanner_last_recorded_unreachable_that_answers_retry_after_is_seen_now(emulator):
    """It answered (429, Retry-After): the row says when it was last seen, even though its health stays as last
    recorded until a check after the wait."""
    _, (scanner,) = emulated_pool(emulator, [1])
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.UNREACHABLE, last_seen_at=None)
    emulator.control(0).set_faults(error_match="^GET /server/status$", error_burst=1, error_status=429,
                                   retry_after="30")
    check_health(scanner.pk, call_waiting=True)
    row = Scanner.objects.get(pk=scanner.pk)
    assert row.waiting_until is not None and row.health == Health.UNREACHABLE
    assert row.last_seen_at is not None and row.last_seen_at == row.health_checked_at
