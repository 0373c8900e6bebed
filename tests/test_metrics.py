"""/metrics: the scanpool collector against the database, during a real multi-worker run; counters kept in the
database survive cleanup_tasks; totals move in the same transaction as the transition they count."""

from __future__ import annotations

import math
import time

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from scanners.models import BreakerState, Health, Scanner
from tasks.engine.transitions import transition
from tasks.models import MetricTotal, ScanTask, TaskStatus
from tasks.observability.totals import DURATION_BUCKETS, bucket_label
from tasks.services import submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.factories import PoolFactory, ScannerFactory, ScanTaskFactory
from tests.ops_support import scrape, series, wait_for, workers  # noqa: F401 - fixture

SCOPE = ["192.0.2.0/24"]


def key(**labels) -> tuple:
    return tuple(sorted(labels.items()))


def _scanner_rows() -> list[tuple]:
    return [(s.pool.name, s.name, s.enabled, s.max_concurrent_scans, s.health, s.breaker_state)
            for s in Scanner.objects.select_related("pool").order_by("pk")]


def scrape_with_gauges_matching_db(client, settings) -> dict:
    """Scrape, then compare the scanner gauges with the rows. The workers keep health-checking while this runs (a
    check that times out on a loaded machine flips a scanner out of ready and back), so compare only a scrape during
    which no scanner row changed; try again otherwise."""
    for _ in range(20):
        before = _scanner_rows()
        samples = scrape(client, settings)
        if _scanner_rows() == before:
            break
    else:
        pytest.fail("the scanner rows changed during every scrape")
    for pool_name, name, enabled, max_scans, health, breaker in before:
        k = key(pool=pool_name, scanner_instance=name)
        assert series(samples, "nessus_scanner_capacity")[k] == (max_scans if enabled else 0)
        assert series(samples, "nessus_scanner_up")[k] == (1 if enabled and health == Health.READY else 0)
        assert series(samples, "nessus_scanner_circuit_breaker_open")[k] == (breaker == BreakerState.OPEN)
    return samples


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_metrics_match_the_database_during_and_after_a_multi_worker_run(
        client, settings, workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=2, scan_seconds=2)
    pool, scanners = emulated_pool(emu, [2, 1], scope=SCOPE)
    workers(), workers()
    good = [submit(pool=pool.name, name=f"m-{i}", targets=["192.0.2.10"]) for i in range(6)]
    bad = [submit(pool=pool.name, name=f"m-bad-{i}", targets=["192.0.2.11"], scan_type="authenticated",
                  credentials={"username": "root", "password": "bad"}) for i in range(2)]
    seen_active = seen_queued = 0
    while ScanTask.objects.filter(pool=pool, status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]).exists():
        samples = scrape(client, settings)
        active = series(samples, "nessus_scanner_active_scans")
        util = series(samples, "nessus_scanner_utilization_pct")
        for s in scanners:
            k = key(pool=pool.name, scanner_instance=s.name)
            assert 0 <= active[k] <= s.max_concurrent_scans  # never more than its slots, whatever the moment
            assert util[k] == pytest.approx(100.0 * active[k] / s.max_concurrent_scans)
        for s in scanners:  # static during the run: exact at any moment
            assert series(samples, "nessus_scanner_capacity")[key(pool=pool.name, scanner_instance=s.name)] == \
                s.max_concurrent_scans
        queued_now = ScanTask.objects.filter(pool=pool, status=TaskStatus.QUEUED, claimed_at__isnull=True).count()
        assert series(samples, "nessus_pool_queue_depth")[key(pool=pool.name)] >= queued_now  # only ever shrinks
        seen_active = max(seen_active, sum(active.values()))
        seen_queued = max(seen_queued, series(samples, "nessus_pool_queue_depth")[key(pool=pool.name)])
        assert ScanTask.objects.filter(pool=pool).exclude(status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING]
                                                          ).count() <= 8

        time.sleep(0.3)
    assert seen_active >= 2 and seen_queued >= 1  # the scrapes really happened while scans ran and waited

    rows = {t.pk: t for t in ScanTask.objects.filter(pool=pool)}
    assert {rows[t.pk].status for t in good} == {TaskStatus.COMPLETED}
    assert {rows[t.pk].status for t in bad} == {TaskStatus.FAILED}
    samples = scrape_with_gauges_matching_db(client, settings)
    assert series(samples, "nessus_pool_queue_depth")[key(pool=pool.name)] == 0
    assert series(samples, "nessus_pool_oldest_queued_seconds")[key(pool=pool.name)] == 0
    assert series(samples, "nessus_pool_dlq_depth")[key(pool=pool.name)] == 0
    assert all(v == 0 for v in series(samples, "nessus_scanner_active_scans").values())
    scans = series(samples, "nessus_scans_total")
    assert scans[key(pool=pool.name, scan_type="untrusted", status="completed")] == 6
    assert scans[key(pool=pool.name, scan_type="authenticated", status="failed")] == 2
    assert series(samples, "nessus_auth_failures_total") == {key(pool=pool.name, scan_type="authenticated"): 2}
    assert series(samples, "nessus_validation_failures_total") == {key(pool=pool.name, reason="authentication"): 2}
    # The histogram: one observation per scan that ran, cumulative buckets, sum = the rows' durations.
    count = series(samples, "nessus_scan_duration_seconds_count")
    assert count == {key(pool=pool.name, scan_type="untrusted"): 6, key(pool=pool.name, scan_type="authenticated"): 2}
    durations = [(r.finished_at - r.started_at).total_seconds() for r in rows.values() if r.scan_type == "untrusted"]
    total = series(samples, "nessus_scan_duration_seconds_sum")[key(pool=pool.name, scan_type="untrusted")]
    assert total == pytest.approx(sum(durations), abs=0.01)
    buckets = series(samples, "nessus_scan_duration_seconds_bucket")
    values = [buckets[key(pool=pool.name, scan_type="untrusted", le=bucket_label(le))] for le in DURATION_BUCKETS]
    assert values == sorted(values) and values[-1] == 6
    assert values[0] == sum(1 for d in durations if d <= 60)

    # Counters never go down: delete every task (TTL 0) and scrape again.
    call_command("cleanup_tasks", "--older-than", "0s")
    assert not ScanTask.objects.filter(pool=pool).exists()
    after = scrape(client, settings)
    for name in ("nessus_scans_total", "nessus_auth_failures_total", "nessus_validation_failures_total",
                 "nessus_scan_duration_seconds_count", "nessus_scan_duration_seconds_bucket"):
        assert series(after, name) == series(samples, name), name
    assert series(after, "nessus_ttl_deletions_total") == {key(status="completed"): 6, key(status="failed"): 2}


@pytest.mark.django_db
def test_every_metric_of_the_issue_is_exported_for_a_pool_and_scanner(client, settings):
    pool = PoolFactory(name="dmz", scope=SCOPE)
    ScannerFactory(pool=pool, name="dmz-1", max_concurrent_scans=4, health=Health.READY,
                   breaker_state=BreakerState.OPEN)
    ScannerFactory(pool=pool, name="dmz-2", enabled=False, health=Health.UNREACHABLE)
    Scanner.objects.filter(name="dmz-1").update(active_scans=3)
    old = ScanTaskFactory(pool=pool)
    ScanTask.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(seconds=600))
    ScanTaskFactory(pool=pool)
    samples = scrape(client, settings)
    one, two = key(pool="dmz", scanner_instance="dmz-1"), key(pool="dmz", scanner_instance="dmz-2")
    assert series(samples, "nessus_scanner_active_scans")[one] == 3
    assert series(samples, "nessus_scanner_utilization_pct")[one] == 75
    assert series(samples, "nessus_scanner_capacity") == {one: 4, two: 0}
    assert series(samples, "nessus_scanner_up") == {one: 1, two: 0}
    assert series(samples, "nessus_scanner_circuit_breaker_open") == {one: 1, two: 0}
    assert series(samples, "nessus_pool_queue_depth") == {key(pool="dmz"): 2}
    assert 599 <= series(samples, "nessus_pool_oldest_queued_seconds")[key(pool="dmz")] < 700
    assert series(samples, "nessus_pool_dlq_depth") == {key(pool="dmz"): 0}
    # Counters and the histogram have no series before the first scan ends (no label values yet).
    assert series(samples, "nessus_scans_total") == {}


@pytest.mark.django_db(transaction=True)
def test_totals_move_with_the_transition_and_not_with_a_rollback():
    pool = PoolFactory(name="tx", scope=SCOPE)
    task = ScanTaskFactory(pool=pool, status=TaskStatus.RUNNING, started_at=timezone.now())
    with pytest.raises(RuntimeError), transaction.atomic():
        transition(task.pk, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED)
        raise RuntimeError("rolled back after the transition")
    assert not MetricTotal.objects.exists()
    assert transition(task.pk, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED)
    assert not transition(task.pk, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED)  # lost race: counts nothing
    totals = {(m.metric, m.labels): m.value for m in MetricTotal.objects.all()}
    assert totals[("nessus_scans_total", '{"pool":"tx","scan_type":"untrusted","status":"completed"}')] == 1
    assert totals[("nessus_scan_duration_seconds_count", '{"pool":"tx","scan_type":"untrusted"}')] == 1
    assert sum(1 for (m, _) in totals if m.endswith("_bucket")) == len(DURATION_BUCKETS)
    assert not math.isnan(totals[("nessus_scan_duration_seconds_sum", '{"pool":"tx","scan_type":"untrusted"}')])


@pytest.mark.django_db
def test_redis_away_omits_only_the_dead_letter_gauge(client, settings):
    from tests.redis_server import RedisServer

    pool = PoolFactory(name="noredis", scope=SCOPE)
    ScannerFactory(pool=pool, name="noredis-1")
    ScanTaskFactory(pool=pool)
    server = RedisServer().start()
    server.cleanup()  # stopped: nothing answers on its port
    settings.REDIS_URL = server.url
    samples = scrape(client, settings)
    assert series(samples, "nessus_pool_queue_depth") == {key(pool="noredis"): 1}
    assert series(samples, "nessus_pool_dlq_depth") == {}
    assert key(pool="noredis", scanner_instance="noredis-1") in series(samples, "nessus_scanner_capacity")
