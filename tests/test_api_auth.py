"""Who may call the API: hashed tokens (admin, create_api_token), read-only tokens, model permissions per
action, session auth for the browsable API, throttling per client, and the one error shape (404/500 too)."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from tasks.models import ApiToken, ScanTask
from tasks.models.api import hash_key
from tests.api_support import OPERATE, READ, SUBMIT, assert_error, token_client, user_with
from tests.factories import ScanTaskFactory, SuperUserFactory, UserFactory
from tests.results_support import fixture

pytestmark = pytest.mark.django_db

SUBMISSION = {"name": "perm", "targets": ["192.0.2.10"], "scanner_pool": "dmz"}


def test_keys_are_stored_hashed_and_found_only_whole(operator):
    token, key = ApiToken.issue(operator, "ci")
    assert key.startswith(f"sp_{token.prefix}_") and len(key) > 50
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.key_hash == hash_key(key) and key not in str(stored.__dict__)
    assert ApiToken.find(key) == token
    assert ApiToken.find(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert ApiToken.find(f"sp_{token.prefix}_wrong") is None and ApiToken.find("garbage") is None


def test_no_bad_or_revoked_token_is_401(pool, fresh_throttle_counts):
    anonymous = APIClient()
    error = assert_error(anonymous.get("/api/v1/scans/"), 401, code="not_authenticated")
    assert "Token" in error["message"]
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token sp_00000000_nope")
    assert_error(bad.get("/api/v1/scans/"), 401, code="authentication_failed")
    user = user_with(READ)
    client, key = token_client(user)
    assert client.get("/api/v1/scans/").status_code == 200
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert bearer.get("/api/v1/scans/").status_code == 200
    ApiToken.objects.filter(user=user).update(revoked_at=timezone.now())
    assert_error(client.get("/api/v1/scans/"), 401, code="authentication_failed")
    user.is_active = False
    user.save()
    active_again, _ = token_client(user, name="second")
    assert_error(active_again.get("/api/v1/scans/"), 401)


@pytest.mark.parametrize(("perms", "read", "submit", "cancel"), [
    ([], 403, 403, 403),
    (READ, 200, 403, 403),
    (SUBMIT, 200, 202, 403),
    (OPERATE, 200, 202, 200),
])
def test_permission_levels(pool, fresh_throttle_counts, perms, read, submit, cancel):
    task = ScanTaskFactory(pool=pool)
    client, _ = token_client(user_with(perms))
    assert client.get("/api/v1/scans/").status_code == read
    assert client.get(f"/api/v1/scans/{task.pk}/").status_code == read
    assert client.get("/api/v1/pools/").status_code == read
    assert client.get("/api/v1/scanners/").status_code == read
    response = client.post("/api/v1/scans/", SUBMISSION, format="json")
    assert response.status_code == submit
    if submit == 403:
        assert_error(response, 403, code="permission_denied")
        assert ScanTask.objects.count() == 1
    assert client.post(f"/api/v1/scans/{task.pk}/cancel/", format="json").status_code == cancel


def test_read_only_token_only_reads_whatever_the_user_may(pool, fresh_throttle_counts):
    client, _ = token_client(SuperUserFactory(), read_only=True)
    assert client.get("/api/v1/scans/").status_code == 200
    error = assert_error(client.post("/api/v1/scans/", SUBMISSION, format="json"), 403, code="permission_denied")
    assert "read-only" in error["message"]
    assert ScanTask.objects.count() == 0


def test_read_only_token_may_check_an_upload_but_not_change_a_scan(pool, fresh_throttle_counts):
    """POST /api/v1/validate/ stores nothing: a read (tasks.view_scantask), so a read-only token may use it. Cancel
    and retry, also POSTs, still need a token that may write."""
    task = ScanTaskFactory(pool=pool)
    client, _ = token_client(user_with(OPERATE), read_only=True)
    with fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus").open("rb") as handle:
        response = client.post("/api/v1/validate/", {"file": handle, "scan_type": "authenticated"},
                               format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["hosts"]
    for action in ("cancel", "retry"):
        error = assert_error(client.post(f"/api/v1/scans/{task.pk}/{action}/", format="json"), 403,
                             code="permission_denied")
        assert "read-only" in error["message"]
    # Without tasks.view_scantask the token's user may not check uploads either.
    client, _ = token_client(user_with(["pools.view_pool"]), read_only=True)
    with fixture("mitre-saf-home-network-3hosts-mixed-auth.nessus").open("rb") as handle:
        assert_error(client.post("/api/v1/validate/", {"file": handle}, format="multipart"), 403,
                     code="permission_denied")


def test_session_auth_and_the_browsable_api(pool, fresh_throttle_counts):
    client = APIClient()
    client.force_login(SuperUserFactory())
    page = client.get("/api/v1/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and b"scans" in page.content
    assert client.get("/api/v1/scans/", HTTP_ACCEPT="text/html").status_code == 200
    index = client.get("/api/v1/").json()
    assert set(index) == {"scans", "pools", "scanners", "validate", "schema", "docs"}


def test_submissions_are_throttled_per_client_with_retry_after(pool, settings, fresh_throttle_counts):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"submit": "2/min", "read": "1000/min"}}
    first, _ = token_client(user_with(SUBMIT, "first"))
    second, _ = token_client(user_with(SUBMIT, "second"))
    for i in range(2):
        assert first.post("/api/v1/scans/", {**SUBMISSION, "name": f"s{i}"}, format="json").status_code == 202
    response = first.post("/api/v1/scans/", {**SUBMISSION, "name": "s3"}, format="json")
    error = assert_error(response, 429, code="throttled")
    assert int(response["Retry-After"]) >= 1 and error["details"]["retry_after"] >= 1
    assert first.get("/api/v1/scans/").status_code == 200  # reading is counted apart
    assert second.post("/api/v1/scans/", SUBMISSION, format="json").status_code == 202  # another client
    assert ScanTask.objects.count() == 3


def test_create_api_token_command(fresh_throttle_counts):
    UserFactory(username="ci")
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "ci", "--read-only", "--name", "nightly", stdout=out, stderr=err)
    key = out.getvalue().strip()
    token = ApiToken.find(key)
    assert token is not None and token.read_only and token.name == "nightly" and "shown only once" in err.getvalue()
    with pytest.raises(CommandError, match="already has a token named 'nightly'"):
        call_command("create_api_token", "ci", "--name", "nightly", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="no user 'ghost'") as refused:
        call_command("create_api_token", "ghost", stdout=io.StringIO(), stderr=io.StringIO())
    # A client's user gets only the permissions it needs: the hint is not "make a superuser".
    assert "createsuperuser" not in str(refused.value) and "Users > Add user" in str(refused.value)
    call_command("create_api_token", "ci", stdout=out, stderr=err)
    assert ApiToken.objects.filter(user__username="ci").count() == 2


def test_admin_creates_a_token_and_shows_the_key_once(client):
    admin = SuperUserFactory()
    client.force_login(admin)
    response = client.post("/admin/tasks/apitoken/add/", {"user": admin.pk, "name": "from-admin"}, follow=True)
    assert response.status_code == 200
    token = ApiToken.objects.get(name="from-admin")
    shown = [str(m) for m in response.context["messages"]]
    key = next(part for m in shown for part in m.replace("<", " ").replace(">", " ").split() if part.startswith("sp_"))
    assert ApiToken.find(key) == token
    change = client.get(f"/admin/tasks/apitoken/{token.pk}/change/")
    listing = client.get("/admin/tasks/apitoken/")
    assert key not in change.content.decode() and key not in listing.content.decode()
    assert token.key_hash not in change.content.decode()


def test_unknown_api_path_and_server_errors_use_the_error_shape(operator, fresh_throttle_counts, monkeypatch):
    client, _ = token_client(operator)
    assert_error(client.get("/api/v1/nothing-here/"), 404, code="not_found")
    error = assert_error(client.delete("/api/v1/scans/"), 405, code="method_not_allowed")
    assert error["message"].endswith(": use GET, POST, HEAD, OPTIONS")  # the methods it takes

    from tasks.api.views import index

    def boom(self, request):
        raise RuntimeError("kaput")

    monkeypatch.setattr(index.IndexView, "get", boom)
    crashing = APIClient(raise_request_exception=False)
    crashing.force_authenticate(operator)
    assert_error(crashing.get("/api/v1/"), 500, code="server_error")


def test_permissions_come_from_groups_too(pool, fresh_throttle_counts):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="scanners")
    group.permissions.add(*Permission.objects.filter(codename__in=["view_scantask", "add_scantask"]))
    user = UserFactory()
    user.groups.add(group)
    client, _ = token_client(user)
    assert client.post("/api/v1/scans/", SUBMISSION, format="json").status_code == 202
