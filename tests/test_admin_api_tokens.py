"""API tokens in the admin cannot hand a staff user another identity: a staff user who is not a superuser makes
keys only for themselves (not for a superuser, not for another user with fewer or other permissions: that would
be a second identity to approve one's own scans with, or a policy-free key of a policy-bound client), cannot
re-point an existing key at another user, revive a revoked one or make another user's read-only key writable.
Superusers may do all of it."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tasks.models import ApiToken
from tests.api_support import OPERATE, user_with
from tests.api_support import staff_client as login
from tests.factories import SuperUserFactory

pytestmark = pytest.mark.django_db

TOKENS = "/admin/tasks/apitoken/"
MANAGE = ["tasks.add_apitoken", "tasks.change_apitoken", "tasks.view_apitoken"]




def add(client: Client, user, *, name: str = "ci", read_only: bool = False):
    data = {"user": user.pk, "name": name, "revoked_at_0": "", "revoked_at_1": ""}
    if read_only:
        data["read_only"] = "on"
    return client.post(f"{TOKENS}add/", data, follow=True)


def test_a_staff_user_makes_keys_only_for_themselves():
    lead = user_with([*MANAGE, *OPERATE, "tasks.approve_scantask"], "lead")
    client = login(lead)
    root = SuperUserFactory(username="root")
    bot = user_with(["tasks.add_scantask"], "ci-bot")  # fewer permissions: still another identity (four eyes)
    for other in (root, bot):
        for read_only in (False, True):
            page = add(client, other, read_only=read_only).content.decode()
            assert f"only a superuser may make a token that acts as &#x27;{other.username}&#x27;" in page
    assert not ApiToken.objects.exists()

    assert f'value="{lead.pk}"' in client.get(f"{TOKENS}add/").content.decode()  # the form offers oneself
    response = add(client, lead, name="mine")
    assert "copy it now, it is shown only this once" in response.content.decode()
    assert [(t.user.username, t.name) for t in ApiToken.objects.all()] == [("lead", "mine")]


def test_an_existing_key_cannot_be_repointed_revived_or_widened():
    lead = user_with([*MANAGE, *OPERATE], "lead")
    client = login(lead)
    root = SuperUserFactory(username="root")
    operator = user_with(OPERATE, "operator")
    own, _ = ApiToken.issue(lead, "mine", read_only=True)
    reports, _ = ApiToken.issue(operator, "reports", read_only=True)
    revoked, _ = ApiToken.issue(lead, "old")
    revoked.revoked_at = timezone.now()
    revoked.save()
    blank = {"revoked_at_0": "", "revoked_at_1": ""}

    # the user field is not part of the change form: a posted user is ignored
    client.post(f"{TOKENS}{own.pk}/change/", {"user": root.pk, "name": "mine", "read_only": "on", **blank})
    own.refresh_from_db()
    assert own.user == lead
    # a revoked token stays revoked
    client.post(f"{TOKENS}{revoked.pk}/change/", {"name": "old"})
    revoked.refresh_from_db()
    assert revoked.revoked_at is not None
    # another user's read-only key stays read-only; renaming it or revoking it is fine
    page = client.post(f"{TOKENS}{reports.pk}/change/", {"name": "reports", **blank}, follow=True).content.decode()
    assert "only a superuser may make a token that acts as" in page
    reports.refresh_from_db()
    assert reports.read_only
    client.post(f"{TOKENS}{reports.pk}/change/", {"name": "weekly", "read_only": "on", **blank})
    client.post(TOKENS, {"action": "revoke", "_selected_action": [reports.pk]})
    reports.refresh_from_db()
    assert reports.name == "weekly" and reports.read_only and reports.revoked_at is not None
    # one's own read-only key may become writable
    client.post(f"{TOKENS}{own.pk}/change/", {"name": "mine", **blank})
    own.refresh_from_db()
    assert not own.read_only


def test_a_superuser_may_make_any_token():
    client = login(SuperUserFactory(username="admin"))
    other_root = SuperUserFactory(username="root")
    operator = user_with(OPERATE, "operator")
    assert "copy it now" in add(client, other_root).content.decode()
    assert "copy it now" in add(client, operator).content.decode()
    reports, _ = ApiToken.issue(operator, "reports", read_only=True)
    client.post(f"{TOKENS}{reports.pk}/change/", {"name": "reports", "revoked_at_0": "", "revoked_at_1": ""})
    reports.refresh_from_db()
    assert not reports.read_only


def test_viewing_tokens_does_not_allow_revoking_them():
    """Revoking cuts off a client (the MCP server, a CI job): it needs change_apitoken, as docs/security.md says,
    not only the view permission that lists the tokens."""
    root = SuperUserFactory(username="root")
    token, _ = ApiToken.issue(root, "mcp")
    client = login(user_with(["tasks.view_apitoken"], "auditor"))
    page = client.get(TOKENS).content.decode()
    assert 'value="revoke"' not in page
    client.post(TOKENS, {"action": "revoke", "_selected_action": [token.pk], "index": "0"})
    token.refresh_from_db()
    assert token.revoked_at is None
