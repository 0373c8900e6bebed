"""Helpers of tests/test_policy_*.py: an API client (token) with a client policy."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from pools.models import Pool
from tasks.models import ApiToken, ClientPolicy
from tests.api_support import SUBMIT, user_with


def policy_client(name: str = "agent", *, pools: list[Pool] | None = None, perms: list[str] | None = None,
                  **fields: Any) -> tuple[ApiToken, ClientPolicy, APIClient]:
    """A user ``name`` with submit permissions, its token ``name`` (key in ``token.raw_key``) and its policy."""
    user = user_with(perms if perms is not None else SUBMIT, name)
    token, key = ApiToken.issue(user, name)
    token.raw_key = key  # for HTTP clients other than the APIClient returned
    policy = ClientPolicy.objects.create(token=token, **fields)
    if pools:
        policy.pools.set(pools)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return token, policy, client
