"""Operator changes made while scans are claimed or running (the engine's side): each defect reproduced first,
in-process against the real database, the test Redis and the emulator.

* a claimed task whose scanner is moved to another pool, or whose URL changes (its secrets cleared: login
  rejected), goes back to its queue instead of being launched there or failed;
* a pool cannot be renamed (its queues are named after it);
* a scanner that can take more work (limit raised, enabled, created, healthy again) dispatches its pool at once:
  waiting tasks do not wait for the next slot release or periodic reconcile while a slot is free; so does a slot
  freed on a scanner moved to another pool since the claim (its new pool gets it);
* a task pinned to a scanner that cannot take it (moved to another pool, disabled, unhealthy) says why it waits;
* a timed-out task whose scan may still run on its scanner (slot held) is not retried yet (over the limit);
* running scans whose scanner loses its login (URL edited, secrets cleared) keep their slots and are followed on;
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from pools.models import Pool
from scanners.health import check_health
from scanners.models import Health, Scanner
from scanners.services import update_scanner
from tasks.capacity import estimated_wait
from tasks.engine.dispatch import dispatch_round
from tasks.errors import TaskStateError
from tasks.models import TaskEvent
from tasks.services import cancel, retry, submit
from tests.emulator import emulator  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, immediate_retries, reread, run_jobs, run_until  # noqa: F401 - immediate_retries: fixture
from tests.factories import PoolFactory, ScannerFactory

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("immediate_retries")]




def _back_in_queue(task, scanner, why: str) -> None:
    row, scanner = reread(task), Scanner.objects.get(pk=scanner.pk)
    assert row.status == "queued" and row.claimed_at is None and not row.slot_held, (row.status, row.error_message)
    assert row.assigned_scanner_id is None and scanner.active_scans == 0
    assert TaskEvent.objects.filter(task=task, kind="retry", message__contains=why).exists()


def test_a_claimed_task_whose_scanner_moved_to_another_pool_goes_back_to_its_queue(transactional_db, redis_conn,
                                                                                    emulator):  # noqa: F811
    pool, (scanner, spare) = emulated_pool(emulator, [1, 1])
    Scanner.objects.filter(pk=spare.pk).update(enabled=False)
    other = PoolFactory()
    task = submit(pool=pool.name, name="moved", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 1 and reread(task).assigned_scanner_id == scanner.pk
    update_scanner(scanner.pk, {"pool": other.pk}, given_secrets=["password"], actor="op")  # secrets kept
    run_jobs([pool])
    _back_in_queue(task, scanner, "was moved to another pool")
    assert not emulator.control(0).scans()  # nothing created for this pool's task on the moved scanner
    Scanner.objects.filter(pk=spare.pk).update(enabled=True)
    dispatch_round(pool.pk)
    run_until([pool], lambda: reread(task).is_terminal, timeout=20)
    assert reread(task).status == "completed" and reread(task).assigned_scanner_id == spare.pk


def test_a_claimed_task_whose_scanner_lost_its_secrets_goes_back_to_its_queue(transactional_db, redis_conn,
                                                                               emulator):  # noqa: F811
    pool, (scanner,) = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="url-changed", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 1
    update_scanner(scanner.pk, {"url": emulator.urls[1]}, actor="op")  # password not typed again: cleared
    assert Scanner.objects.get(pk=scanner.pk).health == Health.AUTH_FAILED
    run_jobs([pool])
    _back_in_queue(task, scanner, "has health auth_failed (Login rejected)")
    update_scanner(scanner.pk, {"password": emulator.password}, given_secrets=["password"], actor="op")
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.UNKNOWN)  # as the next health check finds it
    dispatch_round(pool.pk)
    run_until([pool], lambda: reread(task).is_terminal, timeout=20)
    assert reread(task).status == "completed"


def test_a_pool_cannot_be_renamed_under_its_queued_jobs(transactional_db, redis_conn, emulator, admin_client):  # noqa: F811
    """A rename changed the pool's queue names (scanpool-<name>): the launch job of a claimed task stayed in the old
    queue, which no worker serves any more, and the reconcile took it for alive: the task held its slot forever
    and the pool's queue behind it never moved."""
    pool, _ = emulated_pool(emulator, [1])
    task = submit(pool=pool.name, name="before-rename", targets=["192.0.2.10"])
    assert dispatch_round(pool.pk) == 1
    renamed = Pool.objects.get(pk=pool.pk)
    renamed.name = "renamed"
    with pytest.raises(ValidationError) as refused:
        renamed.save()
    assert "cannot rename pool" in str(refused.value.message_dict["name"])
    assert Pool.objects.get(pk=pool.pk).name == pool.name
    page = admin_client.get(f"/admin/pools/pool/{pool.pk}/change/")
    assert page.status_code == 200 and 'name="name"' not in page.content.decode()  # shown read-only
    run_until([pool], lambda: reread(task).is_terminal, timeout=20)
    assert reread(task).status == "completed"


def test_more_capacity_dispatches_the_pool_at_once(transactional_db, redis_conn, emulator):  # noqa: F811
    """Raising a full scanner's limit left the next task queued ("a slot is free", said its estimate) until some
    scan ended or the periodic reconcile came; so did enabling a scanner or a health check finding it ready."""
    emulator.control(0).set_faults(hang_at_99=True)
    pool, (scanner, spare) = emulated_pool(emulator, [1, 1])
    update_scanner(spare.pk, {"enabled": False}, actor="op")
    tasks = [submit(pool=pool.name, name=f"t{i}", targets=["192.0.2.10"]) for i in range(4)]
    run_jobs([pool])
    assert [reread(t).claimed_at is not None for t in tasks] == [True, False, False, False]

    update_scanner(scanner.pk, {"max_concurrent_scans": 2}, actor="op")  # the admin form and load_scanners
    run_jobs([pool])
    assert reread(tasks[1]).assigned_scanner_id == scanner.pk

    update_scanner(spare.pk, {"enabled": True}, actor="op")
    run_jobs([pool])
    assert reread(tasks[2]).assigned_scanner_id == spare.pk

    Scanner.objects.filter(pk=spare.pk).update(max_concurrent_scans=2, health=Health.UNREACHABLE)
    check_health(spare.pk)  # the admin's "check health now": ready again
    run_jobs([pool])
    assert reread(tasks[3]).assigned_scanner_id == spare.pk


def test_a_slot_freed_on_a_moved_scanner_dispatches_its_new_pool(transactional_db, redis_conn, emulator):  # noqa: F811
    """A scanner moved to another pool while it ran a scan of its old pool: when that scan ended, only the old
    pool was dispatched, and the new pool's waiting task stayed queued beside the free slot."""
    emulator.control(0).set_faults(hang_at_99=True)
    pool, (scanner,) = emulated_pool(emulator, [1])
    running = submit(pool=pool.name, name="running", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(running).status == "running", timeout=20)
    other = PoolFactory()
    update_scanner(scanner.pk, {"pool": other.pk}, given_secrets=["password"], actor="op")
    waiting = submit(pool=other.name, name="waiting", targets=["192.0.2.10"])
    run_jobs([other])
    assert reread(waiting).claimed_at is None  # the old pool's scan still holds the slot
    cancel(running.pk, actor="op")
    run_until([pool, other], lambda: not reread(running).slot_held, timeout=20)
    run_jobs([other])
    assert reread(waiting).assigned_scanner_id == scanner.pk


def test_a_task_pinned_to_a_scanner_that_left_its_pool_says_why_it_waits(db, redis_conn):
    """Its estimate said "no usable scanner (disabled, unhealthy or breaker open)" for a scanner moved to another
    pool: the task can never run there, and nothing said so."""
    pool, other = PoolFactory(), PoolFactory()
    pinned = ScannerFactory(pool=pool, name="pinned-one", max_concurrent_scans=1)
    ScannerFactory(pool=pool, max_concurrent_scans=1)
    task = submit(pool=pool.name, name="pinned", targets=["192.0.2.10"], scanner_instance="pinned-one")
    update_scanner(pinned.pk, {"enabled": False}, actor="op")
    assert estimated_wait(reread(task)).basis["method"] == "pinned to scanner pinned-one, which is disabled"
    update_scanner(pinned.pk, {"enabled": True, "pool": other.pk}, actor="op")
    assert dispatch_round(pool.pk) == 0 and reread(task).claimed_at is None
    estimate = estimated_wait(reread(task))
    assert estimate.seconds is None
    assert estimate.basis["method"].startswith(f"pinned to scanner pinned-one, which was moved to pool {other.name}")


def test_a_timed_out_task_is_not_retried_while_its_scan_may_still_run(transactional_db, redis_conn, emulator,  # noqa: F811
                                                                      settings):
    """The retry reset the task while its settle step still held the slot for the scan left running on the scanner:
    the settle step then ended without releasing it, the reconcile 'corrected' the counter to 0, and the retry
    launched a second scan beside the first: 2 running on a scanner limited to 1."""
    settings.SCANPOOL_STOP_GRACE = 4
    emulator.control(0).set_faults(hang_at_99=True, stop_ignored=True)
    pool, (scanner,) = emulated_pool(emulator, [1], scan_timeout_seconds=1)
    task = submit(pool=pool.name, name="hung", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(task).status == "timeout", timeout=20)
    assert reread(task).slot_held
    with pytest.raises(TaskStateError, match="may still be running on scanner"):
        retry(task.pk, actor="op")
    assert reread(task).status == "timeout" and Scanner.objects.get(pk=scanner.pk).active_scans == 1
    run_until([pool], lambda: not reread(task).slot_held, timeout=20)  # the grace bound released it
    assert retry(task.pk, actor="op").status == "queued"


def test_running_scans_survive_their_scanner_losing_its_login(transactional_db, redis_conn, emulator):  # noqa: F811
    """A URL edit that cleared the scanner's secrets (or keys revoked there) made the next poll fail every running
    task with "lost scan", releasing its slot while the scan still ran there: the next task then ran beside it."""
    pool, (scanner,) = emulated_pool(emulator, [1])
    first = submit(pool=pool.name, name="first", targets=["192.0.2.10"])
    second = submit(pool=pool.name, name="second", targets=["192.0.2.10"])
    run_until([pool], lambda: reread(first).status == "running", timeout=20)
    same_scanner = emulator.urls[0].replace("127.0.0.1", "localhost")
    update_scanner(scanner.pk, {"url": same_scanner}, actor="op")  # password not typed again: cleared
    for _ in range(3):
        run_jobs([pool], all_scheduled=True)
    row = reread(first)
    assert row.status == "running" and row.slot_held, row.error_message
    assert Scanner.objects.get(pk=scanner.pk).health == Health.AUTH_FAILED
    assert TaskEvent.objects.filter(task=first, kind="warning", message__contains="refuses scanpool's calls").exists()
    assert reread(second).claimed_at is None
    update_scanner(scanner.pk, {"password": emulator.password}, given_secrets=["password"], actor="op")
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.UNKNOWN)  # as the next health check finds it
    run_until([pool], lambda: reread(first).is_terminal and reread(second).is_terminal, timeout=30)
    assert (reread(first).status, reread(second).status) == ("completed", "completed")
    assert emulator.control(0).stats()["max_concurrent"] == 1
