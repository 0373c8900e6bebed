"""One step runner owns every step's lifecycle (as NetBox's ``JobRunner`` does for its jobs).

A step (``launch``, ``poll``, ``finish``, ``stop``, ``settle``) is a :class:`Step` subclass that only says what
the step does on the scanner and what each outcome means for its task. :meth:`Step.execute` does the rest, the
same way for all of them:

1. a chain link (poll, finish, settle) from a replaced chain stops at once;
2. the per-task lock is taken when the step needs it (``lock = "skip"``: another holder → this attempt stops;
   ``"wait"``: wait up to 30 s for an in-flight launch, then go on);
3. the task is loaded (:meth:`Step.load`; ``None`` → nothing to do, and a chain link that is still current ends
   its chain) and :meth:`Step.prepare` may end the step without touching the scanner;
4. the breaker gate (``breaker_gate``): nothing created yet and the scanner out of selection since the claim
   (:func:`out_of_selection`: disabled, moved to another pool, login rejected or unlicensed, breaker open, waiting
   out a ``Retry-After``) →
   :meth:`Step.scanner_unavailable` (launch: un-claim);
5. the wait gate: the scanner asked scanpool to wait (``Retry-After``, answered to any call: this task's or another
   one's) and the wait is not over → the scanner is not called; the same job comes back when the wait ends
   (:func:`tasks.engine.common.repeat_in`: RQ repeats it under its job id, so a chain link stays its chain's link),
   or at the task's deadline if that comes first (``deadline_wakes``: the poll, whose :meth:`Step.prepare` times
   the task out). No failure is counted, no retry spent, nothing written to the task's timeline (the log says it);
6. :meth:`Step.run` talks to the scanner through the process's adapter, and the outcome is mapped:

   * success → breaker success, then :meth:`Step.succeeded`;
   * transient error → a ``Retry-After`` it carries is recorded on the scanner (:mod:`scanners.pacing`: no new scan
     to it before then), breaker failure; if that opened the breaker, :meth:`Step.breaker_opened` may end the
     step (launch with nothing created: un-claim at once); with RQ retries left the error is re-raised (RQ
     retries with backoff — never before a scanner's ``Retry-After``, which the task's timeline then records —;
     ``retry_event`` records every retry); else :meth:`Step.retries_spent`;
   * permanent error → :meth:`Step.refused`;
   * any other error → re-raised for RQ's retry; on the last attempt ``internal_failure`` fails the task.

   :meth:`Step.retries_spent` and :meth:`Step.refused` return ``None`` (handled, the job ends) or a
   :class:`Failure`: the task fails with that message and the job is dead-lettered (no RQ retry left, the
   error re-raised into RQ's FailedJobRegistry).
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from django.conf import settings
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scanners import breaker, pacing
from scanners.adapters import PermanentScannerError, TransientScannerError
from scanners.adapters.base import ScannerAdapter, ScannerError
from scanners.models import BreakerState, Health
from tasks.engine import chain, locks
from tasks.engine.common import (
    adapter_for,
    attempt_number,
    defer_retry,
    fail,
    give_up,
    not_before,
    repeat_in,
    retries_left,
)
from tasks.engine.transitions import add_event
from tasks.models import ErrorKind, EventKind, ScanTask
from tasks.queues import get_connection

log = logging.getLogger(__name__)

LAUNCH_LOCK = "scanpool:launch:{}"
# Health states only a health check clears (no trial): a claimed task is not launched there.
BLOCKING_HEALTH = (Health.AUTH_FAILED, Health.UNLICENSED)
STOP_WAITS_FOR_LAUNCH = 30  # seconds a stop waits for an in-flight launch (a crashed holder's lock is broken)


def task_lock(task_id: uuid.UUID, *, timeout: int | None = None):
    """The per-task lock held while a launch (or a stop) talks to the scanner."""
    return get_connection().lock(LAUNCH_LOCK.format(task_id), timeout=timeout or settings.SCANPOOL_STEP_TIMEOUT + 60)


def out_of_selection(task: ScanTask) -> str:
    """Why the task's assigned scanner may no longer take it ("" if it may): an operator (or a health check) took
    it out of selection since the claim — disabled, moved to another pool, login rejected (its URL or pool
    changed and its secrets were cleared) or API not licensed, breaker open, or it asked scanpool to wait
    (``Retry-After``, answered to another call since the claim) and the wait is not over. A half-open breaker's
    trial goes on: the launch is the probe."""
    scanner = task.assigned_scanner
    if not scanner.enabled:
        return "is disabled"
    if scanner.pool_id != task.pool_id:
        return "was moved to another pool"
    if scanner.health in BLOCKING_HEALTH:
        return f"has health {scanner.health} ({scanner.get_health_display()})"
    if scanner.breaker_state == BreakerState.OPEN:
        return "has its circuit breaker open"
    if (until := scanner.waiting_until) is not None:
        return f"asked scanpool to wait until {until:%H:%M:%S} UTC (HTTP 429/503 Retry-After)"
    return ""


@dataclass(frozen=True)
class Failure:
    """The task fails with ``message`` and the step's job is dead-lettered."""

    kind: str
    message: str
    data: dict | None = field(default=None)


class Step:
    """Base of the engine's steps: subclasses set the class attributes and override the domain hooks."""

    name: ClassVar[str]
    chained: ClassVar[bool] = False  # a link of the task's poll chain (tasks.engine.chain)
    lock: ClassVar[Literal["skip", "wait"] | None] = None
    breaker_gate: ClassVar[bool] = False
    retry_transient: ClassVar[bool] = True  # False: a transient error is final at once (no RQ retry)
    retry_event: ClassVar[bool] = False
    internal_failure: ClassVar[str | None] = None  # message prefix failing the task on an unexpected last error
    deadline_wakes: ClassVar[bool] = False  # the wait gate brings the step back at the task's deadline if earlier

    def __init__(self, task_id: uuid.UUID) -> None:
        self.task_id = task_id

    @classmethod
    def handle(cls, task_id: uuid.UUID) -> None:
        cls(task_id).execute()

    # -- the lifecycle ------------------------------------------------------------------------------------------
    def execute(self) -> None:
        if self.chained and not chain.is_current(self.task_id):
            log.info("task %s: %s from a replaced chain; stopping it", self.task_id, self.name)
            return
        with self._locked() as got:
            if not got:
                log.info("task %s: another %s attempt is in progress; this one stops", self.task_id, self.name)
                return
            task = self.load()
            if task is None:
                if self.chained:  # nothing left for this chain (the task ended): it ends here
                    chain.end_if_current(self.task_id)
                return
            if not self.prepare(task):
                return
            scanner = task.assigned_scanner
            if self.breaker_gate and task.scanner_scan_id is None and (why := out_of_selection(task)):
                self.scanner_unavailable(task, f"scanner {scanner.name} {why}")
                return
            if (until := scanner.waiting_until) is not None:
                self._wait_out(task, until)
                return
            with adapter_for(scanner) as adapter:
                self._run(task, adapter)

    def _run(self, task: ScanTask, adapter: ScannerAdapter) -> None:
        scanner = task.assigned_scanner
        try:
            try:
                result = self.run(task, adapter)
            except TransientScannerError as exc:
                if exc.retry_after is not None:  # the scanner asked to be left alone: no new scan to it before then
                    pacing.record_wait(scanner, exc.retry_after)
                if breaker.record_failure(scanner, exc, task.id) == BreakerState.OPEN and self.breaker_opened(
                    task, exc
                ):
                    return
                if self.retry_transient and retries_left() > 0:
                    self._retry_event(task, exc)
                    raise
                self._apply(task, self.retries_spent(task, adapter, exc), exc)
                return
            except PermanentScannerError as exc:
                self._apply(task, self.refused(task, adapter, exc), exc)
                return
            breaker.record_success(scanner, task.id)
            self.succeeded(task, adapter, result)
        except ScannerError:
            raise  # mapped above
        except (RedisConnectionError, RedisTimeoutError):
            raise  # Redis went away: not the step's fault; the worker waits for it and hands the job back
        except Exception as exc:
            # Anything unexpected (disk full, a bug): RQ retries the step; the last attempt fails the task, so the
            # reconciler does not start the same doomed step again and again.
            if self.internal_failure and retries_left() == 0:
                status = task.status
                task.refresh_from_db()
                if task.status == status:
                    fail(task, ErrorKind.INTERNAL, f"{self.internal_failure}: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.cleanup(task)

    def _wait_out(self, task: ScanTask, until: datetime) -> None:
        """The scanner asked to be left alone until ``until``: this job comes back then (or at the task's deadline,
        for ``deadline_wakes`` steps, if that is earlier), and the scanner is not called now."""
        due = until
        if self.deadline_wakes and task.deadline_at is not None:
            due = min(due, task.deadline_at)
        delay = not_before((due - timezone.now()).total_seconds())
        name = task.assigned_scanner.name
        if repeat_in(delay):
            log.info("task %s: %s not run now: scanner %s asked scanpool to wait until %s UTC (Retry-After); "
                     "again in %ss", task.id, self.name, name, f"{until:%H:%M:%S}", delay)
        else:  # called outside an RQ job (a test, a command): nothing to bring back; the reconcile follows the task
            log.info("task %s: %s not run: scanner %s asked scanpool to wait until %s UTC (Retry-After)",
                     task.id, self.name, name, f"{until:%H:%M:%S}")

    def _retry_event(self, task: ScanTask, exc: TransientScannerError) -> None:
        """RQ is about to retry the step: no sooner than the scanner's Retry-After, if it sent one, and the task's
        timeline and the log say so (the wait is the scanner's request, not an unexplained delay); ``retry_event``
        steps record every retry. A wait of another step (a poll, say) is a ``warning`` event: the step goes on, nothing
        is tried again from the start."""
        waits = exc.retry_after is not None and defer_retry(exc.retry_after) is not None
        if not (waits or self.retry_event):
            return
        attempt, name = attempt_number(), task.assigned_scanner.name
        data: dict[str, Any] = {"attempt": attempt, "error": str(exc)}
        message = f"{self.name} attempt {attempt} on {name} failed ({exc}); retrying"
        if waits:
            due = timezone.now() + timedelta(seconds=exc.retry_after)
            data.update(retry_after=exc.retry_after, status_code=exc.status_code, not_before=due.isoformat())
            message = (f"scanner {name} asked scanpool to wait {math.ceil(exc.retry_after)}s before calling it again "
                       f"(HTTP {exc.status_code} Retry-After) during {self.name} attempt {attempt}; the next attempt "
                       f"comes no earlier than {due:%H:%M:%S} UTC")
            log.info("task %s: %s", task.id, message)
        add_event(task.id, message, kind=EventKind.RETRY if self.retry_event else EventKind.WARNING, data=data)

    @staticmethod
    def _apply(task: ScanTask, outcome: Failure | None, exc: ScannerError) -> None:
        if outcome is None:
            return
        fail(task, outcome.kind, outcome.message, data=outcome.data)
        give_up()
        raise exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        if self.lock is None:
            yield True
            return
        lock = task_lock(self.task_id)
        if self.lock == "skip":
            got = locks.acquire(lock)
        else:  # let an in-flight launch finish first (seconds); a lock left by a crashed holder is broken
            got = locks.acquire(lock, blocking=True, blocking_timeout=STOP_WAITS_FOR_LAUNCH)
        try:
            yield got or self.lock == "wait"
        finally:
            if got:
                with contextlib.suppress(LockError):
                    locks.release(lock)  # Redis gone meanwhile: released as soon as it is back (after_outage)

    # -- the domain hooks ---------------------------------------------------------------------------------------
    def load(self) -> ScanTask | None:
        """The task, or ``None`` when the step has nothing to do for it."""
        raise NotImplementedError

    def prepare(self, task: ScanTask) -> bool:
        """Checks before the scanner is called; ``False`` ends the step (the hook did what was needed)."""
        return True

    def scanner_unavailable(self, task: ScanTask, why: str) -> None:
        """``breaker_gate`` steps: nothing created yet and the scanner is out of selection."""

    def run(self, task: ScanTask, adapter: ScannerAdapter) -> Any:
        """The step's calls to the scanner; scanner errors are mapped by :meth:`execute`."""
        raise NotImplementedError

    def succeeded(self, task: ScanTask, adapter: ScannerAdapter, result: Any) -> None:
        """After :meth:`run` returned (the breaker already counted the success)."""

    def breaker_opened(self, task: ScanTask, exc: TransientScannerError) -> bool:
        """This failure opened the scanner's breaker; ``True`` ends the step (nothing re-raised)."""
        return False

    def retries_spent(self, task: ScanTask, adapter: ScannerAdapter, exc: TransientScannerError) -> Failure | None:
        """A transient error and no RQ retry left (or ``retry_transient`` is off)."""
        return None

    def refused(self, task: ScanTask, adapter: ScannerAdapter, exc: PermanentScannerError) -> Failure | None:
        """A permanent error from the scanner."""
        return Failure(ErrorKind.PERMANENT, f"scanner {task.assigned_scanner.name} refused the {self.name}: "
                       f"{exc.message}")

    def cleanup(self, task: ScanTask) -> None:
        """Runs after :meth:`run` whatever happened (e.g. a temporary file)."""
