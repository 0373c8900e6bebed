"""The small interface every scanner kind implements, and the typed errors it raises.

Callers (the dispatch engine) only ever see these types: a :class:`TransientScannerError` is worth
retrying later (connection refused, timeout, 5xx, 429) and counts against the scanner's circuit
breaker; a :class:`PermanentScannerError` will not get better by retrying (401 after re-login, 403,
404, 409, 412 unlicensed, unknown template, invalid targets) and fails the task with its message.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# -------------------------------------------------------------------------------------------- errors


class ScannerError(Exception):
    """Base of every adapter error. ``message`` is written for the user who has to act on it."""

    transient: bool = False

    def __init__(self, message: str, *, status_code: int | None = None, scanner: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.scanner = scanner
        # Seconds the scanner asked scanpool to wait before calling it again (a 429/503 ``Retry-After``, capped);
        # None: it asked nothing. The engine schedules the step's next attempt no earlier than this.
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.scanner}: " if self.scanner else ""
        return f"{prefix}{self.message}"


class TransientScannerError(ScannerError):
    """Connection error, timeout, 5xx, 429: retry with backoff (never before ``retry_after``); counts for the
    circuit breaker."""

    transient = True


class PermanentScannerError(ScannerError):
    """Retrying will not help: the task fails with this message."""


class ScannerAuthError(PermanentScannerError):
    """The scanner rejected scanpool's own API keys or login (after one re-login)."""


class ScannerUnlicensedError(PermanentScannerError):
    """The scanner's licence has no scan API (HTTP 412 'API is not available')."""


class ScannerNotReadyError(TransientScannerError):
    """The scanner answers but is not ready (e.g. plugins compiling)."""


class ScanNotFoundError(PermanentScannerError):
    """The scan id is unknown to the scanner (deleted there, or a different scanner)."""


class TemplateNotFoundError(PermanentScannerError):
    """The scan template named for this scan type does not exist on the scanner."""


class InvalidScanRequestError(PermanentScannerError):
    """The scanner refused the scan definition (bad targets, bad credentials format…)."""


class ResultsTooLargeError(PermanentScannerError):
    """The scanner's export is larger than the configured cap (``SCANPOOL_MAX_RESULT_BYTES``)."""


class ScanConflictError(PermanentScannerError):
    """HTTP 409: the scan is not in a state that allows the call (e.g. launch of a running scan)."""


class ScanExportError(TransientScannerError):
    """The scanner failed to prepare the export (status "error", or not ready in time); retrying may help."""


# ----------------------------------------------------------------------------------------- values

# Scan names carry the task id, so any scan on a scanner can be traced back to its task.
SCAN_NAME_TAG = "scanpool:"
# At the end, where scan_name_for puts it: an earlier "[scanpool:…]" is part of the name a client typed and claims
# nothing (else a crafted name would have an interrupted launch of that task adopt the client's scan).
_TASK_ID_RE = re.compile(r"\[scanpool:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\]\s*\Z")


def scan_name_for(task_id: uuid.UUID | str, name: str) -> str:
    """``"<name> [scanpool:<task id>]"`` — the name a scanpool scan carries on the scanner."""
    return f"{name} [{SCAN_NAME_TAG}{task_id}]"


def task_id_from_scan_name(scan_name: str) -> uuid.UUID | None:
    match = _TASK_ID_RE.search(scan_name or "")
    return uuid.UUID(match.group(1)) if match else None


# Nessus statuses (DESIGN §5). "empty" is a scan created but never launched.
# "pausing" and "canceling" are transient like "paused" and "stopping": keep polling. "aborted" ends a scan
# without usable results; "imported" is a finished scan with results (like "completed").
RUNNING_STATES = frozenset(
    {"pending", "running", "pausing", "paused", "resuming", "stopping", "canceling", "processing"}
)
TERMINAL_STATES = frozenset({"completed", "canceled", "aborted", "imported"})
NOT_LAUNCHED_STATES = frozenset({"empty"})


@dataclass(frozen=True)
class HealthReport:
    status: str  # a scanners.models.Health value
    detail: str = ""
    version: str = ""
    license: dict[str, Any] = field(default_factory=dict)
    # Seconds the scanner asked scanpool to wait (a 429/503 ``Retry-After`` answered to the check, capped); None:
    # it asked nothing. ``scanners.health`` records it on the row as for any other call.
    retry_after: float | None = None
    # Set by ``scanners.health.check_health`` only: the scanner waits out a Retry-After until then — it was not
    # called, or it answered this check asking to wait —, and the status is the one last recorded.
    waiting_until: datetime | None = None


@dataclass(frozen=True)
class ScanSpec:
    task_id: uuid.UUID
    name: str  # the user's scan name; the adapter tags it with the task id
    targets: list[str]
    scan_type: str  # a tasks.models.ScanType value
    credentials: dict[str, Any] | None = None
    description: str = ""

    def __repr__(self) -> str:  # never show credentials
        return f"ScanSpec(task_id={self.task_id}, name={self.name!r}, scan_type={self.scan_type!r})"


@dataclass(frozen=True)
class LaunchedScan:
    scan_id: int
    scan_uuid: str = ""


@dataclass(frozen=True)
class ScanState:
    status: str  # the scanner's raw status, e.g. "running"
    progress: int  # 0..100
    uuid: str = ""  # the uuid of the scan's current run (Nessus ``info.uuid``; the launch's ``scan_uuid``)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def launched(self) -> bool:
        return self.status not in NOT_LAUNCHED_STATES


@dataclass(frozen=True)
class RemoteScan:
    """A scan as listed by the scanner (used by reconcile to find orphans)."""

    scan_id: int
    name: str
    status: str
    task_id: uuid.UUID | None


class ScannerAdapter(ABC):
    """One scanner's API. Methods raise :class:`ScannerError` subclasses only."""

    @abstractmethod
    def health(self) -> HealthReport:
        """Never raises: an unreachable scanner is a report with status ``unreachable``."""

    @abstractmethod
    def create_scan(self, spec: ScanSpec) -> int:
        """Create (not launch) the scan; return the scanner-side scan id."""

    @abstractmethod
    def launch_scan(self, scan_id: int) -> LaunchedScan:
        """Launch a created scan. Never retried blindly: a lost answer is resolved with :meth:`scan_state`."""

    @abstractmethod
    def scan_state(self, scan_id: int) -> ScanState:
        """Status and progress of a scan."""

    @abstractmethod
    def stop_scan(self, scan_id: int) -> bool:
        """Ask the scanner to stop a running scan: True when asked; False, and no error, when the scan had already
        ended or is gone (nothing to stop: the caller reads its state to say which end it met)."""

    @abstractmethod
    def export_results(self, scan_id: int, destination: Path) -> Path:
        """Export the scan as ``.nessus`` and stream it to ``destination``."""

    @abstractmethod
    def delete_scan(self, scan_id: int) -> None:
        """Delete the scan on the scanner (no error if it is already gone)."""

    @abstractmethod
    def list_scans(self) -> list[RemoteScan]:
        """Every scan on the scanner, with the scanpool task id parsed from its name where present."""

    def find_scan_for_task(self, task_id: uuid.UUID, *, unlaunched: bool = False) -> RemoteScan | None:
        """The scanner-side scan created for ``task_id``, if any (recovery after a crash): the newest when several
        carry its id (a retried task's earlier attempts keep theirs unless finished scans are deleted).

        ``unlaunched``: only a scan never launched (``empty``). A launch interrupted while creating its scan is
        looking for a scan it has not launched yet; a launched one with the task's id is an earlier attempt's."""
        found = [scan for scan in self.list_scans() if scan.task_id == task_id
                 and not (unlaunched and scan.status not in NOT_LAUNCHED_STATES)]
        return max(found, key=lambda scan: scan.scan_id, default=None)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
