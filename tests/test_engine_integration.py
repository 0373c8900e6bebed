"""The engine end to end: real worker processes (``manage.py scanworker``), the real test Redis and the
Nessus emulator over HTTP; the test process only submits, cancels, kills and looks."""

from __future__ import annotations

import signal
import time

import pytest
import redis
from django.utils import timezone

from pools.models import Pool
from scanners.models import BreakerState, Scanner
from tasks.models import ScanTask
from tasks.services import cancel, submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.helpers import wait_for
from tests.redis_server import RedisServer
from tests.worker_process import WorkerProcess, worker_env, workers  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def statuses(pool) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in ScanTask.objects.filter(pool=pool).values_list("status", flat=True):
        out[s] = out.get(s, 0) + 1
    return out


def test_thirty_scans_on_three_scanners_limits_once_fifo(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=3, scan_seconds=0.5)
    pool, scanners = emulated_pool(emu, [2, 2, 1])
    ws = [workers(), workers()]
    tasks = [submit(pool=pool.name, name=f"bulk-{i:02d}", targets=["192.0.2.10"]) for i in range(30)]
    wait_for(lambda: statuses(pool).get("completed") == 30, 150, f"30 completed scans, have {statuses(pool)}", ws)
    for i, scanner in enumerate(scanners):
        stats = emu.control(i).stats()
        assert stats["max_concurrent"] <= scanner.max_concurrent_scans, (scanner.name, stats)
    scans = [s for i in range(3) for s in emu.control(i).scans() if "bulk-" in s["name"]]
    assert len(scans) == 30 and all(s["launches"] == 1 for s in scans)
    rows = list(ScanTask.objects.filter(pk__in=[t.pk for t in tasks]).order_by("created_at", "id"))
    claims = [r.claimed_at for r in rows]
    assert claims == sorted(claims)  # dispatched strictly in submission order
    starts = [r.started_at for r in rows]
    capacity = 5
    for i, start in enumerate(starts):  # launches run in parallel: never later than a task `capacity` places behind
        assert all(start <= later for later in starts[i + capacity:])
    assert all(s.active_scans == 0 for s in Scanner.objects.filter(pool=pool))


def test_a_full_pool_never_delays_another(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=2, scan_seconds=1)
    emu.control(0).set_faults(hang_at_99=True)
    Pool.objects.all()
    busy, _ = emulated_pool(emu, [1], name="busy")
    Scanner.objects.filter(pool=busy).update(url=emu.urls[0])
    free = Pool.objects.create(name="free", poll_interval_seconds=1, scope=["192.0.2.0/24"])
    from tests.factories import ScannerFactory

    ScannerFactory(pool=free, name="free-s", url=emu.urls[1], verify_tls=False, max_concurrent_scans=1)
    ws = [workers(["busy"]), workers(["free"])]
    for i in range(6):
        submit(pool="busy", name=f"busy-{i}", targets=["192.0.2.10"])
    wait_for(lambda: statuses(busy).get("running") == 1, 20, "the busy pool to be full", ws)
    t0 = time.monotonic()
    quick = [submit(pool="free", name=f"free-{i}", targets=["192.0.2.10"]) for i in range(3)]
    wait_for(lambda: statuses(free).get("completed") == 3, 30, "the free pool's scans", ws)
    assert time.monotonic() - t0 < 20
    assert statuses(busy) == {"running": 1, "queued": 5}  # still waiting, none failed
    first = ScanTask.objects.get(pk=quick[0].pk)
    assert (first.started_at - first.created_at).total_seconds() < 3


def test_sigkill_mid_scan_resumes_same_scan_no_double_launch(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=5)
    pool, _ = emulated_pool(emu, [2])
    w = workers()
    tasks = [submit(pool=pool.name, name=f"kill-{i}", targets=["192.0.2.10"]) for i in range(2)]
    wait_for(lambda: all(ScanTask.objects.get(pk=t.pk).progress > 0 for t in tasks), 20, "scans to progress", [w])
    scan_ids = {t.pk: ScanTask.objects.get(pk=t.pk).scanner_scan_id for t in tasks}
    w.kill()
    assert statuses(pool) == {"running": 2}
    w2 = workers()
    from django.core.management import call_command

    call_command("reconcile", "--pools", pool.name, "--no-scanners")  # safe next to the new worker
    wait_for(lambda: statuses(pool).get("completed") == 2, 40, "completion after restart", [w, w2])
    for t in tasks:
        assert ScanTask.objects.get(pk=t.pk).scanner_scan_id == scan_ids[t.pk]
    scans = [s for s in emu.control(0).scans() if "kill-" in s["name"]]
    assert len(scans) == 2 and all(s["launches"] == 1 for s in scans)


def test_redis_flush_with_queued_tasks_reconcile_requeues_them(workers, emulator_factory, redis_conn):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    tasks = [submit(pool=pool.name, name=f"rflush-{i}", targets=["192.0.2.10"]) for i in range(4)]
    redis_conn.flushall()
    # The worker's own periodic reconcile runs at the next whole interval of the clock (60 s): started 1 s
    # before one, it recovered a task inside this test's 1.5 s window (seen once in CI). With an hour's interval
    # this test sees what a worker does between reconciles.
    w = workers(SCANPOOL_RECONCILE_INTERVAL="3600")
    time.sleep(1.5)
    assert statuses(pool) == {"queued": 4}  # nothing in Redis: the worker has nothing to do
    from django.core.management import call_command

    call_command("reconcile", "--pools", pool.name)
    wait_for(lambda: statuses(pool).get("completed") == 4, 40, "re-enqueued tasks to complete", [w])
    assert sum(s["launches"] for s in emu.control(0).scans() if "rflush-" in s["name"]) == len(tasks)


def test_scanner_down_breaker_opens_others_take_over_then_it_closes(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=2, scan_seconds=1)
    pool, (down, healthy) = emulated_pool(emu, [2, 1])
    emu.control(0).down()
    ws = [workers(SCANPOOL_BREAKER_THRESHOLD="2", SCANPOOL_BREAKER_COOLDOWN="4")]
    first = [submit(pool=pool.name, name=f"down-{i}", targets=["192.0.2.10"]) for i in range(4)]
    wait_for(lambda: statuses(pool).get("completed") == 4, 60, "tasks to complete on the healthy scanner", ws)
    assert set(ScanTask.objects.filter(pk__in=[t.pk for t in first]).values_list("assigned_scanner", flat=True)) == {
        healthy.pk}
    opened = Scanner.objects.get(pk=down.pk)
    assert opened.breaker_state == BreakerState.OPEN
    emu.control(0).up()
    # The cooldown (4 s) counts from when the breaker opened, while the healthy scanner worked: wait the rest.
    time.sleep(max(0.0, 4.2 - (timezone.now() - opened.breaker_opened_at).total_seconds()))
    later = [submit(pool=pool.name, name=f"back-{i}", targets=["192.0.2.10"]) for i in range(3)]
    wait_for(lambda: statuses(pool).get("completed") == 7, 40, "tasks after the scanner came back", ws)
    assert Scanner.objects.get(pk=down.pk).breaker_state == BreakerState.CLOSED
    assert ScanTask.objects.filter(pk__in=[t.pk for t in later], assigned_scanner=down).exists()


def test_all_scanners_down_tasks_stay_queued(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=2, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1, 1])
    emu.control(0).down(seconds=10)  # both come back by themselves (no instance is left to ask)
    emu.control(1).down(seconds=10)
    ws = [workers(SCANPOOL_BREAKER_THRESHOLD="2", SCANPOOL_BREAKER_COOLDOWN="3")]
    for i in range(3):
        submit(pool=pool.name, name=f"dark-{i}", targets=["192.0.2.10"])
    wait_for(lambda: set(Scanner.objects.filter(pool=pool).values_list("breaker_state", flat=True)) == {"open"},
             30, "both breakers to open", ws)
    time.sleep(1)
    assert statuses(pool) == {"queued": 3}
    wait_for(lambda: statuses(pool).get("completed") == 3, 60, "completion once the scanners are back", ws)


def test_hang_at_99_times_out_and_cancel_queued_and_running(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    emu.control(0).set_faults(hang_at_99=True)
    pool, (scanner,) = emulated_pool(emu, [1], scan_timeout_seconds=3)
    ws = [workers()]
    hung = submit(pool=pool.name, name="hung", targets=["192.0.2.10"])
    waiting = submit(pool=pool.name, name="waiting", targets=["192.0.2.10"])
    wait_for(lambda: ScanTask.objects.get(pk=hung.pk).status == "timeout", 30, "the deadline", ws)
    # The slot is held until a poll sees the stopped scan inactive on the scanner (tasks.engine.settle).
    wait_for(lambda: not ScanTask.objects.get(pk=hung.pk).slot_held, 15, "the stopped scan to end", ws)
    hung.refresh_from_db()
    assert hung.error_kind == "timeout" and hung.progress >= 90
    wait_for(lambda: ScanTask.objects.get(pk=waiting.pk).status == "running", 20, "the next task to start", ws)
    queued = submit(pool=pool.name, name="queued", targets=["192.0.2.10"])
    assert cancel(queued.pk, actor="dave").status == "cancelled"
    assert cancel(waiting.pk, actor="dave").status == "cancelled"
    wait_for(lambda: not ScanTask.objects.get(pk=waiting.pk).slot_held, 20, "the stop step", ws)
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
    states = {s["name"].split(" [")[0]: s["status"] for s in emu.control(0).scans()}
    assert states["hung"] == "canceled" and states["waiting"] == "canceled"  # slots freed only once they ended
    assert "queued" not in states  # never reached the scanner


def test_all_pools_worker_picks_up_a_new_pool_on_sighup(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    w = workers(args=["--refresh", "600"])
    pool, _ = emulated_pool(emu, [1], name="latecomer")
    task = submit(pool="latecomer", name="late", targets=["192.0.2.10"])
    time.sleep(1)
    assert ScanTask.objects.get(pk=task.pk).status == "queued"
    w.signal(signal.SIGHUP)
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == "completed", 30, "the new pool's task", [w])
    assert "pools changed, now serving scanpool-latecomer" in w.log()
    assert pool.pk


def test_all_pools_worker_picks_up_a_new_pool_by_itself(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    w = workers(args=["--refresh", "2"])
    emulated_pool(emu, [1], name="newcomer")
    task = submit(pool="newcomer", name="new", targets=["192.0.2.10"])
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == "completed", 30, "the new pool's task", [w])


def test_worker_refuses_redis_that_may_evict(db):
    import subprocess
    import sys

    server = RedisServer().start()
    try:
        redis.Redis.from_url(server.url).config_set("maxmemory-policy", "allkeys-lru")
        env = worker_env(REDIS_URL=server.url)
        done = subprocess.run([sys.executable, "manage.py", "scanworker", "--burst"], env=env, capture_output=True,
                              text=True, timeout=60)
    finally:
        server.cleanup()
    assert done.returncode != 0
    assert "maxmemory-policy is 'allkeys-lru'" in done.stderr and "noeviction" in done.stderr


def test_periodic_reconcile_from_the_workers_scheduler_recovers_a_flush(workers, emulator_factory, redis_conn):  # noqa: F811
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    w = workers(SCANPOOL_RECONCILE_INTERVAL="5", SCANPOOL_WORKER_REFRESH="2")
    for i in range(3):
        submit(pool=pool.name, name=f"periodic-{i}", targets=["192.0.2.10"])
    redis_conn.flushall()  # queued work and the scheduled reconcile are gone; the worker schedules a new one
    wait_for(lambda: statuses(pool).get("completed") == 3, 40, "the periodic reconcile to recover", [w])
    assert "reconcile pool" in w.log()
