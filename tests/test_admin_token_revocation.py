"""Revoking API tokens in the admin: *Revoke selected tokens* (a rotation: the old token's queued scans still run)
and *Revoke and cancel their waiting scans* (a leak). Both need tasks.change_apitoken; cancelling also needs
tasks.change_scantask, the permission every cancel needs — without it the action is refused, saying so, and
nothing is revoked or cancelled. The message says how many tokens were revoked, scans cancelled and scans still
active, with a link to the scan list filtered to those tokens. And ``manage.py revoke_api_token``."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from tasks.models import ApiToken, ScanTask, TaskEvent, TaskStatus
from tests.api_support import OPERATE, SUBMIT, user_with
from tests.api_support import staff_client as login
from tests.factories import ScanTaskFactory, SuperUserFactory
from tests.worker_process import ROOT, worker_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_conn")]

TOKENS = "/admin/tasks/apitoken/"
CHANGE_TOKENS = ["tasks.view_apitoken", "tasks.change_apitoken"]




@pytest.fixture
def leaked(pool):
    """Token ``ci`` with a scan pending approval, one queued, one running and one completed; token ``other``
    with one queued."""
    token, _ = ApiToken.issue(user_with(SUBMIT, "ci-bot"), "ci")
    other, _ = ApiToken.issue(user_with(SUBMIT, "other-bot"), "other")
    scans = {status: ScanTaskFactory(pool=pool, api_token=token, status=status, name=f"ci {status}")
             for status in (TaskStatus.PENDING_APPROVAL, TaskStatus.QUEUED, TaskStatus.COMPLETED)}
    scans[TaskStatus.RUNNING] = ScanTaskFactory(pool=pool, api_token=token, status=TaskStatus.RUNNING,
                                                claimed_at=timezone.now(), name="ci running")
    scans["other"] = ScanTaskFactory(pool=pool, api_token=other, status=TaskStatus.QUEUED, name="other queued")
    return token, other, scans


def act(client: Client, action: str, *tokens: ApiToken):
    return client.post(TOKENS, {"action": action, "_selected_action": [t.pk for t in tokens], "index": "0"},
                       follow=True)


def shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def statuses(scans: dict) -> dict:
    return {key: ScanTask.objects.get(pk=task.pk).status for key, task in scans.items()}


def test_revoking_only_leaves_the_queued_scans_and_says_so(leaked):
    token, other, scans = leaked
    client = login(user_with(CHANGE_TOKENS, "lead"))  # no permission to cancel scans: not needed to revoke
    (message,) = shown(act(client, "revoke", token))
    assert message.startswith("1 token(s) revoked; 3 of their scans still active (1 pending approval, 1 queued, "
                              "1 running)")
    assert "queued scans still run (a rotation)" in message and "Revoke and cancel their waiting scans" in message
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert ApiToken.objects.get(pk=other.pk).revoked_at is None
    assert statuses(scans) == {key: task.status for key, task in scans.items()}  # nothing cancelled

    assert "see them" not in message  # "lead" may not view scans: the link would be a 403 page

    (again,) = shown(act(client, "revoke", token))
    assert again.startswith("0 token(s) revoked (1 already were); 3 of their scans still active")


def test_revoke_and_cancel_needs_the_permission_to_cancel_scans(leaked):
    token, _, scans = leaked
    before = statuses(scans)
    client = login(user_with(CHANGE_TOKENS, "lead"))
    assert 'value="revoke_and_cancel"' in client.get(TOKENS).content.decode()
    (message,) = shown(act(client, "revoke_and_cancel", token))
    assert message.startswith("Nothing revoked or cancelled: cancelling scans needs the permission "
                              "tasks.change_scantask")
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None and statuses(scans) == before

    # the permission to cancel scans alone does not allow revoking tokens
    viewer = login(user_with(["tasks.view_apitoken", *OPERATE], "operator"))
    assert 'value="revoke_and_cancel"' not in viewer.get(TOKENS).content.decode()
    act(viewer, "revoke_and_cancel", token)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None and statuses(scans) == before


@pytest.mark.parametrize("superuser", [False, True])
def test_revoke_and_cancel_cancels_the_waiting_scans_and_links_the_active_ones(leaked, superuser):
    token, other, scans = leaked
    user = SuperUserFactory(username="lead") if superuser else user_with([*CHANGE_TOKENS, *OPERATE], "lead")
    client = login(user)
    (message,) = shown(act(client, "revoke_and_cancel", token))
    assert message.startswith("1 token(s) revoked, 2 waiting scan(s) cancelled; 1 of their scans still active "
                              "(1 running)")
    assert statuses(scans) == {TaskStatus.PENDING_APPROVAL: TaskStatus.CANCELLED, TaskStatus.QUEUED:
                               TaskStatus.CANCELLED, TaskStatus.COMPLETED: TaskStatus.COMPLETED,
                               TaskStatus.RUNNING: TaskStatus.RUNNING, "other": TaskStatus.QUEUED}
    event = TaskEvent.objects.get(task_id=scans[TaskStatus.QUEUED].pk, to_status=TaskStatus.CANCELLED)
    assert event.actor == "lead" and "API token 'ci' (ci-bot, sp_" in event.message and "revoked" in event.message
    assert ApiToken.objects.get(pk=other.pk).revoked_at is None

    link = re.search(r'<a href="([^"]+)">see them</a>', message).group(1).replace("&amp;", "&")
    page = client.get(link)
    assert page.status_code == 200, page  # the admin redirects a lookup it does not allow to ?e=1
    listed = {task.pk for task in page.context["cl"].result_list}
    assert listed == {scans[TaskStatus.RUNNING].pk}

    (again,) = shown(act(client, "revoke_and_cancel", token, other))  # the other one too, now
    assert again.startswith("1 token(s) revoked (1 already were), 1 waiting scan(s) cancelled; 1 of their scans "
                            "still active (1 running)")


def test_nothing_left_is_a_plain_success(pool):
    token, _ = ApiToken.issue(user_with(SUBMIT, "quiet"), "quiet")
    client = login(user_with([*CHANGE_TOKENS, *OPERATE], "lead"))
    (message,) = shown(act(client, "revoke_and_cancel", token))
    assert message == ("1 token(s) revoked, 0 waiting scan(s) cancelled; none of their scans is pending approval, "
                       "queued or running.")


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("revoke_api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_revoke_api_token_command(leaked):
    token, other, scans = leaked
    label = f"'ci' (ci-bot, sp_{token.prefix}_…)"
    out, err = command("ci")
    assert out == (f"revoked API token {label}; 3 of its scans still active (1 pending approval, 1 queued, "
                   "1 running): cancel them in the admin or with POST /api/v1/scans/<id>/cancel/ if they must not "
                   "run, or run again with --cancel-waiting after a leak\n") and err == ""
    assert statuses(scans)[TaskStatus.QUEUED] == TaskStatus.QUEUED

    out, _ = command(f"sp_{token.prefix}_…", "--cancel-waiting")  # by key id, as the admin shows it
    assert out.startswith(f"already revoked: API token {label}; cancelled 2 waiting scan(s); 1 of its scans still "
                          "active (1 running)")
    assert statuses(scans)[TaskStatus.PENDING_APPROVAL] == TaskStatus.CANCELLED
    assert TaskEvent.objects.get(task_id=scans[TaskStatus.QUEUED].pk, to_status=TaskStatus.CANCELLED).actor.startswith(
        "revoke_api_token (")
    assert ApiToken.objects.get(pk=other.pk).revoked_at is None

    ApiToken.issue(token.user, "other")  # two users have a token named "other" now
    with pytest.raises(CommandError, match=r"several API tokens are named 'other' \(users: ci-bot, other-bot\)"):
        command("other")
    out, _ = command("other", "--user", "other-bot", "-v", "2")
    assert out.startswith("revoked API token 'other' (other-bot, sp_") and str(scans["other"].pk) in out


def test_revoke_api_token_command_never_prints_a_key_it_is_given(pool):
    token, key = ApiToken.issue(user_with(SUBMIT, "ci-bot"), "ci")
    out, _ = command(key)  # a leaked key identifies its token
    assert key not in out and f"sp_{token.prefix}_…" in out
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    unknown = "sp_0000zzzz_" + key.split("_", 2)[2]
    with pytest.raises(CommandError) as info:
        command(unknown)
    assert key.split("_", 2)[2] not in str(info.value) and "no API token named or with key id" in str(info.value)
    with pytest.raises(CommandError, match="no API token of user 'nobody' named or with key id 'ci'"):
        command("ci", "--user", "nobody")


@pytest.mark.django_db(transaction=True)
def test_revoke_api_token_as_a_real_process_prints_one_line_and_errors_without_a_traceback(pool):
    """As the ops commands (tests/test_cron_output.py): the report once on stdout, never again as log lines on
    stderr; an error is one line on stderr, exit status 1; ``-v 0`` prints nothing when nothing was done."""
    token, _ = ApiToken.issue(user_with(SUBMIT, "ci-bot"), "ci")
    ScanTaskFactory(pool=pool, api_token=token, status=TaskStatus.QUEUED)

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), "revoke_api_token", *args], env=worker_env(),
                              capture_output=True, text=True, timeout=120)

    done = manage("ci", "--cancel-waiting")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines() == [f"revoked API token 'ci' (ci-bot, sp_{token.prefix}_…); cancelled 1 waiting "
                                        "scan(s); none of its scans is pending approval, queued or running"]
    quiet = manage("ci", "--cancel-waiting", "-v", "0")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    missing = manage("ghost")
    assert missing.returncode == 1 and missing.stdout == "" and "Traceback" not in missing.stderr
    assert missing.stderr.splitlines() == ["CommandError: no API token named or with key id 'ghost': the admin lists "
                                           "them (Tasks > API tokens), with their key ids"]
