from __future__ import annotations

from typing import Any

from django import template

from pools.admin import utilisation_bar
from tasks.control_room import summary

register = template.Library()


@register.inclusion_tag("admin/control_room.html")
def control_room() -> dict[str, Any]:
    data = summary()
    for pool in data["pools"]:
        pool.bar = utilisation_bar(pool.active, pool.total_capacity)
    return data
