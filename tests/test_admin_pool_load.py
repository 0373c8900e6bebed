"""During a scanner outage the admin's pool bars stay within 100 %: they show the scans on the usable scanners
against the usable capacity, and say how many scans run on scanners that cannot take work now — the same
numbers as ``/api/v1/pools/`` (one computation: ``tasks.pool_load.PoolLoad``)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from scanners.models import BreakerState, Health
from tests.api_support import READ, token_client, user_with
from tests.factories import PoolFactory, ScannerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def outage_pool():
    """4 usable slots with 1 scan; a scanner down and one with its breaker open still count 3 + 2 scans."""
    pool = PoolFactory(name="outage")
    ScannerFactory(pool=pool, name="up", max_concurrent_scans=4, active_scans=1, health=Health.READY)
    ScannerFactory(pool=pool, name="down", max_concurrent_scans=3, active_scans=3, health=Health.UNREACHABLE)
    ScannerFactory(pool=pool, name="tripped", max_concurrent_scans=2, active_scans=2,
                   breaker_state=BreakerState.OPEN)
    return pool


def _percentages(html: str) -> list[int]:
    return [int(p) for p in re.findall(r"\((\d+)%\)", html)] + [int(p) for p in re.findall(r"width:(\d+)%", html)]


def test_pool_list_bar_stays_within_100_percent_and_names_the_scans_on_unavailable_scanners(admin_client,
                                                                                           outage_pool):
    body = admin_client.get(reverse("admin:pools_pool_changelist")).content.decode()
    assert "1/4 (25%)" in body  # the scans on usable scanners against the usable capacity
    assert "5 running on unavailable scanners" in body
    assert "6/4" not in body and "150%" not in body
    assert _percentages(body) and max(_percentages(body)) <= 100


def test_admin_index_control_room_bar_agrees(admin_client, outage_pool):
    body = admin_client.get(reverse("admin:index")).content.decode()
    panel = body[body.index('id="control-room"'):body.index('id="control-room-scanners"')]
    assert "1/4 (25%)" in panel and "5 running on unavailable scanners" in panel
    assert max(_percentages(panel)) <= 100


def test_admin_and_api_show_the_same_load(admin_client, outage_pool):
    api, _ = token_client(user_with(READ))
    body = api.get(f"/api/v1/pools/{outage_pool.name}/").json()
    assert (body["capacity"], body["active"], body["free"], body["utilisation"]) == (4, 6, 3, 0.25)
    from tasks.pool_load import PoolLoad

    row = admin_client.get(reverse("admin:pools_pool_changelist")).context["cl"].result_list[0]
    load = PoolLoad.of_annotated(row)
    assert (load.capacity, load.active, load.free, round(load.utilisation, 3)) == (4, 6, 3, 0.25)
    assert load.unavailable_active == 5


def test_a_pool_with_no_usable_scanner_says_so(admin_client):
    pool = PoolFactory(name="dark")
    ScannerFactory(pool=pool, max_concurrent_scans=2, active_scans=2, health=Health.UNREACHABLE)
    body = admin_client.get(reverse("admin:pools_pool_changelist")).content.decode()
    assert "2 running on unavailable scanners" in body
    assert max(_percentages(body), default=0) <= 100


def test_a_limit_lowered_below_the_scans_running_reads_full_everywhere(admin_client, client, settings):
    """max_concurrent_scans lowered from 4 to 1 while 3 scans run: the pool is full (100 %), in the API as in the
    admin and /metrics (the API said utilisation 3.0 and /metrics 300 while the admin's bar said 100 %)."""
    from tests.ops_support import scrape, series

    pool = PoolFactory(name="lowered")
    ScannerFactory(pool=pool, name="low", max_concurrent_scans=1, active_scans=3)
    api, _ = token_client(user_with(READ))
    body = api.get(f"/api/v1/pools/{pool.name}/").json()
    assert (body["capacity"], body["active"], body["free"], body["utilisation"]) == (1, 3, 0, 1.0)
    assert api.get("/api/v1/pools/").json()[0]["utilisation"] == 1.0
    assert "3/1 (100%)" in admin_client.get(reverse("admin:pools_pool_changelist")).content.decode()
    samples = scrape(client, settings)
    util = series(samples, "nessus_scanner_utilization_pct")
    assert util == {(("pool", "lowered"), ("scanner_instance", "low")): 100}
