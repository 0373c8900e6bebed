"""Scans of one emulated instance and their life over time.

A scan's status is computed from timestamps when it is read (no background threads), so following
hundreds of scans costs nothing between requests:

``empty`` (created) → launch → ``pending`` (briefly, longer with the ``pending_stall`` fault) →
``running`` (progress grows linearly over ``scan_seconds``) → ``processing`` (briefly, 99 %) →
``completed`` (or ``aborted`` / ``imported`` with the ``end_status`` knob). ``stop`` gives
``stopping`` (or ``canceling``, knob ``stop_status``) then ``canceled``; ``pause``/``resume`` give
``pausing`` (for ``pausing_seconds``), ``paused``, ``resuming`` and back to ``running``. With the
``hang_at_99`` fault a run never leaves ``running`` 99 %.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from dataclasses import dataclass, field

ACTIVE = frozenset({"pending", "running", "pausing", "paused", "resuming", "stopping", "canceling", "processing"})
FINAL = frozenset({"completed", "canceled", "aborted", "imported"})
UNREACHABLE = ipaddress.ip_network("192.0.2.248/29")  # .250-.254 are dead, see is_unreachable()
MAX_HOSTS_PER_SCAN = 256
STOPPING_SECONDS = 0.5
RESUMING_SECONDS = 0.3


def is_unreachable(host: str) -> bool:
    """Targets 192.0.2.250-192.0.2.254 never answer (scenario convention, DESIGN §9)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address in UNREACHABLE and 250 <= int(str(address).rsplit(".", 1)[1]) <= 254


def _address_range(target: str) -> list[str] | None:
    """Nessus' range forms ``192.0.2.1-192.0.2.20`` and ``192.0.2.1-20`` (at most MAX_HOSTS_PER_SCAN), else None."""
    first, sep, last = target.partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    if last.isdigit() and first.count(".") == 3:  # short form: the last octet only
        last = first.rsplit(".", 1)[0] + "." + last
    try:
        start, end = ipaddress.ip_address(first), ipaddress.ip_address(last)
    except ValueError:
        return None
    if start.version != end.version or int(end) < int(start):
        return None
    count = min(int(end) - int(start) + 1, MAX_HOSTS_PER_SCAN)
    return [str(ipaddress.ip_address(int(start) + i)) for i in range(count)]


def expand_targets(text_targets: str) -> list[str]:
    """Split Nessus ``text_targets`` (comma/space/newline separated); expand CIDRs and address ranges."""
    hosts: list[str] = []
    for raw in text_targets.replace("\n", ",").replace(" ", ",").split(","):
        target = raw.strip()
        if not target:
            continue
        if "/" in target:
            try:
                network = ipaddress.ip_network(target, strict=False)
            except ValueError:
                hosts.append(target)
                continue
            addresses = list(network.hosts()) if network.num_addresses > 2 else list(network)
            hosts.extend(str(a) for a in addresses[:MAX_HOSTS_PER_SCAN])
        elif (addresses := _address_range(target)) is not None:
            hosts.extend(addresses)
        else:
            hosts.append(target)
        if len(hosts) >= MAX_HOSTS_PER_SCAN:
            break
    return list(dict.fromkeys(hosts))[:MAX_HOSTS_PER_SCAN]  # each host once, like Nessus


@dataclass
class Run:
    """One launch of a scan (a history entry)."""

    history_id: int
    uuid: str
    launched_at: float  # epoch seconds
    started_mono: float
    pending_for: float  # seconds; inf = stalled forever
    running_for: float
    processing_for: float
    hang: bool
    paused_at: float | None = None
    paused_total: float = 0.0
    resumed_at: float | None = None
    stop_requested: float | None = None
    final: str | None = None
    ended_at: float | None = None  # epoch
    alt_targets: list[str] | None = None  # launch with ``alt_targets``: this run scans these instead
    pausing_for: float = 0.0  # seconds a pause request says "pausing" before "paused"
    stop_status: str = "stopping"  # "stopping" | "canceling" until the stop settles as "canceled"
    end_status: str = "completed"  # "completed" | "aborted" | "imported"

    def state(self, now: float) -> tuple[str, int]:
        """``(status, progress 0..100)`` at monotonic time ``now``; settles final states."""
        if self.final:
            return self.final, 100 if self.final in ("completed", "imported") else self._progress(now)
        if self.stop_requested is not None:
            if now - self.stop_requested < STOPPING_SECONDS:
                return self.stop_status, self._progress(self.stop_requested)
            return self._finish("canceled", now), self._progress(self.stop_requested)
        if self.paused_at is not None:
            return "pausing" if now - self.paused_at < self.pausing_for else "paused", self._progress(self.paused_at)
        progress = self._progress(now)
        if self.resumed_at is not None and now - self.resumed_at < RESUMING_SECONDS:
            return "resuming", progress
        elapsed = self._elapsed(now)
        if elapsed < self.pending_for:
            return "pending", 0
        if self.hang:
            return "running", progress
        elapsed -= self.pending_for
        if elapsed < self.running_for:
            return "running", progress
        if elapsed < self.running_for + self.processing_for:
            return "processing", 99
        status = self._finish(self.end_status, now)
        return status, 100 if status != "aborted" else 99

    def _elapsed(self, now: float) -> float:
        return max(0.0, now - self.started_mono - self.paused_total)

    def _progress(self, now: float) -> int:
        running = self._elapsed(now) - self.pending_for
        if running <= 0:
            return 0
        share = running / self.running_for if self.running_for > 0 else 1.0
        return max(0, min(99, int(share * 100)))

    def _finish(self, status: str, now: float) -> str:
        self.final = status
        self.ended_at = time.time()
        return status


@dataclass
class Scan:
    id: int
    uuid: str
    name: str
    description: str
    targets: list[str]
    text_targets: str
    template_name: str
    template_uuid: str
    scenario: str  # untrusted | success | rejected | noprivs | none (see scenario.py)
    ssh_user: str
    ssh_method: str  # "password" | "public key" | "" (no credentials)
    elevate_with: str
    display_unreachable: bool
    created_at: float = field(default_factory=time.time)
    modified_at: float = field(default_factory=time.time)
    runs: list[Run] = field(default_factory=list)
    launches: int = 0
    launch_refusals: int = 0

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def state(self, now: float) -> tuple[str, int]:
        run = self.current
        return ("empty", 0) if run is None else run.state(now)

    def run_targets(self, run: Run | None = None) -> list[str]:
        """The targets of ``run`` (default: the current run): its ``alt_targets`` if it had any, else the scan's."""
        run = run or self.current
        return run.alt_targets if run is not None and run.alt_targets else self.targets

    def alive_targets(self, run: Run | None = None) -> list[str]:
        """The answering targets of ``run`` (default: the current run)."""
        return [t for t in self.run_targets(run) if not is_unreachable(t)]


@dataclass
class Timing:
    scan_seconds: float
    pending_seconds: float
    processing_seconds: float

    @classmethod
    def for_scan_seconds(cls, scan_seconds: float) -> Timing:
        return cls(
            scan_seconds=scan_seconds,
            pending_seconds=min(2.0, max(0.2, scan_seconds * 0.1)),
            processing_seconds=min(2.0, max(0.2, scan_seconds * 0.05)),
        )


def new_run(history_id: int, timing: Timing, pending_stall: float, hang: bool) -> Run:
    stall = float("inf") if pending_stall < 0 else pending_stall
    return Run(
        history_id=history_id,
        uuid=str(uuid.uuid4()),
        launched_at=time.time(),
        started_mono=time.monotonic(),
        pending_for=timing.pending_seconds + stall,
        running_for=timing.scan_seconds,
        processing_for=timing.processing_seconds,
        hang=hang,
    )
