"""A scanner waiting out a ``Retry-After`` it answered has no slot to give now: the pool's capacity figures (the
API's ``capacity`` and ``free``, the admin's pool list and control room, the live dashboard, ``/readyz``) leave its
slots out of what is usable now and count them in ``total_slots`` and ``waiting_slots``; /metrics says how long
the wait still lasts. The real database, real Redis and a real worker process for /readyz."""

from __future__ import annotations

import pytest
from django.urls import reverse

from scanners import pacing
from scanners.models import Health
from tasks.pool_load import PoolLoad, pool_load
from tests.api_support import READ, token_client, user_with
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.factories import PoolFactory, ScannerFactory
from tests.helpers import wait_for
from tests.ops_support import scrape, series, workers  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def paced_pool():
    """A free scanner (2 slots) and one with 3 slots and 1 scan that asked scanpool to wait 60 s."""
    pool = PoolFactory(name="paced")
    ScannerFactory(pool=pool, name="free", max_concurrent_scans=2, health=Health.READY)
    waiting = ScannerFactory(pool=pool, name="waiting", max_concurrent_scans=3, active_scans=1, health=Health.READY)
    pacing.record_wait(waiting, 60)
    return pool


def test_the_slots_of_a_waiting_scanner_are_not_usable_now_in_any_figure(paced_pool, admin_client):
    load = pool_load(paced_pool)
    assert (load.capacity, load.total_slots, load.waiting_slots, load.free) == (2, 5, 3, 2)
    assert load.active == 1 and load.unavailable_active == 1  # its scan runs on, outside the usable slots

    api, _ = token_client(user_with(READ))
    body = api.get(f"/api/v1/pools/{paced_pool.name}/").json()
    assert (body["capacity"], body["total_slots"], body["waiting_slots"], body["free"]) == (2, 5, 3, 2)
    assert body["utilisation"] == 0.0

    row = admin_client.get(reverse("admin:pools_pool_changelist")).context["cl"].result_list[0]
    assert PoolLoad.of_annotated(row) == load  # the admin's annotation says the same
    page = admin_client.get(reverse("admin:pools_pool_changelist")).content.decode()
    assert "1 running on unavailable scanners" in page

    live = admin_client.get(reverse("ops-dashboard-live")).content.decode()
    assert "(5 slots, 2 usable)" in live and "asked to wait until" in live


def test_metrics_say_how_long_the_scanner_still_waits(paced_pool, client, settings):
    waits = series(scrape(client, settings), "nessus_scanner_retry_after_wait_seconds")
    by_scanner = {dict(labels)["scanner_instance"]: value for labels, value in waits.items()}
    assert by_scanner["free"] == 0 and 50 < by_scanner["waiting"] <= 60


def test_readyz_is_not_ready_while_every_usable_scanner_of_a_pool_waits_and_ready_when_the_wait_ends(
        client, workers, emulator):  # noqa: F811
    pool = PoolFactory(name="all-waiting")
    # A scanner that answers: the worker's periodic reconcile health-checks it once its wait is over.
    scanner = ScannerFactory(pool=pool, health=Health.READY, url=emulator.urls[0])
    workers(["all-waiting"])
    pacing.record_wait(scanner, 2)

    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["failing"] == ["scanners"], body
    detail = body["checks"]["scanners"]["detail"]
    assert "asked scanpool to wait" in detail and "all-waiting (until " in detail

    wait_for(lambda: client.get("/readyz").status_code == 200, 10, "/readyz once the wait is over")
