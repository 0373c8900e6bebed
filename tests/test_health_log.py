"""A health check logs the scanner by name, and a scanner that stays ready (every periodic reconcile checks every
scanner) only at DEBUG: the workers' log had "scanner 1 health ready: ready" per scanner every minute."""

from __future__ import annotations

import logging

import pytest

from scanners.adapters.base import HealthReport
from scanners.health import record_health
from scanners.models import Health
from tests.factories import ScannerFactory


@pytest.mark.django_db
def test_health_lines_name_the_scanner_and_stay_quiet_while_ready(caplog):
    scanner = ScannerFactory(name="dmz-1", health=Health.UNKNOWN)
    caplog.set_level(logging.DEBUG, logger="scanpool.scanners.health")
    record_health(scanner.pk, HealthReport(Health.READY, "ready"))
    record_health(scanner.pk, HealthReport(Health.READY, "ready"))
    record_health(scanner.pk, HealthReport(Health.UNREACHABLE, "connection refused"))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("INFO", "scanner dmz-1 health unknown -> ready: ready"),
                     ("DEBUG", "scanner dmz-1 health ready -> ready: ready"),
                     ("WARNING", "scanner dmz-1 health ready -> unreachable: connection refused")]
