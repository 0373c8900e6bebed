"""Redis going away under running workers (restart, data lost) and a flush under live workers: the worker
processes stay up, register again, and the task ends without a second launch; a worker's liveness is judged
by its heartbeat when its registration cannot be checked by pid (``tasks.engine.locks.worker_dead``)."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rq import Worker
from rq.job import Job, JobStatus
from rq.utils import utcformat

from tasks.engine import locks, recovery
from tasks.models import ScanTask
from tasks.queues import SERIALIZER, get_connection
from tasks.services import submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool
from tests.helpers import wait_for
from tests.worker_process import WorkerProcess, workers  # noqa: F401 - fixture

FAST = {"SCANPOOL_RECONCILE_INTERVAL": "5", "SCANPOOL_WORKER_REFRESH": "2"}


def _worker_hash(conn, w: WorkerProcess) -> dict[str, str]:
    """The raw registration hash of worker process ``w`` (found by pid among the worker keys)."""
    for key in conn.scan_iter("rq:worker:*"):
        data = {k.decode(): v.decode() for k, v in conn.hgetall(key).items()}
        if data.get("pid") == str(w.proc.pid):
            return data
    return {}


def _polling_worker(conn, ws: list[WorkerProcess]) -> WorkerProcess | None:
    """The worker in the middle of a poll step, if any."""
    for w in ws:
        data = _worker_hash(conn, w)
        if data.get("state") == "busy" and "-poll-" in data.get("current_job", ""):
            return w
    return None


# ------------------------------------------------------------------------------------------------- #1
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_workers_survive_a_redis_restart_mid_poll_and_the_task_completes(workers, emulator_factory,  # noqa: F811
                                                                        redis_server, redis_conn):
    emu = emulator_factory(instances=1, scan_seconds=6)
    emu.control(0).set_faults(latency=1.0)  # a poll takes 1 s: a worker is mid-step much of the time
    pool, _ = emulated_pool(emu, [2])
    ws = [workers(**FAST), workers(**FAST)]  # with one scan, one of them waits idle in its dequeue
    task = submit(pool=pool.name, name="outage-1", targets=["192.0.2.10"])
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).progress > 0, 30, "the scan to be polled", ws)
    busy = wait_for(lambda: _polling_worker(redis_conn, ws), 20, "a worker in the middle of a poll", ws, interval=0.01)

    seen = len(busy.log())
    redis_server.proc.kill()  # SIGKILL: no goodbye to the clients
    redis_server.proc.wait(10)
    # The poll in hand ends and meets the outage (it schedules the next poll in Redis): logged, or fatal.
    wait_for(lambda: busy.proc.poll() is not None or "redis" in busy.log()[seen:].lower(), 20,
             "the busy worker to meet the outage", ws)
    assert "unhandled exception" not in busy.log(), busy.log()[-3000:]  # RQ's "…, quitting": the bug
    redis_server.start()  # same port and password, empty: as a restart without persistence (or a FLUSHALL)

    assert all(w.proc.poll() is None for w in ws), [w.log()[-3000:] for w in ws]
    # Both register again (the busy one and the one that was waiting for work) ...
    wait_for(lambda: {x.pid for x in Worker.all(connection=redis_conn)} >= {w.proc.pid for w in ws}, 30,
             "both workers to register again", ws)
    # ... and the periodic reconcile resumes the task on its existing scan.
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == "completed", 60, "the task to complete", ws)
    assert all(w.proc.poll() is None for w in ws)
    assert sum(1 for w in ws if "unhandled exception" in w.log()) == 0
    scans = [s for s in emu.control(0).scans() if "outage-1" in s["name"]]
    assert len(scans) == 1 and scans[0]["launches"] == 1
    assert all(w.log().count("Redis unreachable") <= 1 for w in ws)  # one line per outage, not a flood


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_survives_redis_down_for_a_while_and_takes_work_after(workers, emulator_factory,  # noqa: F811
                                                                           redis_server, redis_conn):
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    w = workers(**FAST)
    seen = len(w.log())
    redis_server.stop()  # SIGTERM: Redis closes every client connection
    wait_for(lambda: w.proc.poll() is not None or "redis" in w.log()[seen:].lower(), 20, "the worker to notice", [w])
    time.sleep(3)  # down for a while: the worker's next wait slice (2 s) starts while Redis is away
    redis_server.start()
    wait_for(lambda: any(x.pid == w.proc.pid for x in Worker.all(connection=redis_conn)), 30,
             "the worker to register again", [w])
    task = submit(pool=pool.name, name="after-outage", targets=["192.0.2.10"])
    wait_for(lambda: ScanTask.objects.get(pk=task.pk).status == "completed", 40, "a task after the outage", [w])
    assert w.proc.poll() is None


# ------------------------------------------------------------------------------------------------- #2
def _partial_hash(conn, name: str, heartbeat_age: float | None) -> None:
    """What heartbeats alone leave after a FLUSHALL: no birth, hostname or pid."""
    fields = {"state": "busy", "current_job": "some-job"}
    if heartbeat_age is not None:
        fields["last_heartbeat"] = utcformat(datetime.now(UTC) - timedelta(seconds=heartbeat_age))
    conn.hset(f"rq:worker:{name}", mapping=fields)
    conn.expire(f"rq:worker:{name}", 360)


def test_a_partial_worker_hash_is_judged_by_its_heartbeat(redis_conn):
    _partial_hash(redis_conn, "fresh", 2)
    _partial_hash(redis_conn, "stale", locks.HEARTBEAT_STALE + 30)
    _partial_hash(redis_conn, "no-beat", None)
    assert not locks.worker_dead(redis_conn, "fresh")  # a live worker whose hash was re-created: it heartbeats
    assert locks.worker_dead(redis_conn, "stale")
    assert locks.worker_dead(redis_conn, "no-beat")


def test_a_whole_hash_on_this_host_is_still_judged_by_its_pid(redis_conn):
    beat = utcformat(datetime.now(UTC) - timedelta(seconds=locks.HEARTBEAT_STALE + 30))
    import os

    redis_conn.hset("rq:worker:me", mapping={"hostname": socket.gethostname(), "pid": os.getpid(),
                                              "birth": beat, "last_heartbeat": beat})
    assert not locks.worker_dead(redis_conn, "me")  # alive pid: a long job, whatever the heartbeat says


def test_reconcile_does_not_trust_a_started_job_of_a_silent_partial_worker(redis_conn):
    conn = get_connection()
    for name, age, alive in (("silent", locks.HEARTBEAT_STALE + 30, False), ("beating", 2, True)):
        _partial_hash(conn, name, age)
        job = Job.create("tasks.jobs.poll", args=[str(uuid.uuid4())], connection=conn, serializer=SERIALIZER,
                         id=f"job-of-{name}")
        job.worker_name = name
        job.set_status(JobStatus.STARTED, pipeline=None)
        job.save()
        assert recovery._job_alive(job.id, recovery.ReconcileReport()) == (alive, JobStatus.STARTED), name


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_registers_whole_again_after_a_flush(workers, redis_conn):  # noqa: F811
    w = workers(**FAST)
    redis_conn.flushall()
    # Its heartbeats re-create the hash; the worker notices it lacks its identity and writes it all again.
    wait_for(lambda: {"birth", "hostname", "pid"} <= set(_worker_hash(redis_conn, w)), 30,
             "the worker's whole registration", [w])
    assert any(x.pid == w.proc.pid for x in Worker.all(connection=redis_conn))  # listed again (readyz, ops page)
    assert not locks.worker_dead(redis_conn, Worker.all(connection=redis_conn)[0].name)
    w.kill()
    name = next(x.name for x in Worker.all(connection=redis_conn) if x.pid == w.proc.pid)
    assert locks.worker_dead(redis_conn, name)  # same host, dead pid: at once, as before the flush


@pytest.mark.django_db(transaction=True)  # the worker closes old database connections, as in its process
def test_redis_gone_while_a_worker_starts_its_scheduler_does_not_end_the_worker(redis_server, redis_conn):
    """RQ's work() starts the scheduler after registering the worker and before its loop, outside any outage
    handling: Redis going away in between made the worker exit with a traceback (seen under load in CI). Now
    the loop waits for Redis, and the scheduler starts once Redis is back."""
    from tasks.worker import PoolWorker
    from tests.factories import PoolFactory

    pool = PoolFactory(name="starting", scope=["192.0.2.0/24"])
    worker = PoolWorker([pool.name], connection=get_connection())
    redis_server.stop()
    try:
        worker._start_scheduler(False, "INFO")  # raised ConnectionError before
        assert worker.scheduler is not None and worker.scheduler._process is None
    finally:
        redis_server.start()
    wait_for(lambda: _pings(redis_conn), 10, "Redis to answer again")
    worker.after_reconnect()
    # The next idle slice revives it (_revive_scheduler: acquire_locks(auto_start=True), which a real worker's
    # restart tests run in tests/test_resilience.py); here without forking a process out of the test runner.
    assert worker._last_scheduler_check == 0.0
    worker.scheduler.acquire_locks()
    try:
        assert set(worker.scheduler.acquired_locks) == set(worker.queue_names())
    finally:
        worker.scheduler.release_locks()


@pytest.mark.django_db(transaction=True)
def test_redis_gone_while_a_worker_registers_does_not_end_the_worker(redis_server, redis_conn):
    """The same for RQ's bootstrap (registration, pubsub channel, state): the worker waits for Redis, then is
    registered, started and listening on its channel."""
    import threading

    from rq.worker import WorkerStatus

    from tasks.worker import PoolWorker
    from tests.factories import PoolFactory

    pool = PoolFactory(name="registering", scope=["192.0.2.0/24"])
    worker = PoolWorker([pool.name], connection=get_connection())
    redis_server.stop()
    back = threading.Timer(1.0, redis_server.start)
    back.start()
    try:
        worker.bootstrap()  # raised ConnectionError before
    finally:
        back.join()
    try:
        assert worker.name in {w.name for w in Worker.all(connection=redis_conn)}
        assert worker.get_state() == WorkerStatus.STARTED and worker.pubsub_thread is not None
    finally:
        if worker.pubsub_thread is not None:
            worker.pubsub_thread.stop()
        worker.register_death()


def _pings(conn) -> bool:
    try:
        return bool(conn.ping())
    except Exception:
        return False
