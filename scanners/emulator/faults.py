"""Fault knobs of one emulated scanner instance.

Every knob can be set at start-up (``manage.py nessus_emulator --latency 0.2 …``) and changed at run
time through the control API (``POST /_emulator/faults`` with a JSON object of knobs). Unknown knobs
and values of the wrong type are refused with a message naming the knob.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

from scanners.emulator.editions import DEFAULT_EDITION, EDITIONS

STOP_STATUSES = ("stopping", "canceling")  # what a stopped scan says until it is "canceled"
END_STATUSES = ("completed", "aborted", "imported")  # how a run that reached its end finishes


@dataclass
class Faults:
    latency: float = 0.0  # seconds added to every API answer
    error_rate: float = 0.0  # 0..1: share of API requests answered 500
    error_burst: int = 0  # the next N API requests are answered 503, then normal service resumes
    error_status: int = 0  # answer error_rate/error_burst with this status instead (e.g. 429, 403); 0 = 500/503
    error_match: str = ""  # a regex: only requests whose "METHOD /path" it matches get error_rate/error_burst
    retry_after: str = ""  # Retry-After header sent as is with injected 429/503 answers (seconds, an HTTP-date…)
    session_expiry: float = 0.0  # seconds after which a session token stops working (401); 0 = never
    unlicensed: bool = False  # licence without scan API: properties say scan_api false, scan writes 412
    edition: str = DEFAULT_EDITION  # manager | professional | expert | essentials (only manager has the scan API)
    pausing_seconds: float = 0.0  # a paused scan says "pausing" this long before "paused" (taken at launch)
    stop_status: str = "stopping"  # stopping | canceling: the status after a stop request (taken at launch)
    end_status: str = "completed"  # completed | aborted | imported: how a run ends (taken at launch)
    pending_stall: float = 0.0  # extra seconds a launched scan stays "pending" (-1 = forever)
    hang_at_99: bool = False  # launched scans stop at 99 % "running" and never finish
    export_error: bool = False  # exports end in status "error"
    not_ready: bool = False  # plugins compiling: /server/status "loading", API calls 503
    down: bool = False  # the listening socket is closed: connection refused
    down_seconds: float = 0.0  # with down: come back by itself after this many seconds (0 = stay down)
    stop_ignored: bool = False  # POST /scans/{id}/stop answers 200 but the scan keeps running (a stop that fails)
    token_flow: bool = True  # False: an older scanner without /tokens (export answers only {"file": id})

    def update(self, values: dict[str, Any]) -> list[str]:
        """Apply ``values`` (validated first, so a bad request changes nothing); return the knobs changed."""
        known = {f.name: f for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault knob {key!r}; known knobs: {', '.join(sorted(known))}")
            parsed[key] = _coerce(key, value, type(getattr(self, key)))
        if "error_rate" in parsed and not 0.0 <= parsed["error_rate"] <= 1.0:
            raise ValueError("fault knob 'error_rate' must be between 0 and 1")
        if "error_status" in parsed and parsed["error_status"] and not 400 <= parsed["error_status"] <= 599:
            raise ValueError("fault knob 'error_status' must be an HTTP error status (400..599), or 0 for 500/503")
        if "error_match" in parsed:
            try:
                re.compile(parsed["error_match"])
            except re.error as exc:
                raise ValueError(f"fault knob 'error_match' is not a regular expression ({exc}); e.g. "
                                 r"'POST /scans/\d+/launch'") from None
        if "retry_after" in parsed and (len(parsed["retry_after"]) > 200 or any(
                c in parsed["retry_after"] for c in "\r\n")):
            raise ValueError("fault knob 'retry_after' must be one header line of at most 200 characters")
        choices = {"edition": tuple(EDITIONS), "stop_status": STOP_STATUSES, "end_status": END_STATUSES}
        for key, allowed in choices.items():
            if key in parsed and parsed[key] not in allowed:
                raise ValueError(f"fault knob {key!r} takes one of {', '.join(allowed)}, not {parsed[key]!r}")
        for key, value in parsed.items():
            setattr(self, key, value)
        return sorted(parsed)

    @property
    def scan_api(self) -> bool:
        """Scan writes allowed: an edition with the scan API and not the ``unlicensed`` fault."""
        return EDITIONS[self.edition].scan_api and not self.unlicensed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ValueError(f"fault knob {key!r} takes true or false, not {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"fault knob {key!r} takes a number, not {value!r}") from None


class FaultGate:
    """Thread-safe decisions taken per request from the current knobs."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._lock = threading.Lock()
        self._rng = random.Random()

    def injected_error(self, request_line: str = "") -> int | None:
        """The error status to answer instead of serving the request (``"METHOD /path"``), if any."""
        with self._lock:
            if self.faults.error_match and not re.search(self.faults.error_match, request_line):
                return None
            if self.faults.error_burst > 0:
                self.faults.error_burst -= 1
                return self.faults.error_status or 503
            if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
                return self.faults.error_status or 500
        return None
