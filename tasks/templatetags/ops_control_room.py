"""``{% control_room %}`` on the admin index: pools under load, every scanner's load/health/breaker, task counts."""

from __future__ import annotations

from typing import Any

from django import template

from pools.admin import utilisation_bar
from scanners.models import Scanner
from tasks.control_room import summary
from tasks.observability.dashboard import scanner_row
from tasks.pool_load import PoolLoad

register = template.Library()


@register.inclusion_tag("admin/control_room.html", takes_context=True)
def control_room(context: template.Context) -> dict[str, Any]:
    data = summary()
    for pool in data["pools"]:
        load = PoolLoad.of_annotated(pool)  # as the API and the pool list: never past 100 % during an outage
        pool.bar = utilisation_bar(load.active_usable, load.capacity, unavailable=load.unavailable_active)
    data["scanners"] = [scanner_row(s) for s in Scanner.objects.select_related("pool").order_by("pool__name", "name")]
    data["user"] = context.get("user")
    data["perms"] = context.get("perms")
    return data
