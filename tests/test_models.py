"""Domain model rules enforced by the database (named constraints) and the status machine."""

from __future__ import annotations

import itertools

import pytest
from django.db import IntegrityError, connection, transaction

from pools.models import Pool
from scanners.models import Scanner
from tasks.models import TERMINAL_STATUSES, IllegalTransition, ScanTask, TaskStatus, check_transition
from tasks.models.states import TRANSITIONS
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory

pytestmark = pytest.mark.django_db


def _violates(constraint: str, action) -> None:
    """``action`` must fail in the database, naming ``constraint`` (SQLite and PostgreSQL both say it)."""
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        action()
    message = str(excinfo.value)
    # PostgreSQL names the constraint; SQLite names CHECK constraints, and the columns of UNIQUE ones.
    assert constraint in message or (constraint.endswith("_unique") and "UNIQUE constraint failed" in message), message


def test_pool_name_is_unique():
    PoolFactory(name="dmz")
    _violates("pool_name_unique", lambda: Pool.objects.create(name="dmz"))


def test_scanner_name_is_unique_across_pools():
    ScannerFactory(name="scanner-a", pool=PoolFactory(name="one"))
    other = PoolFactory(name="two")
    _violates("scanner_name_unique", lambda: Scanner.objects.create(name="scanner-a", pool=other, url="https://x"))


def test_scanner_max_concurrent_scans_at_least_one():
    scanner = ScannerFactory()
    _violates(
        "scanner_max_concurrent_scans_gte_1",
        lambda: Scanner.objects.filter(pk=scanner.pk).update(max_concurrent_scans=0),
    )


@pytest.mark.parametrize("value", [101, 250])
def test_task_progress_between_0_and_100(value):
    task = ScanTaskFactory()
    _violates("task_progress_0_100", lambda: ScanTask.objects.filter(pk=task.pk).update(progress=value))
    ScanTask.objects.filter(pk=task.pk).update(progress=100)  # the bounds themselves are fine
    ScanTask.objects.filter(pk=task.pk).update(progress=0)


def test_task_status_must_be_a_known_state():
    task = ScanTaskFactory()
    _violates("task_status_valid", lambda: ScanTask.objects.filter(pk=task.pk).update(status="exploded"))


def test_pool_timeouts_at_least_one_second():
    pool = PoolFactory()
    _violates("pool_scan_timeout_gte_1", lambda: Pool.objects.filter(pk=pool.pk).update(scan_timeout_seconds=0))
    _violates("pool_poll_interval_gte_1", lambda: Pool.objects.filter(pk=pool.pk).update(poll_interval_seconds=0))


def test_idempotency_key_unique_when_given():
    pool = PoolFactory()
    ScanTaskFactory(pool=pool, idempotency_key="k-1")
    ScanTaskFactory(pool=pool, idempotency_key=None)
    ScanTaskFactory(pool=pool, idempotency_key=None)  # many tasks without a key are fine
    _violates("task_idempotency_key_unique", lambda: ScanTaskFactory(pool=pool, idempotency_key="k-1"))


def test_constraints_are_named_in_the_schema():
    names = set()
    with connection.cursor() as cursor:
        for table in ("pools_pool", "scanners_scanner", "tasks_scantask"):
            names |= set(connection.introspection.get_constraints(cursor, table))
    expected = {
        "pool_name_unique",
        "scanner_name_unique",
        "scanner_max_concurrent_scans_gte_1",
        "task_progress_0_100",
        "task_status_valid",
    }
    assert expected <= names


def test_indexes_behind_the_admin_filters_exist():
    with connection.cursor() as cursor:
        task_indexes = connection.introspection.get_constraints(cursor, "tasks_scantask")
        scanner_indexes = connection.introspection.get_constraints(cursor, "scanners_scanner")
    indexed_columns = {tuple(info["columns"]) for info in task_indexes.values() if info["index"]}
    for columns in (
        ("status", "created_at"),  # status filter (+ newest first)
        ("pool_id", "status", "created_at"),  # pool filter, FIFO
        ("assigned_scanner_id", "status"),  # scanner filter
        ("scan_type",),
        ("auth_status",),
        ("error_kind",),
        ("created_at",),  # date hierarchy and ordering
    ):
        assert columns in indexed_columns, columns
    scanner_columns = {tuple(info["columns"]) for info in scanner_indexes.values() if info["index"]}
    assert ("health",) in scanner_columns and ("breaker_state",) in scanner_columns


# ------------------------------------------------------------------------------- status machine

LEGAL = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "timeout"),
    ("running", "cancelled"),
    ("failed", "queued"),  # retry of a dead letter
    ("timeout", "queued"),  # retry of a dead letter
    ("failed", "pending_approval"),  # retry that the client's policy now holds for approval
    ("timeout", "pending_approval"),
    ("pending_approval", "queued"),  # approved (client policy)
    ("pending_approval", "cancelled"),  # rejected, expired or withdrawn
    ("failed", "running"),  # the results of a completed scan fetched again (tasks.refetch): no new scan
    ("timeout", "running"),
}


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_every_legal_transition_passes(current, target):
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    sorted(pair for pair in itertools.product(TaskStatus.values, repeat=2) if pair not in LEGAL),
)
def test_every_other_transition_raises(current, target):
    with pytest.raises(IllegalTransition) as excinfo:
        check_transition(current, target)
    assert excinfo.value.current == current and excinfo.value.target == target
    assert f"{current} → {target}" in str(excinfo.value)


def test_the_machine_table_is_what_the_design_says():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL
    assert {TaskStatus.COMPLETED, TaskStatus.CANCELLED} == {s for s in TaskStatus if not TRANSITIONS[s]}
    for status in TERMINAL_STATUSES:
        # Nothing terminal runs a scan again directly (a retry queues a new one); only the two dead-letter states go
        # back to running, to fetch the results of the scan that completed (tasks.refetch), not to scan.
        assert (TaskStatus.RUNNING in TRANSITIONS[status]) == (status in (TaskStatus.FAILED, TaskStatus.TIMEOUT))


def test_unknown_states_raise():
    with pytest.raises(IllegalTransition):
        check_transition("exploded", "queued")
    with pytest.raises(IllegalTransition):
        check_transition("queued", "exploded")
