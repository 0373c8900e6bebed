"""A pool's scope as the engine checks it: the pool's allow-list and ``allow_any_target``, with the
addresses and host names of every configured scanner protected (a scan must not target a scanner's
own API unless the scope lists that scanner explicitly)."""

from __future__ import annotations

import json
from collections.abc import Iterable
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
    connection = connections[pools.db]
    template = _URLS_SQL.get(connection.vendor)
    if template is None:
        return pools
    quote = connection.ops.quote_name
    sql = template.format(url=quote(Scanner._meta.get_field("url").column), table=quote(Scanner._meta.db_table))
    # The SQL is made of constants and the model's own table and column names: no input reaches it.
    return pools.annotate(scanner_urls=RawSQL(sql, (), output_field=TextField()))  # noqa: S611


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
    return Scope.parse(pool.scope, allow_any=pool.allow_any_target, protected_hosts=hosts)
