"""Operator and API actions racing the engine: cancel, retry, approve, clean-up and dead-letter replay while worker
processes are mid-step, killed (-9), or Redis is flushed or down. Black-box: real ``scanworker`` processes, the
real test Redis and the Nessus emulator over HTTP (it counts every launch). The invariant under test is DESIGN §7's:
every task ends or is resumed — never vanished, stuck, holding a slot forever, or launched twice."""

from __future__ import annotations

import pytest

from scanners.models import Scanner
from tasks.models import ScanTask, TaskStatus
from tasks.services import cancel, retry, submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, reread
from tests.helpers import wait_for
from tests.worker_process import workers  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def scans_of(emu, task, index: int = 0) -> list[dict]:
    """The emulator's scans whose name carries ``task``'s id, oldest first."""
    return sorted((s for s in emu.control(index).scans() if str(task.pk) in s["name"]), key=lambda s: s["id"])


def test_a_retry_whose_launch_is_killed_mid_create_never_adopts_the_previous_attempts_scan(
        workers, emulator_factory):  # noqa: F811
    """The first attempt's scan stays on the scanner (SCANPOOL_DELETE_FINISHED_SCANS is off by default) and carries
    the same task id in its name. The retried launch, killed while creating its scan, was resumed by looking the
    scan up by that name: it adopted the *previous* attempt's (aborted) scan, said "already launched, not launched
    again", and the retry failed at once with the old scan's end — the new attempt never scanned anything."""
    emu = emulator_factory(instances=1, scan_seconds=1)
    emu.control(0).set_faults(end_status="aborted")
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers()
    task = submit(pool=pool.name, name="retried", targets=["192.0.2.10"])
    wait_for(lambda: reread(task).status == TaskStatus.FAILED, 30, "the first attempt to fail (scan aborted)", [w])
    (first,) = scans_of(emu, task)
    assert first["status"] == "aborted" and first["launches"] == 1

    emu.control(0).set_faults(end_status="completed", latency=1.5)
    retry(task.pk, actor="ops")
    wait_for(lambda: reread(task).scanner_status == "creating", 20, "the retried launch to create its scan", [w])
    w.kill()  # mid-create: the row has no scan id yet
    emu.control(0).set_faults(latency=0)

    w2 = workers(SCANPOOL_RECONCILE_INTERVAL="2")
    wait_for(lambda: reread(task).status in (TaskStatus.COMPLETED, TaskStatus.FAILED), 40,
             "the retried attempt to end", [w, w2])
    task = reread(task)
    assert task.status == TaskStatus.COMPLETED, "\n".join(e.message for e in task.events.order_by("created_at", "id"))
    assert task.attempts == 2 and task.scanner_scan_id != first["id"]
    old, new = scans_of(emu, task)
    assert old["id"] == first["id"] and old["launches"] == 1  # the first attempt's scan: untouched
    assert new["id"] == task.scanner_scan_id and new["launches"] == 1
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).active_scans == 0, 10, "the slot to be free", [w2])
    assert not ScanTask.objects.filter(slot_held=True).exists()


@pytest.mark.parametrize("step", ["creating", "launching"])
def test_a_cancel_mid_launch_then_kill_9_leaves_nothing_on_the_scanner_and_frees_the_slot(
        workers, emulator_factory, step):  # noqa: F811
    """Cancel while the launch's create (or launch) request is in flight — slowed by the emulator's latency —, then
    kill -9 the worker: the request still reaches the scanner. What it made there is removed (a created scan) or
    stopped (a launched one), never left behind; the slot is freed and the task stays cancelled.

    A scan created by a launch killed mid-create stayed on the scanner for good: the stop step saw no scan id on
    the row and only released the slot, and the reconcile's orphan report skips scans whose task exists."""
    emu = emulator_factory(instances=1, scan_seconds=30)
    pool, (scanner,) = emulated_pool(emu, [2])
    w = workers()
    emu.control(0).set_faults(latency=1)
    # The first launch logs in and reads the templates (cached by the worker): the second one's create is then one
    # request, and it is in flight as soon as its row says "creating".
    warm = submit(pool=pool.name, name="warm-up", targets=["192.0.2.10"])
    task = submit(pool=pool.name, name="cancelled-mid-launch", targets=["192.0.2.10"])
    wait_for(lambda: reread(warm).status == TaskStatus.RUNNING, 30, "the first launch", [w])
    wait_for(lambda: reread(task).scanner_status == step, 20, f"the launch to reach {step!r}", [w])
    assert cancel(task.pk, actor="ops").status == TaskStatus.CANCELLED
    w.kill()
    if step == "creating":
        wait_for(lambda: scans_of(emu, task), 10, "the in-flight create to reach the scanner")
    else:
        wait_for(lambda: scans_of(emu, task)[0]["launches"] == 1, 10, "the in-flight launch to reach the scanner")
    emu.control(0).set_faults(latency=0)

    w2 = workers(SCANPOOL_RECONCILE_INTERVAL="2")
    wait_for(lambda: not reread(task).slot_held, 30, "the slot to be released", [w, w2])
    assert reread(task).status == TaskStatus.CANCELLED
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).active_scans == 1, 10, "only the warm-up to hold a slot")
    left = [s for s in scans_of(emu, task) if s["status"] not in ("canceled", "stopping")]
    assert not left, left  # nothing of the cancelled task runs, or waits created, on the scanner
    assert all(s["launches"] <= 1 for s in scans_of(emu, task))
    if step == "creating":
        assert scans_of(emu, task) == []
        assert reread(task).events.filter(message__contains="created by its interrupted launch deleted").exists()
