"""A task whose results were fetched again (tasks.refetch) ends long after its scan did: its launch-to-end time spans
the failed fetch and the wait for the new one. It must not stretch the pool's mean scan duration (the wait estimates)
nor be observed a second time in ``nessus_scan_duration_seconds`` (its attempt was observed when it first ended)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks.capacity import mean_scan_seconds
from tasks.engine.transitions import add_event, transition
from tasks.models import REFETCH_MARK, EventKind, ScanTask, TaskStatus
from tasks.observability.totals import SCAN_DURATION, totals
from tests.factories import PoolFactory, ScanTaskFactory

pytestmark = pytest.mark.django_db


def _ran(pool, seconds: float, *, refetched: bool, status: str = TaskStatus.COMPLETED) -> ScanTask:
    now = timezone.now()
    task = ScanTaskFactory(pool=pool, status=status, started_at=now - timedelta(seconds=seconds),
                           finished_at=now if status == TaskStatus.COMPLETED else None)
    if refetched:
        add_event(task.id, "results fetch requested", kind=EventKind.STATUS, data={REFETCH_MARK: task.attempts})
    return task


def _observed(pool) -> float:
    return sum(value for labels, value in totals().get(f"{SCAN_DURATION}_count", []) if labels["pool"] == pool.name)


def test_the_mean_scan_duration_leaves_out_a_task_whose_results_were_fetched_again():
    pool = PoolFactory()
    _ran(pool, 60, refetched=False)
    _ran(pool, 120, refetched=False)
    _ran(pool, 3 * 86400, refetched=True)  # scanned in minutes, fetched three days later
    assert mean_scan_seconds(pool) == (pytest.approx(90, abs=1), 2)


def test_a_fetched_again_attempt_is_not_observed_twice_in_the_duration_histogram():
    pool = PoolFactory()
    fetched = _ran(pool, 3 * 86400, refetched=True, status=TaskStatus.RUNNING)
    assert transition(fetched.id, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED, message="results stored",
                      fields={"finished_at": timezone.now()})
    assert _observed(pool) == 0
    normal = _ran(pool, 60, refetched=False, status=TaskStatus.RUNNING)
    assert transition(normal.id, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED, message="results stored",
                      fields={"finished_at": timezone.now()})
    assert _observed(pool) == 1
