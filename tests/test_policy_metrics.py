"""nessus_policy_refusals_total{client,reason} and nessus_pending_approval{pool}, scraped from /metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks.errors import PolicyError
from tasks.models import ApprovalRule
from tasks.services import submit
from tests.factories import PoolFactory
from tests.policy_support import policy_client

pytestmark = pytest.mark.django_db
TOKEN = "metrics-token-for-tests"


def scrape(client, settings) -> dict[tuple[str, tuple], float]:
    settings.SCANPOOL_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            if s.name.startswith(("nessus_policy", "nessus_pending", "nessus_pool_queue_depth",
                                  "nessus_pool_oldest_queued")):
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_refusals_and_pending_approvals_are_exported(client, settings, pool):
    PoolFactory(name="empty", scope=["192.0.2.0/24"])
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS, scan_types=["untrusted"], max_targets_per_scan=1)
    for _ in range(2):
        submit(pool="dmz", name="held", targets="192.0.2.1", api_token=token)
    for targets in (["192.0.2.1", "192.0.2.2"], ["192.0.2.1", "192.0.2.3"]):
        with pytest.raises(PolicyError):
            submit(pool="dmz", name="x", targets=targets, api_token=token)
    with pytest.raises(PolicyError):
        submit(pool="dmz", name="x", targets="192.0.2.1", api_token=token, scan_type="authenticated",
               credentials={"username": "u", "password": "p"})
    samples = scrape(client, settings)
    assert samples[("nessus_policy_refusals_total", (("client", "agent"), ("reason", "too_many_targets")))] == 2
    assert samples[("nessus_policy_refusals_total", (("client", "agent"), ("reason", "scan_type_not_allowed")))] == 1
    assert samples[("nessus_pending_approval", (("pool", "dmz"),))] == 2
    assert samples[("nessus_pending_approval", (("pool", "empty"),))] == 0
    # Pending tasks are not queued: no queue depth, no oldest-queued age, none in the pools API either.
    assert samples[("nessus_pool_queue_depth", (("pool", "dmz"),))] == 0
    assert samples[("nessus_pool_oldest_queued_seconds", (("pool", "dmz"),))] == 0


def test_pending_tasks_are_not_in_the_pools_api_queue_depth(pool, api):
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS)
    submit(pool="dmz", name="held", targets="192.0.2.1", api_token=token)
    submit(pool="dmz", name="queued", targets="192.0.2.2")
    body = api.get("/api/v1/pools/dmz/").json()
    assert body["queue_depth"] == 1, body
