"""Nothing lost, black-box: real worker processes, the real test Redis and the Nessus emulator over HTTP.
Each test reproduces a failure found by killing processes / restarting Redis next to a running stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from scanners.models import Health, Scanner
from tasks.engine import locks
from tasks.engine.launch import LAUNCH_LOCK
from tasks.models import ScanTask
from tasks.services import submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.helpers import wait_for
from tests.test_engine_integration import statuses, workers  # noqa: F401 - fixture
from tests.worker_process import ROOT, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_lock_token_names_a_live_holder_here_and_trusts_other_hosts():
    mine = locks.owner_token()
    assert not locks.holder_dead(mine)
    host, pid, started, _ = mine.split("|")
    assert not locks.holder_dead(f"elsewhere.example|{pid}|{started}|x")  # another host: trust the TTL
    assert locks.holder_dead(f"{host}|{pid}|{started}9|x")  # this pid, but a process started at another time


def test_launch_lock_of_a_killed_worker_does_not_block_the_task(workers, emulator_factory):  # noqa: F811
    """A worker killed (-9) while launching left the per-task lock behind (TTL = step timeout + 60 s = 6 min):
    the task sat claimed, holding a slot, for six minutes. The next attempt on this host breaks it at once."""
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    task = submit(pool=pool.name, name="locked", targets=["192.0.2.10"])
    # A process takes the task's launch lock the way a launch does, then dies without releasing it.
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import django, time; django.setup()\n"
            "from tasks.engine import locks; from tasks.engine.launch import task_lock\n"
            f"import uuid; assert locks.acquire(task_lock(uuid.UUID('{task.id}')))\n"
            "print('locked', flush=True); time.sleep(600)\n")],
        cwd=ROOT, env={**worker_env(), "DJANGO_SETTINGS_MODULE": "scanpool_site.settings"},
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    from tasks.queues import get_connection

    assert get_connection().exists(LAUNCH_LOCK.format(task.id))  # still there: only its holder is gone
    w = workers()
    started = time.monotonic()
    wait_for(lambda: statuses(pool).get("completed") == 1, 30, "the task to complete", [w])
    assert time.monotonic() - started < 30
    assert "broke lock" in w.log()
    assert sum(s["launches"] for s in emu.control(0).scans()) == 1
    assert ScanTask.objects.get(pk=task.pk).attempts == 1
    assert Scanner.objects.get(pool=pool).health in (Health.READY, Health.UNKNOWN)


def test_periodic_reconcile_rechecks_health_a_fixed_scanner_comes_back(workers, emulator_factory):  # noqa: F811
    """A scanner flagged unlicensed (a 412 once) used to stay out of selection until someone clicked
    "Check health now"; the workers' periodic reconcile now re-checks it and dispatches the waiting task."""
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, (scanner,) = emulated_pool(emu, [1])
    Scanner.objects.filter(pk=scanner.pk).update(health=Health.UNLICENSED, health_detail="HTTP 412 (earlier)")
    w = workers(SCANPOOL_RECONCILE_INTERVAL="5", SCANPOOL_WORKER_REFRESH="2")
    task = submit(pool=pool.name, name="waits-for-health", targets=["192.0.2.10"])
    time.sleep(1)
    # Not selectable: it waits, nothing fails. The workers' first periodic reconcile comes at the next 5 s mark,
    # which may fall inside that second: then the claim must come after the re-check (the task row is read
    # before the scanner's, and the re-check records the health before it asks for a dispatch).
    claimed = ScanTask.objects.get(pk=task.pk).claimed_at
    assert claimed is None or Scanner.objects.get(pk=scanner.pk).health == Health.READY
    wait_for(lambda: statuses(pool).get("completed") == 1, 40, "the re-checked scanner to take the task", [w])
    scanner.refresh_from_db()
    assert scanner.health == Health.READY and scanner.health_checked_at is not None
    assert "health of " in w.log() and "unlicensed -> ready" in w.log()


def test_periodic_health_check_shows_a_down_scanner_and_its_recovery(workers, emulator_factory):  # noqa: F811
    emu = emulator_factory(instances=2, scan_seconds=1)  # instance 1 only relays control calls to instance 0
    _pool, (scanner,) = emulated_pool(emu, [1])
    w = workers(SCANPOOL_RECONCILE_INTERVAL="5", SCANPOOL_WORKER_REFRESH="2", SCANPOOL_HTTP_CONNECT_TIMEOUT="1")
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).health == Health.READY, 30, "a first health check", [w])
    emu.control(0).down()
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).health == Health.UNREACHABLE, 30, "health unreachable", [w])
    emu.control(0).up()  # back as soon as the outage was seen, not after a fixed 12 s
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).health == Health.READY, 40, "health ready again", [w])


@pytest.mark.filterwarnings("error::urllib3.exceptions.InsecureRequestWarning")
def test_tls_off_is_one_log_line_per_scanner_and_no_urllib3_flood(emulator_factory, caplog, tmp_path):  # noqa: F811
    import logging
    import uuid

    from scanners.adapters.nessus import NessusAdapter

    emu = emulator_factory(instances=2, scan_seconds=1, https=True, extra_args=["--cert-dir", str(tmp_path)])
    names = [f"tls-{uuid.uuid4().hex[:8]}", f"tls-{uuid.uuid4().hex[:8]}"]
    with caplog.at_level(logging.WARNING, logger="scanpool.adapters.nessus"):
        for _ in range(3):  # every step builds a new adapter: still one line per scanner
            for name, url in zip(names, emu.urls, strict=True):
                adapter = NessusAdapter(url, access_key=emu.access_key, secret_key=emu.secret_key,
                                        verify_tls=False, name=name)
                assert adapter.list_scans() == [] and adapter.list_scans() == []  # would raise on the warning
                adapter.close()
    lines = [r.getMessage() for r in caplog.records if "TLS verification is turned off" in r.getMessage()]
    assert len(lines) == 2 and all(any(n in line for line in lines) for n in names)


def test_redis_restart_scheduler_revived_scan_finishes(workers, emulator_factory, redis_server):  # noqa: F811
    """Redis restarted (all data lost) under a running scan: the worker process lives on (RQ reconnects),
    its scheduler process — which exits on a Redis connection error — is restarted within seconds, and the
    periodic reconcile resumes polling the same scan: completed, launched once."""
    emu = emulator_factory(instances=1, scan_seconds=4)
    pool, _ = emulated_pool(emu, [1])
    w = workers(SCANPOOL_RECONCILE_INTERVAL="5", SCANPOOL_WORKER_REFRESH="2")
    task = submit(pool=pool.name, name="through-restart", targets=["192.0.2.10"])
    wait_for(lambda: statuses(pool).get("running") == 1, 20, "the scan to run", [w])
    redis_server.stop()
    time.sleep(2)
    redis_server.start()
    wait_for(lambda: statuses(pool).get("completed") == 1, 60, "the scan to finish after the restart", [w])
    assert w.proc.poll() is None, w.log()[-3000:]
    assert "Scheduler for " in w.log().split("raised an exception")[-1]  # a new scheduler after the crash
    assert sum(s["launches"] for s in emu.control(0).scans()) == 1
    assert ScanTask.objects.get(pk=task.pk).scanner_scan_id is not None


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[-1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_kill_9_of_the_worker_pid_alone_takes_its_scheduler_down(workers, emulator_factory):  # noqa: F811
    """``kill -9 <worker pid>`` used to leave RQ's scheduler child running as an orphan holding the
    scheduler lock; now it stops with its worker and a new worker schedules at once."""
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    w = workers()
    wait_for(lambda: bool(_children(w.proc.pid)), 20, "the scheduler process", [w])
    (scheduler_pid,) = _children(w.proc.pid)
    os.kill(w.proc.pid, signal.SIGKILL)  # the worker only, not its process group
    w.proc.wait(10)
    from tasks.worker import pid_alive

    wait_for(lambda: not pid_alive(scheduler_pid), 15, "the orphaned scheduler to stop", [w])
    w2 = workers()
    task = submit(pool=pool.name, name="after-orphan", targets=["192.0.2.10"])
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == "completed", 30, "polls via the new scheduler", [w2])
