"""An operator's breaker reset says the scanner is fine: a ``Retry-After`` wait it asked for is cleared too (and
logged), so the task queued for it is dispatched there at once instead of after the wait. The emulator over real
HTTP, real Redis, the real database; jobs run in-process by a real RQ worker."""

from __future__ import annotations

import logging

import pytest
from django.urls import reverse

from scanners.health import check_health
from scanners.models import Scanner
from tasks.models import TaskStatus
from tasks.services import submit
from tests.engine_support import emulated_pool, reread, run_jobs, run_until

pytestmark = pytest.mark.integration


def test_a_breaker_reset_clears_the_wait_and_the_waiting_task_is_launched_at_once(
        transactional_db, redis_conn, emulator, admin_client, caplog):
    pool, (scanner,) = emulated_pool(emulator, [1])
    emulator.control(0).set_faults(error_match="^GET /server/status$", error_burst=1, error_status=429,
                                   retry_after="300")
    check_health(scanner.pk, call_waiting=True)  # a real 429 Retry-After: 300 recorded as its wait
    assert Scanner.objects.get(pk=scanner.pk).waiting_until is not None
    task = submit(pool=pool.name, name="after-reset", targets=["192.0.2.10"])
    run_jobs([pool])
    assert reread(task).claimed_at is None  # it waits for the scanner's wait to end

    with caplog.at_level(logging.WARNING, logger="scanners.breaker"):
        response = admin_client.post(reverse("admin:scanners_scanner_changelist"),
                                     {"action": "reset_breaker_action", "_selected_action": [str(scanner.pk)]},
                                     follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert f"Retry-After wait cleared for: {scanner.name}" in text
    assert Scanner.objects.get(pk=scanner.pk).waiting_until is None
    assert f"scanner {scanner.name}: its Retry-After wait until" in caplog.text and "cleared (breaker reset by" \
        in caplog.text

    run_until([pool], lambda: reread(task).status == TaskStatus.COMPLETED, timeout=30)  # not 300 s later
    assert emulator.control(0).launches_for("after-reset") == 1
