"""Task and event tables keep no single-column foreign-key index that a composite index already leads
(migration tasks/0008): every lookup by those columns is served by the composite, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

COVERED = {  # column -> the composite index that serves lookups by it
    ("tasks_scantask", "pool_id"): "task_pool_fifo_idx",
    ("tasks_scantask", "assigned_scanner_id"): "task_scanner_status_idx",
    ("tasks_scantask", "api_token_id"): "task_api_token_created_idx",
    ("tasks_taskevent", "task_id"): "taskevent_task_time_idx",
}


def _indexes(table: str) -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {name: c["columns"] for name, c in constraints.items() if c["index"] and not c["primary_key"]}


def test_no_single_column_index_duplicates_a_composite_one():
    for (table, column), composite in COVERED.items():
        indexes = _indexes(table)
        assert indexes[composite][0] == column, (table, composite, indexes[composite])
        alone = [name for name, columns in indexes.items() if columns == [column]]
        assert not alone, (table, column, alone)


def test_the_indexes_that_stay_are_still_there():
    indexes = _indexes("tasks_scantask")
    for columns in (["created_at"], ["trace_id"], ["requested_by_id"], ["requested_scanner_id"], ["slot_held"]):
        assert columns in indexes.values(), columns
    assert ["created_at"] in _indexes("tasks_taskevent").values()
