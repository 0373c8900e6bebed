"""Shared helpers of tests/test_api_*.py: users with given permissions, token clients, a scoped pool."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from tasks.api import throttles
from tasks.models import ApiToken
from tests.factories import PoolFactory, ScannerFactory, UserFactory

READ = ["tasks.view_scantask", "pools.view_pool", "scanners.view_scanner"]
SUBMIT = [*READ, "tasks.add_scantask"]
OPERATE = [*SUBMIT, "tasks.change_scantask"]
SCOPE = ["192.0.2.0/24", "198.51.100.0/24", "*.example.com"]


def user_with(perms: list[str], username: str | None = None):
    user = UserFactory(**({"username": username} if username else {}))
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


def staff_client(user) -> Client:
    """A Django test client logged in to the admin as ``user``, made staff (its permissions stay its own)."""
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def token_client(user, *, read_only: bool = False, name: str = "test") -> tuple[APIClient, str]:
    _, key = ApiToken.issue(user, name, read_only=read_only)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client, key


def assert_error(response, status: int, *, code: str | None = None, field: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "field", "details"} and error["code"] and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    return error


def forget_counts() -> None:
    """Drop every client's throttle count (they live in the test Redis)."""
    conn = throttles.connection()
    keys = list(conn.scan_iter(match=throttles.KEY_PREFIX + "*"))
    if keys:
        conn.delete(*keys)


@pytest.fixture
def fresh_throttle_counts():
    from tasks.capacity import forget_pool

    forget_counts()
    forget_pool()  # a pool id reused by a later test must not meet this test's cached snapshot
    yield
    forget_counts()
    forget_pool()


@pytest.fixture
def pool():
    """Pool ``dmz`` (scope: the documentation ranges and *.example.com) with scanners dmz-1 (2 slots), dmz-2."""
    p = PoolFactory(name="dmz", scope=SCOPE)
    ScannerFactory(pool=p, name="dmz-1", url="https://dmz-1.example.net:8834", max_concurrent_scans=2)
    ScannerFactory(pool=p, name="dmz-2", url="https://dmz-2.example.net:8834", max_concurrent_scans=1)
    return p


@pytest.fixture
def operator():
    return user_with(OPERATE, "operator")


@pytest.fixture
def api(operator, fresh_throttle_counts):
    """An APIClient with a token of ``operator`` (read, submit, cancel/retry)."""
    client, _ = token_client(operator)
    return client
