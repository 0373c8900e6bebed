"""GET /api/v1/pools/ and /api/v1/scanners/: load, queue depth, breakers, dead letters, estimated wait —
never a credential; the lists cost a fixed number of queries."""

from __future__ import annotations

import pytest

from scanners.models import BreakerState, Health
from tasks.models import TaskStatus
from tests.api_support import assert_error
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory

pytestmark = pytest.mark.django_db

SECRETS = ("admin-pass-123", "AK-123456", "SK-abcdef")


@pytest.fixture
def secret_pool(pool):
    pool.scanners.update(active_scans=0)
    s = pool.scanners.get(name="dmz-1")
    s.password, s.access_key, s.secret_key = SECRETS
    s.active_scans, s.health = 1, Health.READY
    s.save()
    d2 = pool.scanners.get(name="dmz-2")
    d2.breaker_state = BreakerState.OPEN
    d2.save()
    ScanTaskFactory.create_batch(3, pool=pool)
    ScanTaskFactory(pool=pool, status=TaskStatus.RUNNING, assigned_scanner=s)
    return pool


def test_pool_list_and_detail(api, secret_pool, redis_conn):
    listing = api.get("/api/v1/pools/")
    assert listing.status_code == 200
    (pool,) = listing.json()
    assert pool["name"] == "dmz" and pool["capacity"] == 2 and pool["total_slots"] == 3
    assert pool["active"] == 1 and pool["free"] == 1 and pool["utilisation"] == 0.5
    assert pool["queue_depth"] == 3 and pool["running"] == 1
    assert pool["breakers"] == {"closed": 1, "open": 1, "half_open": 0}
    assert {s["name"] for s in pool["scanners"]} == {"dmz-1", "dmz-2"}
    detail = api.get("/api/v1/pools/dmz/").json()
    assert detail["dead_letters"] == 0 and "estimated_wait_seconds" in detail
    assert detail["estimated_wait_basis"]["position"] == 3
    assert_error(api.get("/api/v1/pools/nope/"), 404, code="not_found")
    for response in (listing, api.get("/api/v1/pools/dmz/"), api.get("/api/v1/scanners/"),
                     api.get("/api/v1/scanners/dmz-1/")):
        text = response.content.decode()
        assert not any(secret in text for secret in SECRETS)
        assert "password" not in text and "secret_key" not in text and "access_key" not in text


def test_scanner_list_and_detail(api, secret_pool):
    scanners = api.get("/api/v1/scanners/").json()
    assert [s["name"] for s in scanners] == ["dmz-1", "dmz-2"]
    one = api.get("/api/v1/scanners/dmz-1/").json()
    assert one["url"] == "https://dmz-1.example.net:8834" and one["health"] == "ready" and one["active_scans"] == 1
    assert one["pool"] == "dmz" and one["breaker_state"] == "closed"
    assert_error(api.get("/api/v1/scanners/ghost/"), 404, code="not_found")


@pytest.mark.parametrize("pools", [1, 50])
def test_pool_and_scanner_lists_run_a_fixed_number_of_queries(api, django_assert_max_num_queries, pools):
    for i in range(pools):
        p = PoolFactory(name=f"p{i}", scope=["192.0.2.0/24"])
        ScannerFactory.create_batch(2, pool=p)
        ScanTaskFactory(pool=p)
    # token lookup, last-used touch, 2 permission loads, then pools (annotated counts) and their scanners
    with django_assert_max_num_queries(6):
        assert len(api.get("/api/v1/pools/").json()) == pools
    with django_assert_max_num_queries(4):  # permissions are cached on the user now: token, scanners
        assert len(api.get("/api/v1/scanners/").json()) == pools * 2


def test_a_pool_reader_sees_its_scanners_load_not_their_health_detail(pool, fresh_throttle_counts):
    """pools.view_pool alone: each scanner's name, URL, health and load, not the health detail or version (the
    detail can name the scanner's login user); those need scanners.view_scanner at /api/v1/scanners/."""
    from scanners.models import Scanner
    from tests.api_support import token_client, user_with

    Scanner.objects.filter(pool=pool).update(health_detail="logged in as nessus-svc", version="10.8.3")
    client, _ = token_client(user_with(["pools.view_pool"]))
    for path in ("/api/v1/pools/", f"/api/v1/pools/{pool.name}/"):
        body = client.get(path).json()
        scanners = (body[0] if isinstance(body, list) else body)["scanners"]
        assert scanners and all({"name", "health", "active_scans", "max_concurrent_scans"} <= set(s) for s in scanners)
        assert "nessus-svc" not in str(body) and "10.8.3" not in str(body)
    assert client.get("/api/v1/scanners/").status_code == 403


def test_an_unknown_pool_or_scanner_is_a_404_that_says_what_exists(api, pool):
    from tests.api_support import assert_error

    error = assert_error(api.get("/api/v1/pools/nope/"), 404, code="not_found", field="name")
    assert "no pool named 'nope'" in error["message"] and pool.name in error["message"]
    error = assert_error(api.get("/api/v1/scanners/nope/"), 404, code="not_found", field="name")
    assert "no scanner named 'nope'" in error["message"]


def test_utilisation_and_free_are_of_the_usable_capacity(api, pool):
    """A scanner that is down still counts its scans as active, but gives no capacity: utilisation must not read
    5.0, nor free slots go missing on the scanners that work."""
    from scanners.models import BreakerState, Scanner

    up, down = pool.scanners.order_by("name")[:2]
    Scanner.objects.filter(pk=up.pk).update(max_concurrent_scans=4, active_scans=1)
    Scanner.objects.filter(pk=down.pk).update(max_concurrent_scans=5, active_scans=5, breaker_state=BreakerState.OPEN)
    body = api.get(f"/api/v1/pools/{pool.name}/").json()
    assert (body["capacity"], body["active"], body["free"], body["utilisation"]) == (4, 6, 3, 0.25)
