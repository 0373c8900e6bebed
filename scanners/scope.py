"""A pool's scope as the engine checks it: the pool's allow-list and ``allow_any_target``, with the
addresses and host names of every configured scanner protected (a scan must not target a scanner's
own API unless the scope lists that scanner explicitly)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.db import DEFAULT_DB_ALIAS, connections

from pools.models import Pool
from pools.scope import Scope
from scanners.models import Scanner

# Every scanner's URL as one JSON array, per database (a scalar subquery the pool read carries along).
_URLS_SQL = {
    "sqlite": "SELECT json_group_array({url}) FROM {table}",
    "postgresql": "SELECT COALESCE(json_agg({url})::text, '[]') FROM {table}",
}
_POOL_SQL: dict[str, str] = {}  # per database vendor, made once from the models' own table and column names
# Per connection: each column's converters (database value → Python, as the ORM applies them), in column order.
_CONVERTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pool_with_scanner_urls(name: str, using: str = DEFAULT_DB_ALIAS) -> Pool | None:
    """The pool named ``name`` (None: there is none) with every scanner's URL (``scanner_urls``, for
    :func:`pool_scope`) in one statement: a submission's pool read, after which its scope check needs no query.

    A statement made once from the model's meta (every concrete column, the name as the one parameter), its row
    turned into a Pool as the ORM does it (each field's database converters, then ``Pool.from_db``): building the
    same query with the ORM cost a tenth of a submission's time, and ``Manager.raw`` half as much again. On a
    database other than SQLite and PostgreSQL: an ORM read, and the scope check reads the scanners itself."""
    connection = connections[using]
    sql = _POOL_SQL.get(connection.vendor)
    if sql is None:
        template = _URLS_SQL.get(connection.vendor)
        if template is None:
            return Pool.objects.using(using).filter(name=name).first()
        quote = connection.ops.quote_name
        urls = template.format(url=quote(Scanner._meta.get_field("url").column), table=quote(Scanner._meta.db_table))
        columns = ", ".join(quote(field.column) for field in Pool._meta.concrete_fields)
        sql = _POOL_SQL[connection.vendor] = (
            f"SELECT {columns}, ({urls}) AS scanner_urls FROM {quote(Pool._meta.db_table)} "  # noqa: S608 (names only)
            f"WHERE {quote(Pool._meta.get_field('name').column)} = %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [name])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for position, column, converters in _converters(connection):
        for convert in converters:
            values[position] = convert(values[position], column, connection)
    pool = Pool.from_db(using, _POOL_ATTNAMES, values[:-1])
    pool.scanner_urls = values[-1]
    return pool


_POOL_ATTNAMES = [field.attname for field in Pool._meta.concrete_fields]


def _converters(connection) -> list[tuple[int, Any, list]]:
    """(position, column, converters) of each of the pool's columns that has converters on ``connection``: the
    backend's and the field's own (``from_db_value``), as the ORM's compiler finds them."""
    found = _CONVERTERS.get(connection)
    if found is None:
        found = []
        for position, field in enumerate(Pool._meta.concrete_fields):
            column = field.get_col(Pool._meta.db_table)
            converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if converters:
                found.append((position, column, converters))
        _CONVERTERS[connection] = found
    return found


def scanner_hosts() -> list[str]:
    """The host part (address or name) of every scanner's URL."""
    return _hosts(Scanner.objects.order_by().values_list("url", flat=True))  # unordered: no join for Meta.ordering


def _hosts(urls: Iterable[str]) -> list[str]:
    hosts = []
    for url in urls:
        try:
            host = urlsplit(url).hostname
        except ValueError:
            continue
        if host:
            hosts.append(host)
    return hosts


def pool_scope(pool: Pool) -> Scope:
    """``pool``'s scope as of now (re-read it from the database first when it may have changed). The scanners'
    addresses come from the pool's read when it was made by :func:`pool_with_scanner_urls`, else from a query now."""
    urls = getattr(pool, "scanner_urls", None)
    hosts = scanner_hosts() if urls is None else _hosts(json.loads(urls))
    entries = pool.scope
    if isinstance(entries, list) and all(isinstance(entry, str) for entry in entries):
        return _parsed(tuple(entries), bool(pool.allow_any_target), tuple(hosts))
    return Scope.parse(entries, allow_any=pool.allow_any_target, protected_hosts=hosts)


@lru_cache(maxsize=256)
def _parsed(entries: tuple[str, ...], allow_any: bool, hosts: tuple[str, ...]) -> Scope:
    """Scope.parse of exactly these inputs (a Scope is immutable: one parse serves every submission that has
    them; a changed scope, flag or scanner address is another key)."""
    return Scope.parse(entries, allow_any=allow_any, protected_hosts=hosts)
