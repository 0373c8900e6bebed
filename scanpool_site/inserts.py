"""INSERT of new model rows by a statement whose text is made once per model and row count.

A submission writes three rows (the task, its target index, its first event). Through ``Model.save()`` and
``bulk_create`` each write rebuilds the same INSERT statement — compiler, expression checks, placeholders, the
returning clause — which cost about as much as the rest of the submission's own work together. Here the
statement text is built once from the model's meta and cached; each row's values still go through every field's
own ``pre_save`` and ``get_db_prep_save`` (defaults, ``auto_now_add``, JSON, encryption), exactly what the ORM's
insert compiler passes, so the row written is the same (tests/test_inserts.py compares them, on SQLite and
PostgreSQL).

What it does not do, like ``bulk_create``: send ``pre_save``/``post_save`` signals (no receiver listens to the
models written this way) or read back database-generated values: an auto-increment primary key stays None on the
object. A value that is an expression, a field with its own placeholder or an id chosen for an auto-increment key
goes through ``bulk_create``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model
from django.db.models.fields import AutoFieldMixin

MAX_ROWS = 100  # per statement (fewer when the database's parameter limit says so): a bounded statement cache
_FIELDS: dict[type[Model], tuple[list[Field], bool]] = {}
_STATEMENTS: dict[tuple[type[Model], int, str], str] = {}


def insert_new(objs: Sequence[Model], using: str = DEFAULT_DB_ALIAS) -> None:
    """Write ``objs`` (new instances of one model, primary key not database-generated or not needed afterwards)
    in as few INSERT statements as the database's parameter limit allows. Call it inside the transaction the rows
    belong to."""
    if not objs:
        return
    model = type(objs[0])
    if any(type(obj) is not model for obj in objs):
        raise TypeError("insert_new writes rows of one model at a time")
    fields, plain = _FIELDS.get(model) or _FIELDS.setdefault(model, _fields(model))
    # A field with its own placeholder, or an id chosen for an auto-increment key: the ORM's way.
    if not plain or (fields[0] is not model._meta.pk and any(obj.pk is not None for obj in objs)):
        model._default_manager.db_manager(using).bulk_create(objs)
        return
    connection = connections[using]
    limit = connection.features.max_query_params
    rows = max(1, min(MAX_ROWS, limit // len(fields) if limit else MAX_ROWS))
    for start in range(0, len(objs), rows):
        _insert(model, fields, objs[start:start + rows], using, connection)


def _insert(model: type[Model], fields: list[Field], objs: Sequence[Model], using: str, connection) -> None:
    params = []
    for obj in objs:
        for field in fields:
            value = field.pre_save(obj, True)
            if hasattr(value, "resolve_expression"):  # an expression: the ORM knows what to do with it
                model._default_manager.db_manager(using).bulk_create(objs)
                return
            params.append(field.get_db_prep_save(value, connection))
    key = (model, len(objs), connection.vendor)
    sql = _STATEMENTS.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        sql = _STATEMENTS[key] = (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
            f"VALUES {', '.join([row] * len(objs))}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using


def _fields(model: type[Model]) -> tuple[list[Field], bool]:
    """The columns written, primary key first unless the database makes it (an auto-increment key is left out), and
    whether each takes a plain placeholder."""
    if model._meta.parents:  # multi-table inheritance writes several tables: not this helper's business
        raise TypeError(f"insert_new does not write {model.__name__} (it inherits from a concrete model)")
    fields = sorted((f for f in model._meta.local_concrete_fields
                     if not f.generated and not (f.primary_key and isinstance(f, AutoFieldMixin))),
                    key=lambda f: not f.primary_key)
    return fields, not any(hasattr(f, "get_placeholder") for f in fields)
