"""``manage.py check_scanners``: its table shows each scanner's whole health detail (the last column)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from scanners.adapters.base import HealthReport
from scanners.management.commands import check_scanners
from tests.factories import ScannerFactory

UNREACHABLE = ("could not read the server status on https://127.0.0.1:18835: connection failed (connection refused); "
               "it will be retried later; check that the scanner is running and reachable")


@pytest.mark.django_db
def test_the_detail_is_printed_whole_with_its_hint(monkeypatch):
    """The DETAIL column was cut at 100 characters: the hint at the end of an unreachable scanner's detail ("check
    that the scanner is running and reachable") never showed."""
    scanner = ScannerFactory(name="dmz-2")
    monkeypatch.setattr(check_scanners, "check_all",
                        lambda pool=None: [(scanner, HealthReport("unreachable", UNREACHABLE))])
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"not ready: dmz-2 \(unreachable\)"):
        call_command("check_scanners", stdout=out)
    assert UNREACHABLE in out.getvalue()
