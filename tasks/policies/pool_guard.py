"""A pool named by a client policy cannot be deleted.

A policy's empty pools list means *every* pool: deleting the pools a policy allows would silently widen it to
all of them (``tasks.policies.checks.evaluate``). So deleting such a pool is refused (``ProtectedError``, from any
caller: the admin, a shell, a loader), and the Pool admin lists the policies as protected objects, as it lists a
pool's tasks: edit the policies first (admin *Client policies*, or ``load_client_policies``)."""

from __future__ import annotations

from typing import Any

from django.db.models import ProtectedError

from pools.models import Pool
from tasks.models import ClientPolicy


def policies_naming(pools: Any) -> list[ClientPolicy]:
    return list(ClientPolicy.objects.filter(pools__in=pools).select_related("token").distinct())


def refuse_pool_delete(sender: type[Pool], instance: Pool, **kwargs: Any) -> None:
    """``pre_delete`` of Pool."""
    policies = policies_naming([instance])
    if policies:
        names = ", ".join(str(p) for p in policies)
        raise ProtectedError(f"pool {instance.name!r} is allowed by the client policy {names}: an empty pools list "
                             "would allow every pool, so remove the pool from those policies first",
                             set(policies))
