"""A pool's scope as the engine checks it: the pool's allow-list and ``allow_any_target``, with the
addresses and host names of every configured scanner protected (a scan must not target a scanner's
own API unless the scope lists that scanner explicitly)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from django.db import connections
from django.db.models import QuerySet, TextField
from django.db.models.expressions import RawSQL

from pools.models import Pool
from pools.scope import Scope
from scanners.models import Scanner

# Every scanner's URL as one JSON array, per database (a scalar subquery the pool read carries along).
_URLS_SQL = {
    "sqlite": "SELECT json_group_array({url}) FROM {table}",
    "postgresql": "SELECT COALESCE(json_agg({url})::text, '[]') FROM {table}",
}


def with_scanner_urls(pools: QuerySet[Pool]) -> QuerySet[Pool]:
    """``pools`` with every scanner's URL read in the same query (``scanner_urls``, for :func:`pool_scope`): a
    submission's scope check then costs no query of its own. On another database: unchanged (a query later)."""
    vendor = connections[pools.db].vendor
    expression = _URLS_EXPRESSIONS.get(vendor)
    if expression is None:
        template = _URLS_SQL.get(vendor)
        if template is None:
            return pools
        quote = connections[pools.db].ops.quote_name
        sql = template.format(url=quote(Scanner._meta.get_field("url").column), table=quote(Scanner._meta.db_table))
        # The SQL is made of constants and the model's own table and column names: no input reaches it.
        expression = _URLS_EXPRESSIONS[vendor] = RawSQL(sql, (), output_field=TextField())  # noqa: S611
    return pools.annotate(scanner_urls=expression)


_URLS_EXPRESSIONS: dict[str, RawSQL] = {}


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
    addresses come from the pool's read when it was made by :func:`with_scanner_urls`, else from a query now."""
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
