"""State of one emulated scanner instance: scans, sessions, uploads, exports, statistics, faults."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from scanners.emulator.faults import FaultGate, Faults
from scanners.emulator.scans import ACTIVE, Run, Scan, Timing

TEMPLATES: tuple[dict[str, Any], ...] = (
    {"name": "basic", "title": "Basic Network Scan", "uuid": "731a8e52-3ea6-a291-ec0a-d2ff0619c19d7bd788d6be818b65",
     "desc": "A full system scan suitable for any host.", "order": 2},
    {"name": "advanced", "title": "Advanced Scan", "uuid": "ad629e16-03b6-8c1d-cef6-ef8c9dd3c658d24bd260ef5f9e66",
     "desc": "Configure a scan without using any recommendations.", "order": 1},
    {"name": "discovery", "title": "Host Discovery", "uuid": "bbd4f805-3966-d464-b2d1-0079eb89d69708c3a05ec2812bcf",
     "desc": "A simple scan to discover live hosts and open ports.", "order": 3},
)
MAX_EXPORTS_KEPT = 1000  # export records (small: the file is rendered on download)
EXPORT_READY_AFTER = 0.2  # seconds an export stays "loading"


@dataclass
class EmulatorConfig:
    scan_seconds: float = 60.0
    username: str = "admin"
    password: str = "admin"
    access_key: str = "a" * 8 + "0e1a7e5ca2e5e55e7a5ca21e" + "0" * 32
    secret_key: str = "5" * 8 + "ec7e7a5ca2e5e55e7a5ca21e" + "1" * 32
    version: str = "10.7.1"


@dataclass
class Export:
    file_id: int
    token: str
    scan_id: int
    created: float
    error: bool
    scan: Scan | None = None  # rendered when downloaded (a deleted scan stays exportable), never stored
    run: Run | None = None  # the run exported (``?history_id=``); None = the scan's last run
    filename: str = ""


RECENT_REQUESTS = 200


@dataclass
class Stats:
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    logins: int = 0
    failed_logins: int = 0
    launch_requests: int = 0
    max_concurrent: int = 0
    injected_errors: int = 0
    # The last API requests, oldest first: [wall-clock time, "METHOD", path, status] (a test checks pacing with it).
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))

    def log_request(self, method: str, path: str, status: int) -> None:
        self.recent.append([round(time.time(), 3), method, path, status])


class Instance:
    """Everything one scanner instance knows. Every method takes the lock briefly."""

    def __init__(self, index: int, port: int, config: EmulatorConfig, faults: Faults) -> None:
        self.index = index
        self.port = port
        self.config = config
        self.initial_faults = Faults(**faults.as_dict())
        self.faults = faults
        self.gate = FaultGate(faults)
        self.timing = Timing.for_scan_seconds(config.scan_seconds)
        self.lock = threading.RLock()
        self.server_uuid = secrets.token_hex(16)
        self.boot_time = int(time.time())
        self._reset_state()

    def _reset_state(self) -> None:
        self.scans: dict[int, Scan] = {}
        self.next_scan_id = 5
        self.next_history_id = 100
        self.sessions: dict[str, float] = {}
        self.uploads: dict[str, bytes] = {}
        self.exports: OrderedDict[int, Export] = OrderedDict()
        self.tokens: dict[str, int] = {}
        self.stats = Stats()

    def reset(self, *, faults: bool = True, scans: bool = True) -> None:
        with self.lock:
            if scans:
                self._reset_state()
            if faults:
                self.faults.update({k: v for k, v in self.initial_faults.as_dict().items() if k != "down"})

    # ------------------------------------------------------------------------------------------ auth

    def login(self, username: str, password: str) -> str | None:
        ok = hmac.compare_digest(username.encode(), self.config.username.encode()) and hmac.compare_digest(
            password.encode(), self.config.password.encode()
        )
        with self.lock:
            if not ok:
                self.stats.failed_logins += 1
                return None
            self.stats.logins += 1
            token = secrets.token_hex(24)
            self.sessions[token] = time.monotonic()
            return token

    def logout(self, token: str) -> None:
        with self.lock:
            self.sessions.pop(token, None)

    def authenticate(self, api_keys: str | None, cookie: str | None) -> bool:
        if api_keys:
            parts = dict(
                p.strip().split("=", 1) for p in api_keys.split(";") if "=" in p
            )
            return hmac.compare_digest(parts.get("accessKey", "").encode(), self.config.access_key.encode()) and (
                hmac.compare_digest(parts.get("secretKey", "").encode(), self.config.secret_key.encode())
            )
        token = session_token(cookie)
        if not token:
            return False
        with self.lock:
            issued = self.sessions.get(token)
            if issued is None:
                return False
            expiry = self.faults.session_expiry
            if expiry and time.monotonic() - issued > expiry:
                del self.sessions[token]
                return False
            return True

    # ----------------------------------------------------------------------------------------- scans

    def new_scan_id(self) -> int:
        self.next_scan_id += 1
        return self.next_scan_id

    def new_history_id(self) -> int:
        self.next_history_id += 1
        return self.next_history_id

    def running_now(self) -> int:
        now = time.monotonic()
        return sum(1 for s in self.scans.values() if s.state(now)[0] in ACTIVE)

    def record_launch(self) -> None:
        """Called (under the lock) right after a run was added: update the concurrency high-water mark."""
        self.stats.max_concurrent = max(self.stats.max_concurrent, self.running_now())

    def add_export(self, scan_id: int) -> Export:
        export = Export(
            file_id=secrets.randbelow(2**31 - 1) + 1,
            token=secrets.token_hex(32),
            scan_id=scan_id,
            created=time.monotonic(),
            error=self.faults.export_error,
        )
        self.exports[export.file_id] = export
        self.tokens[export.token] = export.file_id
        while len(self.exports) > MAX_EXPORTS_KEPT:
            _, old = self.exports.popitem(last=False)
            self.tokens.pop(old.token, None)
        return export

    @staticmethod
    def export_status(export: Export) -> str:
        if time.monotonic() - export.created < EXPORT_READY_AFTER:
            return "loading"
        return "error" if export.error else "ready"

    # ------------------------------------------------------------------------------------ read-outs

    def snapshot(self) -> dict[str, Any]:
        """State for the control API: faults, statistics and every scan with its launch count."""
        now = time.monotonic()
        with self.lock:
            scans = []
            for scan in self.scans.values():
                status, progress = scan.state(now)
                scans.append({"id": scan.id, "name": scan.name, "status": status, "progress": progress,
                              "launches": scan.launches, "launch_refusals": scan.launch_refusals,
                              "scenario": scan.scenario, "targets": scan.targets})
            running = sum(1 for s in scans if s["status"] in ACTIVE)
            self.stats.max_concurrent = max(self.stats.max_concurrent, running)
            return {
                "instance": self.index,
                "port": self.port,
                "faults": self.faults.as_dict(),
                "scan_seconds": self.timing.scan_seconds,
                "stats": {
                    "requests": self.stats.requests,
                    "by_status": {str(k): v for k, v in sorted(self.stats.by_status.items())},
                    "logins": self.stats.logins,
                    "failed_logins": self.stats.failed_logins,
                    "launch_requests": self.stats.launch_requests,
                    "injected_errors": self.stats.injected_errors,
                    "current_running": running,
                    "max_concurrent": self.stats.max_concurrent,
                    "scans": len(scans),
                    "launches": {str(s["id"]): s["launches"] for s in scans},
                    "recent": list(self.stats.recent),
                },
                "scans": scans,
            }


def session_token(cookie: str | None) -> str:
    for part in (cookie or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "token" and value:
            return value
    return ""
