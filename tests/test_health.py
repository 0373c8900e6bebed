"""/healthz and /readyz: 200 when ready; 503 naming the failing check when Redis stops, when Redis may evict,
when no live worker serves a pool, when every scanner of a pool is down."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rq import Worker

from scanners.models import BreakerState, Health
from tasks.engine import locks
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.factories import PoolFactory, ScannerFactory
from tests.helpers import wait_for
from tests.ops_support import (
    register_worker_elsewhere,
    workers,  # noqa: F401 - fixture
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def own_redis(settings):
    """A redis-server of this test's own (so stopping it or changing its policy disturbs nobody)."""
    server = RedisServer().start()
    settings.REDIS_URL = server.url
    yield server
    server.cleanup()


def answering_scanner(pool, emulator):  # noqa: F811
    """A ready scanner that answers: a worker's reconcile health-checks every scanner as it starts, and a scanner
    URL where nothing listens would turn unreachable (and /readyz 503 for "scanners") under the test's feet."""
    return ScannerFactory(pool=pool, health=Health.READY, url=emulator.urls[0])


def readyz(client):
    response = client.get("/readyz")
    return response.status_code, response.json()


def test_healthz_needs_no_database(client, settings, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_with_a_worker_per_pool_and_usable_scanners(client, workers, emulator):  # noqa: F811
    pool = PoolFactory(name="ready-a", scope=["192.0.2.0/24"])
    answering_scanner(pool, emulator)
    workers(["ready-a"])
    status, body = readyz(client)
    assert status == 200, body
    assert body["failing"] == [] and set(body["checks"]) == {"database", "redis", "workers", "scanners"}
    assert "noeviction" in body["checks"]["redis"]["detail"]


def test_no_worker_for_a_pool_is_named(client, workers, emulator):  # noqa: F811
    served = PoolFactory(name="served", scope=["192.0.2.0/24"])
    orphan = PoolFactory(name="orphan", scope=["192.0.2.0/24"])
    for pool in (served, orphan):
        answering_scanner(pool, emulator)
    workers(["served"])
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["workers"]
    assert "orphan" in body["checks"]["workers"]["detail"] and "served" not in body["checks"]["workers"]["detail"]


def test_all_scanners_of_a_pool_down_is_named(client, workers):  # noqa: F811
    pool = PoolFactory(name="down-pool", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, health=Health.UNREACHABLE)
    ScannerFactory(pool=pool, health=Health.READY, breaker_state=BreakerState.OPEN)
    ScannerFactory(pool=pool, health=Health.READY, enabled=False)
    workers(["down-pool"])
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["scanners"]
    assert "down-pool" in body["checks"]["scanners"]["detail"]


def test_redis_stopped_is_named(client, own_redis):
    PoolFactory(name="p", scope=["192.0.2.0/24"])
    own_redis.stop()
    status, body = readyz(client)
    assert status == 503
    assert "redis" in body["failing"] and "unreachable" in body["checks"]["redis"]["detail"]
    assert body["checks"]["database"]["ok"] is True


def test_redis_that_may_evict_is_named(client, own_redis):
    redis.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "allkeys-lru")
    status, body = readyz(client)
    assert status == 503 and "redis" in body["failing"]
    assert "allkeys-lru" in body["checks"]["redis"]["detail"] and "noeviction" in body["checks"]["redis"]["detail"]


def test_root_redirects_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/admin/"


# ------------------------------------------------------------ workers judged by their heartbeat, not by RQ's key TTL
def test_workers_killed_9_are_not_ready_at_once_not_after_their_registration_expires(
    client, workers, emulator  # noqa: F811
):
    """kill -9 leaves RQ's registration of each worker in Redis for worker_ttl + 60 s (about 8 minutes); /readyz
    judges workers as the reconcile does (tasks.engine.locks): on this host a dead pid is dead at once."""
    pool = PoolFactory(name="killed", scope=["192.0.2.0/24"])
    answering_scanner(pool, emulator)
    served = [workers(["killed"]), workers(["killed"])]
    assert readyz(client)[0] == 200
    for w in served:
        w.kill()
    _, body = wait_for(lambda: (r := readyz(client))[0] == 503 and r, 10, "/readyz to say not ready")
    assert body["failing"] == ["workers"] and "killed" in body["checks"]["workers"]["detail"]
    assert Worker.all(connection=redis.Redis.from_url(settings.REDIS_URL))  # their registrations are still there


def test_a_worker_on_another_host_is_live_while_its_heartbeat_is_fresh(client, redis_conn):
    pool = PoolFactory(name="remote", scope=["192.0.2.0/24"])
    ScannerFactory(pool=pool, health=Health.READY)
    register_worker_elsewhere(redis_conn, "remote-worker", pool.queue_name, heartbeat_age=locks.HEARTBEAT_STALE + 5)
    status, body = readyz(client)
    assert status == 503 and body["failing"] == ["workers"] and "remote" in body["checks"]["workers"]["detail"]
    register_worker_elsewhere(redis_conn, "remote-worker-2", pool.queue_name, heartbeat_age=2)
    status, body = readyz(client)
    assert status == 200, body
