"""The step runner (tasks.engine.runner): one lifecycle for every step. Each test drives a small step through the
real runner (real database rows, real breaker, real Redis lock) and checks how an outcome is mapped. The
engine's own steps are covered end to end with the emulator by the engine test modules."""

from __future__ import annotations

import uuid

import pytest

from scanners.adapters import TransientScannerError
from scanners.adapters.base import ScanNotFoundError
from scanners.models import BreakerState, Scanner
from tasks.engine import locks
from tasks.engine.runner import Failure, Step, task_lock
from tasks.models import ErrorKind, ScanTask, TaskStatus
from tests.factories import ScannerFactory, ScanTaskFactory


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.SCANPOOL_BREAKER_THRESHOLD = 3


class Probe(Step):
    """A step whose scanner work is scripted by the test; it records which hooks the runner called."""

    name = "probe"
    raises: BaseException | None = None
    calls: list

    def __init__(self, task_id: uuid.UUID) -> None:
        super().__init__(task_id)
        self.calls = []

    def load(self) -> ScanTask | None:
        return ScanTask.objects.select_related("pool", "assigned_scanner").filter(pk=self.task_id).first()

    def run(self, task, adapter):
        self.calls.append("run")
        if self.raises is not None:
            raise self.raises
        return "result"

    def succeeded(self, task, adapter, result):
        self.calls.append(("succeeded", result))

    def breaker_opened(self, task, exc):
        self.calls.append("breaker_opened")
        return False

    def retries_spent(self, task, adapter, exc):
        self.calls.append("retries_spent")
        return None

    def scanner_unavailable(self, task, why):
        self.calls.append(("unavailable", why))


def _task(**scanner_kwargs) -> ScanTask:
    scanner = ScannerFactory(**scanner_kwargs)
    return ScanTaskFactory(pool=scanner.pool, assigned_scanner=scanner)


def test_success_counts_for_the_breaker_and_hands_over_the_result(db):
    task = _task(consecutive_failures=2)
    step = Probe(task.id)
    step.execute()
    assert step.calls == ["run", ("succeeded", "result")]
    assert Scanner.objects.get(pk=task.assigned_scanner_id).consecutive_failures == 0


def test_transient_error_without_retries_left_is_counted_then_handed_to_the_step(db):
    task = _task()
    step = Probe(task.id)
    step.raises = TransientScannerError("connection refused")
    step.execute()  # outside an RQ job this is the last attempt: nothing is re-raised
    assert step.calls == ["run", "retries_spent"]
    scanner = Scanner.objects.get(pk=task.assigned_scanner_id)
    assert scanner.consecutive_failures == 1 and scanner.breaker_state == BreakerState.CLOSED


def test_transient_error_that_opens_the_breaker_asks_the_step_first(db):
    task = _task(consecutive_failures=2)

    class Unclaims(Probe):
        def breaker_opened(self, task, exc):
            self.calls.append("breaker_opened")
            return True  # handled: e.g. the launch un-claims the task

    step = Unclaims(task.id)
    step.raises = TransientScannerError("connection refused")
    step.execute()
    assert step.calls == ["run", "breaker_opened"]
    assert Scanner.objects.get(pk=task.assigned_scanner_id).breaker_state == BreakerState.OPEN


def test_permanent_error_fails_the_task_with_the_steps_message_and_dead_letters(db):
    task = _task()
    step = Probe(task.id)
    step.raises = ScanNotFoundError("scan 7 not found")
    with pytest.raises(ScanNotFoundError):
        step.execute()
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error_kind == ErrorKind.PERMANENT
    assert task.error_message == f"scanner {task.assigned_scanner.name} refused the probe: scan 7 not found"


def test_a_step_may_turn_a_spent_transient_error_into_a_failure(db):
    task = _task()

    class Gives(Probe):
        def retries_spent(self, task, adapter, exc):
            return Failure(ErrorKind.TRANSIENT, f"gave up: {exc}")

    step = Gives(task.id)
    step.raises = TransientScannerError("timed out")
    with pytest.raises(TransientScannerError):
        step.execute()
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error_message == "gave up: timed out"


def test_unexpected_error_on_the_last_attempt_fails_the_task_only_when_the_step_asks(db):
    task = _task()
    quiet = Probe(task.id)
    quiet.raises = OSError("disk full")
    with pytest.raises(OSError):
        quiet.execute()
    assert ScanTask.objects.get(pk=task.pk).status == TaskStatus.QUEUED  # poll-like steps leave it to recovery

    class Internal(Probe):
        internal_failure = "probe failed"

    step = Internal(task.id)
    step.raises = OSError("disk full")
    with pytest.raises(OSError):
        step.execute()
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED and task.error_kind == ErrorKind.INTERNAL
    assert task.error_message == "probe failed: OSError: disk full"
    assert Scanner.objects.get(pk=task.assigned_scanner_id).consecutive_failures == 0  # not a scanner failure


def test_breaker_gate_keeps_a_step_off_a_scanner_out_of_selection(db):
    class Gated(Probe):
        breaker_gate = True

    open_task = _task(breaker_state=BreakerState.OPEN)
    step = Gated(open_task.id)
    step.execute()
    assert step.calls == [("unavailable", f"scanner {open_task.assigned_scanner.name} has its circuit breaker open")]

    disabled = _task(enabled=False)
    step = Gated(disabled.id)
    step.execute()
    assert step.calls == [("unavailable", f"scanner {disabled.assigned_scanner.name} is disabled")]

    created = _task(breaker_state=BreakerState.OPEN)
    ScanTask.objects.filter(pk=created.pk).update(scanner_scan_id=5)  # a scan exists: follow it, never un-claim
    step = Gated(created.id)
    step.execute()
    assert step.calls == ["run", ("succeeded", "result")]


def test_skip_lock_stops_an_attempt_while_another_holds_the_task(db, redis_conn):
    class Locked(Probe):
        lock = "skip"

    task = _task()
    held = task_lock(task.id)
    assert locks.acquire(held)
    step = Locked(task.id)
    step.execute()
    assert step.calls == []
    held.release()
    step.execute()
    assert step.calls == ["run", ("succeeded", "result")]
    assert not redis_conn.exists(held.name)  # released after the step


def test_wait_lock_goes_on_after_its_wait(db, redis_conn, monkeypatch):
    monkeypatch.setattr("tasks.engine.runner.STOP_WAITS_FOR_LAUNCH", 0.2)

    class Waits(Probe):
        lock = "wait"

    task = _task()
    held = task_lock(task.id)
    assert locks.acquire(held)
    step = Waits(task.id)
    step.execute()  # a stop does not wait forever behind a launch: it goes on after the wait
    assert step.calls == ["run", ("succeeded", "result")]
    assert redis_conn.exists(held.name)  # the other holder's lock is left alone


def _retrying_probe(task_id: str) -> None:
    """An RQ job: a step whose scanner call always fails transiently."""

    class Retrying(Probe):
        retry_event = True
        raises = TransientScannerError("connection refused")

    Retrying(uuid.UUID(task_id)).execute()


def test_transient_error_with_retries_left_is_raised_for_rq_and_recorded(db, redis_conn):
    from rq import Queue, Retry, SimpleWorker

    task = _task()
    queue = Queue("runner-probe", connection=redis_conn)
    job = queue.enqueue(_retrying_probe, str(task.id), retry=Retry(max=1))
    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    job.refresh()
    # First attempt: re-raised for RQ's retry, with a retry event; second (last): handed to the step, job done.
    assert job.get_status() == "finished"
    events = list(task.events.filter(kind="retry").values_list("message", flat=True))
    assert events == [f"probe attempt 1 on {task.assigned_scanner.name} failed (connection refused); retrying"]
    assert Scanner.objects.get(pk=task.assigned_scanner_id).consecutive_failures == 2
