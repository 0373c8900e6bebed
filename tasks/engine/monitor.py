"""Steps that follow a launched scan: ``poll`` (re-scheduled at the pool's poll interval), ``finish``
(export → ingest → completed/failed) and ``stop`` (a cancelled task's scan stopped on its scanner).

The poll that sees the scan completed records it on the row (``scanner_status``) in an UPDATE that is
conditional on the task still running, and only then schedules ``finish``: from that commit on the task is
*finishing* and a cancel is refused (``tasks.services.cancel`` checks the same column in its own conditional
UPDATE), so a task is never both cancelled and storing results. A cancel that came first makes that UPDATE
miss: the poll ends there, and the stop step says the scan had completed, not that it was stopped.

A poll whose scanner is unreachable is retried with backoff (RQ ``Retry``) and counted by the breaker;
when the retries are spent the task is *not* failed — the scan may still be running there — polling
just goes on at the normal interval until the scanner answers or the task's deadline passes; the timeline says so
once per outage, and once that the scanner answered again (:mod:`tasks.engine.poll_failing`). So does a poll
(or export) the scanner refuses scanner-wide — login rejected (say its URL changed and its secrets were cleared,
or its keys were revoked), API not licensed: the scanner is flagged, and the scan, which may well still run
there, keeps its slot (``SCANNER_WIDE``). A finish whose retries are spent (the scan completed; its export fails)
is tried again with growing backoff until the deadline: :mod:`tasks.engine.export_retry`.
Each step is a :class:`tasks.engine.runner.Step`: the runner owns the chain check, lock and error mapping.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from scanners.adapters import PermanentScannerError, ResultsTooLargeError, ScanState, TransientScannerError
from scanners.adapters.base import ScannerAdapter, ScannerError, ScanNotFoundError
from tasks.engine import chain, export_retry, poll_failing, settle
from tasks.engine.common import SCANNER_WIDE, adapter_for, fail, flag_scanner, give_up, later, quietly
from tasks.engine.runner import Failure, Step
from tasks.engine.transitions import add_event, release_and_dispatch, transition
from tasks.models import AuthStatus, ErrorKind, EventKind, ScanTask, TaskStatus
from tasks.models.states import SCAN_COMPLETED_STATUSES
from tasks.queues import pool_queue, step_retry
from tasks.results.ingest import after_bulk_load, discard_results, ingest_results  # parse, validate, store
from tasks.results.parser import NessusParseError

log = logging.getLogger(__name__)


class _RunningStep(Step):
    """A step of a launched scan's chain: runs only while the task is running."""

    chained = True

    def load(self) -> ScanTask | None:
        task = ScanTask.objects.select_related("pool", "assigned_scanner").filter(pk=self.task_id).first()
        if task is None or task.status != TaskStatus.RUNNING:
            return None
        return task


class Poll(_RunningStep):
    name = "poll"
    deadline_wakes = True  # a poll held off by the scanner's Retry-After still comes at the deadline to time out

    def prepare(self, task: ScanTask) -> bool:
        self.now = timezone.now()
        if task.deadline_at and self.now >= task.deadline_at:
            _timeout(task)
            return False
        return True

    def run(self, task: ScanTask, adapter: ScannerAdapter) -> ScanState | None:
        """The scan's state, or ``None`` when the scan id now names another scan (the task failed)."""
        state = adapter.scan_state(task.scanner_scan_id)
        if task.scanner_scan_uuid and state.uuid and state.uuid != task.scanner_scan_uuid:
            _scan_replaced(task, state)
            return None
        if not state.launched:  # created, never started: its launch answer was lost before it got there
            launched = adapter.launch_scan(task.scanner_scan_id)
            ScanTask.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).update(scanner_scan_uuid=launched.scan_uuid)
            add_event(task.id, f"scan {task.scanner_scan_id} had not started on {task.assigned_scanner.name}: "
                      "launched it")
            state = ScanState(status="pending", progress=0)
        return state

    def succeeded(self, task: ScanTask, adapter: ScannerAdapter, state: ScanState | None) -> None:
        if state is None:
            return
        poll_failing.poll_answered(task)
        if not _record_progress(task, state, self.now):  # cancelled meanwhile: its stop step takes over
            log.info("task %s: no longer running (scan %s %s); this poll stops", task.id, task.scanner_scan_id,
                     state.status)
            return
        if not state.terminal:
            chain.schedule(task.pool, task.id, "poll", delay=task.pool.poll_interval_seconds)
        elif state.status in SCAN_COMPLETED_STATUSES:
            chain.schedule(task.pool, task.id, "finish")
        else:
            fail(task, ErrorKind.SCAN, f"the scan ended as '{state.status}' on scanner {task.assigned_scanner.name} "
                 "(stopped or aborted there, not by scanpool)", data={"scanner_status": state.status})

    def retries_spent(self, task: ScanTask, adapter: ScannerAdapter, exc: ScannerError,
                      what: str = "unreachable") -> None:
        # The scan may still be running there: keep following it at the normal interval until the deadline.
        interval = task.pool.poll_interval_seconds
        ScanTask.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).update(last_polled_at=self.now)
        delay = later(interval, exc)  # never before its Retry-After
        poll_failing.poll_failed(task, exc, what, interval, delay)  # one timeline warning per outage
        chain.schedule(task.pool, task.id, "poll", delay=delay)

    def refused(self, task: ScanTask, adapter: ScannerAdapter, exc: PermanentScannerError) -> Failure | None:
        if isinstance(exc, SCANNER_WIDE):  # the scanner refuses us, not the scan: it may well still run there
            flag_scanner(task.assigned_scanner, exc)
            self.retries_spent(task, adapter, exc, what="refuses scanpool's calls")
            return None
        return Failure(ErrorKind.PERMANENT,
                       f"scanner {task.assigned_scanner.name} lost scan {task.scanner_scan_id}: {exc.message}")


poll = Poll.handle


def _scan_replaced(task: ScanTask, state: ScanState) -> None:
    """The scan id now names another scan (run uuid differs): the scanner was restarted or reset and reused
    the id. Never follow, stop or export that other scan: the task fails, its slot is released."""
    scanner = task.assigned_scanner
    fail(task, ErrorKind.SCAN, f"scanner {scanner.name} lost scan {task.scanner_scan_id}: that id now belongs to "
         f"another scan (run {state.uuid}, ours was {task.scanner_scan_uuid}); the scanner was probably restarted "
         "or reset. Retry the task to scan again.",
         data={"scan_id": task.scanner_scan_id, "expected_uuid": task.scanner_scan_uuid, "found_uuid": state.uuid})


def _record_progress(task: ScanTask, state: ScanState, now) -> bool:
    """One UPDATE per poll: when it was polled (the reconciler's sign of a live chain), progress, status.
    False when the task is no longer running (nothing written): a cancel came first."""
    progress = max(0, min(100, int(state.progress)))
    fields = {"last_polled_at": now}
    if progress != task.progress or state.status != task.scanner_status:
        fields.update(progress=progress, scanner_status=state.status, updated_at=now)
    if ScanTask.objects.filter(pk=task.pk, status=TaskStatus.RUNNING).update(**fields) != 1:
        return False
    if "progress" not in fields:
        return True
    if state.status != task.scanner_status or progress // 25 > task.progress // 25:
        add_event(task.id, f"{state.status}, {progress}%", kind=EventKind.PROGRESS,
                  data={"progress": progress, "scanner_status": state.status})
    return True


def _timeout(task: ScanTask) -> None:
    scanner = task.assigned_scanner
    scan = f"scan {task.scanner_scan_id}"
    if task.is_finishing:  # the scan completed there; fetching its results kept failing: nothing to stop
        message = (f"{export_retry.fetch_deadline(task)} passed before the results could be fetched ({scan} had "
                   f"completed on {scanner.name}; its results stay there: "
                   + export_retry.FETCH_AGAIN.format(task=task.id) + ")")
    elif (until := scanner.waiting_until) is not None:  # not called before the wait it asked for: settle stops it
        message = (f"deadline of {task.timeout_seconds}s passed at {task.progress}% ({scan} not stopped yet on "
                   f"{scanner.name}: it asked scanpool to wait until {until:%H:%M:%S} UTC; it is stopped then)")
    else:
        with adapter_for(scanner) as adapter:
            message = f"deadline of {task.timeout_seconds}s passed at {task.progress}% ({_stop_now(task, adapter)})"
    # The scan may still run there (a stop refused or not yet effective): the slot is held until a poll
    # sees it inactive, at most SCANPOOL_STOP_GRACE seconds (tasks.engine.settle).
    if transition(task.id, expect=TaskStatus.RUNNING, to=TaskStatus.TIMEOUT, message=message,
                  release_slot=task.is_finishing, fields={"error_kind": ErrorKind.TIMEOUT, "error_message": message}):
        if not task.is_finishing:
            settle.begin(task)


def _stop_now(task: ScanTask, adapter: ScannerAdapter) -> str:
    """Stop the task's scan (best effort); what happened, for the task's message."""
    scan, name = f"scan {task.scanner_scan_id}", task.assigned_scanner.name
    try:
        asked = adapter.stop_scan(task.scanner_scan_id)
    except ScannerError as exc:
        add_event(task.id, f"could not stop {scan} on {name}: {exc}", kind=EventKind.WARNING)
        log.warning("task %s: could not stop %s on %s: %s", task.id, scan, name, exc)
        return f"{scan} could not be stopped on {name}"
    return f"{scan} stopped on {name}" if asked else f"{scan} was no longer active on {name}"


class Finish(_RunningStep):
    """Export → ingest → completed/failed; the scan is deleted on the scanner when so configured.

    A fetch asked again (:mod:`tasks.refetch`, maybe days after the scan) first checks that the scan id still names
    the completed run of this task: a scanner reset since may have given the id to another scan, whose results must
    never be stored as this task's."""

    name = "finish"
    internal_failure = "finishing failed"

    def prepare(self, task: ScanTask) -> bool:
        tmp_dir = Path(settings.SCANPOOL_RESULTS_DIR) / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.path = tmp_dir / f"{task.id}-{uuid.uuid4().hex[:12]}.nessus"
        self.recheck = export_retry.fetch_requested_at(task) is not None
        return True

    def run(self, task: ScanTask, adapter: ScannerAdapter) -> str | None:
        """``None`` when exported; else why the scan there is no longer this task's completed scan."""
        if self.recheck and (problem := _not_the_completed_scan(task, adapter.scan_state(task.scanner_scan_id))):
            return problem
        adapter.export_results(task.scanner_scan_id, self.path)
        return None

    def succeeded(self, task: ScanTask, adapter: ScannerAdapter, problem: str | None) -> None:
        if problem:
            fail(task, ErrorKind.SCAN, problem)
            return
        export_retry.export_recovered(task)
        _ingest(task, self.path)
        self.path.unlink(missing_ok=True)
        if settings.SCANPOOL_DELETE_FINISHED_SCANS:
            quietly(task.id, f"delete scan {task.scanner_scan_id} on {task.assigned_scanner.name}",
                    adapter.delete_scan, task.scanner_scan_id)

    def retries_spent(self, task: ScanTask, adapter: ScannerAdapter, exc: ScannerError) -> None:
        # The results exist only on the scanner: again later with growing backoff, until the deadline.
        export_retry.export_failed(task, exc)

    def refused(self, task: ScanTask, adapter: ScannerAdapter, exc: PermanentScannerError) -> Failure | None:
        if isinstance(exc, SCANNER_WIDE):  # not about this export: again later, until the deadline
            flag_scanner(task.assigned_scanner, exc)
            return self.retries_spent(task, adapter, exc)
        if isinstance(exc, ResultsTooLargeError):  # our cap, not the scanner's refusal
            return Failure(ErrorKind.RESULTS, exc.message)
        if isinstance(exc, ScanNotFoundError):  # deleted there (by hand, a clean-up, a reinstall): nothing to fetch
            return Failure(ErrorKind.PERMANENT, f"scan {task.scanner_scan_id} is no longer on scanner "
                           f"{task.assigned_scanner.name} ({exc.message}): its results are gone; retry the task to "
                           "scan again")
        return Failure(ErrorKind.RESULTS, f"scanner {task.assigned_scanner.name} refused the export: {exc.message}")

    def cleanup(self, task: ScanTask) -> None:
        self.path.unlink(missing_ok=True)


finish = Finish.handle


def _not_the_completed_scan(task: ScanTask, state: ScanState) -> str:
    """Why the scan under the task's id is no longer its completed scan ("" when it is)."""
    scan, name = f"scan {task.scanner_scan_id}", task.assigned_scanner.name
    if task.scanner_scan_uuid and state.uuid and state.uuid != task.scanner_scan_uuid:
        return (f"scanner {name} lost {scan}: that id now belongs to another scan (run {state.uuid}, ours was "
                f"{task.scanner_scan_uuid}); its results are gone; retry the task to scan again")
    if state.status not in SCAN_COMPLETED_STATUSES:
        return (f"{scan} is {state.status} on {name}, no longer the completed scan: its results cannot be fetched; "
                "retry the task to scan again")
    return ""


def _ingest(task: ScanTask, path: Path) -> None:
    try:
        outcome = ingest_results(task.id, path)
    except NessusParseError as exc:
        fail(task, ErrorKind.RESULTS, f"the scanner's export could not be parsed: {exc}")
        give_up()
        raise
    summary = {"hosts": outcome.hosts, "findings": outcome.findings, "auth_status": outcome.auth_status}
    if outcome.should_fail:
        kind = ErrorKind.AUTHENTICATION if outcome.auth_status in (AuthStatus.FAILED, AuthStatus.PARTIAL) \
            else ErrorKind.RESULTS
        message = outcome.failure_message or "the results failed validation"
        ended = transition(task.id, expect=TaskStatus.RUNNING, to=TaskStatus.FAILED, message=message, data=summary,
                           fields={"error_kind": kind, "error_message": message[:5000], "progress": 100})
    else:
        ended = transition(task.id, expect=TaskStatus.RUNNING, to=TaskStatus.COMPLETED, data=summary,
                           message=f"completed: {outcome.hosts} hosts, {outcome.findings} findings, "
                           f"authentication {outcome.auth_status}", fields={"progress": 100})
    if not ended and _results_unwanted(task.id):
        return
    try:  # the task is finished and its results visible: the database's upkeep after a big load comes last
        after_bulk_load(outcome)
    except DatabaseError as exc:  # autovacuum will do it later; the results are complete either way
        log.warning("task %s: VACUUM (ANALYZE) of the findings after %d rows failed: %s", task.id,
                    outcome.findings, exc)


def _results_unwanted(task_id: uuid.UUID) -> bool:
    """The task ended otherwise while its results were stored (cancelled or timed out: a finishing task refuses
    the cancel, so this is a guard): its results are discarded, never left on a task that did not complete."""
    status = ScanTask.objects.filter(pk=task_id).values_list("status", flat=True).first()
    if status not in (TaskStatus.CANCELLED, TaskStatus.TIMEOUT):
        return False
    discard_results(task_id)
    add_event(task_id, f"results discarded: the task ended {status} while they were being stored",
              kind=EventKind.WARNING)
    log.warning("task %s ended %s while its results were stored: discarded", task_id, status)
    return True


class Stop(Step):
    """A cancelled task: stop its scan on the scanner (best effort); its slot is released once the scan is seen
    inactive there (:mod:`tasks.engine.settle`), or at once when nothing was created on a scanner.

    A scan created but never launched (its launch failed and waits for its retry, or died after the create) is
    deleted. A task whose launch died while creating its scan (``scanner_status='creating'``, no scan id on the
    row) may still have one there, created by the request in flight: it is looked up by the task id in its name
    (never launched: the launch records the id first) and deleted too. A cancelled task leaves no scan behind."""

    name = "stop"
    lock = "wait"  # let an in-flight launch finish first (seconds); a crashed launch's lock is not waited for long

    def load(self) -> ScanTask | None:
        task = ScanTask.objects.select_related("assigned_scanner").filter(pk=self.task_id).first()
        return task if task is not None and task.slot_held else None

    def prepare(self, task: ScanTask) -> bool:
        if task.assigned_scanner is not None and (task.scanner_scan_id or task.scanner_status == "creating"):
            return True
        release_and_dispatch(task.id)
        return False

    def run(self, task: ScanTask, adapter: ScannerAdapter) -> ScanState | int | None:
        """``None`` when the scan was asked to stop; else it was no longer active: its state, to say how it ended.
        No scan id on the row (its launch died while creating it): the id of the scan deleted (0: none found)."""
        if task.scanner_scan_id is None:
            found = adapter.find_scan_for_task(task.id, unlaunched=True)
            if found is None:
                return 0
            adapter.delete_scan(found.scan_id)
            return found.scan_id
        if adapter.stop_scan(task.scanner_scan_id):
            return None
        state = adapter.scan_state(task.scanner_scan_id)
        if not state.launched:  # created, never launched (its launch failed or died after the create): remove it
            adapter.delete_scan(task.scanner_scan_id)
        return state

    def succeeded(self, task: ScanTask, adapter: ScannerAdapter, ended: ScanState | int | None) -> None:
        scan, name = f"scan {task.scanner_scan_id}", task.assigned_scanner.name
        if isinstance(ended, int):  # never launched: nothing to wait for
            add_event(task.id, f"scan {ended} created by its interrupted launch deleted on {name}" if ended else
                      f"no scan of its interrupted launch found on {name}")
            release_and_dispatch(task.id)
            return
        if ended is not None and not ended.launched:
            add_event(task.id, f"{scan} had been created on {name} but never launched: deleted")
            release_and_dispatch(task.id)
            return
        if ended is None:
            add_event(task.id, f"{scan} stopped on {name}")
        elif ended.status in SCAN_COMPLETED_STATUSES:  # before any poll saw it: the cancel won, nothing is fetched
            add_event(task.id, f"the cancel arrived after {scan} had already completed on {name}: nothing to stop; "
                      "its results were not fetched", data={"scanner_status": ended.status})
        else:
            add_event(task.id, f"{scan} was already {ended.status} on {name}: nothing to stop",
                      data={"scanner_status": ended.status})
        settle.begin(task)

    def retries_spent(self, task: ScanTask, adapter: ScannerAdapter, exc: TransientScannerError) -> None:
        self._not_stopped(task, exc)

    def refused(self, task: ScanTask, adapter: ScannerAdapter, exc: PermanentScannerError) -> None:
        self._not_stopped(task, exc)

    @staticmethod
    def _not_stopped(task: ScanTask, exc: Exception) -> None:
        scan, name = f"scan {task.scanner_scan_id}", task.assigned_scanner.name
        if task.scanner_scan_id is None:  # the settle step releases the slot: nothing was launched
            add_event(task.id, f"could not remove the scan its interrupted launch may have created on {name}: {exc}",
                      kind=EventKind.WARNING)
        elif isinstance(exc, ScanNotFoundError):
            add_event(task.id, f"{scan} is gone from {name}: nothing to stop")
        else:
            add_event(task.id, f"could not stop {scan} on {name}: {exc}", kind=EventKind.WARNING)
        settle.begin(task)


stop = Stop.handle

# By dotted name, as the engine enqueues its steps (tasks.jobs imports the engine, never the reverse).
STOP_FUNC = "tasks.jobs.stop"


def stop_job_id(task_id: uuid.UUID) -> str:
    return f"{task_id}-stop"


def enqueue_stop(pool_id: int, task_id: uuid.UUID) -> None:
    """The stop step of a cancelled task, on its pool's step queue (the cancel, or the reconcile when it was lost)."""
    pool_queue(pool_id).enqueue(
        STOP_FUNC, str(task_id), job_id=stop_job_id(task_id), retry=step_retry(), result_ttl=600,
        failure_ttl=settings.SCANPOOL_FAILURE_TTL, job_timeout=settings.SCANPOOL_STEP_TIMEOUT * 2,
        description=f"stop task {task_id}",
    )
