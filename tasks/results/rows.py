"""Fast insert of finding rows: plain tuples, streamed into COPY on PostgreSQL, one ``executemany`` elsewhere.

Profiling ingest (cProfile, 50 MB export, SQLite) showed the ORM, not the database, as the bottleneck:
``Model.__init__`` and ``bulk_create``'s per-field ``get_db_prep_save`` took over half of the time. Findings
are written once and never through the ORM's save logic (no signals, no custom save), so rows are built
as tuples in column order and written directly. The columns come from the model, so a new field added to
``tasks.models.Finding`` is written too (its value from ``row_values``' mapping, or the field's default).

Rows may be a generator: they are written as they are built (no list of a whole batch in memory), and on
PostgreSQL the server indexes one part of the batch while the next rows are built.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import chain, islice
from typing import Any

import orjson
from django.db import connection
from django.db.models import NOT_PROVIDED

from tasks.models import Finding

_FIELDS = [f for f in Finding._meta.concrete_fields if not f.primary_key]
COLUMNS = [f.column for f in _FIELDS]
_JSON_COLUMNS = tuple(f.column for f in _FIELDS if f.get_internal_type() == "JSONField")
_DEFAULTS = {
    f.column: (f.get_default() if f.default is not NOT_PROVIDED else None) for f in _FIELDS
}
_TEMPLATE = {column: _DEFAULTS[column] for column in COLUMNS}  # column order: dict order is the row's order
# orjson, not json.dumps: encoding `attributes` and `data` of every finding was ~12 % of a profiled ingest
# with the stdlib encoder, 10x less with orjson (same JSON: UTF-8 text, not \u escapes; compact separators).


def encode_json(value: Any) -> str:
    """JSON text of a value made of str, numbers, None, lists and str-keyed dicts (what the parser yields)."""
    return orjson.dumps(value).decode()


def db_task_id(task_id: uuid.UUID) -> Any:
    """The task id as the database stores it (hex on SQLite, a UUID on PostgreSQL)."""
    return Finding._meta.get_field("task").target_field.get_db_prep_value(task_id, connection)


def row_values(values: Mapping[str, Any]) -> tuple:
    """One row in COLUMNS order from ``{column: value}`` (JSON columns serialized here)."""
    row = _TEMPLATE.copy()
    row.update(values)
    if len(row) != len(_TEMPLATE):
        raise ValueError(f"not columns of {Finding._meta.db_table}: {sorted(set(values) - set(_TEMPLATE))}")
    for column in _JSON_COLUMNS:
        row[column] = encode_json(row[column])
    return tuple(row.values())


# SQLite page cache of the ingesting connection, KiB (SQLite's default is 2 MiB). With seven indexes on the
# findings table the default cache misses on nearly every index insert once the table outgrows it: 16 MiB made
# a 200 MB ingest ~2x faster (26 s → 13 s, one run on a shared machine) but put a 1 GB ingest's peak at
# 142 MiB; 8 MiB keeps it under the 128 MiB goal. Memory, not durability.
INGEST_SQLITE_CACHE_KIB = 8192
ROWS_PER_INSERT = 50  # SQLite: rows per INSERT statement (one sqlite3_step each, the GIL released around it)


class BatchTuning:
    """Per-transaction settings of one bulk load's batches (see :func:`ingest_connection`)."""

    def __init__(self, *, lz4: bool = False) -> None:
        self.lz4 = lz4

    def begin_batch(self) -> None:
        """Call first inside each batch's transaction. PostgreSQL only (``SET LOCAL``: that transaction only):

        * ``synchronous_commit = off``: the batch's commit does not wait for the write-ahead log's flush.
          No corruption risk, at worst the last batches are lost on a server crash; they are invisible until
          the final publish commit, which waits for the flush up to itself, so every batch before it is
          durable then too. (SQLite: WAL with ``synchronous=NORMAL`` already, see settings.)
        * ``default_toast_compression = lz4`` when the server has it (PostgreSQL 14+ built with lz4): the long
          values (plugin output, the JSON columns) are compressed with lz4 instead of pglz; the server's CPU
          for a 200 MB load went from ~5.3 s to ~3.9 s (measured). Values read back the same either way.
        """
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            if self.lz4:
                cursor.execute("SET LOCAL default_toast_compression TO lz4")


@contextmanager
def ingest_connection() -> Iterator[BatchTuning]:
    """Tune the connection for one bulk load and restore it afterwards (the connection outlives the job)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
            found = cursor.fetchone()
        yield BatchTuning(lz4=bool(found and found[0]))
        return
    if connection.vendor != "sqlite":
        yield BatchTuning()
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        previous = int(cursor.fetchone()[0])
        cursor.execute(f"PRAGMA cache_size = -{int(INGEST_SQLITE_CACHE_KIB)}")
    try:
        yield BatchTuning()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {previous}")


def insert_rows(rows: Iterable[tuple]) -> int:
    """Write ``rows`` (from :func:`row_values`, a list or a generator) into the findings table, in the caller's
    transaction. Returns how many were written."""
    table = connection.ops.quote_name(Finding._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
    count = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            raw = cursor.cursor  # psycopg 3: COPY is the fastest way in
            with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
                    count += 1
            return count

        per_insert = ROWS_PER_INSERT
        rest: list[tuple] = []

        def chunks() -> Iterator[tuple]:
            nonlocal count
            it = iter(rows)
            while chunk := list(islice(it, per_insert)):
                count += len(chunk)
                if len(chunk) < per_insert:
                    rest.extend(chunk)
                    return
                yield tuple(chain.from_iterable(chunk))

        values = f"({', '.join(['%s'] * len(COLUMNS))})"
        insert = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
        # The driver's executemany (one prepared statement, rows from an iterator, no list), not Django's
        # wrapper, which keeps every batch's SQL when DEBUG is on. Table and column names come from the model
        # (quoted), values are parameters.
        cursor.cursor.executemany(insert + ", ".join([values] * per_insert), chunks())
        if rest:
            cursor.cursor.executemany(insert + values, rest)
    return count
