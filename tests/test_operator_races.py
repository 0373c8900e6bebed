"""Operator and API actions racing the engine: cancel, retry, approve, clean-up and dead-letter replay while worker
processes are mid-step, killed (-9), or Redis is flushed or down. Black-box: real ``scanworker`` processes, the
real test Redis and the Nessus emulator over HTTP (it counts every launch). The invariant under test is DESIGN §7's:
every task ends or is resumed — never vanished, stuck, holding a slot forever, or launched twice."""

from __future__ import annotations

import pytest

from scanners.models import Scanner
from tasks.deadletters import task_id_of
from tasks.models import ScanTask, TaskStatus
from tasks.services import cancel, retry, submit
from tests.emulator import emulator_factory  # noqa: F401 - fixture
from tests.engine_support import emulated_pool, reread
from tests.helpers import wait_for
from tests.test_redis_restart_with_data import persistent_redis  # noqa: F401 - fixture
from tests.worker_process import workers  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The workers' periodic reconcile every 5 s (its floor), scheduled at every 2 s refresh of their pools.
FAST = {"SCANPOOL_RECONCILE_INTERVAL": "5", "SCANPOOL_WORKER_REFRESH": "2"}


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

    w2 = workers(**FAST)
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

    w2 = workers(**FAST)
    wait_for(lambda: not reread(task).slot_held, 30, "the slot to be released", [w, w2])
    assert reread(task).status == TaskStatus.CANCELLED
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).active_scans == 1, 10, "only the warm-up to hold a slot")
    left = [s for s in scans_of(emu, task) if s["status"] not in ("canceled", "stopping")]
    assert not left, left  # nothing of the cancelled task runs, or waits created, on the scanner
    assert all(s["launches"] <= 1 for s in scans_of(emu, task))
    if step == "creating":
        assert scans_of(emu, task) == []
        assert reread(task).events.filter(message__contains="created by its interrupted launch deleted").exists()


def test_a_scan_approved_while_redis_is_down_is_dispatched_once_redis_is_back(
        workers, emulator_factory, redis_server, redis_conn):  # noqa: F811
    """The approval commits in the database; its dispatch request cannot reach Redis (logged, not raised). When
    Redis is back — empty, as after a restart without persistence — the workers' periodic reconcile dispatches it."""
    from tasks.models import ApprovalRule
    from tests.api_support import token_client, user_with
    from tests.policy_support import policy_client

    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    token, _, _ = policy_client(approval=ApprovalRule.ALWAYS, pools=[pool])
    task = submit(pool=pool.name, name="approved-in-the-dark", targets=["192.0.2.10"], api_token=token,
                  requested_by=token.user, requested_via="api")
    assert task.status == TaskStatus.PENDING_APPROVAL
    w = workers(**FAST)
    api, _ = token_client(user_with(["tasks.view_scantask", "tasks.approve_scantask"], "approver"), name="approver")
    redis_server.stop()
    answer = api.post(f"/api/v1/scans/{task.pk}/approve/", {}, format="json")  # throttling lets it through
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == TaskStatus.QUEUED
    redis_server.start()
    wait_for(lambda: reread(task).status == TaskStatus.COMPLETED, 60, "the approved scan to run", [w])
    assert scans_of(emu, task)[0]["launches"] == 1 and len(scans_of(emu, task)) == 1


def _poisoned(emu, pool, name: str, w) -> ScanTask:
    """A task whose launch the scanner refused (403 to the scan's creation): failed, a dead letter on the launch
    queue. Only the creation is refused: a periodic health check answered 403 would mark the scanner not ready,
    and dispatch would never try the launch."""
    emu.control(0).set_faults(error_status=403, error_burst=1000, error_match="^POST /scans$")
    task = submit(pool=pool.name, name=name, targets=["192.0.2.10"])
    wait_for(lambda: reread(task).status == TaskStatus.FAILED, 30, "the launch to be refused", [w])
    # The step fails the task, then raises: RQ files the job as a dead letter a moment after the row says failed.
    from tasks.deadletters import failed_job_ids

    wait_for(lambda: str(task.pk) in failed_job_ids(pool), 10, "RQ to file the dead letter", [w])
    emu.control(0).set_faults(error_status=0, error_burst=0, error_match="")
    Scanner.objects.filter(pool=pool).update(health="ready")
    return reread(task)


def _together(*calls):
    """Run the calls at the same moment in threads; their results or exceptions, in order."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, call):
        try:
            barrier.wait(10)
            out[i] = call()
        except Exception as exc:  # the loser of a race: kept for the assertions
            out[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_two_retries_and_a_cancel_racing_on_one_dead_letter_make_one_attempt_and_one_launch(
        workers, emulator_factory):  # noqa: F811
    from tasks.errors import TaskStateError

    emu = emulator_factory(instances=1, scan_seconds=2)
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers(**FAST)
    task = _poisoned(emu, pool, "raced-retry", w)
    results = _together(lambda: retry(task.pk, actor="alice"), lambda: retry(task.pk, actor="bob"))
    assert sum(isinstance(r, ScanTask) for r in results) == 1, results
    assert sum(isinstance(r, TaskStateError) for r in results) == 1, results
    wait_for(lambda: reread(task).status == TaskStatus.COMPLETED, 30, "the one retry to complete", [w])
    assert reread(task).attempts == 2
    assert [s["launches"] for s in scans_of(emu, task)] == [1]

    other = _poisoned(emu, pool, "raced-cancel", w)
    results = _together(lambda: retry(other.pk, actor="alice"), lambda: cancel(other.pk, actor="bob"))
    assert not [r for r in results if not isinstance(r, (ScanTask, TaskStateError))], results
    wait_for(lambda: reread(other).status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.FAILED)
             and not reread(other).slot_held, 30, "the task to settle", [w])
    # Either the cancel lost (the task was failed: not cancellable), or it cancelled the retried attempt.
    assert reread(other).status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED), results
    assert all(s["launches"] == 1 for s in scans_of(emu, other)) and len(scans_of(emu, other)) <= 1
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).active_scans == 0, 10, "every slot to be free", [w])


def test_dlq_retry_and_cleanup_racing_live_workers_lose_nothing_and_launch_nothing_twice(
        workers, emulator_factory):  # noqa: F811
    """``dlq retry --all`` and ``cleanup_tasks --older-than 0s`` at the same moment, next to a running scan and a
    scan that just completed: the dead letter is either retried (and runs once) or deleted with everything RQ held
    for it; the running scan is untouched; nothing holds a slot afterwards."""
    from io import StringIO

    from django.core.management import call_command

    from tasks.deadletters import failed_job_ids

    emu = emulator_factory(instances=1, scan_seconds=4)
    pool, (scanner,) = emulated_pool(emu, [2])
    w = workers(**FAST)
    dead = _poisoned(emu, pool, "dead-letter", w)
    assert failed_job_ids(pool) == [str(dead.pk)]
    done = submit(pool=pool.name, name="just-done", targets=["192.0.2.10"])
    wait_for(lambda: reread(done).status == TaskStatus.COMPLETED, 30, "a scan to complete", [w])
    running = submit(pool=pool.name, name="running", targets=["192.0.2.10"])
    wait_for(lambda: reread(running).status == TaskStatus.RUNNING, 30, "a scan to run", [w])

    def command(*args):
        out = StringIO()
        call_command(*args, stdout=out)
        return out.getvalue()

    results = _together(lambda: command("dlq", "retry", "--all"), lambda: command("cleanup_tasks", "--older-than",
                                                                                      "0s"))
    assert not [r for r in results if isinstance(r, Exception)], results
    wait_for(lambda: reread(running).status == TaskStatus.COMPLETED, 30, "the running scan to complete", [w])
    assert not ScanTask.objects.filter(pk=done.pk).exists()  # finished and expired: deleted
    if ScanTask.objects.filter(pk=dead.pk).exists():  # retried before the clean-up looked
        wait_for(lambda: reread(dead).status == TaskStatus.COMPLETED, 30, "the retried dead letter", [w])
        assert reread(dead).attempts == 2 and [s["launches"] for s in scans_of(emu, dead)] == [1]
    else:  # deleted first: the retry said so, and RQ keeps nothing of it
        assert scans_of(emu, dead) == []
    assert failed_job_ids(pool) == []
    assert [s["launches"] for s in scans_of(emu, running)] == [1]
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).active_scans == 0, 10, "every slot to be free", [w])
    assert not ScanTask.objects.filter(slot_held=True).exists()


def test_a_scanner_disabled_and_narrowed_under_running_scans_lets_them_finish_and_takes_nothing_new(
        workers, emulator_factory):  # noqa: F811
    """Disable a scanner and lower its limit while two of its scans run and a third task waits: the running scans
    are followed to the end on it (one launch each, slots released), the waiting task is not given to it, and runs
    there once it is enabled again — within the new limit."""
    from scanners.services import update_scanner

    emu = emulator_factory(instances=1, scan_seconds=4)
    pool, (scanner,) = emulated_pool(emu, [2])
    w = workers(**FAST)
    running = [submit(pool=pool.name, name=f"busy-{i}", targets=["192.0.2.10"]) for i in range(2)]
    wait_for(lambda: all(reread(t).status == TaskStatus.RUNNING for t in running), 30, "two scans to run", [w])
    update_scanner(scanner.pk, {"enabled": False, "max_concurrent_scans": 1}, actor="ops")
    waiting = submit(pool=pool.name, name="waiting", targets=["192.0.2.10"])
    wait_for(lambda: all(reread(t).status == TaskStatus.COMPLETED for t in running), 40, "the running scans", [w])
    wait_for(lambda: Scanner.objects.get(pk=scanner.pk).active_scans == 0, 10, "their slots to be released", [w])
    assert reread(waiting).status == TaskStatus.QUEUED and reread(waiting).claimed_at is None
    assert all([s["launches"] for s in scans_of(emu, t)] == [1] for t in running)
    assert emu.control(0).stats()["max_concurrent"] <= 2

    update_scanner(scanner.pk, {"enabled": True}, actor="ops")
    wait_for(lambda: reread(waiting).status == TaskStatus.COMPLETED, 40, "the waiting task", [w])
    assert [s["launches"] for s in scans_of(emu, waiting)] == [1]


@pytest.mark.parametrize("failed_step", ["launch", "finish"])
def test_a_retry_made_while_redis_restarts_with_its_data_leaves_no_phantom_dead_letter(
        workers, emulator_factory, persistent_redis, failed_step):  # noqa: F811
    """The retry commits while Redis is down: its removal of the task's failed jobs cannot reach Redis (logged, not
    raised). Redis comes back *with* its data, the failed job still in the FailedJobRegistry. The task completed,
    yet ``dlq list``, the dead-letter metric and its alert kept showing it as a dead letter (for
    SCANPOOL_FAILURE_TTL): a failed launch (whose id the new launch job takes) or a failed finish step."""
    import redis

    from tasks.deadletters import dead_letter_counts, failed_job_ids

    conn = redis.Redis.from_url(persistent_redis.url)
    emu = emulator_factory(instances=1, scan_seconds=1)
    pool, _ = emulated_pool(emu, [1])
    if failed_step == "launch":
        w = workers(REDIS_URL=persistent_redis.url, **FAST)
        task = _poisoned(emu, pool, "retried-in-the-dark", w)
    else:  # the results are over the cap: the finish step fails the task for good
        w = workers(REDIS_URL=persistent_redis.url, SCANPOOL_MAX_RESULT_BYTES="100", **FAST)
        task = submit(pool=pool.name, name="retried-in-the-dark", targets=["192.0.2.10"])
        wait_for(lambda: reread(task).status == TaskStatus.FAILED, 30, "the results to be refused", [w])
    wait_for(lambda: [task_id_of(j) for j in failed_job_ids(pool)] == [str(task.pk)], 10,
             f"the failed {failed_step} to be a dead letter", [w])
    w.stop()
    persistent_redis.stop()
    assert retry(task.pk, actor="ops").status == TaskStatus.QUEUED
    persistent_redis.start()
    assert conn.exists(f"rq:job:{failed_job_ids(pool)[0]}"), "Redis came back without the dead letter"
    w2 = workers(REDIS_URL=persistent_redis.url, **FAST)
    wait_for(lambda: reread(task).status == TaskStatus.COMPLETED, 40, "the retried task to complete", [w2])
    assert [s["launches"] for s in scans_of(emu, task)] == [1] * (1 if failed_step == "launch" else 2)
    wait_for(lambda: failed_job_ids(pool) == [], 20, "no dead letter left", [w2])
    assert dead_letter_counts([pool]) == {pool.name: 0}


def test_a_cancel_while_the_launch_waits_for_its_retry_removes_the_created_scan(workers, emulator_factory):  # noqa: F811
    """The scan was created and recorded, its launch request failed (503: RQ retries it a second later), and the task
    is cancelled in between. The stop step found the scan "empty" (never launched), said "nothing to stop" and left
    it on the scanner for good (the retried launch then does nothing: the task is cancelled)."""
    emu = emulator_factory(instances=1, scan_seconds=30)
    pool, (scanner,) = emulated_pool(emu, [1])
    w = workers(SCANPOOL_RECONCILE_INTERVAL="3600")  # no periodic health check may take the one 503 meanwhile
    emu.control(0).set_faults(latency=1)
    task = submit(pool=pool.name, name="cancelled-between-attempts", targets=["192.0.2.10"])
    wait_for(lambda: reread(task).scanner_status == "launching", 20, "the launch request to be in flight", [w])
    emu.control(0).set_faults(error_burst=1, error_status=503)  # the request in flight is answered 503
    assert cancel(task.pk, actor="ops").status == TaskStatus.CANCELLED
    emu.control(0).set_faults(latency=0)
    wait_for(lambda: not reread(task).slot_held, 30, "the slot to be released", [w])
    assert reread(task).events.filter(message__contains="failed (").exists()  # the launch attempt did fail
    assert scans_of(emu, task) == [], scans_of(emu, task)
    assert Scanner.objects.get(pk=scanner.pk).active_scans == 0
