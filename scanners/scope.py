"""A pool's scope as the engine checks it: the pool's allow-list and ``allow_any_target``, with the
addresses and host names of every configured scanner protected (a scan must not target a scanner's
own API unless the scope lists that scanner explicitly)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pools.models import Pool
from pools.scope import Scope
from scanners.models import Scanner


def scanner_hosts() -> list[str]:
    """The host part (address or name) of every scanner's URL."""
    hosts = []
    for url in Scanner.objects.order_by().values_list("url", flat=True):  # unordered: no join for Meta.ordering
        try:
            host = urlsplit(url).hostname
        except ValueError:
            continue
        if host:
            hosts.append(host)
    return hosts


def pool_scope(pool: Pool) -> Scope:
    """``pool``'s scope as of now (re-read it from the database first when it may have changed)."""
    return Scope.parse(pool.scope, allow_any=pool.allow_any_target, protected_hosts=scanner_hosts())
