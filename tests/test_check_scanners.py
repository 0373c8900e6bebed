"""``manage.py check_scanners``: its table shows each scanner's whole health detail (the last column)."""

from __future__ import annotations

import io
import socket

import pytest
from django.core.management import CommandError, call_command

from tests.factories import ScannerFactory

HINT = "check that the scanner is running and reachable"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db
def test_the_detail_is_printed_whole_with_its_hint():
    """The DETAIL column was cut at 100 characters: the hint at the end of an unreachable scanner's detail ("check
    that the scanner is running and reachable") never showed. A real health check of a scanner nobody answers for."""
    ScannerFactory(name="dmz-2", url=f"https://127.0.0.1:{closed_port()}")
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"not ready: dmz-2 \(unreachable\)"):
        call_command("check_scanners", stdout=out)
    (row,) = [line for line in out.getvalue().splitlines() if " dmz-2 " in line]
    assert len(row) > 140 and row.rstrip().endswith(HINT), row
