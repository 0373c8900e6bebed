"""Helpers of tests/test_policy_*.py: an API client (token) with a client policy."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.core.management import call_command
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


def load_policies(tmp_path, text: str, *args: str) -> str:
    """Write ``text`` as a policies file and run ``manage.py load_client_policies`` on it; its output."""
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("load_client_policies", str(path), *args, stdout=out)
    return out.getvalue()
