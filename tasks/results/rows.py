"""Fast insert of finding rows: plain tuples, COPY on PostgreSQL, one ``executemany`` per batch elsewhere.

Profiling ingest (cProfile, 50 MB export, SQLite) showed the ORM, not the database, as the bottleneck:
``Model.__init__`` and ``bulk_create``'s per-field ``get_db_prep_save`` took over half of the time. Findings
are written once and never through the ORM's save logic (no signals, no custom save), so rows are built
as tuples in column order and written directly. The columns come from the model, so a new field added to
``tasks.models.Finding`` is written too (its value from ``row_values``' mapping, or the field's default).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection
from django.db.models import NOT_PROVIDED

from tasks.models import Finding

_FIELDS = [f for f in Finding._meta.concrete_fields if not f.primary_key]
COLUMNS = [f.column for f in _FIELDS]
_JSON_COLUMNS = {f.column for f in _FIELDS if f.get_internal_type() == "JSONField"}
_DEFAULTS = {
    f.column: (f.get_default() if f.default is not NOT_PROVIDED else None) for f in _FIELDS
}


def db_task_id(task_id: uuid.UUID) -> Any:
    """The task id as the database stores it (hex on SQLite, a UUID on PostgreSQL)."""
    return Finding._meta.get_field("task").target_field.get_db_prep_value(task_id, connection)


def row_values(values: Mapping[str, Any]) -> tuple:
    """One row in COLUMNS order from ``{column: value}`` (JSON columns serialized here)."""
    out = []
    for column in COLUMNS:
        value = values.get(column, _DEFAULTS[column])
        if column in _JSON_COLUMNS:
            value = json.dumps(value, ensure_ascii=False)
        out.append(value)
    return tuple(out)


def insert_rows(rows: Sequence[tuple]) -> None:
    """Write ``rows`` (from :func:`row_values`) into the findings table, in the caller's transaction."""
    if not rows:
        return
    table = connection.ops.quote_name(Finding._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            raw = cursor.cursor  # psycopg 3: COPY is the fastest way in
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        placeholders = ", ".join(["%s"] * len(COLUMNS))
        # Table and column names come from the model (quoted), values are parameters.
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)  # noqa: S608

