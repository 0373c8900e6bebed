"""Operator and API actions racing the engine: cancel, retry, approve, clean-up and dead-letter replay while worker
processes are mid-step, killed (-9), or Redis is flushed or down. Black-box: real ``scanworker`` processes, the
real test Redis and the Nessus emulator over HTTP (it counts every launch). The invariant under test is DESIGN §7's:
every task ends or is resumed — never vanished, stuck, holding a slot forever, or launched twice."""

from __future__ import annotations

import pytest

from scanners.models import Scanner
from tasks.models import ScanTask, TaskStatus
from tasks.services import retry, submit
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
