"""manage.py load_client_policies: create/replace policies from YAML in one transaction; errors name line and
key and change nothing; anchors and aliases refused; the loaded policy is enforced by submit."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from tasks.errors import PolicyError
from tasks.models import ApprovalRule, ClientPolicy, TaskStatus
from tasks.services import submit
from tests.api_support import user_with
from tests.factories import PoolFactory
from tests.policy_support import load_policies as load

pytestmark = pytest.mark.django_db

GOOD = """\
clients:
  - token: mcp-agent
    user: agent
    pools: [dmz]
    targets: ["192.0.2.0/25", "a.example.com"]
    scan_types: [untrusted]
    max_targets_per_scan: 4
    max_scans_per_day: 20
    max_addresses_per_day: 4096
    max_concurrent_scans: 2
    approval: outside
    pre_approved_targets: ["192.0.2.0/28"]
    approvers: secops on-call
  - token: ci
    user: builder
"""


@pytest.fixture
def tokens(pool):
    from tasks.models import ApiToken

    agent, _ = ApiToken.issue(user_with([], "agent"), "mcp-agent")
    ci, _ = ApiToken.issue(user_with([], "builder"), "ci")
    return agent, ci


def test_load_creates_then_replaces_and_the_policy_applies(tmp_path, tokens):
    agent, ci = tokens
    dry = load(tmp_path, GOOD, "--dry-run")
    assert "would create policy of mcp-agent (agent)" in dry and not ClientPolicy.objects.exists()
    out = load(tmp_path, GOOD)
    assert "2 created, 0 updated (applied)" in out
    policy = ClientPolicy.objects.get(token=agent)
    assert [p.name for p in policy.pools.all()] == ["dmz"] and policy.target_allow_list == ["192.0.2.0/25",
                                                                                              "a.example.com"]
    assert (policy.max_targets_per_scan, policy.max_scans_per_day, policy.max_addresses_per_day,
            policy.max_concurrent_scans, policy.approval) == (4, 20, 4096, 2, ApprovalRule.OUTSIDE)
    assert ClientPolicy.objects.get(token=ci).approval == ApprovalRule.NEVER  # defaults: no restriction
    assert submit(pool="dmz", name="n", targets="192.0.2.1", api_token=agent).status == TaskStatus.QUEUED
    assert submit(pool="dmz", name="n", targets="192.0.2.100", api_token=agent).status == TaskStatus.PENDING_APPROVAL
    with pytest.raises(PolicyError):
        submit(pool="dmz", name="n", targets="192.0.2.200", api_token=agent)
    # Loading again replaces the whole policy: keys left out go back to their defaults.
    out = load(tmp_path, "clients:\n  - token: mcp-agent\n    user: agent\n    approval: always\n")
    assert "0 created, 1 updated" in out
    policy.refresh_from_db()
    assert policy.approval == ApprovalRule.ALWAYS and policy.target_allow_list == []
    assert policy.max_scans_per_day is None
    assert not policy.pools.exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("clients:\n  - token: mcp-agent\n    user: agent\n    max_scans_per_day: 0\n",
     ":4: clients[0].max_scans_per_day: expected a whole number"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    targets: ['192.0.2.0/24', 'not valid!']\n",
     ":4: clients[0].targets:"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    scan_types: [authenticated, sneaky]\n",
     ":4: clients[0].scan_types: 'sneaky' is not a scan type"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    approval: sometimes\n", "'sometimes' is not an approval"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    pools: [dmz, nowhere]\n", ":4: clients[0].pools: no pool"),
    ("clients:\n  - token: nobody\n    user: agent\n", ":2: clients[0].token: no API token 'nobody'"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    max_scan_per_day: 3\n", "unknown key"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n  - token: mcp-agent\n    user: agent\n",
     "already given on line 2"),
    ("pools: []\n", "top-level 'clients:'"),
    ("clients:\n  - &a {token: mcp-agent, user: agent}\n  - *a\n", "anchors (&name) and aliases (*name) are not"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    approvers: ${HOME}\n", "'${...}' is expanded only in"),
    # Beyond what the column holds: a clear error, not an OverflowError / DataError traceback from the database.
    ("clients:\n  - token: mcp-agent\n    user: agent\n    max_addresses_per_day: 99999999999999999999999\n",
     ":4: clients[0].max_addresses_per_day: Ensure this value is less than or equal to"),
    ("clients:\n  - token: mcp-agent\n    user: agent\n    approvers: " + "x" * 201 + "\n",
     ":4: clients[0].approvers: Ensure this value has at most 200 characters"),
])
def test_errors_name_line_and_key_and_change_nothing(tmp_path, tokens, text, expected):
    with pytest.raises(CommandError) as info:
        load(tmp_path, text)
    assert "nothing was changed" in str(info.value) and expected in str(info.value), str(info.value)
    assert not ClientPolicy.objects.exists()


def test_one_bad_entry_changes_nothing_even_for_the_good_ones(tmp_path, tokens):
    PoolFactory(name="other", scope=["192.0.2.0/24"])
    with pytest.raises(CommandError):
        load(tmp_path, GOOD + "    max_concurrent_scans: -1\n")
    assert not ClientPolicy.objects.exists()
