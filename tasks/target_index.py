"""The scan-target index: what ``submit`` writes next to a task so the scan list can answer "which scans
target this address (or network, or host name)?" in SQL, CIDR-aware, without reading every task.

Each target entry becomes one :class:`~tasks.models.TaskTarget` row: an address span as two sortable
keys (``first``..``last``) or a host name. A query address ``a`` matches a span when
``first <= key(a) <= last``; a query network matches every span that overlaps it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db.models import Exists, OuterRef, Q

from pools.scope import Target, TargetError, parse_target
from tasks.models.api import TaskTarget, address_key


def index_rows(task_id: uuid.UUID, targets: Iterable[Target]) -> list[TaskTarget]:
    rows = []
    for target in targets:
        if target.networks:
            first = min(n.network_address for n in target.networks)
            last = max(n.broadcast_address for n in target.networks)
            rows.append(TaskTarget(task_id=task_id, first=address_key(first), last=address_key(last)))
        else:
            rows.append(TaskTarget(task_id=task_id, hostname=target.hostname or target.text))
    return rows


def contains_target(text: str) -> Exists:
    """An ``Exists`` for ``ScanTask.objects.filter(...)``: the task targets ``text`` (address, CIDR, range or
    host name). Raises :class:`~pools.scope.TargetError` when ``text`` is none of those."""
    target = parse_target(text.strip())
    if target.networks:
        first = address_key(min(n.network_address for n in target.networks))
        last = address_key(max(n.broadcast_address for n in target.networks))
        condition = Q(first__lte=last, last__gte=first, first__startswith=first[:2])
    else:
        condition = Q(hostname=target.hostname or target.text)
    return Exists(TaskTarget.objects.filter(condition, task_id=OuterRef("pk")))


__all__ = ["TargetError", "contains_target", "index_rows"]
