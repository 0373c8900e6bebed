"""load_client_policies: a list key (pools, targets, scan_types, pre_approved_targets) is either left out or an
actual YAML list. An empty, null or wrong-typed value used to load as an empty list — for ``targets`` the pool's
whole scope — and a ``--dry-run`` said "would update policy". Now each is an error naming the client, the key
and the fix, and nothing of the file is loaded. An explicit ``[]`` is refused where it would mean "no
restriction" (pools, targets, scan_types: it reads as "nothing"); for ``pre_approved_targets`` it means what it
says (nothing pre-approved) and is accepted."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from tasks.models import ApiToken, ApprovalRule, ClientPolicy
from tests.api_support import user_with
from tests.policy_support import load_policies as load

pytestmark = pytest.mark.django_db

HEAD = "clients:\n  - token: mcp-agent\n    user: agent\n"
GOOD = HEAD + '    pools: [dmz]\n    targets: ["192.0.2.0/25"]\n    scan_types: [untrusted]\n' \
    '    approval: outside\n    pre_approved_targets: ["192.0.2.0/28"]\n'
KEYS = ("pools", "targets", "scan_types", "pre_approved_targets")
WRONG = {  # YAML value → what the message says it got
    '""': "an empty string",
    "": "nothing (null)",
    "~": "nothing (null)",
    "null": "nothing (null)",
    "false": "false",
    "0": "0",
    "{}": "a mapping",
    "{a: b}": "a mapping",
    "yes please": "a string",
    "[1, 2]": "a list with a number",
    "[[dmz]]": "a list with a list",
    "[null]": "a list with nothing (null)",
}


@pytest.fixture
def agent(pool):
    token, _ = ApiToken.issue(user_with([], "agent"), "mcp-agent")
    return token


def refused(tmp_path, text: str, *args: str) -> str:
    with pytest.raises(CommandError) as info:
        load(tmp_path, text, *args)
    message = str(info.value)
    assert "nothing was changed" in message, message
    return message


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", list(WRONG), ids=[v or "blank" for v in WRONG])
def test_a_list_key_that_is_not_a_list_refuses_the_whole_file(tmp_path, agent, key, value):
    text = HEAD + f"    {key}: {value}\n"
    for args in (("--dry-run",), ()):
        message = refused(tmp_path, text, *args)
        assert f":4: clients[0].{key}: client 'mcp-agent': {key} must be a list of " in message, message
        assert WRONG[value] in message and "leave the key out" in message, message
        assert "would" not in message
    assert not ClientPolicy.objects.exists()


def test_the_messages_say_the_fix(tmp_path, agent):
    text = HEAD + '    targets: "192.0.2.0/28"\n    pools: dmz\n    scan_types: false\n    pre_approved_targets: ""\n'
    message = refused(tmp_path, text)
    assert ('targets must be a list of CIDRs, addresses, host names or *.domain patterns, e.g. ["192.0.2.0/28"]; '
            "leave the key out for no restriction (the pool's scope alone); got a string: write it as a list, "
            '["192.0.2.0/28"]') in message, message
    assert "pools must be a list of pool names, e.g. [dmz]; leave the key out for every pool" in message
    assert "scan_types must be a list of scan types, e.g. [untrusted]; leave the key out for every type" in message
    assert "pre_approved_targets must be a list of" in message and "got an empty string" in message
    assert message.count("clients[0].") == 4  # every problem of the file, not only the first


@pytest.mark.parametrize("key", ["pools", "targets", "scan_types"])
def test_an_empty_list_that_would_mean_no_restriction_is_refused_as_ambiguous(tmp_path, agent, key):
    message = refused(tmp_path, HEAD + f"    {key}: []\n", "--dry-run")
    assert f"clients[0].{key}: client 'mcp-agent': {key}: [] is ambiguous" in message, message
    assert "leave the key out" in message
    assert not ClientPolicy.objects.exists()


def test_an_empty_pre_approved_list_means_nothing_is_pre_approved(tmp_path, agent):
    load(tmp_path, HEAD + "    approval: outside\n    pre_approved_targets: []\n")
    policy = ClientPolicy.objects.get(token=agent)
    assert policy.pre_approved_targets == [] and policy.approval == ApprovalRule.OUTSIDE


def test_a_bad_entry_leaves_every_existing_policy_as_it_was(tmp_path, agent):
    load(tmp_path, GOOD)
    ci, _ = ApiToken.issue(user_with([], "builder"), "ci")
    text = GOOD.replace('["192.0.2.0/25"]', '["192.0.2.0/26"]') + "  - token: ci\n    user: builder\n    targets:\n"
    message = refused(tmp_path, text)
    assert "clients[1].targets: client 'ci': targets must be a list" in message, message
    policy = ClientPolicy.objects.get(token=agent)
    assert policy.target_allow_list == ["192.0.2.0/25"] and [p.name for p in policy.pools.all()] == ["dmz"]
    assert not ClientPolicy.objects.filter(token=ci).exists()


def test_keys_left_out_still_mean_no_restriction(tmp_path, agent):
    load(tmp_path, HEAD)
    policy = ClientPolicy.objects.get(token=agent)
    assert (policy.target_allow_list, policy.scan_types, policy.pre_approved_targets) == ([], [], [])
    assert not policy.pools.exists()
