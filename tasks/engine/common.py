"""Helpers shared by the step modules: the current RQ job's retry budget and timing (a scanner's Retry-After),
failing a task, scan specs."""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Iterator

from rq import get_current_job

from scanners import health
from scanners.adapters import ScanSpec, get_adapter
from scanners.adapters.base import ScannerAdapter, ScannerAuthError, ScannerError, ScannerUnlicensedError
from scanners.models import Health, Scanner
from tasks.engine.transitions import add_event, transition
from tasks.models import EventKind, ScanTask

log = logging.getLogger(__name__)


def retries_left() -> int:
    """Retries RQ still holds for the running job (0 outside a job: the caller is the last attempt)."""
    job = get_current_job()
    return int(job.retries_left or 0) if job is not None else 0


def attempt_number() -> int:
    job = get_current_job()
    if job is None or job.retries_left is None:
        return 1
    intervals = job.retry_intervals or []
    return len(intervals) - int(job.retries_left) + 1 if intervals else 1


def not_before(seconds: float) -> int:
    """A delay for RQ (``enqueue_in``, a retry interval) that runs a job no earlier than ``seconds`` from now: RQ's
    scheduler keeps whole seconds and truncates, so a job due in 2.3 s could run after 2 s — hence ceil + 1."""
    return math.ceil(max(0.0, seconds)) + 1


def later(delay: float, error: BaseException | None) -> float:
    """``delay``, or longer when ``error`` carries a scanner's ``Retry-After`` (no call before it has passed)."""
    asked = getattr(error, "retry_after", None)
    return delay if asked is None else max(delay, not_before(asked))


def defer_retry(seconds: float) -> int | None:
    """Make the running job's next RQ retry come no earlier than ``seconds`` from now (a scanner's Retry-After):
    the retry interval RQ is about to use is raised to it. The interval set, or None outside a job / no retry
    left. (RQ takes ``retry_intervals[len - retries_left]`` of this very job object when the error reaches it.)"""
    job = get_current_job()
    if job is None or not job.retries_left:
        return None
    intervals = list(job.retry_intervals or [0])
    index = max(len(intervals) - int(job.retries_left), 0)
    intervals[index] = max(int(intervals[index] or 0), not_before(seconds))
    job.retry_intervals = intervals
    return intervals[index]


def repeat_in(seconds: int) -> bool:
    """Have RQ run the running job again, under the same job id, ``seconds`` from now once it returns (RQ's
    ``Repeat``, set on this very job object): no retry is spent and no failure recorded. False outside a job."""
    job = get_current_job()
    if job is None:
        return False
    job.repeats_left, job.repeat_intervals = 1, [max(1, int(seconds))]
    return True


def give_up() -> None:
    """The error about to be raised is final: no RQ retry, straight to the FailedJobRegistry."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


def fail(task: ScanTask, kind: str, message: str, *, data: dict | None = None) -> bool:
    """queued|running → failed with ``error_kind``/``error_message``; the slot is released."""
    return transition(
        task.id, expect=task.status, to="failed", message=message, data=data,
        fields={"error_kind": kind, "error_message": message[:5000]},
    )


def scan_spec(task: ScanTask) -> ScanSpec:
    return ScanSpec(
        task_id=task.id, name=task.name, targets=list(task.targets), scan_type=task.scan_type,
        credentials=task.credentials or None, description=task.description,
    )


# Permanent errors about the scanner as a whole, not about one scan: the scan may well still run there.
SCANNER_WIDE = (ScannerAuthError, ScannerUnlicensedError)


def flag_scanner(scanner: Scanner, error: ScannerError) -> None:
    """Scanner-wide permanent problems take the scanner out of selection until a health check clears it."""
    if isinstance(error, ScannerUnlicensedError):
        health.flag(scanner, Health.UNLICENSED, str(error))
    elif isinstance(error, ScannerAuthError):
        health.flag(scanner, Health.AUTH_FAILED, str(error))


def quietly(task_id: uuid.UUID, what: str, func, *args) -> bool:
    """Best-effort scanner call (stop, delete): errors become a warning event, never an exception."""
    try:
        func(*args)
        return True
    except ScannerError as exc:
        add_event(task_id, f"could not {what}: {exc}", kind=EventKind.WARNING)
        log.warning("task %s: could not %s: %s", task_id, what, exc)
        return False


# Adapters kept between steps in this process, per scanner: a worker polls the same scanners all the time,
# and a fresh adapter per step cost a new HTTP connection each time. Keyed by the scanner's connection
# fields and ``updated_at`` (any save of the row, e.g. new credentials or URL, makes a new adapter).
_adapters: dict[int, tuple[tuple, ScannerAdapter]] = {}
_MAX_ADAPTERS = 256


def _fingerprint(scanner: Scanner) -> tuple:
    return (scanner.kind, scanner.url, scanner.verify_tls, scanner.updated_at)


@contextlib.contextmanager
def adapter_for(scanner: Scanner) -> Iterator[ScannerAdapter]:
    """The scanner's adapter for one step, reused by the next step of this process while the row is unchanged.
    An adapter whose step ended with an exception is closed and not reused."""
    key = _fingerprint(scanner)
    cached = _adapters.pop(scanner.pk, None)
    if cached is not None and cached[0] == key:
        adapter = cached[1]
    else:
        if cached is not None:
            cached[1].close()
        # One retry layer: a step's transient failure is retried by RQ (SCANPOOL_RETRY_INTERVALS, each attempt
        # counted by the breaker), so the HTTP client does not retry inside a step (it did: up to 3 x 4 tries).
        adapter = get_adapter(scanner, retries=0)
    try:
        yield adapter
    except BaseException:
        adapter.close()
        raise
    if len(_adapters) >= _MAX_ADAPTERS:
        _adapters.pop(next(iter(_adapters)))[1].close()
    _adapters[scanner.pk] = (key, adapter)
